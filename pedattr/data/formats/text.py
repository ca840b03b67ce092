"""Plain-text formats: the ALM authors' per-split lists and a CSV for users' own attributes.

Text lists (the authors' ``data_list`` files): one file per split, one image per line,
``relative/path.jpg l1 l2 ... lM`` separated by whitespace, labels 0 / 1 (2 = unknown accepted).
Attribute names come from an optional names file (one per line), else ``attr_00`` ...

CSV: a header ``image,<attr>,<attr>,...`` with an optional ``split`` column anywhere; one row
per image with 0 / 1 / 2 per attribute. Without a ``split`` column every row gets
``default_split`` ("train"): a later stage can carve val / test from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pedattr.data.annotations import (
    SPLITS,
    UNKNOWN,
    AnnotationError,
    RawAnnotations,
    check_image_name,
    read_csv_rows,
    read_names_file,
    read_text_file,
)
from pedattr.data.formats._common import PathLike, build

# [<prefix>_]<split>[_list].txt, e.g. train.txt, val_list.txt, PETA_test_list.txt; trainval
# (or train_val) stands for "train" where a dataset has no separate val list. The lazy prefix
# makes "train_val" one name rather than prefix "train_" and split "val".
_LIST_NAME = re.compile(
    r"^(?:.*?[_-])??(train[_-]?val|train|val|test)(?:[_-]list)?\.txt$", re.IGNORECASE
)
_LABEL_VALUES = {"0": 0, "1": 1, str(UNKNOWN): UNKNOWN}


def _find_lists(root: Path) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.txt")):
        match = _LIST_NAME.match(path.name)
        if match:
            split = match.group(1).lower()
            found.setdefault("train" if split.startswith("train") else split, []).append(path)
    ambiguous = {split: paths for split, paths in found.items() if len(paths) > 1}
    if ambiguous:
        split, paths = next(iter(ambiguous.items()))
        raise ValueError(
            f"{root}: several lists for split {split!r} ({', '.join(p.name for p in paths)}); "
            "pass files={'train': ..., 'val': ..., 'test': ...}"
        )
    if not found:
        raise FileNotFoundError(
            f"{root}: no split lists (train.txt, val.txt, test.txt, ...); pass files="
        )
    return {split: paths[0] for split, paths in found.items()}


def _image_name(name: str) -> str:
    return name.replace("\\", "/")  # lists written on Windows


def _read_list(
    path: Path, width: int | None, allow_external: bool
) -> tuple[list[str], list[list[int]]]:
    """Image names and label rows of one list; ``width`` is the label count seen so far."""
    names: list[str] = []
    rows: list[list[int]] = []
    # A byte-order mark (Windows editors) is dropped, not read as part of the first image name.
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        labels = [_LABEL_VALUES.get(token) for token in tokens[1:]]
        if not labels or None in labels:
            raise AnnotationError(
                f"{path}, line {number}: expected 'image label label ...' with labels "
                f"0, 1 or 2, found {line.strip()[:80]!r}"
            )
        if width is not None and len(labels) != width:
            raise AnnotationError(
                f"{path}, line {number}: {len(labels)} labels, expected {width} like the "
                "lines before"
            )
        width = len(labels)
        where = f"{path}, line {number}"
        names.append(
            check_image_name(_image_name(tokens[0]), where=where, allow_external=allow_external)
        )
        rows.append(labels)
    return names, rows


def _check_unique_images(names: list[str], files: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for name, file in zip(names, files, strict=True):
        if name in seen:
            raise AnnotationError(f"{file}: image {name!r} is listed again (also in {seen[name]})")
        seen[name] = file


def read_text_lists(
    root: PathLike,
    *,
    names_file: PathLike | None = None,
    image_root: PathLike | None = None,
    files: Mapping[str, PathLike] | None = None,
    allow_external_images: bool = False,
) -> RawAnnotations:
    """Read the authors' per-split text lists.

    Args:
        root: the folder of the lists (``train.txt``, ``val.txt``, ``test.txt``; also
            ``*_train_list.txt`` and the like; ``trainval`` or ``train_val`` count as train).
        names_file: attribute names, one per line; default ``attr_00``, ``attr_01``, ...
        image_root: the folder the image paths are relative to; default ``root``.
        files: split name -> list file, instead of looking in ``root``.
        allow_external_images: accept image names that are absolute or climb out of the
            image folder with ``..`` (refused by default, naming the file and line).

    Returns:
        The attributes in list order; one split per list file.
    """
    root = Path(root)
    if files is None:
        lists = _find_lists(root)
    else:
        unknown = sorted(set(files) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split names {unknown} in files=; expected {SPLITS}")
        lists = {split: Path(path) for split, path in files.items()}
    names: list[str] = []
    rows: list[list[int]] = []
    splits: list[str] = []
    origins: list[Path] = []
    for split in SPLITS:
        if split not in lists:
            continue
        split_names, split_rows = _read_list(
            lists[split], len(rows[0]) if rows else None, allow_external_images
        )
        names += split_names
        rows += split_rows
        splits += [split] * len(split_names)
        origins += [lists[split]] * len(split_names)
    if not rows:
        raise AnnotationError(f"{', '.join(map(str, lists.values()))}: the lists name no image")
    _check_unique_images(names, origins)
    count = len(rows[0])
    if names_file is not None:
        attributes = read_names_file(
            names_file, expected=count, reason=f"the lists have {count} labels per line"
        )
    else:
        digits = max(2, len(str(count - 1)))
        attributes = [f"attr_{i:0{digits}d}" for i in range(count)]
    return build(
        attribute_names=attributes,
        image_names=names,
        labels=np.array(rows, dtype=np.uint8),
        splits=np.array(splits, dtype=object),
        image_root=Path(image_root) if image_root is not None else root,
        source={
            "format": "text-lists",
            "annotation": {split: str(path) for split, path in lists.items()},
            "names_file": str(names_file) if names_file is not None else None,
            "attributes_in_file": count,
        },
    )


def read_csv(
    path: PathLike,
    *,
    image_root: PathLike | None = None,
    default_split: str = "train",
    allow_external_images: bool = False,
) -> RawAnnotations:
    """Read a CSV of users' own attributes.

    Args:
        path: the CSV file: header ``image,<attr>,...`` plus an optional ``split`` column.
        image_root: the folder the image paths are relative to; default the CSV's folder.
        default_split: the split of every row when the file has no ``split`` column.
        allow_external_images: accept image names that are absolute or climb out of the
            image folder with ``..`` (refused by default, naming the file and line).

    Returns:
        The attributes in column order; splits from the ``split`` column (train / val /
        test, case-insensitive) or ``default_split``.
    """
    path = Path(path)
    if default_split not in SPLITS:
        raise ValueError(f"default_split must be one of {SPLITS}, got {default_split!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    table = read_csv_rows(path)
    header, body = _csv_header(table, path)
    image_col = header.index("image")
    split_col = header.index("split") if "split" in header else None
    attr_cols = [i for i in range(len(header)) if i not in (image_col, split_col)]
    names, labels, splits = [], [], []
    for number, row in enumerate(body, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise AnnotationError(
                f"{path}, line {number}: {len(row)} cells, expected {len(header)} like the header"
            )
        names.append(_csv_image(row[image_col], path, number, allow_external_images))
        labels.append([_csv_label(row[i], path, number, header[i]) for i in attr_cols])
        splits.append(
            default_split if split_col is None else _csv_split(row[split_col], path, number)
        )
    if not names:
        raise AnnotationError(f"{path}: no image rows")
    _check_unique_images(names, [path] * len(names))
    return build(
        attribute_names=[header[i] for i in attr_cols],
        image_names=names,
        labels=np.array(labels, dtype=np.uint8),
        splits=np.array(splits, dtype=object),
        image_root=Path(image_root) if image_root is not None else path.parent,
        source={
            "format": "csv",
            "annotation": str(path),
            "split_column": split_col is not None,
            "default_split": None if split_col is not None else default_split,
            "attributes_in_file": len(attr_cols),
        },
    )


def _csv_header(table: list[list[str]], path: Path) -> tuple[list[str], list[list[str]]]:
    if not table:
        raise AnnotationError(f"{path}: empty file; expected a header 'image,<attr>,...'")
    header = [cell.strip() for cell in table[0]]
    if "image" not in header:
        raise AnnotationError(f"{path}: the header has no 'image' column: {header}")
    if "" in header:
        raise AnnotationError(
            f"{path}: the header has an empty column name (column {header.index('') + 1})"
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise AnnotationError(f"{path}: the header repeats columns {duplicates}")
    if len([n for n in header if n not in ("image", "split")]) == 0:
        raise AnnotationError(f"{path}: the header has no attribute columns")
    return header, table[1:]


def _csv_image(cell: str, path: Path, number: int, allow_external: bool) -> str:
    name = cell.strip()
    if not name:
        raise AnnotationError(f"{path}, line {number}: empty 'image' cell")
    return check_image_name(
        _image_name(name), where=f"{path}, line {number}", allow_external=allow_external
    )


def _csv_label(cell: str, path: Path, number: int, column: str) -> int:
    value = _LABEL_VALUES.get(cell.strip())
    if value is None:
        raise AnnotationError(
            f"{path}, line {number}: column '{column}' has {cell!r}; labels must be 0, 1 or 2"
        )
    return value


def _csv_split(cell: str, path: Path, number: int) -> str:
    split = cell.strip().lower()
    if split not in SPLITS:
        raise AnnotationError(
            f"{path}, line {number}: column 'split' has {cell!r}; expected one of {SPLITS}"
        )
    return split
