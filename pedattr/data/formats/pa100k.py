"""PA-100K: the official ``annotation.mat``.

Variables (MATLAB v5 in the released copy; v7.3 re-saves are read too): ``attributes``
(26x1 cell of names), ``train_images_name`` / ``val_images_name`` / ``test_images_name``
(Nx1 cells of file names, 80,000 / 10,000 / 10,000) and ``train_label`` / ``val_label`` /
``test_label`` (N x 26, 0/1). Images are in ``data/`` (older copies:
``release_data/release_data/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pedattr.data.annotations import SPLITS, RawAnnotations, check_image_names
from pedattr.data.formats._common import (
    PathLike,
    build,
    check_unique,
    image_folder,
    label_matrix,
    resolve_annotation,
)
from pedattr.data.formats._matlab import MatFields

ANNOTATION_FILE = "annotation.mat"
IMAGE_FOLDERS = ("data", "release_data/release_data")


def read_pa100k(
    root: PathLike,
    *,
    annotation: PathLike | None = None,
    allow_external_images: bool = False,
) -> RawAnnotations:
    """Read PA-100K from its official ``annotation.mat``.

    Args:
        root: the dataset folder (holding ``annotation.mat`` and the image folder).
        annotation: the annotation file, when not ``<root>/annotation.mat``.
        allow_external_images: accept image names that are absolute or climb out of the
            image folder with ``..`` (refused by default, naming the file and entry).

    Returns:
        All 26 attributes in file order; the official train / val / test splits.
    """
    root = Path(root)
    path = resolve_annotation(root, annotation, (ANNOTATION_FILE,))
    mat, version = MatFields.load(path)
    attributes = mat.strings("attributes")
    check_unique(attributes, file=path, field="attributes")
    names: list[str] = []
    labels: list[np.ndarray] = []
    splits: list[str] = []
    for split in SPLITS:
        split_names = mat.strings(f"{split}_images_name")
        check_image_names(
            split_names,
            file=path,
            field=f"{split}_images_name",
            allow_external=allow_external_images,
        )
        split_labels = mat.matrix(f"{split}_label")
        if split_labels.shape != (len(split_names), len(attributes)):
            raise mat.error(
                f"{split}_label",
                f"has shape {split_labels.shape}, expected ({len(split_names)}, "
                f"{len(attributes)}) for {len(split_names)} names in '{split}_images_name' and "
                f"{len(attributes)} in 'attributes'",
            )
        names += split_names
        labels.append(
            label_matrix(
                split_labels,
                file=path,
                field=f"{split}_label",
                columns=range(len(attributes)),
            )
        )
        splits += [split] * len(split_names)
    check_unique(names, file=path, field="*_images_name")
    return build(
        attribute_names=attributes,
        image_names=names,
        labels=np.concatenate(labels),
        splits=np.array(splits, dtype=object),
        image_root=image_folder(root, IMAGE_FOLDERS),
        source={
            "format": "pa100k",
            "annotation": str(path),
            "mat_version": version,
            "attributes_in_file": len(attributes),
        },
    )
