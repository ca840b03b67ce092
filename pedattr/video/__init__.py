"""People in video: detect, track, and recognise attributes per person (``pedattr track``), and
find them by their attributes (``pedattr search``, ``index.html``).

:class:`~pedattr.video.pipeline.VideoPipeline` is the entry point; see docs/video.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that `pedattr search` (queries over finished tracks) does not pay
# for torch and OpenCV.
_LAZY = {
    "FrameResult": "pedattr.video.pipeline",
    "Person": "pedattr.video.pipeline",
    "TrackResult": "pedattr.video.pipeline",
    "VideoPipeline": "pedattr.video.pipeline",
}

__all__ = ["FrameResult", "Person", "TrackResult", "VideoPipeline"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pedattr.video' has no attribute {name!r}")
