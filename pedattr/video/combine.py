"""One answer per track: crops, their quality, and the quality-weighted mean of logits.

Crop (:func:`crop_region`): the tracked box is padded by :data:`PADDING` of its height and width
on every side (detectors cut people tight; the datasets' crops leave a margin), then widened or
heightened about its centre to the model's input aspect (height / width, e.g. 256 / 128), so
that resizing to the input size does not distort the person. The region is clipped to the frame.

Quality (:func:`crop_quality`) of a crop, in [0, 1], is the product of

* the detection score (clipped to [0, 1]): a doubtful box may not hold a person at all;
* ``min(1, box height / model input height)``: a person smaller than the model's input is
  upscaled, and its fine attributes (glasses, logos) are not in the pixels;
* the share of the padded region inside the frame: a person cut by the frame border lacks the
  parts that carry some attributes (shoes, hats).

Combination (:class:`TrackEvidence`): the track's logit for each attribute is the mean of its
crops' logits weighted by their quality, and its probability the sigmoid of that. Logits, not
probabilities, are averaged because independent pieces of evidence add in log-odds; a few sharp
frames then outweigh many blurred ones, and the weights keep tiny, doubtful or cut crops from
dragging the answer. When every weight is 0 the plain mean is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Margin added on every side of a box, as a share of its width and height.
PADDING = 0.05
#: Probabilities are clipped to [EPS, 1 - EPS] before their logit is taken.
EPS = 1e-6

Box = tuple[float, float, float, float]


def crop_region(
    box: Box, frame_size: tuple[int, int], input_size: tuple[int, int], padding: float = PADDING
) -> tuple[tuple[int, int, int, int], float]:
    """The frame region to crop for ``box`` and the share of it inside the frame.

    Args:
        box: (x0, y0, x1, y1) pixels.
        frame_size: (height, width) of the frame.
        input_size: the model's (height, width).

    Returns:
        (x0, y0, x1, y1) integer pixels clipped to the frame (x1, y1 exclusive, at least one
        pixel), and the share in [0, 1] of the padded, aspect-corrected region inside it.
    """
    x0, y0, x1, y1 = box
    width, height = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    width, height = width * (1 + 2 * padding), height * (1 + 2 * padding)
    aspect = input_size[0] / input_size[1]
    if height / width < aspect:
        height = width * aspect
    else:
        width = height / aspect
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top, right, bottom = cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2
    frame_h, frame_w = frame_size
    inside_w = max(0.0, min(right, frame_w) - max(left, 0.0))
    inside_h = max(0.0, min(bottom, frame_h) - max(top, 0.0))
    inside = inside_w * inside_h / (width * height)
    ix0 = min(max(0, math.floor(left)), frame_w - 1)
    iy0 = min(max(0, math.floor(top)), frame_h - 1)
    ix1 = max(min(frame_w, math.ceil(right)), ix0 + 1)
    iy1 = max(min(frame_h, math.ceil(bottom)), iy0 + 1)
    return (ix0, iy0, ix1, iy1), inside


def crop_quality(box: Box, score: float, inside: float, input_height: int) -> float:
    """Detection score x min(1, box height / input height) x share inside the frame."""
    height = max(box[3] - box[1], 0.0)
    return float(min(max(score, 0.0), 1.0) * min(1.0, height / input_height) * inside)


def logits(probabilities: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [EPS, 1 - EPS]."""
    p = np.clip(np.asarray(probabilities, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass
class TrackEvidence:
    """The running weighted sum of one track's logits (see the module docstring)."""

    weighted: np.ndarray | None = None
    plain: np.ndarray | None = None
    total_weight: float = 0.0
    frames: list[int] = field(default_factory=list)

    def add(self, probabilities: np.ndarray, quality: float, frame: int) -> None:
        z = logits(probabilities)
        if self.weighted is None or self.plain is None:
            self.weighted, self.plain = np.zeros_like(z), np.zeros_like(z)
        self.weighted += quality * z
        self.plain += z
        self.total_weight += quality
        self.frames.append(frame)

    def combined(self) -> np.ndarray | None:
        """The track's probabilities, or None before any crop was added."""
        if self.weighted is None or self.plain is None:
            return None
        if self.total_weight > 0:
            z = self.weighted / self.total_weight
        else:
            z = self.plain / len(self.frames)
        return 1.0 / (1.0 + np.exp(-z))
