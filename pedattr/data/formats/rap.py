"""RAP v1 and RAP v2: the official ``RAP_annotation.mat`` of each.

RAP v1 (41,585 images): 1x1 struct ``RAP_annotation`` with the image names, a 41,585 x 92
label matrix (2 = unknown), the 92 English attribute names and ``partion`` (sic): 5 random
partitions of 33,268 train / 8,317 test 1-based indices. Published readers address these
fields by position only, and copies disagree on the names (``imagesname`` / ``name``,
``label`` / ``data``, ``attribute_eng`` / ``attribute``, ``partion`` / ``partition``; inside a
partition ``train_index`` / ``trainval_index`` and ``test_index``), so every known spelling is
accepted and a two-field partition struct with other names is read by position (train first).
The protocol evaluates the first 51 columns. RAP v1 has no validation split; a later stage
carves one from "train".

RAP v2 (84,928 images): ``RAP_annotation`` with ``name``, ``data`` (84,928 x 152),
``attribute`` (152 names), ``selected_attribute`` (the 54 evaluated, 1-based) and
``partition_attribute``: 5 partitions of ``train_index`` / ``val_index`` / ``test_index``
(50,957 / 16,986 / 16,985, 1-based).

Images of both are in ``RAP_dataset/``; the annotation file in ``RAP_annotation/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pedattr.data.annotations import RawAnnotations, check_image_names
from pedattr.data.formats._common import (
    PathLike,
    build,
    check_unique,
    image_folder,
    indices_from,
    label_matrix,
    partition_splits,
    resolve_annotation,
)
from pedattr.data.formats._matlab import MatFields

ANNOTATION_FILES = ("RAP_annotation/RAP_annotation.mat", "RAP_annotation.mat")
IMAGE_FOLDERS = ("RAP_dataset",)
STRUCT = "RAP_annotation"

RAP1_EVALUATED_ATTRIBUTES = 51
RAP1_NAME_FIELDS = ("imagesname", "name", "image_name")
RAP1_LABEL_FIELDS = ("label", "data")
RAP1_ATTRIBUTE_FIELDS = ("attribute_eng", "attribute")
RAP1_PARTITION_FIELDS = ("partion", "partition", "partition_attribute")
RAP1_SPLIT_FIELDS = {
    "train": ("train_index", "trainval_index", "train"),
    "test": ("test_index", "test"),
}

RAP2_PARTITION_FIELDS = ("partition_attribute", "partion_attribute", "partition")
RAP2_SPLIT_FIELDS = {
    "train": ("train_index", "train"),
    "val": ("val_index", "val"),
    "test": ("test_index", "test"),
}


def _load(root: Path, annotation: PathLike | None) -> tuple[Path, MatFields, str]:
    path = resolve_annotation(root, annotation, ANNOTATION_FILES)
    mat, version = MatFields.load(path, [STRUCT])
    return path, mat.struct(STRUCT), version


def _names_and_matrix(
    rap: MatFields,
    name_fields: tuple[str, ...],
    label_fields: tuple[str, ...],
    attribute_fields: tuple[str, ...],
    allow_external: bool,
) -> tuple[list[str], list[str], np.ndarray]:
    images = rap.strings(*name_fields)
    check_image_names(
        images,
        file=rap.file,
        field=rap.path_of(rap.find(*name_fields)),
        allow_external=allow_external,
    )
    check_unique(images, file=rap.file, field=rap.path_of(rap.find(*name_fields)))
    data = rap.matrix(*label_fields)
    attributes = rap.strings(*attribute_fields)
    data_field, attribute_field = rap.find(*label_fields), rap.find(*attribute_fields)
    if data.shape != (len(images), len(attributes)):
        raise rap.error(
            data_field,
            f"has shape {data.shape}, expected ({len(images)}, {len(attributes)}) for "
            f"{len(images)} image names and {len(attributes)} names in '{attribute_field}'",
        )
    return images, attributes, data


def read_rap1(
    root: PathLike,
    *,
    partition: int = 0,
    annotation: PathLike | None = None,
    allow_external_images: bool = False,
) -> RawAnnotations:
    """Read RAP v1 from its ``RAP_annotation.mat`` (the 51-attribute protocol).

    Args:
        root: the dataset folder (holding ``RAP_annotation/`` and ``RAP_dataset/``).
        partition: which of the file's random partitions to use, 0-based (0..4).
        annotation: the annotation file, when not ``<root>/RAP_annotation/RAP_annotation.mat``
            (or ``<root>/RAP_annotation.mat``).
        allow_external_images: accept image names that are absolute or climb out of the
            image folder with ``..`` (refused by default, naming the file and entry).

    Returns:
        The first 51 attributes in file order, 2 = unknown; the partition's train and test
        images as "train" and "test" (no "val").
    """
    root = Path(root)
    path, rap, version = _load(root, annotation)
    images, attributes, data = _names_and_matrix(
        rap, RAP1_NAME_FIELDS, RAP1_LABEL_FIELDS, RAP1_ATTRIBUTE_FIELDS, allow_external_images
    )
    if len(attributes) < RAP1_EVALUATED_ATTRIBUTES:
        raise rap.error(
            rap.find(*RAP1_ATTRIBUTE_FIELDS),
            f"names {len(attributes)} attributes, fewer than the protocol's 51",
        )
    columns = range(RAP1_EVALUATED_ATTRIBUTES)
    evaluated = attributes[:RAP1_EVALUATED_ATTRIBUTES]
    check_unique(evaluated, file=path, field=rap.path_of(rap.find(*RAP1_ATTRIBUTE_FIELDS)))
    labels = label_matrix(
        data[:, columns],
        file=path,
        field=rap.path_of(rap.find(*RAP1_LABEL_FIELDS)),
        columns=columns,
    )
    splits, provenance = partition_splits(
        rap,
        RAP1_PARTITION_FIELDS,
        partition,
        RAP1_SPLIT_FIELDS,
        size=len(images),
        positional_fallback=True,
    )
    return build(
        attribute_names=evaluated,
        image_names=images,
        labels=labels,
        splits=splits,
        image_root=image_folder(root, IMAGE_FOLDERS),
        source={
            "format": "rap1",
            "annotation": str(path),
            "mat_version": version,
            "attributes_in_file": len(attributes),
            "evaluated_attributes": f"first {RAP1_EVALUATED_ATTRIBUTES} label columns",
            **provenance,
        },
    )


def read_rap2(
    root: PathLike,
    *,
    partition: int = 0,
    annotation: PathLike | None = None,
    allow_external_images: bool = False,
) -> RawAnnotations:
    """Read RAP v2 from its ``RAP_annotation.mat`` (the 54 selected attributes).

    Args:
        root: the dataset folder (holding ``RAP_annotation/`` and ``RAP_dataset/``).
        partition: which of the file's random partitions to use, 0-based (0..4).
        annotation: the annotation file, when not ``<root>/RAP_annotation/RAP_annotation.mat``
            (or ``<root>/RAP_annotation.mat``).
        allow_external_images: accept image names that are absolute or climb out of the
            image folder with ``..`` (refused by default, naming the file and entry).

    Returns:
        The attributes of ``selected_attribute``, in its order, 2 = unknown; the partition's
        train / val / test splits.
    """
    root = Path(root)
    path, rap, version = _load(root, annotation)
    images, attributes, data = _names_and_matrix(
        rap, ("name",), ("data",), ("attribute",), allow_external_images
    )
    field, selected = rap.vector("selected_attribute")
    columns = indices_from(
        selected, size=len(attributes), file=path, field=rap.path_of(field), base=1
    )
    evaluated = [attributes[c] for c in columns]
    check_unique(evaluated, file=path, field=rap.path_of("attribute"))
    labels = label_matrix(
        data[:, columns], file=path, field=rap.path_of("data"), columns=columns.tolist()
    )
    splits, provenance = partition_splits(
        rap, RAP2_PARTITION_FIELDS, partition, RAP2_SPLIT_FIELDS, size=len(images)
    )
    return build(
        attribute_names=evaluated,
        image_names=images,
        labels=labels,
        splits=splits,
        image_root=image_folder(root, IMAGE_FOLDERS),
        source={
            "format": "rap2",
            "annotation": str(path),
            "mat_version": version,
            "attributes_in_file": len(attributes),
            "evaluated_attributes": f"{len(columns)} of selected_attribute",
            **provenance,
        },
    )
