"""INT8 export: a statically quantised ONNX model for CPUs (``pedattr export --int8``).

The float export (:func:`pedattr.inference.export.export_onnx`) is quantised with onnxruntime's
static quantisation in the QDQ format: weights per output channel as int8, activations as uint8
(the fast pair on x86 CPUs without VNNI; int8 activations ran 1.7x slower on the AVX2 CPU
measured in docs/export.md), their ranges calibrated by min-max on images of the prepared
dataset's validation split, which never takes part in training. The graph is first
pre-processed as onnxruntime recommends
(:func:`onnxruntime.quantization.shape_inference.quant_pre_process`: shape inference and
graph optimisation).

What stays float (``nodes_to_exclude``; recorded in the file's metadata under
"quantization"), measured on the demo's model and data (docs/export.md):

* the first convolution (3 input channels), unless ``quantize_first_conv``: quantising it cost
  0.2 to 0.4 points of test mA on the first demo model measured, and on a CPU without VNNI its
  int8 kernel is no faster than the float one (with VNNI it is, and BN-Inception, whose first
  convolution is large, gains most);
* everything after the feature pyramid: the ALM heads (channel attention, the box regressor
  and its sigmoids, the sampler's matrix products, the classifiers), the global branch's
  classifier and the fusion. Their tensors are small, so quantising them saves no time (at
  batch 1 the quantise/dequantise pairs made them slower), and they decide the boxes and
  probabilities directly (quantising them cost 0.4 to 0.5 points of mA).

The backbone after its first convolution and the pyramid's lateral convolutions, where the
time goes, run in int8.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pedattr.checkpoint.format import load_checkpoint, model_from_checkpoint
from pedattr.data.dataset import build_loader
from pedattr.data.description import DatasetDescription, load_description
from pedattr.evaluation.evaluate import check_attributes, with_training_split
from pedattr.inference.export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ExportError,
    _check_output_path,
    _import,
    _load,
    export_onnx,
    onnx_metadata,
)
from pedattr.models.model import AttributeModel
from pedattr.models.onnx_runtime import OnnxModel, metadata_of
from pedattr.utils.io import atomic_write

#: Images of the validation split used for calibration, unless told otherwise.
DEFAULT_CALIBRATION_IMAGES = 256
#: Fewest calibration images accepted: min-max ranges from a handful of images clip the rest.
MIN_CALIBRATION_IMAGES = 8
#: Images per calibration batch.
CALIBRATION_BATCH = 16
#: Largest mean absolute difference between the INT8 and the float32 model's probabilities on
#: validation images that the export accepts. Single probabilities near the decision boundary
#: move a lot (on the demo's model the largest of 64 x 23 differences was 0.45 for a mean of
#: 0.006, and 0.5 % of the decisions at 0.5 changed), so the check bounds the mean: it catches a
#: broken quantisation (ranges calibrated on other images, a saturated layer) while accuracy
#: is judged by mA (``pedattr eval`` on the file; docs/export.md).
INT8_TOLERANCE = 0.05
#: Node-name prefixes of the parts that run in int8 (the exporter names nodes after modules).
QUANTISED_PARTS = ("/model/backbone/", "/model/pyramid/")

#: Why each group of nodes stays float; stored in the metadata with the nodes themselves.
FLOAT_REASONS = {
    "first_conv": "the first convolution (3 input channels): int8 costs accuracy, and is no "
    "faster on CPUs without VNNI",
    "heads": "after the feature pyramid (ALM heads: channel attention, box regressor, sampler, "
    "classifiers; the global classifier; the fusion and its sigmoids): small tensors, no time "
    "saved, and they set the boxes and probabilities directly",
}


@dataclass
class Int8Result:
    """What :func:`export_int8` wrote and measured."""

    path: Path
    calibration_images: int
    float_nodes: dict[str, list[str]]
    quantized_nodes: int
    parity: dict[str, Any]


def calibration_description(
    data: DatasetDescription | str | os.PathLike,
    model: AttributeModel,
    *,
    run: dict | None = None,
    source: str = "the model",
) -> DatasetDescription:
    """The prepared dataset whose validation split calibrates ``model``, checked.

    Raises:
        FileNotFoundError: ``data`` is not a prepared dataset folder.
        AttributeMismatchError: its attributes are not the model's, in the model's order.
        ValueError: it has no validation split (and the checkpoint records none held out).
    """
    description = load_description(data)
    check_attributes(
        list(model.attribute_names),
        description.attribute_names,
        model_source=source,
        data_source=str(description.root),
    )
    try:
        description = with_training_split(description, "val", run, source)
    except ValueError:
        raise ValueError(
            f"{description.root} has no validation split to calibrate on, and {source} records "
            "none held out by `pedattr train`; prepare a dataset with a validation split"
        ) from None
    if not (description.splits == "val").any():
        raise ValueError(f"{description.root}: its validation split is empty")
    return description


class _CalibrationImages:
    """onnxruntime's CalibrationDataReader over the validation split, as the graph's input."""

    def __init__(
        self, description: DatasetDescription, model: AttributeModel, count: int, dtype: str
    ) -> None:
        self._batches = self._read(description, model, count, dtype)
        self.count = 0

    def _read(
        self, description: DatasetDescription, model: AttributeModel, count: int, dtype: str
    ) -> Iterator[dict[str, np.ndarray]]:
        loader = build_loader(
            description,
            "val",
            batch_size=CALIBRATION_BATCH,
            train=False,
            input_size=tuple(model.config.input_size),
        )
        total = min(count, int((description.splits == "val").sum()))
        with tqdm(total=total, desc="calibration", unit="img", leave=False) as bar:
            for batch in loader:
                images = batch.images[: count - self.count].numpy()  # uint8 [B, 3, H, W]
                if not len(images):
                    continue
                self.count += len(images)
                bar.update(len(images))
                pixels = images if dtype == "uint8" else images.astype(np.float32) / 255
                yield {INPUT_NAME: pixels}
                if self.count >= count:
                    return

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def float_nodes(proto: Any, *, quantize_first_conv: bool = False) -> dict[str, list[str]]:
    """The nodes of a (pre-processed) float graph that stay float, by reason
    (:data:`FLOAT_REASONS`): the first Conv (unless ``quantize_first_conv``), and every node
    outside :data:`QUANTISED_PARTS` that is not the input's normalisation (which only feeds the
    first convolution)."""
    convs = [node.name for node in proto.graph.node if node.op_type == "Conv"]
    first = convs[:1]
    heads = [
        node.name
        for node in proto.graph.node
        if not node.name.startswith(QUANTISED_PARTS) and node.name not in first
    ]
    if quantize_first_conv:
        return {"heads": heads}
    return {"first_conv": first, "heads": heads}


def _pre_process(float_path: Path, out_path: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(float_path), str(out_path), skip_symbolic_shape=False)


def _quantize(
    pre_path: Path, out_path: Path, reader: _CalibrationImages, excluded: list[str]
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre_path),
        str(out_path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
    )


def _validation_images(
    description: DatasetDescription, model: AttributeModel, count: int
) -> torch.Tensor:
    """Up to ``count`` uint8 images of the validation split, for the parity check."""
    loader = build_loader(
        description,
        "val",
        batch_size=count,
        train=False,
        input_size=tuple(model.config.input_size),
    )
    return next(iter(loader)).images


def int8_parity(
    int8_path: Path, float_path: Path, images: torch.Tensor, tolerance: float
) -> dict[str, Any]:
    """The INT8 model's probabilities against the float model's on ``images``: the mean and
    largest absolute difference, and the share of decisions at 0.5 that change.

    Raises:
        ExportError: a mean difference above ``tolerance``, or NaN anywhere.
    """
    ort = _import("onnxruntime")
    quantised = OnnxModel(int8_path).run(images)["probabilities"].astype(np.float64)
    reference = OnnxModel(float_path).run(images)["probabilities"].astype(np.float64)
    difference = np.abs(quantised - reference)
    mean = float(difference.mean())
    if not mean <= tolerance:  # also catches NaN
        raise ExportError(
            f"the INT8 model's probabilities differ from float32 by {mean:.3g} on average over "
            f"{len(images)} validation images (tolerance {tolerance:g}); the quantisation is "
            "not usable"
        )
    return {
        "runtime": f"onnxruntime {ort.__version__}",
        "reference": "float32 ONNX",
        "images": f"{len(images)} of the validation split",
        "batch": len(images),
        "mean_abs_diff": mean,
        "max_abs_diff": float(difference.max()),
        "decisions_changed": float(((quantised > 0.5) != (reference > 0.5)).mean()),
        "tolerance": tolerance,
        "tolerance_applies_to": "mean_abs_diff",
    }


def _load_with_run(
    model_or_checkpoint: AttributeModel | str | os.PathLike,
) -> tuple[AttributeModel, dict | None, str]:
    """A float32 CPU model, the training run its checkpoint records, and its name."""
    if isinstance(model_or_checkpoint, str | os.PathLike):
        stored = load_checkpoint(model_or_checkpoint)
        model = model_from_checkpoint(stored, model_or_checkpoint).float().eval()
        return model, stored.extra.get("run"), os.fspath(model_or_checkpoint)
    return _load(model_or_checkpoint), None, "the model"


def export_int8(
    model_or_checkpoint: AttributeModel | str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    calibration: DatasetDescription | str | os.PathLike,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    opset: int = DEFAULT_OPSET,
    input_dtype: str = "float32",
    check: bool = True,
    tolerance: float = INT8_TOLERANCE,
    quantize_first_conv: bool = False,
) -> Int8Result:
    """Export a model to a statically quantised (INT8, QDQ) ONNX file.

    Args:
        model_or_checkpoint: a pedattr model, or a checkpoint path.
        out_path: the ``.onnx`` file to write (atomically).
        calibration: a prepared dataset with the model's attributes; up to
            ``calibration_images`` images of its validation split calibrate the activations'
            ranges (a checkpoint's run that held validation images out of a dataset without
            one, RAP v1, gets the same images again).
        calibration_images: at most this many calibration images (at least
            :data:`MIN_CALIBRATION_IMAGES`).
        opset: ONNX opset of the float export (13 or newer: per-channel QDQ needs it).
        input_dtype: "float32" or "uint8", as for the float export.
        check: check the float export against PyTorch and the INT8 model against the float
            one on validation images (stored in the metadata under "parity").
        tolerance: largest absolute probability difference to float32 the check accepts.
        quantize_first_conv: quantise the first convolution too (faster on CPUs with VNNI;
            check the accuracy with ``pedattr eval``).

    Raises:
        FileNotFoundError: ``calibration`` is not a prepared dataset.
        AttributeMismatchError: its attributes differ from the model's.
        ValueError: no validation split, too few calibration images, an opset below 13.
        ExportError: the float export or the INT8 check failed.
    """
    onnx = _import("onnx")
    _import("onnxruntime")
    out_path = Path(out_path)
    if calibration_images < MIN_CALIBRATION_IMAGES:
        raise ValueError(
            f"--calibration-images must be at least {MIN_CALIBRATION_IMAGES}, got "
            f"{calibration_images}"
        )
    if opset < 13:
        raise ValueError(f"INT8 export needs opset 13 or newer (per-channel QDQ), got {opset}")
    _check_output_path(out_path)
    model, run, source = _load_with_run(model_or_checkpoint)
    description = calibration_description(calibration, model, run=run, source=source)
    with tempfile.TemporaryDirectory(prefix="pedattr-int8-") as folder:
        work = Path(folder)
        float_path = export_onnx(
            model, work / "float.onnx", opset=opset, check=check, input_dtype=input_dtype
        )
        float_document = metadata_of(onnx.load(str(float_path)))
        _pre_process(float_path, work / "pre.onnx")
        kept = float_nodes(
            onnx.load(str(work / "pre.onnx")), quantize_first_conv=quantize_first_conv
        )
        excluded = [name for names in kept.values() for name in names]
        reader = _CalibrationImages(description, model, calibration_images, input_dtype)
        _quantize(work / "pre.onnx", work / "int8.onnx", reader, excluded)
        if reader.count < MIN_CALIBRATION_IMAGES:
            raise ValueError(
                f"{description.root}: only {reader.count} readable validation images, fewer "
                f"than the {MIN_CALIBRATION_IMAGES} calibration needs"
            )
        parity = None
        if check:
            images = _validation_images(description, model, min(64, reader.count))
            parity = int8_parity(work / "int8.onnx", float_path, images, tolerance)
        proto = onnx.load(str(work / "int8.onnx"))
    quantized = sum(1 for node in proto.graph.node if node.op_type == "QuantizeLinear")
    document = dict(float_document)
    document.pop("parity", None)
    if parity is not None:
        document["parity"] = parity
    document["quantization"] = _quantization_document(
        description, reader.count, kept, calibration_images
    )
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, onnx_metadata(document))
    proto.doc_string = f"{proto.doc_string} (INT8, QDQ)".strip()
    atomic_write(out_path, lambda tmp: onnx.save(proto, tmp))
    return Int8Result(out_path, reader.count, kept, quantized, parity or {})


def _quantization_document(
    description: DatasetDescription, count: int, kept: dict[str, list[str]], cap: int
) -> dict[str, Any]:
    """The metadata entry "quantization": how the file was quantised and what stayed float."""
    ort = _import("onnxruntime")
    return {
        "tool": f"onnxruntime.quantization {ort.__version__} (quantize_static)",
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, asymmetric, per tensor",
        "calibration": {
            "method": "MinMax",
            "data": str(description.root),
            "split": "val",
            "images": count,
            "max_images": cap,
        },
        "float_nodes": {
            group: {"reason": FLOAT_REASONS[group], "nodes": names} for group, names in kept.items()
        },
    }


def format_int8_result(result: Int8Result) -> str:
    """A few lines for the terminal: calibration and what stayed float."""
    kept = ", ".join(f"{group} ({len(nodes)} nodes)" for group, nodes in result.float_nodes.items())
    return (
        f"INT8 (QDQ, per-channel int8 weights, uint8 activations): calibrated on "
        f"{result.calibration_images} validation images; {result.quantized_nodes} tensors "
        f"quantised; kept float: {kept}\nINT8 vs float32 on {parity_text(result.parity)}"
    )


def parity_text(parity: dict[str, Any]) -> str:
    """The INT8 check in words (empty when not checked)."""
    if not parity:
        return "nothing: not checked"
    return (
        f"{parity['images']}: mean abs difference of probabilities {parity['mean_abs_diff']:.4f} "
        f"(tolerance {parity['tolerance']:g}), largest {parity['max_abs_diff']:.3f}, "
        f"{100 * parity['decisions_changed']:.2f} % of decisions at 0.5 changed"
    )
