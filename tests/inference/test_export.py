"""ONNX and torch.export exports: parity with PyTorch, dynamic batch, metadata, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pedattr
from pedattr.checkpoint.format import load_model
from pedattr.cli import main
from pedattr.inference import export as export_module
from pedattr.inference.export import (
    SUPPORTED_OPSETS,
    ExportError,
    ExportModule,
    example_images,
    export_onnx,
    export_program,
    onnxruntime_outputs,
    read_onnx_metadata,
)
from pedattr.models.model import AttributeModel
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4
ALM_OUTPUTS = ("probabilities", "boxes", "branch_probabilities")
#: Every ALM option away from its default, exported together.
OTHER_OPTIONS = dict(
    fusion="mean",
    box_pooling="max",
    upsample="nearest",
    padding_mode="zeros",
    align_corners=False,
    normalization="caffe",
)


def _build(arch: str, seed: int = 0, **options) -> AttributeModel:
    torch.manual_seed(seed)
    return pedattr.build_model(arch, attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL, **options)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny ALM (with calibrated-looking thresholds) and baseline checkpoints."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for arch in ("alm", "baseline"):
        paths[arch] = folder / f"{arch}.safetensors"
        thresholds = [0.3, 0.5, 0.7] if arch == "alm" else None
        pedattr.save_checkpoint(paths[arch], _build(arch), thresholds=thresholds)
    return paths


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Both checkpoints exported at the default opset, with the parity check."""
    folder = tmp_path_factory.mktemp("onnx")
    return {arch: export_onnx(path, folder / f"{arch}.onnx") for arch, path in checkpoints.items()}


def _pytorch_outputs(model, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return ExportModule(model.eval())(images)


def _assert_close(outputs, expected) -> None:
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["alm", "baseline"])
@pytest.mark.parametrize("batch", [1, 4])
def test_onnxruntime_matches_pytorch_at_any_batch(checkpoints, exported, arch, batch):
    model = load_model(checkpoints[arch])
    images = example_images(model, batch, seed=batch)
    outputs = onnxruntime_outputs(exported[arch], images)
    _assert_close(outputs, _pytorch_outputs(model, images))
    if arch == "alm":  # the named outputs carry what ModelOutput does
        with torch.inference_mode():
            reference = model(images)
        np.testing.assert_allclose(outputs[1], reference.boxes.numpy(), atol=TOLERANCE)
        assert outputs[2].shape == (batch, 4, len(LEARNABLE_ATTRIBUTES))


@pytest.mark.slow
def test_graph_declares_names_and_shapes(exported):
    description = export_module.describe_onnx(exported["alm"])
    assert [v["name"] for v in description["inputs"]] == ["images"]
    assert description["inputs"][0]["shape"] == ["batch", 3, *TINY_MODEL["input_size"]]
    shapes = {v["name"]: v["shape"] for v in description["outputs"]}
    m = len(LEARNABLE_ATTRIBUTES)
    assert shapes == {
        "probabilities": ["batch", m],
        "boxes": ["batch", 3, m, 4],
        "branch_probabilities": ["batch", 4, m],
    }
    assert description["opset"] == export_module.DEFAULT_OPSET


def test_metadata_round_trip(checkpoints, exported):
    metadata = read_onnx_metadata(exported["alm"])
    config = load_model(checkpoints["alm"]).config
    assert metadata["attribute_names"] == list(LEARNABLE_ATTRIBUTES)
    assert metadata["input_size"] == list(TINY_MODEL["input_size"])
    assert metadata["input"]["dtype"] == "float32" and metadata["input"]["range"] == [0.0, 1.0]
    assert metadata["normalization"]["name"] == "imagenet"
    assert metadata["thresholds"] == [0.3, 0.5, 0.7]
    assert list(metadata["outputs"]) == list(ALM_OUTPUTS)
    assert pedattr.ModelConfig.from_dict(metadata["model_config"]) == config
    assert metadata["pedattr_version"] == pedattr.__version__
    assert metadata["parity"]["max_abs_diff"] <= TOLERANCE
    baseline = read_onnx_metadata(exported["baseline"])
    assert baseline["thresholds"] == [0.5] * len(LEARNABLE_ATTRIBUTES)
    assert list(baseline["outputs"]) == ["probabilities"]


@pytest.mark.slow
@pytest.mark.parametrize("box_centre", ["regressed", "evidence"])
def test_lowest_supported_opset_matches(tmp_path, box_centre):
    model = _build("alm", box_centre=box_centre)
    path = export_onnx(model, tmp_path / "old.onnx", opset=SUPPORTED_OPSETS.start)
    images = example_images(model, 2, seed=5)
    _assert_close(onnxruntime_outputs(path, images), _pytorch_outputs(model, images))


@pytest.mark.slow
@pytest.mark.parametrize("box_centre", ["regressed", "evidence"])
def test_every_alm_option_and_uint8_input(tmp_path, box_centre):
    model = _build("alm", **OTHER_OPTIONS, box_centre=box_centre)
    path = export_onnx(model, tmp_path / "options.onnx", input_dtype="uint8", opset=11)
    images = example_images(model, 2, "uint8", seed=6)
    assert images.dtype == torch.uint8
    _assert_close(onnxruntime_outputs(path, images), _pytorch_outputs(model, images))
    assert read_onnx_metadata(path)["input"]["range"] == [0, 255]


@pytest.mark.slow
@pytest.mark.parametrize("head", ["attention", "parts", "gap"])
def test_table2_heads_export_with_a_dynamic_batch(tmp_path, head):
    model = _build("alm", head=head)
    path = export_onnx(model, tmp_path / f"{head}.onnx")  # checked at another batch inside
    images = example_images(model, 5, seed=7)
    _assert_close(onnxruntime_outputs(path, images), _pytorch_outputs(model, images))


@pytest.mark.slow
def test_export_leaves_the_callers_model_alone(tmp_path):
    model = _build("alm").train()
    export_onnx(model, tmp_path / "a.onnx", check=False)
    assert model.training
    assert "parity" not in read_onnx_metadata(tmp_path / "a.onnx")


@pytest.mark.slow
def test_parity_failure_is_a_clear_error(tmp_path, monkeypatch):
    def perturbed(model_bytes, images):
        return [output + 1e-3 for output in onnxruntime_outputs(model_bytes, images)]

    monkeypatch.setattr(export_module, "onnxruntime_outputs", perturbed)
    with pytest.raises(ExportError, match="differs from PyTorch by 0.001"):
        export_onnx(_build("baseline"), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_bad_arguments_are_refused(tmp_path, checkpoints):
    with pytest.raises(ValueError, match="opset 6 is not supported"):
        export_onnx(checkpoints["alm"], tmp_path / "x.onnx", opset=6)
    with pytest.raises(ValueError, match="input_dtype"):
        export_onnx(checkpoints["alm"], tmp_path / "x.onnx", input_dtype="float16")
    with pytest.raises(IsADirectoryError):
        export_onnx(checkpoints["alm"], tmp_path)
    with pytest.raises(ValueError, match="no such checkpoint"):
        export_onnx(tmp_path / "missing.safetensors", tmp_path / "x.onnx")


@pytest.mark.slow
def test_cli_exports_and_reports(checkpoints, tmp_path, capsys):
    out = tmp_path / "cli" / "alm.onnx"
    pt2 = tmp_path / "cli" / "alm.pt2"
    argv = ["export", "--checkpoint", str(checkpoints["alm"]), "--onnx", str(out)]
    assert main([*argv, "--opset", "13", "--exported-program", str(pt2)]) == 0
    printed = capsys.readouterr().out
    assert "ONNX opset 13" in printed and "max abs difference" in printed
    for name in ALM_OUTPUTS:
        assert name in printed
    assert f"wrote {pt2}" in printed
    assert out.is_file() and pt2.is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--opset", "30"], "argument --opset: must be from 7 to 20, got 30"),
        (["--checkpoint", "missing.safetensors"], "no such checkpoint"),
        (["--onnx", "."], "is a folder"),
    ],
)
def test_cli_bad_input_exits_2(checkpoints, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    argv = ["export", "--checkpoint", str(checkpoints["baseline"]), "--onnx", "out.onnx"]
    assert main([*argv, *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("pedattr export: error:") and message in error
    assert "\n" not in error


def test_cli_needs_an_output(checkpoints, capsys):
    assert main(["export", "--checkpoint", str(checkpoints["alm"])]) == 2
    assert "nothing to write" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("box_centre", ["regressed", "evidence"])
def test_exported_program_matches_at_any_batch(checkpoints, tmp_path, box_centre):
    checkpoint = checkpoints["alm"]
    if box_centre == "evidence":
        checkpoint = tmp_path / "evidence.safetensors"
        model = _build("alm", box_centre="evidence")
        pedattr.save_checkpoint(checkpoint, model, thresholds=[0.3, 0.5, 0.7])
    path = export_program(checkpoint, tmp_path / "alm.pt2")
    extra_files = {"pedattr.json": ""}
    program = torch.export.load(path, extra_files=extra_files)
    metadata = json.loads(extra_files["pedattr.json"])
    assert metadata["attribute_names"] == list(LEARNABLE_ATTRIBUTES)
    assert metadata["thresholds"] == [0.3, 0.5, 0.7]
    model = load_model(checkpoint)
    for batch in (1, 4):
        images = example_images(model, batch, seed=batch)
        with torch.inference_mode():
            outputs = [o.numpy() for o in program.module()(images)]
        _assert_close(outputs, _pytorch_outputs(model, images))


@pytest.mark.slow
def test_opencv_dnn_runs_the_graph(exported, checkpoints, tmp_path):
    """OpenCV DNN: the dynamic graph at batch 1, and a graph with a fixed batch of 3."""
    cv2 = pytest.importorskip("cv2")
    for arch, dynamic_path in exported.items():
        model = load_model(checkpoints[arch])
        fixed_path = export_onnx(model, tmp_path / f"{arch}_b3.onnx", fixed_batch=3)
        assert export_module.describe_onnx(fixed_path)["inputs"][0]["shape"][0] == 3
        names = list(read_onnx_metadata(dynamic_path)["outputs"])
        for path, batch in ((dynamic_path, 1), (fixed_path, 3)):
            _assert_opencv_matches(cv2, path, model, batch, names)


def _assert_opencv_matches(cv2, path: Path, model, batch: int, names: list[str]) -> None:
    net = cv2.dnn.readNetFromONNX(str(path))
    images = example_images(model, batch, seed=batch)
    net.setInput(images.numpy())
    _assert_close(list(net.forward(names)), _pytorch_outputs(model, images))


@pytest.mark.slow
def test_opencv_dnn_runs_the_attention_head_at_batch_1(tmp_path):
    cv2 = pytest.importorskip("cv2")
    model = _build("alm", head="attention")
    path = export_onnx(model, tmp_path / "attention.onnx")
    names = list(read_onnx_metadata(path)["outputs"])
    _assert_opencv_matches(cv2, path, model, 1, names)


@pytest.mark.slow
def test_bninception_alm_exports_with_parity(tmp_path):
    """The paper's network (BN-Inception, 51 attributes) at a small input size."""
    torch.manual_seed(0)
    model = pedattr.build_model("alm", num_attrs=51, input_size=(128, 64))
    path = export_onnx(model, tmp_path / "bninception.onnx")
    assert read_onnx_metadata(path)["parity"]["max_abs_diff"] <= TOLERANCE
