"""Backbones, the feature pyramid, the ALM and the attribute models."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that the model options (pedattr.models.config) can be read, by the
# command line for one, without loading torch.
_LAZY = {
    "ALMNet": "pedattr.models.model",
    "AttributeLocalization": "pedattr.models.alm",
    "BaselineNet": "pedattr.models.model",
    "ModelConfig": "pedattr.models.config",
    "ModelOutput": "pedattr.models.model",
    "build_model": "pedattr.models.model",
}

__all__ = [
    "ALMNet",
    "AttributeLocalization",
    "BaselineNet",
    "ModelConfig",
    "ModelOutput",
    "build_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pedattr.models' has no attribute {name!r}")
