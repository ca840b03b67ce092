"""The prepared dataset description that training, evaluation and the demo read.

``pedattr prepare`` writes one folder per dataset:

``dataset.json``
    ``format`` ("pedattr-dataset"), ``format_version``, ``attributes`` (names, in output
    order), ``image_root`` (absolute, or relative to the folder), ``splits`` (sample count per
    split), ``positive_ratio`` (per attribute, over the training split only, unknown labels
    excluded: the loss weights), ``num_samples``, ``source`` (format, annotation file, partition,
    ...), ``missing_images`` (listed when prepared with ``--allow-missing``), ``has_boxes``,
    ``pedattr_version``, ``created``, and ``external_images`` (true when prepared with
    ``--allow-external-images``: only then may image names be absolute or climb out of
    ``image_root`` with ``..``, and images resolve, through symlinks, outside it).
``samples.csv``
    One row per image: ``image`` (path relative to ``image_root``), ``split``
    (train / val / test), then one column per attribute with 0, 1 or 2 (unknown).
``boxes.json`` (optional)
    Ground-truth attribute boxes per image, ``{image: {attribute: [x0, y0, x1, y1]}}`` in
    pixels, for datasets that have them (the synthetic set).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np

from pedattr._version import __version__
from pedattr.data.annotations import (
    SPLITS,
    UNKNOWN,
    AnnotationError,
    RawAnnotations,
    check_image_name,
    positive_ratio,
    read_csv_rows,
    read_text_file,
)
from pedattr.utils.io import atomic_write_texts, make_folder

FORMAT_NAME = "pedattr-dataset"
FORMAT_VERSION = 1
DESCRIPTION_FILE = "dataset.json"
SAMPLES_FILE = "samples.csv"
BOXES_FILE = "boxes.json"


def training_positive_ratio(
    labels: np.ndarray, splits: np.ndarray, attribute_names: list[str] | None = None
) -> list[float] | None:
    """Positive ratio per attribute over the training split, ignoring unknown labels.

    Returns None for a dataset without a training split (evaluation only).

    Raises:
        AnnotationError: an attribute has no known (0/1) label in the training split, so its
            loss weight would be undefined.
    """
    train = labels[splits == "train"]
    if len(train) == 0:
        return None
    try:
        return positive_ratio(train, attribute_names).tolist()
    except AnnotationError as err:
        raise AnnotationError(f"training split: {err}") from None


def _samples_csv(raw: RawAnnotations) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "split", *raw.attribute_names])
    for name, split, row in zip(raw.image_names, raw.splits, raw.labels, strict=True):
        writer.writerow([name, split, *row.tolist()])
    return buffer.getvalue()


def write_description(
    raw: RawAnnotations,
    out_dir: str | os.PathLike,
    *,
    missing_images: list[str] | None = None,
    external_images: bool = False,
) -> Path:
    """Write ``raw`` as a dataset description folder; returns the path of ``dataset.json``.

    ``external_images`` records that the user accepted image names outside the image root
    (``pedattr prepare --allow-external-images``), so that loading accepts them too.
    """
    out_dir = make_folder(out_dir)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "attributes": list(raw.attribute_names),
        "image_root": str(raw.image_root),
        "splits": {s: int((raw.splits == s).sum()) for s in SPLITS if (raw.splits == s).any()},
        "positive_ratio": training_positive_ratio(raw.labels, raw.splits, raw.attribute_names),
        "num_samples": len(raw.image_names),
        "source": raw.source,
        "missing_images": list(missing_images or []),
        "has_boxes": raw.boxes is not None,
        "external_images": bool(external_images),
        "pedattr_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    texts = {SAMPLES_FILE: _samples_csv(raw)}
    if raw.boxes is not None:
        texts[BOXES_FILE] = json.dumps(dict(zip(raw.image_names, raw.boxes, strict=True)))
    # dataset.json last: its presence means the folder is complete. All or none of the files are
    # replaced, so that a full disk never pairs a new samples.csv with an old dataset.json.
    texts[DESCRIPTION_FILE] = json.dumps(meta, indent=2)
    atomic_write_texts({out_dir / name: text for name, text in texts.items()})
    return out_dir / DESCRIPTION_FILE


@dataclass
class DatasetDescription:
    """A prepared dataset, read back from its folder."""

    root: Path
    attribute_names: list[str]
    image_root: Path
    image_names: list[str]
    labels: np.ndarray  # [N, M] uint8, 0/1/2
    splits: np.ndarray  # [N] split names
    positive_ratio: np.ndarray | None  # [M], training split; None without one
    meta: dict = field(default_factory=dict)
    boxes: dict[str, dict[str, list[float]]] | None = None

    @classmethod
    def load(cls, root: str | os.PathLike) -> DatasetDescription:
        """Read a folder written by :func:`write_description` (``pedattr prepare``)."""
        root = Path(root)
        meta_path = root / DESCRIPTION_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{root}: no {DESCRIPTION_FILE}; prepare the dataset with `pedattr prepare`"
            )
        meta = _check_meta(_read_json(meta_path), meta_path)
        names, labels, splits = _read_samples(
            root / SAMPLES_FILE, meta["attributes"], external_images=meta["external_images"]
        )
        image_root = Path(meta["image_root"])
        boxes_path = root / BOXES_FILE
        boxes = _read_json(boxes_path) if boxes_path.is_file() else None
        if boxes is not None and not isinstance(boxes, dict):
            raise AnnotationError(f"{boxes_path}: expected a JSON object (image -> boxes)")
        return cls(
            root=root,
            attribute_names=list(meta["attributes"]),
            image_root=image_root if image_root.is_absolute() else root / image_root,
            image_names=names,
            labels=labels,
            splits=splits,
            positive_ratio=None
            if meta["positive_ratio"] is None
            else np.asarray(meta["positive_ratio"], dtype=np.float64),
            meta=meta,
            boxes=boxes,
        )

    def split_indices(self, split: str) -> np.ndarray:
        """Indices of the samples of ``split`` ("trainval" is train and val together)."""
        wanted = ("train", "val") if split == "trainval" else (split,)
        if not set(wanted) <= set(SPLITS):
            raise ValueError(f"unknown split {split!r}; expected one of {(*SPLITS, 'trainval')}")
        indices = np.flatnonzero(np.isin(self.splits, wanted))
        if indices.size == 0:
            raise ValueError(f"{self.root}: the dataset has no {split!r} samples")
        return indices

    def image_path(self, index: int) -> Path:
        return self.image_root / self.image_names[index]

    @cached_property
    def _resolved_image_root(self) -> str | None:
        """Where every image must resolve to; None when external images were accepted."""
        if self.meta.get("external_images") is True:
            return None
        return os.path.realpath(self.image_root)

    def check_inside(self, path: str | os.PathLike) -> None:
        """Raise :class:`PermissionError` for an image that resolves outside the image root.

        Called before an image is opened: a symlink placed after ``pedattr prepare`` checked
        the dataset must not lead reads out of it (unless it was prepared with
        ``--allow-external-images``).
        """
        inside = self._resolved_image_root
        if inside is None:
            return
        resolved = os.path.realpath(path)
        if not resolved.startswith(inside.rstrip(os.sep) + os.sep):
            raise PermissionError(
                f"{path} resolves to {resolved}, outside the image root {inside}; prepare the "
                "dataset with --allow-external-images to read such images"
            )


def load_description(data: DatasetDescription | str | os.PathLike) -> DatasetDescription:
    """A prepared dataset description, with one clear error when the folder is not one.

    Raises:
        FileNotFoundError: the folder, or its ``dataset.json``, does not exist; the message
            names the path and says to run ``pedattr prepare``.
    """
    if isinstance(data, DatasetDescription):
        return data
    path = Path(data)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such dataset folder; prepare one with "
            f"`pedattr prepare FORMAT --root RAW_DIR --out {path}`"
        )
    return DatasetDescription.load(path)  # names the path and `pedattr prepare` itself


def _read_json(path: Path) -> object:
    try:
        return json.loads(read_text_file(path))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply") from None


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_meta(meta: object, path: Path) -> dict:
    """``dataset.json``'s content, checked for the keys and types that loading uses."""
    if not isinstance(meta, dict):
        raise AnnotationError(f"{path}: expected a JSON object, found {_type_name(meta)}")
    version = meta.get("format_version", 0)
    if (
        meta.get("format") != FORMAT_NAME
        or not isinstance(version, int)
        or version > FORMAT_VERSION
    ):
        raise AnnotationError(f"{path}: not a dataset description this pedattr reads")
    for key in ("attributes", "image_root", "positive_ratio"):
        if key not in meta:
            raise AnnotationError(f"{path}: missing key {key!r}")
    attributes = meta["attributes"]
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise AnnotationError(f"{path}: 'attributes' must be a list of strings")
    if not attributes:
        raise AnnotationError(f"{path}: 'attributes' is empty")
    if not isinstance(meta["image_root"], str) or not meta["image_root"]:
        raise AnnotationError(f"{path}: 'image_root' must be a folder name (a string)")
    ratio = meta["positive_ratio"]
    if ratio is not None and not (
        isinstance(ratio, list)
        and len(ratio) == len(attributes)
        and all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r)
            for r in ratio
        )
    ):
        raise AnnotationError(
            f"{path}: 'positive_ratio' must be null or {len(attributes)} numbers (one per "
            "attribute)"
        )
    external = meta.get("external_images", False)
    if not isinstance(external, bool):
        raise AnnotationError(
            f"{path}: 'external_images' must be true or false, found {_type_name(external)}"
        )
    return {**meta, "external_images": external}


def _read_samples(
    path: Path, attributes: list[str], *, external_images: bool = False
) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = read_csv_rows(path)
    header = table[0] if table else None
    if header != ["image", "split", *attributes]:
        raise AnnotationError(f"{path}: header does not match the attributes of dataset.json")
    rows = []
    for number, row in enumerate(table[1:], start=2):
        if not row:  # a blank line
            continue
        if len(row) != len(header):
            raise AnnotationError(
                f"{path}, line {number}: {len(row)} cells, expected {len(header)} like the header"
            )
        check_image_name(row[0], where=f"{path}, line {number}", allow_external=external_images)
        rows.append(row)
    names = [row[0] for row in rows]
    splits = np.array([row[1] for row in rows], dtype=object)
    try:
        labels = np.array([row[2:] for row in rows], dtype=np.int64).reshape(len(rows), -1)
    except ValueError as err:
        raise AnnotationError(f"{path}: malformed label values ({err})") from err
    if not np.isin(labels, (0, 1, UNKNOWN)).all():
        raise AnnotationError(f"{path}: label values must be 0, 1 or 2 (unknown)")
    bad_splits = sorted(set(splits.tolist()) - set(SPLITS))
    if bad_splits:
        raise AnnotationError(f"{path}: unknown split names {bad_splits}; expected {SPLITS}")
    return names, labels.astype(np.uint8), splits


def carve_validation(
    description: DatasetDescription, fraction: float, seed: int
) -> tuple[DatasetDescription, list[str]]:
    """Hold out a seeded ``fraction`` of the training split as validation (RAP v1 has none).

    Returns a copy of ``description`` whose held-out samples are in the "val" split, and their
    image names. The same (fraction, seed) always holds out the same images, so evaluation and
    calibration can rebuild the validation split a training run used.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    train = np.flatnonzero(description.splits == "train")
    count = max(1, round(fraction * len(train)))
    held_out = np.sort(np.random.default_rng(seed).choice(train, size=count, replace=False))
    splits = description.splits.copy()
    splits[held_out] = "val"
    names = [description.image_names[i] for i in held_out]
    return dataclasses.replace(description, splits=splits), names
