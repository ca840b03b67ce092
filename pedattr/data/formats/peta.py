"""PETA: the processed ``PETA.mat`` of the 35-attribute protocol.

``peta`` is a 1x1 struct with ``data`` (19,000 x 109: 4 metadata columns, then 105 attribute
columns), ``attribute`` (105x1 cell of names), ``selected_attribute`` (the evaluated ones) and
``partion_attribute`` (sic, MATLAB's spelling in the released file): a 5x1 cell of 1x1 structs
with 1-based ``train`` / ``val`` / ``test`` index vectors (9,500 / 1,900 / 7,600). Images are
``images/00001.png`` .. ``images/19000.png``, numbered by row. The protocol evaluates the first
35 attribute columns (positive ratio above 5%).
"""

from __future__ import annotations

from pathlib import Path

from pedattr.data.annotations import RawAnnotations
from pedattr.data.formats._common import (
    PathLike,
    build,
    check_unique,
    image_folder,
    label_matrix,
    partition_splits,
    resolve_annotation,
)
from pedattr.data.formats._matlab import MatFields

ANNOTATION_FILE = "PETA.mat"
METADATA_COLUMNS = 4
EVALUATED_ATTRIBUTES = 35
# The spelling of the released file first; the corrected one in case a copy was re-saved.
PARTITION_FIELDS = ("partion_attribute", "partition_attribute")
SPLIT_FIELDS = {"train": ("train",), "val": ("val",), "test": ("test",)}


def read_peta(
    root: PathLike,
    *,
    partition: int = 0,
    annotation: PathLike | None = None,
    allow_external_images: bool = False,  # noqa: ARG001 - the names are numbers, always inside
) -> RawAnnotations:
    """Read PETA from ``PETA.mat`` (the 35-attribute protocol).

    Args:
        root: the dataset folder (holding ``PETA.mat`` and ``images/``).
        partition: which of the file's random partitions to use, 0-based (0..4).
        annotation: the annotation file, when not ``<root>/PETA.mat``.
        allow_external_images: accepted like every reader's; PETA's image names are
            generated from row numbers, so they are always inside the image folder.

    Returns:
        The first 35 attributes in file order; the partition's train / val / test splits.
    """
    root = Path(root)
    path = resolve_annotation(root, annotation, (ANNOTATION_FILE,))
    mat, version = MatFields.load(path, ["peta"])
    peta = mat.struct("peta")
    data = peta.matrix("data")
    attributes = peta.strings("attribute")
    if data.shape[1] != METADATA_COLUMNS + len(attributes):
        raise peta.error(
            "data",
            f"has {data.shape[1]} columns, expected {METADATA_COLUMNS} metadata columns plus "
            f"one per name in 'peta.attribute' ({METADATA_COLUMNS + len(attributes)})",
        )
    if len(attributes) < EVALUATED_ATTRIBUTES:
        raise peta.error(
            "attribute", f"names {len(attributes)} attributes, fewer than the protocol's 35"
        )
    evaluated = attributes[:EVALUATED_ATTRIBUTES]
    check_unique(evaluated, file=path, field="peta.attribute")
    columns = range(METADATA_COLUMNS, METADATA_COLUMNS + EVALUATED_ATTRIBUTES)
    labels = label_matrix(data[:, columns], file=path, field="peta.data", columns=columns)
    count = data.shape[0]
    splits, provenance = partition_splits(
        peta, PARTITION_FIELDS, partition, SPLIT_FIELDS, size=count
    )
    return build(
        attribute_names=evaluated,
        # Images are numbered by row, 1-based, five digits.
        image_names=[f"{i + 1:05d}.png" for i in range(count)],
        labels=labels,
        splits=splits,
        image_root=image_folder(root, ("images",)),
        source={
            "format": "peta",
            "annotation": str(path),
            "mat_version": version,
            "attributes_in_file": len(attributes),
            "evaluated_attributes": f"first {EVALUATED_ATTRIBUTES} label columns",
            **provenance,
        },
    )
