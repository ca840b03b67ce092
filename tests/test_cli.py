"""The command line's exit statuses: what each kind of failure prints and returns."""

from __future__ import annotations

import pytest

import pedattr.engine.checkpoint
import pedattr.engine.experiment
import pedattr.engine.training
from pedattr.cli import main
from pedattr.engine.training import TrainingError
from pedattr.inference.export import ExportError


def _raiser(error: BaseException):
    def call(*args, **kwargs):
        raise error

    return call


def test_a_failed_training_run_is_one_line_and_exit_1(monkeypatch, capsys) -> None:
    monkeypatch.setattr(pedattr.engine.training, "train", _raiser(TrainingError("loss is NaN")))
    assert main(["train", "--config", "any.yaml"]) == 1
    assert capsys.readouterr().err == "pedattr train: error: loss is NaN\n"


def test_a_failed_export_is_one_line_and_exit_1(monkeypatch, capsys, tmp_path) -> None:
    failure = ExportError("onnxruntime disagrees with PyTorch")
    monkeypatch.setattr(pedattr.engine.checkpoint, "load_model", _raiser(failure))
    assert (
        main(["export", "--checkpoint", "m.safetensors", "--onnx", str(tmp_path / "m.onnx")]) == 1
    )
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
            (pedattr.engine.experiment, "run_experiment"),
            "pedattr experiment: interrupted; the same command continues where it stopped\n",
        ),
        (["train", "--config", "c.yaml"], (pedattr.engine.training, "train"), ""),
    ],
)
def test_ctrl_c_is_exit_130_with_the_commands_hint(monkeypatch, capsys, argv, target, message):
    monkeypatch.setattr(*target, _raiser(KeyboardInterrupt()))
    assert main(argv) == 130
    assert capsys.readouterr().err == message


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    monkeypatch.setattr(pedattr.engine.training, "train", _raiser(ZeroDivisionError()))
    with pytest.raises(ZeroDivisionError):
        main(["train", "--config", "c.yaml"])
