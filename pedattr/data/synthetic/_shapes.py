"""Filled shapes for the pedestrian generator, painted with numpy in continuous pixel coordinates.

Coordinates are continuous: the image spans [0, W] x [0, H] and pixel (row i, column j) is the
unit square [j, j + 1) x [i, i + 1) with its centre at (j + 0.5, i + 0.5). A shape paints exactly
the pixels whose centre lies inside it (edges included), so every painted pixel's centre lies
inside the shape's bounding ``box``: that is what makes the generator's ground-truth boxes exact.

Painting touches only the pixels of the shape's bounding box, which keeps a whole pedestrian at a
fraction of a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: (x0, y0, x1, y1) in continuous pixel coordinates.
Box = tuple[float, float, float, float]
Colour = tuple[float, float, float]
#: Restricts a shape to part of its pixels: (x [1, w], y [h, 1]) pixel centres -> bool [h, w].
Pattern = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Shape(Protocol):
    @property
    def box(self) -> Box: ...

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which pixel centres (x [1, w], y [h, 1]) lie inside: bool, broadcastable to [h, w]."""
        ...


@dataclass(frozen=True)
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def box(self) -> Box:
        return (self.x0, self.y0, self.x1, self.y1)

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.ones((y.shape[0], x.shape[1]), dtype=bool)  # the pixel span is the rectangle


@dataclass(frozen=True)
class Ellipse:
    cx: float
    cy: float
    rx: float
    ry: float

    @property
    def box(self) -> Box:
        return (self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry)

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return ((x - self.cx) / self.rx) ** 2 + ((y - self.cy) / self.ry) ** 2 <= 1.0


@dataclass(frozen=True)
class Trapezoid:
    """Horizontal top edge [top_left, top_right] at y0, bottom edge [bottom_left, ...] at y1."""

    y0: float
    y1: float
    top_left: float
    top_right: float
    bottom_left: float
    bottom_right: float

    @property
    def box(self) -> Box:
        return (
            min(self.top_left, self.bottom_left),
            self.y0,
            max(self.top_right, self.bottom_right),
            self.y1,
        )

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = np.clip((y - self.y0) / max(self.y1 - self.y0, 1e-9), 0.0, 1.0)
        left = self.top_left + t * (self.bottom_left - self.top_left)
        right = self.top_right + t * (self.bottom_right - self.top_right)
        return (x >= left) & (x <= right)


@dataclass(frozen=True)
class Capsule:
    """A thick line segment: points within ``radius`` of the segment p0-p1 (straps, arms)."""

    x0: float
    y0: float
    x1: float
    y1: float
    radius: float

    @property
    def box(self) -> Box:
        r = self.radius
        return (
            min(self.x0, self.x1) - r,
            min(self.y0, self.y1) - r,
            max(self.x0, self.x1) + r,
            max(self.y0, self.y1) + r,
        )

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx, dy = self.x1 - self.x0, self.y1 - self.y0
        length2 = dx * dx + dy * dy
        t = (
            0.0
            if length2 == 0
            else np.clip(((x - self.x0) * dx + (y - self.y0) * dy) / length2, 0, 1)
        )
        return (x - self.x0 - t * dx) ** 2 + (y - self.y0 - t * dy) ** 2 <= self.radius**2


def pixel_span(low: float, high: float, size: int) -> slice:
    """The pixels whose centre (i + 0.5) lies in [low, high], clipped to [0, size)."""
    start = max(math.ceil(low - 0.5), 0)
    stop = min(math.floor(high - 0.5) + 1, size)
    return slice(start, max(start, stop))


def covered_pixels(
    shape: Shape, pattern: Pattern | None, height: int, width: int
) -> tuple[slice, slice, np.ndarray] | None:
    """The pixels that ``shape`` (only where ``pattern`` holds) covers on an H x W canvas:
    the rows and columns of its box, and a boolean mask over them; None when it misses."""
    x0, y0, x1, y1 = shape.box
    rows = pixel_span(y0, y1, height)
    cols = pixel_span(x0, x1, width)
    if rows.start == rows.stop or cols.start == cols.stop:
        return None
    y = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] + 0.5
    x = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] + 0.5
    mask = np.broadcast_to(shape.mask(x, y), (y.shape[0], x.shape[1]))
    if pattern is not None:
        mask = mask & pattern(x, y)
    return rows, cols, mask


def paint(canvas: np.ndarray, shape: Shape, colour: Colour, pattern: Pattern | None = None) -> None:
    """Fill ``shape`` (optionally only where ``pattern`` holds) on an [H, W, ...] canvas."""
    covered = covered_pixels(shape, pattern, canvas.shape[0], canvas.shape[1])
    if covered is not None:
        rows, cols, mask = covered
        canvas[rows, cols][mask] = colour


def stripes(*, vertical: bool, origin: float, period: float, duty: float) -> Pattern:
    """Bands of width ``duty * period`` every ``period`` pixels, starting at ``origin``."""

    def pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        coord = x if vertical else y
        inside = ((coord - origin) / period) % 1.0 < duty
        return np.broadcast_to(inside, (y.shape[0], x.shape[1]))

    return pattern


def plaid(*, origin: tuple[float, float], period: float, line: float) -> Pattern:
    """Crossing horizontal and vertical lines ``line * period`` wide: a check pattern."""

    def pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        across = ((x - origin[0]) / period) % 1.0 < line
        down = ((y - origin[1]) / period) % 1.0 < line
        return across | down

    return pattern


def union(boxes: Iterable[Box]) -> Box:
    """The smallest box containing all ``boxes``."""
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return (min(x0s), min(y0s), max(x1s), max(y1s))


def clip_box(box: Box, height: int, width: int) -> Box:
    """The part of ``box`` inside the image (may be empty: x1 <= x0 or y1 <= y0)."""
    x0, y0, x1, y1 = box
    return (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))


def box_area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def overlap_fraction(box: Box, other: Box) -> float:
    """Share of ``box``'s area that ``other`` covers (0 for an empty ``box``)."""
    area = box_area(box)
    if area == 0:
        return 0.0
    inter = (
        max(box[0], other[0]),
        max(box[1], other[1]),
        min(box[2], other[2]),
        min(box[3], other[3]),
    )
    return box_area(inter) / area
