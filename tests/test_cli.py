"""The command line's exit statuses: what each kind of failure prints and returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import pedattr
import pedattr.engine.training
import pedattr.inference.command
import pedattr.inference.export
import pedattr.recipes.experiment
from pedattr.cli import main
from pedattr.engine.training import TrainingError
from pedattr.inference.export import ExportError
from tests.helpers import TINY_MODEL


def _raiser(error: BaseException):
    def call(*args, **kwargs):
        raise error

    return call


def test_a_failed_training_run_is_one_line_and_exit_1(monkeypatch, capsys) -> None:
    monkeypatch.setattr(pedattr.engine.training, "train", _raiser(TrainingError("loss is NaN")))
    assert main(["train", "--config", "any.yaml"]) == 1
    assert capsys.readouterr().err == "pedattr train: error: loss is NaN\n"


def test_a_failed_export_is_one_line_and_exit_1(monkeypatch, capsys, tmp_path) -> None:
    checkpoint = tmp_path / "m.safetensors"
    pedattr.save_checkpoint(checkpoint, pedattr.build_model("baseline", num_attrs=2, **TINY_MODEL))
    failure = ExportError("onnxruntime disagrees with PyTorch")
    monkeypatch.setattr(pedattr.inference.export, "export_onnx", _raiser(failure))
    argv = ["export", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx")]
    assert main(argv) == 1
    assert capsys.readouterr().err == f"pedattr export: error: {failure}\n"


def test_bad_input_is_exit_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr(pedattr.engine.training, "train", _raiser(FileNotFoundError("no x.yaml")))
    assert main(["train", "--config", "x.yaml"]) == 2
    assert capsys.readouterr().err == "pedattr train: error: no x.yaml\n"


@pytest.mark.parametrize(
    ("argv", "target", "message"),
    [
        (
            ["experiment", "table1", "--data", "d", "--out", "o"],
            (pedattr.recipes.experiment, "run_experiment"),
            "pedattr experiment: interrupted; the same command continues where it stopped\n",
        ),
        (
            ["predict", "--checkpoint", "m.safetensors", "a.jpg"],
            (pedattr.inference.command, "run_predict"),
            "pedattr predict: interrupted\n",
        ),
        (
            ["train", "--config", "c.yaml"],
            (pedattr.engine.training, "train"),
            "pedattr train: interrupted\n",
        ),
    ],
)
def test_ctrl_c_is_exit_130_with_the_commands_hint(monkeypatch, capsys, argv, target, message):
    monkeypatch.setattr(*target, _raiser(KeyboardInterrupt()))
    assert main(argv) == 130
    assert capsys.readouterr().err == message


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_the_program_ends_by_sigint_when_interrupted() -> None:
    """As Python does on Ctrl-C, so that a shell loop around pedattr stops too."""
    code = (
        "import sys, pedattr.engine.training as t\n"
        "def interrupted(*args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "t.train = interrupted\n"
        "sys.argv = ['pedattr', 'train', '--config', 'c.yaml']\n"
        "from pedattr.cli import console_main\n"
        "console_main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == -signal.SIGINT
    assert result.stderr == "pedattr train: interrupted\n"
    # Any other status is the exit status.
    code = code.replace("raise KeyboardInterrupt", "raise FileNotFoundError('no c.yaml')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr == "pedattr train: error: no c.yaml\n"


@pytest.mark.slow
def test_python_dash_m_pedattr_is_the_program() -> None:
    """`make demo` runs `python -m pedattr`: the same program as the console script."""
    result = subprocess.run(
        [sys.executable, "-m", "pedattr", "demo", "--num-train", "0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2  # refused before anything is written
    assert "pedattr demo: error: the demo needs at least one image" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pedattr", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "demo" in result.stdout and "predict" in result.stdout


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    monkeypatch.setattr(pedattr.engine.training, "train", _raiser(ZeroDivisionError()))
    with pytest.raises(ZeroDivisionError):
        main(["train", "--config", "c.yaml"])


def test_a_training_run_that_cannot_start_is_bad_input(capsys, tmp_path) -> None:
    """Setup refusals (no config, a folder that is not a run) are exit 2, not a failed run."""
    assert main(["train"]) == 2
    assert "give --config FILE" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a pedattr run folder" in capsys.readouterr().err
