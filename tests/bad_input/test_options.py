"""Bad option values: refused before anything runs, in one line naming the option (not the
Python parameter behind it), exit 2; a bad ``section.key=value`` is blamed on itself, not on the
YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedattr.cli import main
from pedattr.engine.config import ConfigError
from pedattr.engine.training import train
from pedattr.inference.command import run_predict
from pedattr.recipes.demo import demo_config
from pedattr.recipes.experiment import run_experiment
from tests.helpers import make_prepared_dataset


def _refused(argv: list[str], capsys) -> str:
    """The error of a refused command line: one line, exit status 2, nothing on stdout."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    return captured.err.rstrip("\n")


CKPT = ["--checkpoint", "m.safetensors"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["predict", *CKPT, "a.jpg", "--batch-size", "0"], "argument --batch-size: must be at"),
        (["predict", *CKPT, "a.jpg", "--every", "0"], "argument --every: must be at least 1"),
        (["eval", *CKPT, "--data", "d", "--batch-size", "-1"], "argument --batch-size: must be"),
        (["eval", *CKPT, "--data", "d", "--workers", "-1"], "argument --workers: must be at"),
        (["eval", *CKPT, "--data", "d", "--tolerance", "nan"], "argument --tolerance: must be"),
        (["eval", *CKPT, "--data", "d", "--tolerance", "-2"], "argument --tolerance: must be"),
        (["calibrate", *CKPT, "--data", "d", "--batch-size", "0"], "argument --batch-size:"),
        (["calibrate", *CKPT, "--data", "d", "--workers", "x"], "argument --workers: expected"),
        (["export", *CKPT, "--onnx", "m.onnx", "--batch", "0"], "argument --batch: must be"),
        (["export", *CKPT, "--onnx", "m.onnx", "--opset", "3"], "argument --opset: must be from"),
        (["summary", "--num-attrs", "0"], "argument --num-attrs: must be at least 1, got 0"),
        (["summary", "--height", "0"], "argument --height: must be at least 1, got 0"),
        (["summary", "--width", "-4"], "argument --width: must be at least 1, got -4"),
        (["prepare", "rap", "--root", "r", "--out", "o", "--partition", "-1"], "--partition: "),
        (
            ["experiment", "table1", "--data", "d", "--out", "o", "--epochs", "0"],
            "argument --epochs: must be at least 1, got 0",
        ),
        (
            ["experiment", "table2", "--data", "d", "--out", "o", "--seeds", "0"],
            "argument --seeds: must be at least 1, got 0",
        ),
    ],
)
def test_numeric_options_are_refused_by_their_names(argv, expected, capsys) -> None:
    line = _refused(argv, capsys)
    assert line.startswith(f"pedattr {argv[0]}") and expected in line
    assert "batch_size" not in line and "fixed_batch" not in line and "num_workers" not in line


def test_an_existing_file_is_no_output_folder(tmp_path: Path, capsys) -> None:
    """Every folder output: one line naming the file in the way, exit 2, nothing written."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for folder in (blocker, blocker / "sub"):
        for argv in (
            ["train", "--config", "c.yaml", "--out", str(folder)],
            ["experiment", "table1", "--data", "d", "--out", str(folder)],
            ["demo", "--out", str(folder)],
            ["prepare", "csv", "--root", "r", "--out", str(folder)],
            ["predict", *CKPT, "a.jpg", "--visualize", str(folder)],
        ):
            line = _refused(argv, capsys)
            option = "--visualize" if "--visualize" in argv else "--out"
            assert line.endswith(f"argument {option}: {blocker}: exists and is not a folder")
    assert blocker.read_text() == "x" and sorted(tmp_path.iterdir()) == [blocker]


def test_an_existing_folder_is_no_output_file(tmp_path: Path, capsys) -> None:
    for option, argv in (
        ("--out", ["convert", "authors.pth.tar"]),
        ("--out", ["calibrate", *CKPT, "--data", "d"]),
        ("--json", ["eval", *CKPT, "--data", "d"]),
        ("--plot", ["eval", *CKPT, "--data", "d"]),
        ("--json", ["predict", *CKPT, "a.jpg"]),
        ("--onnx", ["export", *CKPT]),
        ("--exported-program", ["export", *CKPT]),
    ):
        line = _refused([*argv, option, str(tmp_path)], capsys)
        assert line.endswith(f"argument {option}: {tmp_path}: is a folder, not a file to write")


# --- section.key=value overrides ----------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr_step: 0\n")
    return path


def test_a_bad_override_is_blamed_on_itself(config_file: Path) -> None:
    good = config_file.with_name("good.yaml")
    good.write_text("optim:\n  lr: 0.001\n")
    with pytest.raises(ConfigError) as caught:
        train(good, ["optim.batch_size=0"])
    assert str(caught.value) == (
        "override 'optim.batch_size=0': optim.batch_size: must be at least 1, got 0"
    )
    with pytest.raises(ConfigError, match="^override 'optim.batch_size=x': optim.batch_size: "):
        train(good, ["optim.batch_size=x"])
    # The last override of a key is the one that counts, and the one named.
    with pytest.raises(ConfigError, match="^override 'optim.lr=-1': optim.lr: must be a posi"):
        train(good, ["optim.lr=-1e-3", "optim.lr=1e-3", "optim.lr=-1"])


def test_a_bad_value_from_the_file_is_still_blamed_on_the_file(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{config_file}: optim.lr_step: must be at least 1"):
        train(config_file, ["optim.batch_size=4"])
    # An override that fixes the file's value leaves nothing to blame.
    with pytest.raises(ConfigError, match="^override 'optim.epochs=0'"):
        train(config_file, ["optim.lr_step=2", "optim.epochs=0"])


def test_the_command_line_names_the_override(config_file: Path, capsys) -> None:
    argv = ["train", "--config", str(config_file), "optim.lr_step=1", "optim.lr_gamma=-1"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "pedattr train: error: override 'optim.lr_gamma=-1': optim.lr_gamma: must be positive, "
        "got -1.0\n"
    )


def test_demo_and_experiment_blame_the_override(tmp_path: Path) -> None:
    data = make_prepared_dataset(tmp_path, {"train": 2, "val": 2, "test": 2})
    with pytest.raises(ConfigError, match="^override 'optim.epochs=0': optim.epochs: "):
        demo_config(tmp_path, tmp_path / "data", overrides=["optim.epochs=0"])
    with pytest.raises(ConfigError, match="^override 'optim.lr=0': optim.lr: "):
        run_experiment("table1", data, tmp_path / "out", overrides=["optim.lr=0"])


def test_the_library_keeps_its_parameter_names(tmp_path: Path) -> None:
    """Called from Python, the parameter is named, not an option of the command line."""
    data = make_prepared_dataset(tmp_path, {"train": 2, "val": 2, "test": 2})
    with pytest.raises(ValueError, match="^every must be at least 1"):
        run_predict(tmp_path / "m.safetensors", ["a.jpg"], every=0)
    with pytest.raises(ValueError, match="^epochs must be at least 1"):
        run_experiment("table1", data, tmp_path / "out", epochs=0)
    with pytest.raises(ValueError, match="^seeds must be at least 1"):
        run_experiment("table1", data, tmp_path / "out", seeds=0)


def test_a_bad_command_line_is_one_line_but_help_still_exits_0(capsys) -> None:
    assert _refused(["predict", "--checkpoint"], capsys) == (
        "pedattr predict: error: argument --checkpoint: expected one argument"
    )
    assert _refused([], capsys) == "pedattr: error: the following arguments are required: COMMAND"
    with pytest.raises(SystemExit) as caught:
        main(["predict", "--help"])
    assert caught.value.code == 0 and "--batch-size" in capsys.readouterr().out


def test_a_reader_option_the_format_does_not_take_is_named_as_typed(tmp_path: Path, capsys):
    argv = ["prepare", "pa100k", "--root", str(tmp_path), "--out", str(tmp_path / "d")]
    assert _refused([*argv, "--partition", "1"], capsys) == (
        "pedattr prepare: error: --partition: format 'pa100k' does not take it; it takes "
        "--annotation"
    )
    argv[1] = "csv"
    assert _refused([*argv, "--annotation", "a.csv"], capsys).endswith(
        "--annotation: format 'csv' does not take it; it takes --image-root, "
        "--option default_split=..."
    )
    assert _refused([*argv, "--option", "partition=1"], capsys).startswith(
        "pedattr prepare: error: --option partition=...: format 'csv' does not take it"
    )
    argv[1] = "rap1"
    assert "give its path (--annotation FILE, or annotation= in Python)" in _refused(argv, capsys)
