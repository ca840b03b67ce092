"""INT8 export and eval of .onnx files: missing or mismatched calibration data, files that are
not pedattr exports. One line on stderr each, exit status 2, nothing written, and the refusal
comes before the (slow) export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pedattr
from pedattr.cli import main
from pedattr.inference import export as export_module
from pedattr.inference.export import export_onnx
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, make_prepared_dataset, write_plain_onnx

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = pedattr.build_model("baseline", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    pedattr.save_checkpoint(path, model)
    return path


@pytest.fixture()
def no_export(monkeypatch):
    """Fail the test if a refused command got as far as exporting."""

    def refuse(*args, **kwargs):
        raise AssertionError("the export ran before the input was refused")

    monkeypatch.setattr(export_module, "_trace_to_onnx", refuse)


def _refused(capsys, argv: list[str], *parts: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for part in parts:
        assert part in err, err
    return err


def _export(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["export", "--checkpoint", str(checkpoint), "--onnx", str(out), *extra]


def test_int8_without_calibration(checkpoint, tmp_path, capsys, no_export):
    out = tmp_path / "q.onnx"
    _refused(capsys, _export(checkpoint, out, "--int8"), "--int8 needs --calibration DATA_DIR")
    assert not out.exists()


def test_calibration_without_int8(checkpoint, data, tmp_path, capsys, no_export):
    argv = _export(checkpoint, tmp_path / "q.onnx", "--calibration", str(data))
    _refused(capsys, argv, "--calibration applies to --int8")


def test_first_conv_without_int8(checkpoint, tmp_path, capsys, no_export):
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8-first-conv")
    _refused(capsys, argv, "--int8-first-conv applies to --int8")


def test_int8_with_a_fixed_batch(checkpoint, data, tmp_path, capsys, no_export):
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8", "--calibration", str(data))
    _refused(capsys, [*argv, "--batch", "2"], "--batch applies to the float export")


def test_too_few_calibration_images(checkpoint, data, tmp_path, capsys, no_export):
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8", "--calibration", str(data))
    _refused(capsys, [*argv, "--calibration-images", "3"], "--calibration-images", "at least 8")


def test_calibration_folder_missing(checkpoint, tmp_path, capsys, no_export):
    missing = tmp_path / "nowhere"
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8", "--calibration", str(missing))
    _refused(capsys, argv, str(missing), "no such dataset folder")


def test_calibration_folder_not_prepared(checkpoint, tmp_path, capsys, no_export):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8", "--calibration", str(folder))
    _refused(capsys, argv, str(folder), "pedattr prepare")


def test_calibration_attributes_in_another_order(data, tmp_path, capsys, no_export):
    torch.manual_seed(0)
    names = list(reversed(LEARNABLE_ATTRIBUTES))
    model = pedattr.build_model("baseline", attribute_names=names, **TINY_MODEL)
    checkpoint = tmp_path / "reversed.safetensors"
    pedattr.save_checkpoint(checkpoint, model)
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8", "--calibration", str(data))
    _refused(capsys, argv, str(checkpoint), "different order", "position 0")


def test_calibration_attributes_missing(tmp_path, data, capsys, no_export):
    torch.manual_seed(0)
    model = pedattr.build_model("baseline", attribute_names=["Hat", "Bag"], **TINY_MODEL)
    checkpoint = tmp_path / "other.safetensors"
    pedattr.save_checkpoint(checkpoint, model)
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8", "--calibration", str(data))
    _refused(capsys, argv, "only in the model: ['Hat', 'Bag']")


def test_calibration_data_without_a_validation_split(checkpoint, tmp_path, capsys, no_export):
    data = make_prepared_dataset(tmp_path, {"train": 8, "test": 8})
    argv = _export(checkpoint, tmp_path / "q.onnx", "--int8", "--calibration", str(data))
    _refused(capsys, argv, str(data), "no validation split to calibrate on")


@pytest.mark.slow  # one float export
def test_eval_of_an_onnx_model_on_mismatched_data(data, tmp_path, capsys):
    torch.manual_seed(0)
    names = list(reversed(LEARNABLE_ATTRIBUTES))
    model = pedattr.build_model("baseline", attribute_names=names, **TINY_MODEL)
    exported = export_onnx(model, tmp_path / "reversed.onnx")
    argv = ["eval", "--checkpoint", str(exported), "--data", str(data), "--device", "cpu"]
    _refused(capsys, [*argv, "--workers", "0"], str(exported), "different order", "position 0")


def test_eval_of_an_onnx_file_that_is_not_a_pedattr_export(data, tmp_path, capsys):
    plain = write_plain_onnx(tmp_path / "plain.onnx")
    argv = ["eval", "--checkpoint", str(plain), "--data", str(data), "--device", "cpu"]
    _refused(capsys, argv, str(plain), "without pedattr's metadata", "pedattr export")
