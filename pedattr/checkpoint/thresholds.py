"""Which decision thresholds a checkpoint's model predicts with.

0.5 is the default, as in every published PAR number, so that results stay comparable with the
paper's tables; thresholds calibrated on the validation split (``pedattr calibrate``) are stored
in the checkpoint and used only when asked for.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

#: Values of ``thresholds`` in :func:`~pedattr.evaluation.evaluate.evaluate_checkpoint` (and
#: ``pedattr eval --thresholds``).
THRESHOLD_MODES = ("default", "calibrated")
DEFAULT_THRESHOLD = 0.5


def resolve_thresholds(model: nn.Module, checkpoint: str | os.PathLike, mode: str) -> Any:
    """0.5, or the per-attribute thresholds the checkpoint stores when ``mode`` is calibrated."""
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"thresholds must be one of {THRESHOLD_MODES}, got {mode!r}")
    if mode == "default":
        return DEFAULT_THRESHOLD
    stored = getattr(model, "thresholds", None)
    if stored is None:
        raise ValueError(
            f"{checkpoint}: the checkpoint stores no calibrated thresholds; choose them on the "
            f"validation split with `pedattr calibrate --checkpoint {checkpoint} --data DATA_DIR` "
            "or use the default 0.5"
        )
    return [float(t) for t in stored]
