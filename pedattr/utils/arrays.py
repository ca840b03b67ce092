"""Arrays from tensors, for the numpy code that maps boxes and computes metrics."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """Converts a tensor (any device, any float dtype) or array-like to a float64 array."""
    if hasattr(x, "detach"):  # torch.Tensor; numpy() cannot read bfloat16, so cast first
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
