"""Export a trained model to ONNX (and to a ``torch.export`` program), with a parity check.

The exported graph takes ``images`` and returns named outputs (see :data:`OUTPUT_MEANINGS`):

* ``images``: [batch, 3, H, W] RGB at the checkpoint's input size, float32 in [0, 1] (or uint8
  in 0..255 with ``input_dtype="uint8"``). The model's normalisation is inside the graph, as it
  is inside the PyTorch model, so callers never apply a mean or std.
* ``probabilities``: [batch, M], the sigmoid of the fused logits (the paper's max voting).
* ALM only: ``boxes`` [batch, levels, M, 4], every attribute's box (s_x, s_y, t_x, t_y) of
  eq. 3 at each pyramid level, as ``ModelOutput.boxes``; and ``branch_probabilities``
  [batch, branches, M], the sigmoid of each separately supervised branch (levels 3b, 4d, 5b,
  then the global branch), which tells which level decided the max vote.

The batch axis is dynamic; the spatial size is fixed, which lets the exporter turn every
shape-derived tensor (the pyramid's resize matrices, the sampler's grid coordinates) into
constants. The batched ALM needs no ``affine_grid`` or ``grid_sample`` (see
:mod:`pedattr.models.alm`), so the graph is plain Conv, MatMul and element-wise operators and
exports at old opsets too (:data:`SUPPORTED_OPSETS`).

The ONNX file's ``metadata_props`` carry what a runtime needs to use it without pedattr:
attribute names, input size and contract, normalisation, thresholds, output meanings, the model
configuration, the pedattr version and the parity measured at export (:func:`read_onnx_metadata`
decodes them).
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pedattr._version import __version__
from pedattr.checkpoint.format import load_model, non_finite_tensors
from pedattr.errors import RunFailed
from pedattr.models.localization import level_sizes
from pedattr.models.model import AttributeModel
from pedattr.models.normalization import NORMALIZATIONS

# The metadata reader lives below evaluation, which runs exported models; importable from here
# as before.
from pedattr.models.onnx_runtime import INPUT_NAME, import_onnx_package
from pedattr.models.onnx_runtime import JSON_METADATA as _JSON_METADATA
from pedattr.models.onnx_runtime import metadata_of as _metadata_of
from pedattr.models.onnx_runtime import read_onnx_metadata as read_onnx_metadata
from pedattr.utils.io import atomic_write

#: Opsets the ONNX export accepts: from 7 (the oldest opset the exporter and onnxruntime
#: support) to 20 (the newest the TorchScript-based exporter writes). Verified with onnxruntime
#: for BN-Inception ALM and baseline (docs/export.md has the table, with OpenCV DNN).
SUPPORTED_OPSETS = range(7, 21)
DEFAULT_OPSET = 17
#: Largest absolute difference to PyTorch that the parity check accepts, on every output.
PARITY_TOLERANCE = 1e-4
#: Batch size of the parity check: different from the default trace batch (2), so that it
#: exercises the dynamic batch axis.
PARITY_BATCH = 3
INPUT_DTYPES = ("float32", "uint8")

#: What each output holds; stored in the ONNX metadata under "outputs".
OUTPUT_MEANINGS = {
    "probabilities": "[batch, M] float32: sigmoid of the fused logits (max or mean over the "
    "branches, as model_config.fusion); attribute m is predicted present when above "
    "thresholds[m]",
    "boxes": "[batch, levels, M, 4] float32, ALM only: (s_x, s_y, t_x, t_y) of eq. 3 per pyramid "
    "level (3b, 4d, 5b) and attribute; the box spans [t_x - s_x, t_x + s_x] x "
    "[t_y - s_y, t_y + s_y] in the level's normalised sampler coordinates (-1..1, convention "
    "of model_config.align_corners)",
    "branch_probabilities": "[batch, branches, M] float32, ALM only: sigmoid of each supervised "
    "branch's logits: levels 3b, 4d, 5b, then the global branch",
}


class ExportError(RunFailed):
    """The exporter failed (an operator at this opset), or the export disagrees with PyTorch."""


class ExportModule(nn.Module):
    """A model with plain tensor outputs in the export's order (see :func:`output_names`)."""

    def __init__(self, model: AttributeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        output = self.model(images)
        probabilities = torch.sigmoid(output.logits)  # [B, M]
        if output.boxes is None:
            return (probabilities,)
        branches = torch.sigmoid(torch.stack(output.branch_logits, dim=1))  # [B, branches, M]
        return probabilities, output.boxes, branches


def output_names(model: AttributeModel) -> tuple[str, ...]:
    """Names of the exported outputs: probabilities, plus boxes and branch outputs for models
    with boxes (ALM)."""
    if model.config.has_boxes:
        return ("probabilities", "boxes", "branch_probabilities")
    return ("probabilities",)


def _import(name: str):
    """Import onnx or onnxruntime, or say how to install them."""
    return import_onnx_package(name, ExportError)


def _load(model_or_checkpoint: AttributeModel | str | os.PathLike) -> AttributeModel:
    """A float32 CPU copy of the model in eval mode; the caller's model is left untouched.

    Raises:
        ValueError: a weight holds NaN or infinity (CheckpointError for a checkpoint path,
            which :func:`~pedattr.checkpoint.format.load_model` refuses).
    """
    if isinstance(model_or_checkpoint, AttributeModel):
        bad = non_finite_tensors(model_or_checkpoint.state_dict())
        if bad:
            raise ValueError(f"the model's weights hold NaN or infinity in tensor {bad[0]}")
        thresholds = getattr(model_or_checkpoint, "thresholds", None)
        model = copy.deepcopy(model_or_checkpoint).float().cpu().eval()
        model.thresholds = thresholds
        return model
    if isinstance(model_or_checkpoint, str | os.PathLike):
        return load_model(model_or_checkpoint).float()
    raise TypeError(
        f"expected a pedattr model or a checkpoint path, got {type(model_or_checkpoint).__name__}"
    )


def _check_output_path(path: Path) -> None:
    """Fail before the (slow) export when ``path`` cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a file to write")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise NotADirectoryError(f"{path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: cannot write in {parent}")


def _check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"opset {opset} is not supported; choose one from {SUPPORTED_OPSETS.start} to "
            f"{SUPPORTED_OPSETS.stop - 1}"
        )


def _check_input_dtype(input_dtype: str) -> None:
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}")


def example_images(
    model: AttributeModel, batch: int, input_dtype: str = "float32", seed: int = 0
) -> Tensor:
    """Random images following the input contract, [batch, 3, H, W] at the model's input size."""
    height, width = model.config.input_size
    generator = torch.Generator().manual_seed(seed)
    if input_dtype == "uint8":
        return torch.randint(0, 256, (batch, 3, height, width), generator=generator).to(torch.uint8)
    return torch.rand(batch, 3, height, width, generator=generator)


def metadata_document(
    model: AttributeModel,
    input_dtype: str = "float32",
    parity: Mapping[str, Any] | None = None,
    fixed_batch: int | None = None,
) -> dict[str, Any]:
    """What an exported file records about its model: attribute names, input contract,
    normalisation, thresholds (0.5 each when the checkpoint has none), output meanings, the
    model configuration, the pedattr version and, when measured, the parity."""
    config = model.config
    height, width = config.input_size
    thresholds = getattr(model, "thresholds", None) or [0.5] * config.num_attrs
    if len(thresholds) != config.num_attrs:  # a runtime would pair them with the wrong names
        raise ValueError(
            f"the model carries {len(thresholds)} thresholds for {config.num_attrs} attributes"
        )
    value_range = [0, 255] if input_dtype == "uint8" else [0.0, 1.0]
    document: dict[str, Any] = {
        "pedattr_version": __version__,
        "arch": config.arch,
        "backbone": config.backbone,
        "attribute_names": list(config.attribute_names),
        "input_size": [height, width],
        "input": {
            "name": INPUT_NAME,
            "shape": [fixed_batch or "batch", 3, height, width],
            "dtype": input_dtype,
            "channels": "RGB",
            "range": value_range,
            "layout": "NCHW",
        },
        "normalization": {
            "name": config.normalization,
            **asdict(NORMALIZATIONS[config.normalization]),
            "applied": "inside the graph: feed RGB in the input range, nothing else",
        },
        "thresholds": [float(t) for t in thresholds],
        "outputs": {name: OUTPUT_MEANINGS[name] for name in output_names(model)},
        "model_config": config.to_dict(),
    }
    if config.has_boxes:  # a runtime maps boxes to pixels with them (no model to measure)
        document["level_sizes"] = [list(size) for size in level_sizes(model, (height, width))]
    if parity is not None:
        document["parity"] = dict(parity)
    return document


def onnx_metadata(document: Mapping[str, Any]) -> dict[str, str]:
    """``metadata_props`` strings: JSON for structured values, plain text for the others."""
    return {
        key: json.dumps(value) if key in _JSON_METADATA else str(value)
        for key, value in document.items()
    }


def _trace_to_onnx(
    module: ExportModule, example: Tensor, names: tuple[str, ...], opset: int, dynamic: bool
) -> bytes:
    """Serialised ONNX of ``module``, with a dynamic batch axis unless ``dynamic`` is False.

    The TorchScript-based exporter (dynamo=False) is used on purpose: it writes opsets 7 to 20,
    which TensorRT and OpenCV DNN need, while the dynamo exporter targets opset 18 and newer
    and needs the onnxscript package. For this model both see the same operators.
    """
    buffer = io.BytesIO()
    dynamic_axes = {name: {0: "batch"} for name in (INPUT_NAME, *names)} if dynamic else None
    with warnings.catch_warnings():
        # Expected and harmless here: the spatial size is fixed by design (TracerWarning about
        # Python ints), and the legacy exporter is chosen deliberately (DeprecationWarning).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # Opsets 7 and 8 predate constant folding and initialisers outside the inputs; the
        # exporter says so on every export, and docs/export.md says it once.
        warnings.filterwarnings("ignore", "Constant folding - unsupported opset")
        warnings.filterwarnings("ignore", "Setting 'keep_initializers_as_inputs=False'")
        try:
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(names),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        except Exception as err:  # the exporter raises several unrelated types
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise ExportError(
                f"ONNX export at opset {opset} failed: {first_line} (try a newer opset)"
            ) from err
    return buffer.getvalue()


def _declare_output_shapes(proto, shapes: list[tuple[int, ...]], dynamic: bool) -> None:
    """Write the outputs' sizes into the graph (the exporter leaves some symbolic), so that
    runtimes and viewers see [batch, M], [batch, levels, M, 4], ...; only the batch is free."""
    for output, shape in zip(proto.graph.output, shapes, strict=True):
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for i, size in enumerate(shape):
            if i == 0 and dynamic:
                dims.add().dim_param = "batch"
            else:
                dims.add().dim_value = size


def onnxruntime_outputs(model_bytes: bytes | str | os.PathLike, images: Tensor) -> list:
    """Run an ONNX model on CPU with onnxruntime; numpy outputs in the graph's order."""
    ort = _import("onnxruntime")
    source = model_bytes if isinstance(model_bytes, bytes) else str(model_bytes)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not news here
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: images.numpy()})


def max_abs_difference(
    outputs: list, expected: tuple[Tensor, ...], names: tuple[str, ...] | None = None
) -> float:
    """Largest absolute difference over all outputs (shapes must match).

    Raises:
        ExportError: a shape differs, or either side holds NaN or infinity anywhere: a
            difference taken over such values says nothing (Python's ``max`` even skips NaN).
    """
    worst = 0.0
    names = names or tuple(f"output {i}" for i in range(len(expected)))
    for name, got, want in zip(names, outputs, expected, strict=True):
        got = torch.as_tensor(got)
        if tuple(got.shape) != tuple(want.shape):
            raise ExportError(f"{name}: shape {tuple(got.shape)} differs from {tuple(want.shape)}")
        for side, values in (("the export", got), ("PyTorch", want)):
            if not bool(torch.isfinite(values).all()):
                raise ExportError(
                    f"{name} from {side} holds NaN or infinity, so parity cannot be checked"
                )
        worst = max(worst, (got.float() - want.float()).abs().max().item())
    return worst


def check_onnx_parity(
    model_bytes: bytes, module: ExportModule, input_dtype: str, *, batch: int, tolerance: float
) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch on random images (other than the traced ones).

    Raises:
        ExportError: an output differs by more than ``tolerance``, or either side holds NaN
            or infinity.
    """
    ort = _import("onnxruntime")
    images = example_images(module.model, batch, input_dtype, seed=1)
    with torch.inference_mode():
        expected = module(images)
    outputs = onnxruntime_outputs(model_bytes, images)
    difference = max_abs_difference(outputs, expected, output_names(module.model))
    if not difference <= tolerance:  # also catches NaN
        raise ExportError(
            f"onnxruntime output differs from PyTorch by {difference:.3g} (tolerance "
            f"{tolerance:g}) at batch {batch}; the exported graph is not faithful"
        )
    return {
        "runtime": f"onnxruntime {ort.__version__}",
        "batch": batch,
        "max_abs_diff": difference,
        "tolerance": tolerance,
    }


def export_onnx(
    model_or_checkpoint: AttributeModel | str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    batch_size_hint: int = 2,
    check: bool = True,
    input_dtype: str = "float32",
    fixed_batch: int | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> Path:
    """Export a model or a checkpoint to an ONNX file with a dynamic batch axis.

    Args:
        model_or_checkpoint: a pedattr model, or the path of a pedattr checkpoint.
        out_path: the ``.onnx`` file to write (atomically).
        opset: ONNX opset, one of :data:`SUPPORTED_OPSETS`.
        batch_size_hint: batch size of the example traced; any batch size runs afterwards.
        check: run ``onnx.checker`` and compare onnxruntime with PyTorch (at batch 3, or at
            ``fixed_batch``) before writing; the difference is stored in the metadata under
            "parity".
        input_dtype: "float32" (RGB in [0, 1]) or "uint8" (RGB in 0..255, converted inside).
        fixed_batch: a batch size to fix instead of the dynamic batch axis (OpenCV DNN runs a
            dynamic graph only at batch 1; see docs/export.md).
        tolerance: largest absolute output difference the parity check accepts.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ValueError: an unsupported opset or input dtype, or an unusable checkpoint.
        ExportError: the exporter failed at this opset, or the parity check failed.
    """
    onnx = _import("onnx")

    out_path = Path(out_path)
    _check_opset(opset)
    _check_input_dtype(input_dtype)
    for name, value in (("batch_size_hint", batch_size_hint), ("fixed_batch", fixed_batch)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    _check_output_path(out_path)
    model = _load(model_or_checkpoint)
    module = ExportModule(model).eval()
    names = output_names(model)
    dynamic = fixed_batch is None
    example = example_images(model, batch_size_hint if dynamic else fixed_batch, input_dtype)
    model_bytes = _trace_to_onnx(module, example, names, opset, dynamic)
    with torch.inference_mode():
        output_shapes = [tuple(output.shape) for output in module(example)]
    proto = onnx.load_from_string(model_bytes)
    parity = None
    if check:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as err:
            raise ExportError(f"the exported graph is not valid ONNX: {err}") from err
        batch = PARITY_BATCH if dynamic else fixed_batch
        parity = check_onnx_parity(
            model_bytes, module, input_dtype, batch=batch, tolerance=tolerance
        )
    _declare_output_shapes(proto, output_shapes, dynamic)
    proto.doc_string = (
        f"pedattr {model.config.arch} ({model.config.backbone}), "
        f"{model.config.num_attrs} attributes"
    )
    document = metadata_document(model, input_dtype, parity, fixed_batch)
    onnx.helper.set_model_props(proto, onnx_metadata(document))
    atomic_write(out_path, lambda tmp: onnx.save(proto, tmp))
    return out_path


def describe_onnx(path: str | os.PathLike) -> dict[str, Any]:
    """Inputs and outputs (name, element type, shape with "batch" for the dynamic axis), the
    opset, the file size and the pedattr metadata of an ONNX file."""
    onnx = _import("onnx")

    proto = onnx.load(str(path), load_external_data=False)

    initializers = {tensor.name for tensor in proto.graph.initializer}

    def values(infos) -> list[dict[str, Any]]:
        described = []
        for info in infos:
            if info.name in initializers:  # opsets 7 and 8 list the weights as inputs too
                continue
            tensor = info.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            described.append({"name": info.name, "dtype": dtype, "shape": shape})
        return described

    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "path": str(path),
        "opset": opset,
        "size_bytes": Path(path).stat().st_size,
        "inputs": values(proto.graph.input),
        "outputs": values(proto.graph.output),
        "metadata": _metadata_of(proto),
    }


def format_onnx_description(description: Mapping[str, Any]) -> str:
    """A few lines for the terminal: the file, its inputs and outputs, and the parity."""
    size_mb = description["size_bytes"] / 2**20
    lines = [f"wrote {description['path']} ({size_mb:.1f} MB, ONNX opset {description['opset']})"]
    width = max(len(v["name"]) for v in (*description["inputs"], *description["outputs"]))
    for kind in ("inputs", "outputs"):
        for value in description[kind]:
            shape = ", ".join(str(d) for d in value["shape"])
            lines.append(f"  {kind[:-1]:<7}{value['name']:<{width + 2}}{value['dtype']} [{shape}]")
    parity = description["metadata"].get("parity")
    if parity is None:
        lines.append("parity not checked")
    else:
        lines.append(
            f"{parity['runtime']} vs PyTorch at batch {parity['batch']}: max abs difference "
            f"{parity['max_abs_diff']:.2e} (tolerance {parity['tolerance']:.0e})"
        )
    return "\n".join(lines)


def export_program(
    model_or_checkpoint: AttributeModel | str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    batch_size_hint: int = 2,
    check: bool = True,
    tolerance: float = PARITY_TOLERANCE,
) -> Path:
    """Export to a ``torch.export`` program (``.pt2``) with a dynamic batch axis.

    The program has the same inputs and outputs as the ONNX export (float32 images in [0, 1]);
    ``torch.export.load(path).module()(images)`` returns the output tuple. The metadata
    document (as in ONNX, JSON) is stored as the extra file ``pedattr.json``. ``torch.export``
    replaces TorchScript (``torch.jit.trace`` is deprecated); a program loads in the same or a
    newer PyTorch.

    Raises:
        ExportError: torch.export failed, or the loaded program differs from the model by more
            than ``tolerance`` at batch 3.
    """
    out_path = Path(out_path)
    _check_output_path(out_path)
    model = _load(model_or_checkpoint)
    module = ExportModule(model).eval()
    example = example_images(model, batch_size_hint)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as err:  # torch.export raises several unrelated types
        raise ExportError(f"torch.export failed: {str(err).strip().splitlines()[0]}") from err
    extra_files = {"pedattr.json": json.dumps(metadata_document(model))}
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files=extra_files)
    if check:
        buffer.seek(0)
        loaded = torch.export.load(buffer).module()
        images = example_images(model, PARITY_BATCH, seed=1)
        with torch.inference_mode():
            expected = module(images)
            difference = max_abs_difference(list(loaded(images)), expected, output_names(model))
        if not difference <= tolerance:
            raise ExportError(
                f"the exported program differs from the model by {difference:.3g} "
                f"(tolerance {tolerance:g})"
            )
    atomic_write(out_path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return out_path
