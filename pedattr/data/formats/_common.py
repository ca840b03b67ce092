"""Checks and helpers shared by the format readers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pedattr.data.annotations import SPLITS, UNKNOWN, AnnotationError, RawAnnotations
from pedattr.data.formats._matlab import MatFields

PathLike = str | os.PathLike


def resolve_annotation(root: Path, annotation: PathLike | None, defaults: Sequence[str]) -> Path:
    """The annotation file: ``annotation`` if given, else the first default under ``root``.

    Args:
        root: the dataset folder.
        annotation: an explicit file: absolute, relative to the working directory, or relative
            to ``root``.
        defaults: file names relative to ``root`` to try, in order.
    """
    if annotation is not None:
        path = Path(annotation)
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: annotation file not found")
        return path
    for name in defaults:
        if (root / name).is_file():
            return root / name
    tried = ", ".join(str(root / name) for name in defaults)
    raise FileNotFoundError(
        f"no annotation file found (tried {tried}); give its path (--annotation FILE, or "
        "annotation= in Python)"
    )


def image_folder(root: Path, candidates: Sequence[str]) -> Path:
    """The first of ``candidates`` under ``root`` that exists, else the first one.

    Missing images are reported later, when the dataset is prepared.
    """
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root / candidates[0]


def label_matrix(
    values: np.ndarray, *, file: Path, field: str, columns: Sequence[int]
) -> np.ndarray:
    """Labels as uint8 0/1/2, with an error naming the first bad entry.

    Args:
        values: [N, K] numeric labels.
        file: annotation file, for messages.
        field: field name, for messages.
        columns: the 0-based column of the file for each of the K columns, for messages.
    """
    values = np.asarray(values)
    bad = ~np.isin(values, (0, 1, UNKNOWN))  # also catches NaN and non-integers
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        value = values[row, col].item()
        value = int(value) if isinstance(value, float) and value.is_integer() else value
        raise AnnotationError(
            f"{file}: field '{field}' has value {value!r} at row {row + 1}, column "
            f"{columns[col] + 1}; labels must be 0, 1 or 2 (unknown)"
        )
    return values.astype(np.uint8)


def indices_from(values: np.ndarray, *, size: int, file: Path, field: str, base: int) -> np.ndarray:
    """Checked 0-based indices from an index vector.

    Args:
        values: the indices as stored.
        size: number of items indexed; every index must address one of them.
        file: annotation file, for messages.
        field: field name, for messages.
        base: 1 for MATLAB's 1-based indices, 0 for Python's.
    """
    values = np.asarray(values).ravel()
    if values.size and (values.dtype.kind not in "biuf" or np.any(values != np.round(values))):
        raise AnnotationError(f"{file}: field '{field}' must hold integer indices")
    indices = values.astype(np.int64) - base
    out_of_range = (indices < 0) | (indices >= size)
    if out_of_range.any():
        raise AnnotationError(
            f"{file}: field '{field}' has index {int(values[out_of_range][0])} outside "
            f"{base}..{size - 1 + base} ({'1-based' if base else '0-based'}, {size} entries)"
        )
    if len(np.unique(indices)) != len(indices):
        raise AnnotationError(f"{file}: field '{field}' repeats an index")
    return indices


def assign_splits(
    size: int, parts: Mapping[str, tuple[str, np.ndarray]], *, file: Path
) -> np.ndarray:
    """Split name per item from 0-based index sets; None where an item is in no split.

    Args:
        size: number of items.
        parts: split name -> (field name for messages, 0-based indices).
        file: annotation file, for messages.
    """
    splits = np.full(size, None, dtype=object)
    fields = {}
    for split, (field, indices) in parts.items():
        taken = indices[np.not_equal(splits[indices], None)]
        if taken.size:
            other = splits[taken[0]]
            raise AnnotationError(
                f"{file}: field '{field}' puts item {int(taken[0]) + 1} in {split!r}, but "
                f"'{fields[other]}' already has it in {other!r}"
            )
        splits[indices] = split
        fields[split] = field
    return splits


def pick_partition(count: int, partition: int, *, file: Path, field: str) -> int:
    """Check the 0-based ``partition`` against the ``count`` the file holds."""
    if not 0 <= partition < count:
        raise ValueError(
            f"{file}: partition {partition} does not exist; '{field}' has {count} "
            f"(choose 0..{count - 1})"
        )
    return partition


def check_unique(names: Sequence[str], *, file: Path, field: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise AnnotationError(f"{file}: field '{field}' lists {name!r} more than once")
        seen.add(name)


def build(
    *,
    attribute_names: list[str],
    image_names: list[str],
    labels: np.ndarray,
    splits: np.ndarray,
    image_root: Path,
    source: dict,
) -> RawAnnotations:
    """RawAnnotations of the items that are in a split (the rest are outside the protocol)."""
    keep = np.array([s is not None for s in splits], dtype=bool)
    source = {
        **source,
        "images_in_file": len(image_names),
        "images_in_no_split": int((~keep).sum()),
    }
    counts = {s: int((splits == s).sum()) for s in SPLITS}
    source["split_sizes"] = {s: n for s, n in counts.items() if n}
    return RawAnnotations(
        attribute_names=list(attribute_names),
        image_names=[name for name, k in zip(image_names, keep, strict=True) if k],
        labels=labels[keep],
        splits=splits[keep].astype(str).astype(object),
        image_root=image_root,
        source=source,
    )


def partition_splits(
    container: MatFields,
    names: Sequence[str],
    partition: int,
    fields: Mapping[str, Sequence[str]],
    *,
    size: int,
    positional_fallback: bool = False,
) -> tuple[np.ndarray, dict]:
    """Split per item from one of a file's partition structs of 1-based index vectors.

    Args:
        container: the struct holding the partitions.
        names: the partitions field's name and its alternative spellings.
        partition: which partition, 0-based.
        fields: split name -> the index field's name and its alternative spellings.
        size: number of items indexed.
        positional_fallback: when the struct has none of the names but exactly one field per
            split, take its fields in order (for layouts known only from positional readers).

    Returns:
        Split per item (None for items in no split), and provenance for ``source``.
    """
    parts = container.structs(*names)
    field = container.path_of(container.find(*names))
    if not parts:
        raise AnnotationError(f"{container.file}: field '{field}' holds no partition")
    part = parts[pick_partition(len(parts), partition, file=container.file, field=field)]
    present = part.field_names
    known = any(alias in present for aliases in fields.values() for alias in aliases)
    by_position = positional_fallback and not known and len(present) == len(fields)
    index_sets = {}
    used = []
    for position, (split, aliases) in enumerate(fields.items()):
        candidates = (present[position],) if by_position else tuple(aliases)
        name, values = part.vector(*candidates)
        used.append(name)
        indices = indices_from(values, size=size, file=part.file, field=part.path_of(name), base=1)
        index_sets[split] = (part.path_of(name), indices)
    provenance = {
        "partition": partition,
        "partitions_in_file": len(parts),
        "partition_field": field,
        "partition_index_fields": used,
    }
    return assign_splits(size, index_sets, file=part.file), provenance
