"""The prepared dataset description that training, evaluation and the demo read.

``pedattr prepare`` writes one folder per dataset:

``dataset.json``
    ``format`` ("pedattr-dataset"), ``format_version``, ``attributes`` (names, in output
    order), ``image_root`` (absolute, or relative to the folder), ``splits`` (sample count per
    split), ``positive_ratio`` (per attribute, over the training split only, unknown labels
    excluded: the loss weights), ``num_samples``, ``source`` (format, annotation file, partition,
    ...), ``missing_images`` (listed when prepared with ``--allow-missing``), ``has_boxes``,
    ``pedattr_version``, ``created``.
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
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pedattr._io import atomic_write_texts, make_folder
from pedattr._version import __version__
from pedattr.data.annotations import (
    SPLITS,
    UNKNOWN,
    AnnotationError,
    RawAnnotations,
    positive_ratio,
)

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
    raw: RawAnnotations, out_dir: str | os.PathLike, *, missing_images: list[str] | None = None
) -> Path:
    """Write ``raw`` as a dataset description folder; returns the path of ``dataset.json``."""
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
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_NAME or meta.get("format_version", 0) > FORMAT_VERSION:
            raise AnnotationError(f"{meta_path}: not a dataset description this pedattr reads")
        names, labels, splits = _read_samples(root / SAMPLES_FILE, meta["attributes"])
        image_root = Path(meta["image_root"])
        boxes_path = root / BOXES_FILE
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
            boxes=json.loads(boxes_path.read_text()) if boxes_path.is_file() else None,
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


def _read_samples(path: Path, attributes: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["image", "split", *attributes]:
            raise AnnotationError(f"{path}: header does not match the attributes of dataset.json")
        rows = list(reader)
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
