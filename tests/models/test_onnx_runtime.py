"""OnnxModel: an exported model run by onnxruntime gives what the PyTorch model gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import pedattr
from pedattr.checkpoint.format import load_model, load_runner
from pedattr.evaluation.evaluate import checkpoint_report
from pedattr.evaluation.forward import forward_batch
from pedattr.inference.export import PARITY_TOLERANCE, example_images, export_onnx
from pedattr.inference.predictor import Predictor
from pedattr.models.localization import level_sizes
from pedattr.models.onnx_runtime import OnnxModel, OnnxModelError
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny ALM (calibrated-looking thresholds) and baseline checkpoints and their exports."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for arch in ("alm", "baseline"):
        torch.manual_seed(0)
        model = pedattr.build_model(arch, attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
        paths[arch] = folder / f"{arch}.safetensors"
        thresholds = [0.3, 0.5, 0.7] if arch == "alm" else None
        pedattr.save_checkpoint(paths[arch], model, thresholds=thresholds)
        paths[f"{arch}.onnx"] = export_onnx(paths[arch], folder / f"{arch}.onnx")
    return paths


def _images(batch: int = 5) -> torch.Tensor:
    height, width = TINY_MODEL["input_size"]
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator).to(torch.uint8)


def _assert_same_outputs(got, want) -> None:
    np.testing.assert_allclose(got.probs, want.probs, atol=PARITY_TOLERANCE, rtol=0)
    if want.boxes is None:
        assert got.boxes is None
    else:
        np.testing.assert_allclose(got.boxes, want.boxes, atol=PARITY_TOLERANCE, rtol=0)
    np.testing.assert_array_equal(got.winners, want.winners)


@pytest.mark.parametrize("arch", ["alm", "baseline"])
def test_forward_batch_matches_the_pytorch_model(files, arch):
    images = _images()
    want = forward_batch(load_model(files[arch]), images)
    got = forward_batch(OnnxModel(files[f"{arch}.onnx"]), images)
    assert got.peaks is None
    _assert_same_outputs(got, want)


def test_metadata_describes_the_model(files):
    model = load_model(files["alm"])
    runner = OnnxModel(files["alm.onnx"])
    assert runner.config == model.config
    assert runner.attribute_names == LEARNABLE_ATTRIBUTES
    assert runner.thresholds == pytest.approx([0.3, 0.5, 0.7])
    assert runner.level_sizes() == level_sizes(model, model.config.input_size)
    assert level_sizes(runner, model.config.input_size) == runner.level_sizes()
    assert runner.quantization is None and not runner.training


def test_export_without_level_sizes_measures_them(files, tmp_path):
    """Files exported before the level sizes were recorded still map boxes to pixels."""
    proto = onnx.load(str(files["alm.onnx"]))
    kept = [prop for prop in proto.metadata_props if prop.key != "level_sizes"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    older = tmp_path / "older.onnx"
    onnx.save(proto, str(older))
    assert "level_sizes" not in OnnxModel(older).metadata
    assert OnnxModel(older).level_sizes() == OnnxModel(files["alm.onnx"]).level_sizes()


def test_load_runner_picks_by_suffix(files):
    assert isinstance(load_runner(files["alm.onnx"]), OnnxModel)
    assert isinstance(load_runner(files["alm"]), pedattr.models.model.AttributeModel)


@pytest.mark.slow  # two exports
@pytest.mark.parametrize("input_dtype", ["float32", "uint8"])
def test_fixed_batch_and_uint8_graphs_run_any_batch(files, tmp_path, input_dtype):
    """A fixed-batch graph runs 5 images as chunks of 2 (the last padded)."""
    path = export_onnx(
        files["alm"], tmp_path / "fixed.onnx", fixed_batch=2, input_dtype=input_dtype
    )
    runner = OnnxModel(path)
    assert runner.fixed_batch == 2
    images = _images(5)
    _assert_same_outputs(
        forward_batch(runner, images), forward_batch(load_model(files["alm"]), images)
    )


def test_run_takes_float_images_like_the_model(files):
    images = example_images(load_model(files["alm"]), 2)  # float in [0, 1]
    runner = OnnxModel(files["alm.onnx"])
    with torch.inference_mode():
        want = torch.sigmoid(load_model(files["alm"])(images).logits).numpy()
    np.testing.assert_allclose(runner.run(images)["probabilities"], want, atol=PARITY_TOLERANCE)


def test_wrong_image_size_is_refused(files):
    with pytest.raises(ValueError, match=r"expects images \[batch, 3, 64, 32\]"):
        OnnxModel(files["alm.onnx"]).run(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_predictor_on_onnx_predicts_as_on_the_checkpoint(files, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k, size in enumerate([(90, 40), (64, 32), (200, 70)]):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
    want = Predictor.from_checkpoint(files["alm"], device="cpu").predict(paths)
    got = Predictor.from_checkpoint(files["alm.onnx"], device="cpu").predict(paths)
    for g, w in zip(got, want, strict=True):
        assert g.attributes == w.attributes and g.winning_level == w.winning_level
        assert g.peaks == {}
        for name in LEARNABLE_ATTRIBUTES:
            assert g.probabilities[name] == pytest.approx(w.probabilities[name], abs=1e-4)
            for level, box in w.boxes[name].items():
                # Boxes are in pixels of images up to 200 px: the tolerance scales with them.
                np.testing.assert_allclose(g.boxes[name][level], box, atol=200 * 1e-4)


def test_eval_on_onnx_equals_eval_on_the_checkpoint(files, data):
    want = checkpoint_report(files["alm"], data).to_dict()
    got = checkpoint_report(files["alm.onnx"], data).to_dict()
    assert got["checkpoint"].endswith("alm.onnx") and got["num_images"] == want["num_images"]
    assert got["metrics"]["mA"] == pytest.approx(want["metrics"]["mA"], abs=1e-9)
    calibrated = checkpoint_report(files["alm.onnx"], data, thresholds="calibrated")
    assert calibrated.thresholds == pytest.approx([0.3, 0.5, 0.7])


def test_not_a_pedattr_export_is_refused(tmp_path):
    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(plain))
    with pytest.raises(OnnxModelError, match="without pedattr's metadata"):
        OnnxModel(plain)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(OnnxModelError, match="garbage.onnx: not a readable ONNX file"):
        OnnxModel(garbage)
    with pytest.raises(OnnxModelError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")
