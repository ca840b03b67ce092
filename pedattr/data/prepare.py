"""``pedattr prepare``: official annotation files -> one prepared dataset description.

The format reader (:func:`pedattr.data.formats.read_annotations`) parses the official files and
raises :class:`~pedattr.data.annotations.AnnotationError` naming the missing or malformed field.
This module then optionally selects or reorders attributes by name, checks that every referenced
image exists, and writes the description folder (:mod:`pedattr.data.description`) that training,
evaluation and the demo read.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pedattr.data.annotations import (
    SPLITS,
    AnnotationError,
    RawAnnotations,
    escaped,
    read_names_file,
)
from pedattr.data.description import write_description

#: Missing images named in the error message; the rest are counted.
MISSING_SHOWN = 10
#: Below this many images the existence check is quick and shows no progress bar.
PROGRESS_MIN_IMAGES = 5000


#: Where each format's files are expected (``pedattr prepare --help`` lists these).
FORMAT_LAYOUTS: dict[str, str] = {
    "pa100k": "ROOT/annotation.mat; images in ROOT/data/ (older copies: "
    "ROOT/release_data/release_data/)",
    "peta": "ROOT/PETA.mat; images ROOT/images/00001.png ...; --partition 0..4",
    "rap1": "ROOT/RAP_annotation/RAP_annotation.mat (or ROOT/RAP_annotation.mat); images in "
    "ROOT/RAP_dataset/; --partition 0..4",
    "rap2": "as rap1 (the v2 file, 54 attributes); --partition 0..4",
    "rethinking-pkl": "ROOT/dataset_all.pkl or ROOT is the .pkl; images in the folder the pickle "
    "records, else the folder of that name beside it, or --image-root; --partition 0..4 for "
    "PETA and RAP pickles",
    "text-lists": "ROOT/train.txt, val.txt, test.txt ('path l1 ... lM' per line); names with "
    "--option names_file=FILE; images relative to ROOT or --image-root",
    "csv": "ROOT is the CSV file, header image,<attr>,...[,split]; images relative to its "
    "folder or --image-root",
}


def parse_attribute_selection(value: str) -> list[str]:
    """Attribute names from "A,B,C", or from "@FILE" (one name per line, # comments).

    Raises:
        AnnotationError: the selection is empty.
    """
    if value.startswith("@"):
        return read_names_file(value[1:])
    names = [name.strip() for name in value.split(",")]
    names = [name for name in names if name]
    if not names:
        raise AnnotationError(f"no attribute names in {value!r}")
    return names


class MissingImagesError(FileNotFoundError):
    """Images referenced by the annotations are not on disk (and ``allow_missing`` is off)."""


def select_attributes(raw: RawAnnotations, names: Sequence[str]) -> RawAnnotations:
    """Keep only the attributes ``names``, in that order; the source records the selection.

    Raises:
        AnnotationError: a name is not in the dataset, or is given twice.
    """
    names = [name.strip() for name in names if name.strip()]
    selected = raw.select_attributes(names)
    selected.source = {**raw.source, "attribute_selection": list(names)}
    return selected


def find_missing_images(raw: RawAnnotations, *, allow_external: bool = True) -> list[str]:
    """Image names (relative to ``raw.image_root``) that are not an existing file.

    Args:
        raw: the annotations.
        allow_external: accept images that resolve (through symlinks) outside the image root;
            when False, such an image raises :class:`AnnotationError` naming it and where it
            leads, before anything reads it.
    """
    root = Path(raw.image_root)
    resolved_root = os.path.realpath(root)
    prefix = resolved_root.rstrip(os.sep) + os.sep  # a plain prefix test: commonpath is slow
    folders: dict[str, str] = {}  # resolved folder per name's folder: resolving is slow
    names = tqdm(
        raw.image_names,
        desc="checking images",
        unit="img",
        disable=len(raw.image_names) < PROGRESS_MIN_IMAGES,
        leave=False,
    )
    missing = []
    for name in names:
        # One lstat per image: a regular file needs no further look unless its folder leads out.
        path = os.path.join(root, name)
        try:
            mode = os.lstat(path).st_mode
        except (OSError, ValueError):  # ValueError: a NUL in the name
            missing.append(name)
            continue
        link = stat.S_ISLNK(mode)
        if not (os.path.isfile(path) if link else stat.S_ISREG(mode)):
            missing.append(name)
        elif not allow_external:
            resolved = os.path.realpath(path) if link else _in_folder(root, name, folders)
            if not resolved.startswith(prefix):
                raise AnnotationError(
                    f"{_annotation_file(raw)}: image {name!r} resolves to {resolved}, outside "
                    f"the image root {resolved_root} (a symlink); pass "
                    "--allow-external-images to accept images outside it"
                )
    return missing


def _in_folder(root: Path, name: str, folders: dict[str, str]) -> str:
    """Where ``root / name``, not itself a symlink, resolves to; each folder is resolved once.

    ``name`` has no ``..`` (the readers refuse it), so it is its resolved folder plus its name.
    """
    folder, file_name = os.path.split(name)
    if folder not in folders:
        folders[folder] = os.path.realpath(root / folder)
    return os.path.join(folders[folder], file_name)


def _annotation_file(raw: RawAnnotations) -> str:
    annotation = raw.source.get("annotation")
    if isinstance(annotation, dict):  # one list per split
        return ", ".join(map(str, annotation.values()))
    return str(annotation) if annotation else "the annotations"


def drop_images(raw: RawAnnotations, names: Sequence[str]) -> RawAnnotations:
    """A copy of ``raw`` without the samples whose image name is in ``names``."""
    dropped = set(names)
    keep = np.array([name not in dropped for name in raw.image_names], dtype=bool)
    return dataclasses.replace(
        raw,
        image_names=[name for name, k in zip(raw.image_names, keep, strict=True) if k],
        labels=raw.labels[keep],
        splits=raw.splits[keep],
        boxes=None if raw.boxes is None else [b for b, k in zip(raw.boxes, keep, strict=True) if k],
        source=dict(raw.source),
    )


def _missing_message(raw: RawAnnotations, missing: Sequence[str]) -> str:
    shown = "\n".join(f"  {escaped(name)}" for name in missing[:MISSING_SHOWN])
    more = len(missing) - MISSING_SHOWN
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return (
        f"{len(missing)} of {len(raw.image_names)} images referenced by the annotations are "
        f"missing under {raw.image_root}:\n{shown}{tail}\n"
        f"Check --root, or pass --allow-missing to leave these samples out."
    )


def check_images(
    raw: RawAnnotations, *, allow_missing: bool, allow_external: bool = False
) -> tuple[RawAnnotations, list[str]]:
    """Check every referenced image exists; returns the samples to keep and the missing names.

    Raises:
        MissingImagesError: some images are missing and ``allow_missing`` is off, or all are.
        AnnotationError: an image resolves outside the image root and ``allow_external`` is off.
    """
    missing = find_missing_images(raw, allow_external=allow_external)
    if not missing:
        return raw, []
    if not allow_missing or len(missing) == len(raw.image_names):
        raise MissingImagesError(_missing_message(raw, missing))
    return drop_images(raw, missing), missing


def format_summary(raw: RawAnnotations, out_dir: Path, missing: Sequence[str]) -> str:
    """A few lines describing a prepared dataset, for the terminal."""
    counts = ", ".join(
        f"{split} {int((raw.splits == split).sum())}"
        for split in SPLITS
        if (raw.splits == split).any()
    )
    names = raw.attribute_names
    listed = ", ".join(map(escaped, names if len(names) <= 12 else [*names[:12], "..."]))
    lines = [
        f"prepared {out_dir}: {len(raw.image_names)} images ({counts})",
        f"  {len(names)} attributes: {listed}",
        f"  images under {raw.image_root}",
    ]
    if missing:
        lines.append(f"  missing images left out: {len(missing)} (listed in dataset.json)")
    return "\n".join(lines)


def prepare_dataset(
    format_name: str,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    allow_missing: bool = False,
    allow_external_images: bool = False,
    attributes: Sequence[str] | None = None,
    verbose: bool = True,
    **reader_options,
) -> Path:
    """Read a dataset's official annotations and write its prepared description.

    Args:
        format_name: a key of :data:`pedattr.data.formats.FORMATS` (e.g. "peta", "rap", "pa100k").
        root: the raw dataset folder, as downloaded.
        out_dir: folder to write ``dataset.json`` and ``samples.csv`` to.
        allow_missing: leave out samples whose image is missing (listed in the description's
            ``missing_images``) instead of refusing.
        allow_external_images: accept image names that are absolute or climb out of the image
            root with ``..``, and images that resolve (through symlinks) outside it; recorded
            in ``dataset.json`` so that training reads them too. By default such a name is
            refused with the file and row that hold it, and nothing outside the root is read.
        attributes: attribute names to keep, in output order; default: all, in the official
            file order.
        verbose: print a summary.
        **reader_options: passed to the format reader (e.g. ``annotation``, ``partition``).

    Returns:
        The description folder, which :meth:`DatasetDescription.load` and the training,
        evaluation and demo commands read.

    Raises:
        AnnotationError: the annotation file does not match its format, or an unknown attribute.
        MissingImagesError: referenced images are missing and ``allow_missing`` is off.
    """
    from pedattr.data.formats import read_annotations

    if "allow_external_images" in reader_options:
        raise ValueError("pass allow_external_images as itself (--allow-external-images)")
    raw = read_annotations(
        format_name, root, allow_external_images=allow_external_images, **reader_options
    )
    # Absolute, because the description resolves a relative image_root against its own folder.
    raw = dataclasses.replace(raw, image_root=Path(raw.image_root).resolve())
    if attributes is not None:
        raw = select_attributes(raw, attributes)
    raw, missing = check_images(
        raw, allow_missing=allow_missing, allow_external=allow_external_images
    )
    out_dir = Path(out_dir)
    write_description(raw, out_dir, missing_images=missing, external_images=allow_external_images)
    if verbose:
        print(format_summary(raw, out_dir, missing))
    return out_dir
