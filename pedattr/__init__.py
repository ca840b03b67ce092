"""pedattr: pedestrian attribute recognition with weakly-supervised attribute localization."""

from __future__ import annotations

import importlib
from typing import Any

from pedattr._version import __version__

# Public names, imported on first use so that `import pedattr` (and every CLI command's start)
# does not pay for torch until a model is needed.
_LAZY = {
    "build_model": "pedattr.models.model",
    "ModelConfig": "pedattr.models.config",
    "ModelOutput": "pedattr.models.model",
    "load_model": "pedattr.checkpoint.format",
    "load_runner": "pedattr.checkpoint.format",
    "OnnxModel": "pedattr.models.onnx_runtime",
    "save_checkpoint": "pedattr.checkpoint.format",
    "Prediction": "pedattr.inference.predictor",
    "Predictor": "pedattr.inference.predictor",
    "VideoPipeline": "pedattr.video.pipeline",
}

__all__ = [
    "ModelConfig",
    "ModelOutput",
    "OnnxModel",
    "Prediction",
    "Predictor",
    "VideoPipeline",
    "__version__",
    "build_model",
    "load_model",
    "load_runner",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pedattr' has no attribute {name!r}")
