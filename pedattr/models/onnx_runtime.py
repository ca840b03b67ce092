"""An exported ONNX model run by onnxruntime, usable wherever a pedattr model is evaluated.

:class:`OnnxModel` loads a ``.onnx`` file that ``pedattr export`` wrote, reads its metadata
(attribute names, thresholds, input size and contract, normalisation, the model
configuration) and runs batches of uint8 RGB images at the model's input size, the images
:func:`pedattr.evaluation.forward.forward_batch` feeds a PyTorch model. It returns the
exported outputs (fused probabilities, and for ALM the boxes and each branch's probabilities)
as numpy arrays; ``forward_batch`` turns them into the same ``BatchOutput`` a PyTorch model
gives, so ``pedattr eval``, :class:`~pedattr.inference.predictor.Predictor` and a service run an
exported model, float32 or INT8, with the code that runs a checkpoint.

What an exported graph does not carry: the activation maps of the ALMs (so no activation
peaks), and per-image part boxes for a rigid-parts model (the export uses fixed proportions).

The metadata helpers live here, below the exporter (:mod:`pedattr.inference.export`), so that
evaluation can read an exported file; the exporter re-exports them.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pedattr.models.config import ModelConfig

#: The file suffix that means an exported ONNX model rather than a checkpoint.
ONNX_SUFFIX = ".onnx"
#: Name of the graph's input (as :mod:`pedattr.inference.export` writes it).
INPUT_NAME = "images"
#: Metadata values stored as JSON (the others are plain strings).
JSON_METADATA = (
    "attribute_names",
    "input_size",
    "input",
    "normalization",
    "thresholds",
    "outputs",
    "model_config",
    "parity",
    "level_sizes",
    "quantization",
)
#: Outputs an ALM export has, in order; a model without boxes has only the first.
ALM_OUTPUTS = ("probabilities", "boxes", "branch_probabilities")


class OnnxModelError(ValueError):
    """A file that is not a usable pedattr ONNX export; the message names the file."""


def import_onnx_package(name: str, error: type[Exception] = OnnxModelError) -> Any:
    """Import onnx or onnxruntime, or raise ``error`` saying how to install them."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise error(f"ONNX models need the {name} package: pip install 'pedattr[onnx]'") from err


def metadata_of(proto: Any) -> dict[str, Any]:
    """An ONNX ModelProto's pedattr metadata, JSON values decoded."""
    return {
        prop.key: json.loads(prop.value) if prop.key in JSON_METADATA else prop.value
        for prop in proto.metadata_props
    }


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The pedattr metadata of an exported ONNX file, JSON values decoded."""
    onnx = import_onnx_package("onnx")
    return metadata_of(onnx.load(str(path), load_external_data=False))


def is_onnx_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix) rather than a checkpoint."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


def _providers(ort: Any, device: str | torch.device) -> list[str]:
    """onnxruntime execution providers for a torch-style device ("cpu", "cuda", "cuda:N")."""
    device = torch.device(device)
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(
        f"onnxruntime cannot run on {device}: this onnxruntime has "
        f"{', '.join(ort.get_available_providers())} (install onnxruntime-gpu for CUDA)"
    )


class OnnxModel:
    """An exported pedattr model run by onnxruntime, with a pedattr model's description.

    It has what evaluation and prediction read from a PyTorch model: ``config`` (the
    :class:`~pedattr.models.config.ModelConfig` the export recorded), ``attribute_names``,
    ``thresholds`` (those the export recorded), ``training`` (always False) and ``eval()``,
    ``train(False)`` and ``to(device)``. :meth:`run` is its forward.

    Args:
        path: a ``.onnx`` file ``pedattr export`` wrote.
        device: "cpu", or "cuda"/"cuda:N" with onnxruntime-gpu.
        threads: onnxruntime's intra-op threads (None: onnxruntime's default, one per core).
        optimization: onnxruntime's graph optimisation level: "all" (default), "extended",
            "basic" or "disabled".

    Raises:
        OnnxModelError: the file cannot be read, or lacks pedattr's metadata.
    """

    training = False

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        optimization: str = "all",
    ) -> None:
        self.path = Path(path)
        self.metadata = _checked_metadata(self.path)
        self.config = ModelConfig.from_dict(self.metadata["model_config"])
        self.thresholds: list[float] | None = [float(t) for t in self.metadata["thresholds"]]
        self.input_dtype = self.metadata["input"]["dtype"]
        batch = self.metadata["input"]["shape"][0]
        self.fixed_batch: int | None = batch if isinstance(batch, int) else None
        self._threads = threads
        self._optimization = optimization
        self.device = torch.device(device)
        self._session = self._open_session()
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def _open_session(self) -> Any:
        ort = import_onnx_package("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not news here
        levels = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if self._optimization not in levels:
            raise ValueError(
                f"optimization must be one of {sorted(levels)}, got {self._optimization!r}"
            )
        options.graph_optimization_level = levels[self._optimization]
        if self._threads is not None:
            options.intra_op_num_threads = self._threads
        providers = _providers(ort, self.device)
        try:
            return ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own unrelated types
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise OnnxModelError(f"{self.path}: onnxruntime cannot load it: {first}") from err

    # --- what evaluation reads from a model ------------------------------------------------

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self.config.attribute_names)

    @property
    def quantization(self) -> Mapping[str, Any] | None:
        """What ``pedattr export --int8`` recorded (None for a float model)."""
        return self.metadata.get("quantization")

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise ValueError(f"{self.path}: an exported ONNX model cannot be trained")
        return self

    def to(self, device: str | torch.device) -> OnnxModel:
        """This model on ``device`` (a new session when it changes)."""
        device = torch.device(device)
        if device != self.device:
            self.device = device
            self._session = self._open_session()
        return self

    def level_sizes(self) -> list[tuple[int, int]]:
        """The (h, w) of every pyramid level's feature map, as the export recorded it; older
        exports without it get them from a model built from the configuration (no weights)."""
        stored = self.metadata.get("level_sizes")
        if stored is not None:
            return [(int(h), int(w)) for h, w in stored]
        from pedattr.models.localization import level_sizes
        from pedattr.models.model import build_from_config

        return level_sizes(build_from_config(self.config), tuple(self.config.input_size))

    # --- the forward -------------------------------------------------------------------------

    def run(self, images: Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """The exported outputs for a batch of images: name -> numpy array.

        Args:
            images: uint8 RGB [B, 3, H, W] at the model's input size (or float in [0, 1]).

        Returns:
            "probabilities" float32 [B, M] and, for ALM, "boxes" [B, L, M, 4] and
            "branch_probabilities" [B, branches, M] (see :data:`ALM_OUTPUTS`).
        """
        pixels = images.detach().cpu().numpy() if isinstance(images, Tensor) else images
        pixels = self._as_input(np.asarray(pixels))
        if self.fixed_batch is None:
            outputs = self._session.run(None, {INPUT_NAME: pixels})
        else:
            outputs = self._run_fixed(pixels)
        return dict(zip(self.output_names, outputs, strict=True))

    def _as_input(self, pixels: np.ndarray) -> np.ndarray:
        height, width = self.config.input_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, height, width):
            raise ValueError(
                f"{self.path}: expects images [batch, 3, {height}, {width}], got {pixels.shape}"
            )
        integer = not np.issubdtype(pixels.dtype, np.floating)
        if self.input_dtype == "uint8":
            return pixels.astype(np.uint8) if integer else np.rint(pixels * 255).astype(np.uint8)
        # The PyTorch model scales uint8 by 1/255 inside its normalisation; the float graph
        # takes [0, 1].
        scaled = pixels.astype(np.float32) / np.float32(255) if integer else pixels
        return np.ascontiguousarray(scaled, dtype=np.float32)

    def _run_fixed(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Run a fixed-batch graph over any batch: whole chunks, the last one padded."""
        size = self.fixed_batch
        parts = []
        for start in range(0, len(pixels), size):
            chunk = pixels[start : start + size]
            count = len(chunk)
            if count < size:
                padding = np.zeros((size - count, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            outputs = self._session.run(None, {INPUT_NAME: chunk})
            parts.append([output[:count] for output in outputs])
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    def __repr__(self) -> str:
        kind = "INT8" if self.quantization else self.input_dtype
        return f"OnnxModel({str(self.path)!r}, {self.config.arch}, {kind}, {self.device})"


def _checked_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a pedattr ONNX export, with the entries the runner needs checked."""
    if not path.is_file():
        raise OnnxModelError(f"{path}: no such ONNX file")
    onnx = import_onnx_package("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        metadata = metadata_of(proto)
    except Exception as err:  # protobuf's DecodeError, JSON errors: not a readable export
        raise OnnxModelError(f"{path}: not a readable ONNX file ({err})") from err
    missing = [k for k in ("model_config", "thresholds", "input") if k not in metadata]
    if missing:
        raise OnnxModelError(
            f"{path}: an ONNX file without pedattr's metadata ({', '.join(missing)} missing); "
            "export it with `pedattr export`"
        )
    try:
        config = ModelConfig.from_dict(metadata["model_config"])
    except (TypeError, ValueError) as err:
        raise OnnxModelError(f"{path}: invalid model_config in its metadata: {err}") from err
    if len(metadata["thresholds"]) != config.num_attrs:
        raise OnnxModelError(
            f"{path}: {len(metadata['thresholds'])} thresholds for {config.num_attrs} attributes"
        )
    return metadata


def load_onnx_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> OnnxModel:
    """An exported ``.onnx`` file as an :class:`OnnxModel` on ``device``."""
    return OnnxModel(path, device=device)
