"""The common form every dataset reader returns, before ``pedattr prepare`` writes it out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Label value for "unknown" (RAP); it gets no loss and counts as negative in metrics.
UNKNOWN = 2
#: Split names a dataset description may use.
SPLITS = ("train", "val", "test")


class AnnotationError(ValueError):
    """An annotation file that does not match its format; the message names file and field."""


def positive_ratio(labels: np.ndarray, attribute_names: Sequence[str] | None = None) -> np.ndarray:
    """Positives / known (0 or 1) labels per attribute of an [N, M] label matrix.

    These ratios are the loss weights' ``a_m``; unknown labels (2) count in neither term.

    Raises:
        AnnotationError: the labels are not 2-D, or an attribute has no known label (its
            weight would be undefined); attributes are named, or given by index.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise AnnotationError(f"labels must be 2-D [N, M]; got shape {labels.shape}")
    known = (labels != UNKNOWN).sum(axis=0)
    if (known == 0).any():
        missing = np.flatnonzero(known == 0).tolist()
        if attribute_names is not None:
            missing = [attribute_names[i] for i in missing]
        raise AnnotationError(f"attributes without any known label (0 or 1): {missing}")
    return (labels == 1).sum(axis=0) / known


def read_names_file(
    path: str | os.PathLike, *, expected: int | None = None, reason: str = ""
) -> list[str]:
    """Attribute names from a text file: one per line, in order.

    Blank lines and ``#`` comments are ignored, surrounding whitespace and a UTF-8 byte-order
    mark (as Windows editors write) are stripped.

    Args:
        path: the file.
        expected: the number of names the caller needs, checked when given.
        reason: why that many, for the error message (e.g. "the lists have 5 labels per line").

    Raises:
        AnnotationError: no names, a repeated name or the wrong count; the message names the file.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [name for name in names if name]
    if not names:
        raise AnnotationError(f"{path}: no attribute names in the file")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise AnnotationError(f"{path}: duplicate attribute names: {', '.join(repeated)}")
    if expected is not None and len(names) != expected:
        because = f" ({reason})" if reason else ""
        raise AnnotationError(f"{path}: {len(names)} attribute names, expected {expected}{because}")
    return names


@dataclass
class RawAnnotations:
    """Labels and splits of a dataset as read from its official files.

    Attributes:
        attribute_names: the M attribute names, in the official file order.
        image_names: N image paths relative to ``image_root`` (posix separators).
        labels: [N, M] uint8 with values 0, 1 or 2 (unknown).
        splits: [N] array of split names from :data:`SPLITS`.
        image_root: folder the image names are relative to.
        source: where the annotations came from (format name, file, partition, notes), kept
            in the dataset description for provenance.
        boxes: optional ground-truth attribute boxes: for image i, a dict attribute name ->
            (x0, y0, x1, y1) in pixels (only generated data has them).
    """

    attribute_names: list[str]
    image_names: list[str]
    labels: np.ndarray
    splits: np.ndarray
    image_root: Path
    source: dict = field(default_factory=dict)
    boxes: list[dict[str, list[float]]] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.uint8)
        self.splits = np.asarray(self.splits, dtype=object)
        n, m = len(self.image_names), len(self.attribute_names)
        if self.labels.shape != (n, m):
            raise AnnotationError(
                f"labels have shape {self.labels.shape}, expected ({n}, {m}) for {n} images "
                f"and {m} attributes"
            )
        if self.splits.shape != (n,):
            raise AnnotationError(f"{len(self.splits)} split entries for {n} images")
        unknown_splits = sorted(set(self.splits.tolist()) - set(SPLITS))
        if unknown_splits:
            raise AnnotationError(f"unknown split names {unknown_splits}; expected {SPLITS}")
        if self.labels.size and self.labels.max() > UNKNOWN:
            raise AnnotationError(f"label values must be 0, 1 or 2, found {self.labels.max()}")
        if len(set(self.attribute_names)) != m:
            raise AnnotationError("attribute names are not unique")

    def select_attributes(self, names: Sequence[str]) -> RawAnnotations:
        """A copy keeping only ``names``, in that order (any order or subset of the file's)."""
        if not names:
            raise AnnotationError("the attribute selection is empty")
        repeated = sorted({name for name in names if list(names).count(name) > 1})
        if repeated:
            raise AnnotationError(f"attributes selected more than once: {repeated}")
        missing = [name for name in names if name not in self.attribute_names]
        if missing:
            raise AnnotationError(
                f"attributes not in the dataset: {missing}; available: {self.attribute_names}"
            )
        columns = [self.attribute_names.index(name) for name in names]
        return RawAnnotations(
            attribute_names=list(names),
            image_names=list(self.image_names),
            labels=self.labels[:, columns],
            splits=self.splits.copy(),
            image_root=self.image_root,
            source=dict(self.source),
            boxes=self.boxes,
        )
