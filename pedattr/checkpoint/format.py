"""pedattr checkpoints: one safetensors file whose header carries the model's meaning.

The file holds the weights as safetensors tensors and, under the metadata key ``pedattr``, a
JSON document: the model configuration (architecture, backbone, attribute names, input size,
normalisation, ALM options), per-attribute thresholds, metrics and the versions that wrote it.
Loading never unpickles anything, so an untrusted checkpoint cannot execute code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from pedattr._version import __version__
from pedattr.models.model import AttributeModel, ModelConfig, build_from_config
from pedattr.utils.io import atomic_write
from pedattr.utils.json import json_safe

FORMAT_NAME = "pedattr-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "pedattr"


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
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: metadata format is {meta.get('format')!r}, not pedattr's")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this pedattr "
            f"understands ({FORMAT_VERSION}); upgrade pedattr"
        )
    return meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint without executing any code from it."""
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
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model configuration ({err})") from err
    return Checkpoint(
        state_dict=state_dict,
        config=config,
        thresholds=meta.get("thresholds"),
        metrics=meta.get("metrics") or {},
        extra=meta.get("extra") or {},
    )


def model_from_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike = "") -> AttributeModel:
    """Build the model a checkpoint describes and load its weights strictly.

    The stored thresholds are attached as ``model.thresholds`` (None means 0.5 each).
    """
    model = build_from_config(checkpoint.config)
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as err:  # missing, unexpected or wrongly shaped tensors
        raise CheckpointError(
            f"{path}: weights do not match the model they describe: {err}"
        ) from err
    model.thresholds = checkpoint.thresholds
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> AttributeModel:
    """Rebuild a model from a pedattr checkpoint, in eval mode, on ``device``.

    The model's ``config`` carries attribute names, input size and normalisation; thresholds
    stored in the checkpoint are attached as ``model.thresholds`` (None means 0.5 each).
    """
    return model_from_checkpoint(load_checkpoint(path), path).to(device).eval()
