"""The common form every dataset reader returns, before ``pedattr prepare`` writes it out."""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Label value for "unknown" (RAP); it gets no loss and counts as negative in metrics.
UNKNOWN = 2
#: Split names a dataset description may use.
SPLITS = ("train", "val", "test")


class AnnotationError(ValueError):
    """An annotation file that does not match its format; the message names file and field."""


#: How a user accepts image names outside the image root, for messages.
ALLOW_EXTERNAL_HINT = (
    "image names must be relative to the image root, without '..' (pass "
    "--allow-external-images to accept images outside it)"
)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def image_name_problem(name: str, *, allow_external: bool = False) -> str | None:
    """What is wrong with an image name from an annotation, or None.

    A name must stay inside the image root: not absolute (``/x``, ``\\\\server\\x``,
    ``C:/x``) and without a ``..`` component (refused even where it would come back inside, since
    ``a/..`` is not ``.`` when ``a`` is a symlink). ``allow_external`` accepts both; a NUL
    character is never a file name.
    """
    if "\0" in name:
        return "contains a NUL character"
    if allow_external:
        return None
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        return f"is an absolute path; {ALLOW_EXTERNAL_HINT}"
    if ".." in re.split(r"[/\\]", name):
        return f"climbs out of the image root with '..'; {ALLOW_EXTERNAL_HINT}"
    return None


def check_image_name(name: str, *, where: str, allow_external: bool = False) -> str:
    """``name``, or an :class:`AnnotationError` naming ``where`` (file and row) and the problem."""
    problem = image_name_problem(name, allow_external=allow_external)
    if problem is not None:
        raise AnnotationError(f"{where}: image name {name!r} {problem}")
    return name


def check_image_names(
    names: Iterable[str], *, file: Path, field: str, allow_external: bool = False
) -> None:
    """:func:`check_image_name` for each entry of an annotation field (1-based in messages)."""
    for number, name in enumerate(names, start=1):
        check_image_name(
            name, where=f"{file}: field '{field}' entry {number}", allow_external=allow_external
        )


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


def read_text_file(path: str | os.PathLike, *, newline: str | None = None) -> str:
    """The text of a UTF-8 file, a leading byte-order mark (as Windows editors write) dropped.

    Args:
        path: the file.
        newline: as :func:`open`'s: None turns ``\\r\\n`` and ``\\r`` into ``\\n``; ``""``
            keeps line ends as they are (for :mod:`csv`).

    Raises:
        AnnotationError: the file is not UTF-8; the message names it, the line and the byte.
    """
    path = Path(path)
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = start + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise AnnotationError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[offset]:02x}); save the file "
            "as UTF-8"
        ) from None
    if newline is None:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_csv_rows(path: Path) -> list[list[str]]:
    """The rows of a UTF-8 CSV file (Excel's byte-order mark dropped).

    Raises:
        AnnotationError: the file is not UTF-8, or the csv module refuses a row (a cell over its
            field size limit, a NUL character, ...); the message names the file and the line.
    """
    reader = csv.reader(io.StringIO(read_text_file(path, newline=""), newline=""))
    try:
        return list(reader)
    except csv.Error as err:
        raise AnnotationError(f"{path}, line {reader.line_num}: not a CSV row ({err})") from None


def escaped(name: str) -> str:
    """``name`` for a message: as it is, unless it holds control or other unprintable
    characters, which are shown escaped (``repr``) so that a message stays one line."""
    return name if name.isprintable() else repr(name)


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
    text = read_text_file(path)
    names = [line.split("#", 1)[0].strip() for line in text.split("\n")]
    names = [name for name in names if name]
    if not names:
        raise AnnotationError(f"{path}: no attribute names in the file")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        shown = ", ".join(map(escaped, repeated))
        raise AnnotationError(f"{path}: duplicate attribute names: {shown}")
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
