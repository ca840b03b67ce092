"""pedattr checkpoints: one safetensors file whose header carries the model's meaning.

The file holds the weights as safetensors tensors and, under the metadata key ``pedattr``, a
JSON document: the model configuration (architecture, backbone, attribute names, input size,
normalisation, ALM options), per-attribute thresholds, metrics and the versions that wrote it.
Loading never unpickles anything, so an untrusted checkpoint cannot execute code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from pedattr._version import __version__
from pedattr.models.config import ModelConfig, option_problem
from pedattr.models.model import AttributeModel, build_from_config
from pedattr.models.onnx_runtime import OnnxModel, is_onnx_path
from pedattr.models.weight_files import state_dict_mismatch
from pedattr.utils.io import atomic_write
from pedattr.utils.json import json_safe

FORMAT_NAME = "pedattr-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "pedattr"
#: Deepest nesting of lists and objects accepted in the metadata: pedattr writes at most a few
#: levels; the bound keeps a crafted header from exhausting the stack (RecursionError).
MAX_METADATA_DEPTH = 32


class CheckpointError(ValueError):
    """A file that is not a usable pedattr checkpoint; the message names the file."""


@dataclass
class Checkpoint:
    """Weights plus meaning, as read from or written to disk."""

    state_dict: dict[str, Tensor]
    config: ModelConfig
    thresholds: list[float] | None = None
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        """The JSON header: configuration, thresholds, metrics (NaN as null) and versions."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": self.config.to_dict(),
            "thresholds": self.thresholds,
            "metrics": json_safe(self.metrics),
            "extra": json_safe(self.extra),
            "pedattr_version": __version__,
            "torch_version": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def save_checkpoint(
    path: str | os.PathLike,
    model: AttributeModel,
    *,
    thresholds: list[float] | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Write ``model`` and its meaning to ``path`` (a ``.safetensors`` file), atomically."""
    if thresholds is not None and len(thresholds) != model.config.num_attrs:
        raise ValueError(f"{len(thresholds)} thresholds for {model.config.num_attrs} attributes")
    checkpoint = Checkpoint(
        state_dict=model.state_dict(),
        config=model.config,
        thresholds=None if thresholds is None else [float(t) for t in thresholds],
        metrics=metrics or {},
        extra=extra or {},
    )
    write_checkpoint(path, checkpoint)


def write_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write a :class:`Checkpoint` as one safetensors file, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in checkpoint.state_dict.items()}
    header = {METADATA_KEY: json.dumps(checkpoint.metadata())}
    write_safetensors(path, tensors, header)


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Tensor], header: dict) -> None:
    """Write a safetensors file atomically (:func:`pedattr.utils.io.atomic_write`).

    The file's bytes are made in memory and written by Python rather than by safetensors' own
    writer, so that a full disk is an ``OSError`` naming ``path`` (safetensors reports it as a
    ``SafetensorError`` with the error code in its text); that costs one file's size of memory.
    """
    data = safetensors_bytes(tensors, metadata=header)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _read_metadata(path: Path, handle) -> dict:
    raw = (handle.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: a safetensors file without pedattr metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: pedattr metadata is not valid JSON ({err})") from err
    except RecursionError:
        raise CheckpointError(f"{path}: pedattr metadata is nested too deeply") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path}: pedattr metadata is a JSON {_json_type(meta)}, not an object"
        )
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: metadata format is {meta.get('format')!r}, not pedattr's")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this pedattr "
            f"understands ({FORMAT_VERSION}); upgrade pedattr"
        )
    return meta


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = ((bool, "boolean"), (int | float, "number"), (str, "string"), (list, "array"))
    if value is None:
        return "null"
    return next((name for kind, name in names if isinstance(value, kind)), "object")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON (an empty list or object is 1, a scalar 0), iteratively."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _check_model_config(data: Any) -> None:
    """Raise ValueError naming the first model configuration entry of the wrong type, size or
    choice, judged by the option's declaration (:mod:`pedattr.models.config`)."""
    if not isinstance(data, dict):
        raise ValueError(f"'model' is a JSON {_json_type(data)}, not an object")
    unknown = sorted(set(data) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
    if "attribute_names" not in data:
        raise ValueError("'model' has no attribute_names")
    for key, value in data.items():
        problem = option_problem(key, value)
        if problem:
            raise ValueError(f"model.{key} {problem}, found {json.dumps(value)[:80]}")


def _check_thresholds(thresholds: Any, num_attrs: int) -> None:
    """None, or one probability in [0, 1] per attribute."""
    if thresholds is None:
        return
    if not isinstance(thresholds, list):
        raise ValueError(f"thresholds is a JSON {_json_type(thresholds)}, not a list")
    if len(thresholds) != num_attrs:
        raise ValueError(f"{len(thresholds)} thresholds for {num_attrs} attributes")
    for index, value in enumerate(thresholds):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"threshold {index} is {json.dumps(value)[:40]}, not a number from 0 to 1"
            )


def _check_documents(meta: dict) -> None:
    """metrics and extra: objects or null; extra's training run, when present, an object."""
    for key in ("metrics", "extra"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise ValueError(f"{key} is a JSON {_json_type(meta[key])}, not an object")
    run = (meta.get("extra") or {}).get("run")
    if run is not None and not isinstance(run, dict):
        raise ValueError(f"extra.run is a JSON {_json_type(run)}, not an object")
    data = (run or {}).get("data")
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"extra.run.data is a JSON {_json_type(data)}, not an object")
    for key in ("pedattr_version", "torch_version", "created"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ValueError(f"{key} is a JSON {_json_type(meta[key])}, not a string")


def validate_metadata(meta: dict) -> ModelConfig:
    """The model configuration of checkpoint metadata, after checking every entry's JSON type,
    nesting and sizes, and the thresholds' count; raises ValueError naming the first problem."""
    depth = _depth(meta)
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"nested {depth} levels deep, more than {MAX_METADATA_DEPTH}")
    _check_model_config(meta.get("model"))
    config = ModelConfig.from_dict(meta["model"])
    _check_thresholds(meta.get("thresholds"), config.num_attrs)
    _check_documents(meta)
    return config


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint without executing any code from it.

    The metadata is validated here, once, for every caller: a wrong JSON type at any key,
    excessive nesting, non-positive or huge sizes, or thresholds that are not one probability
    per attribute raise :class:`CheckpointError` naming the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.name.endswith((".pth", ".pth.tar", ".pt", ".tar")):
        raise CheckpointError(
            f"{path}: a pickled PyTorch file, not a pedattr checkpoint; authors' ALM checkpoints "
            "are converted with `pedattr convert`"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = _read_metadata(path, handle)
            state_dict = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        config = validate_metadata(meta)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid metadata: {err}") from err
    return Checkpoint(
        state_dict=state_dict,
        config=config,
        thresholds=meta.get("thresholds"),
        metrics=meta.get("metrics") or {},
        extra=meta.get("extra") or {},
    )


def non_finite_tensors(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity."""
    return [
        key
        for key, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def check_finite_weights(state_dict: Mapping[str, Tensor], source: str) -> None:
    """Raise CheckpointError naming the first tensor with NaN or infinity (a diverged run)."""
    bad = non_finite_tensors(state_dict)
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{source}: weights hold NaN or infinity in tensor {bad[0]}{more}; the run that "
            "wrote them diverged, use an earlier checkpoint"
        )


def model_from_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike = "") -> AttributeModel:
    """Build the model a checkpoint describes and load its weights strictly.

    The stored thresholds are attached as ``model.thresholds`` (None means 0.5 each).

    Raises:
        CheckpointError: the backbone cannot be built, the tensors do not match the model
            (the message names the first tensor, expected and found shape), or a weight holds
            NaN or infinity.
    """
    try:
        model = build_from_config(checkpoint.config)
    except ValueError as err:  # an unknown backbone, or one without the pyramid's strides
        raise CheckpointError(f"{path}: {err}") from err
    problem = state_dict_mismatch(model.state_dict(), checkpoint.state_dict)
    if problem:
        raise CheckpointError(f"{path}: weights do not match the model they describe: {problem}")
    check_finite_weights(checkpoint.state_dict, str(path))
    model.load_state_dict(checkpoint.state_dict, strict=True)
    model.thresholds = checkpoint.thresholds
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> AttributeModel:
    """Rebuild a model from a pedattr checkpoint, in eval mode, on ``device``.

    The model's ``config`` carries attribute names, input size and normalisation; thresholds
    stored in the checkpoint are attached as ``model.thresholds`` (None means 0.5 each).
    """
    return model_from_checkpoint(load_checkpoint(path), path).to(device).eval()


def load_runner(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> AttributeModel | OnnxModel:
    """What runs a model file: a PyTorch model for a checkpoint (:func:`load_model`), an
    onnxruntime :class:`~pedattr.models.onnx_runtime.OnnxModel` for an exported ``.onnx``.

    Both carry ``config``, ``attribute_names`` and ``thresholds``, and
    :func:`pedattr.evaluation.forward.forward_batch` runs either.

    Raises:
        CheckpointError: the checkpoint cannot be used.
        OnnxModelError: the ``.onnx`` file is not a usable pedattr export.
    """
    if is_onnx_path(path):
        return OnnxModel(path, device=device)
    return load_model(path, device=device)
