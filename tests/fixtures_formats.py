"""Tiny annotation files in the exact layouts of the official datasets, for tests.

Real PA-100K, PETA and RAP files cannot ship with pedattr, so these writers reproduce their
layouts at a small size: the same variable and field names, MATLAB structs and cell arrays of
strings, 1-based index vectors and (for PETA and RAP) the full column counts. ``.mat`` files are
written as MATLAB v5 with scipy, or as MATLAB v7.3 (HDF5 with MATLAB's header, class attributes,
``#refs#`` references and column-major transposes) with h5py.

Each ``*_variables`` builder returns the file's variables and an :class:`Expected` result; the
``write_*`` helpers take a ``mutate`` callback that edits the variables before writing, which
is how tests make malformed files. Everything is deterministic (seeded).
"""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PA100K_ATTRIBUTES = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses",
    "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve",
    "UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern",
    "LongCoat", "Trousers", "Shorts", "Skirt&Dress", "boots",
)  # fmt: skip
PETA_COLUMNS = 105
PETA_METADATA = 4
RAP1_COLUMNS = 92
RAP1_EVALUATED = 51
RAP2_COLUMNS = 152
RAP2_SELECTED = 54
PARTITIONS = 5

Variables = dict[str, Any]
Mutate = Callable[[Variables], Any] | None


@dataclass
class Expected:
    """What a reader should return for a fixture.

    Attributes:
        attribute_names: evaluated attributes, in output order.
        image_names: all images of the file, in file order.
        labels: [N, M] uint8 labels of the evaluated attributes, in file order.
        partition_splits: split per image for each partition (one entry for single-split files).
        image_dir: the image folder.
    """

    attribute_names: list[str]
    image_names: list[str]
    labels: np.ndarray
    partition_splits: list[list[str]]
    image_dir: Path | None = None
    extra: dict = field(default_factory=dict)

    def splits(self, partition: int = 0) -> list[str]:
        return self.partition_splits[partition]


@dataclass
class StructArray:
    """A MATLAB struct array (not a cell of structs): an object array of same-field dicts."""

    elements: np.ndarray


def cell(items: list[Any], *, column: bool = True) -> np.ndarray:
    """A MATLAB cell array, N x 1 (column) or 1 x N, as scipy.io.savemat writes object arrays."""
    out = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for index, item in enumerate(items):
        out[(index, 0) if column else (0, index)] = item
    return out


def one_based(indices: np.ndarray, *, column: bool) -> np.ndarray:
    """MATLAB double index vector, 1-based."""
    values = np.asarray(indices, dtype=np.float64) + 1
    return values.reshape(-1, 1) if column else values.reshape(1, -1)


def _partition_splits(rng: np.random.Generator, count: int, sizes: dict[str, int]) -> list[str]:
    order = rng.permutation(count)
    splits = np.empty(count, dtype=object)
    start = 0
    for split, size in sizes.items():
        splits[order[start : start + size]] = split
        start += size
    return splits.tolist()


def _indices(splits: list[str], split: str) -> np.ndarray:
    # Shuffled, not sorted, like random partitions: readers must not assume order.
    found = np.flatnonzero(np.array(splits, dtype=object) == split)
    return np.random.default_rng(len(found)).permutation(found)


def _labels(rng: np.random.Generator, rows: int, cols: int, unknown: bool = False) -> np.ndarray:
    labels = (rng.random((rows, cols)) < 0.3).astype(np.float64)
    if unknown:
        labels[rng.random((rows, cols)) < 0.05] = 2
    return labels


# --------------------------------------------------------------------------- PA-100K


def pa100k_variables(
    sizes: tuple[int, int, int] = (6, 2, 2), attributes: int = 26, seed: int = 0
) -> tuple[Variables, Expected]:
    """``annotation.mat`` of PA-100K: names and labels per split, attribute names."""
    rng = np.random.default_rng(seed)
    names = list(PA100K_ATTRIBUTES[:attributes])
    variables: Variables = {"attributes": cell(names)}
    images, labels, splits = [], [], []
    for split, size in zip(("train", "val", "test"), sizes, strict=True):
        split_images = [f"{len(images) + i + 1:06d}.jpg" for i in range(size)]
        split_labels = _labels(rng, size, attributes)
        variables[f"{split}_images_name"] = cell(split_images)
        variables[f"{split}_label"] = split_labels.astype(np.uint8)
        images += split_images
        labels.append(split_labels)
        splits += [split] * size
    # MATLAB's own order: names, then labels (as in the released file).
    order = ["attributes"] + [f"{s}_images_name" for s in ("train", "val", "test")]
    order += [f"{s}_label" for s in ("train", "val", "test")]
    variables = {key: variables[key] for key in order}
    expected = Expected(names, images, np.concatenate(labels).astype(np.uint8), [splits])
    return variables, expected


def write_pa100k(
    root: Path,
    *,
    v73: bool = False,
    image_dir: str = "data",
    images: bool = False,
    mutate: Mutate = None,
    **options: Any,
) -> Expected:
    """Write ``<root>/annotation.mat`` (and optionally tiny images in ``image_dir``)."""
    variables, expected = pa100k_variables(**options)
    return _finish(root / "annotation.mat", variables, expected, root / image_dir, v73, images,
                   mutate)  # fmt: skip


# --------------------------------------------------------------------------- PETA


def peta_variables(count: int = 10, seed: int = 1) -> tuple[Variables, Expected]:
    """``PETA.mat``: struct ``peta`` with data, attribute, selected_attribute, partitions."""
    rng = np.random.default_rng(seed)
    names = [f"peta_attr_{i:03d}" for i in range(PETA_COLUMNS)]
    labels = _labels(rng, count, PETA_COLUMNS)
    # Metadata columns: image number and three identifiers the readers ignore.
    metadata = np.column_stack([np.arange(1, count + 1), rng.integers(1, 9, (count, 3))])
    sizes = {"train": count // 2, "val": count // 5, "test": count - count // 2 - count // 5}
    partition_splits = [_partition_splits(rng, count, sizes) for _ in range(PARTITIONS)]
    partitions = cell(
        [
            {s: one_based(_indices(splits, s), column=True) for s in ("train", "val", "test")}
            for splits in partition_splits
        ]
    )
    peta = {
        "data": np.hstack([metadata, labels]).astype(np.float64),
        "attribute": cell(names),
        "selected_attribute": one_based(np.arange(35), column=False),
        "partion_attribute": partitions,  # sic: the released file's spelling
    }
    expected = Expected(
        names[:35],
        [f"{i + 1:05d}.png" for i in range(count)],
        labels[:, :35].astype(np.uint8),
        partition_splits,
    )
    return {"peta": peta}, expected


def write_peta(
    root: Path, *, v73: bool = False, images: bool = False, mutate: Mutate = None, **options: Any
) -> Expected:
    """Write ``<root>/PETA.mat`` (and optionally tiny images in ``images/``)."""
    variables, expected = peta_variables(**options)
    return _finish(root / "PETA.mat", variables, expected, root / "images", v73, images, mutate)


# --------------------------------------------------------------------------- RAP v1 and v2


def _rap_image_names(count: int) -> list[str]:
    return [
        f"CAM{i % 3 + 1:02d}_2014-02-15_20140215161032-20140215162620_tarid{i}_frame{100 + i}"
        f"_line1.png"
        for i in range(count)
    ]


def rap1_variables(
    count: int = 12, seed: int = 2, naming: str = "released"
) -> tuple[Variables, Expected]:
    """``RAP_annotation.mat`` of RAP v1: struct ``RAP_annotation``, 92 columns, 5 partitions.

    Args:
        count: number of images.
        seed: random seed.
        naming: "released" for the field names public readers of the real file use
            (``partion``, ``label``, ``attribute_eng``, ``imagesname``, ...), "alternative" for
            ``name`` / ``data`` / ``attribute`` spellings of other copies.
    """
    rng = np.random.default_rng(seed)
    names = [f"rap1_attr_{i:02d}" for i in range(RAP1_COLUMNS)]
    labels = _labels(rng, count, RAP1_COLUMNS, unknown=True)
    images = _rap_image_names(count)
    sizes = {"train": count - count // 4, "test": count // 4}
    partition_splits = [_partition_splits(rng, count, sizes) for _ in range(PARTITIONS)]
    partitions = cell(
        [
            {
                "train_index": one_based(_indices(splits, "train"), column=False),
                "test_index": one_based(_indices(splits, "test"), column=False),
            }
            for splits in partition_splits
        ]
    )
    if naming == "released":
        # Field order as positional readers address it: 0 partion, 1 label, 3 names, 5 images.
        rap = {
            "partion": partitions,
            "label": labels,
            "attribute_chinese": cell([f"属性{i}" for i in range(RAP1_COLUMNS)]),
            "attribute_eng": cell(names),
            "attribute_exp": cell([f"explanation of {n}" for n in names]),
            "imagesname": cell(images),
            "position": rng.integers(0, 200, (count, 16)).astype(np.float64),
        }
    else:
        rap = {
            "partion": partitions,
            "data": labels,
            "attribute": cell(names),
            "name": cell(images),
        }
    expected = Expected(
        names[:RAP1_EVALUATED], images, labels[:, :RAP1_EVALUATED].astype(np.uint8),
        partition_splits,
    )  # fmt: skip
    return {"RAP_annotation": rap}, expected


def rap2_variables(count: int = 12, seed: int = 3) -> tuple[Variables, Expected]:
    """``RAP_annotation.mat`` of RAP v2: 152 columns, 54 selected, train/val/test partitions."""
    rng = np.random.default_rng(seed)
    names = [f"rap2_attr_{i:03d}" for i in range(RAP2_COLUMNS)]
    labels = _labels(rng, count, RAP2_COLUMNS, unknown=True)
    images = _rap_image_names(count)
    # Not sorted: the output must follow selected_attribute's order.
    selected = rng.choice(RAP2_COLUMNS, RAP2_SELECTED, replace=False)
    sizes = {"train": count // 2, "val": count // 4, "test": count - count // 2 - count // 4}
    partition_splits = [_partition_splits(rng, count, sizes) for _ in range(PARTITIONS)]
    partitions = cell(
        [
            {
                f"{s}_index": one_based(_indices(splits, s), column=False)
                for s in ("train", "val", "test")
            }
            for splits in partition_splits
        ],
        column=False,
    )
    rap = {
        "name": cell(images),
        "data": labels,
        "attribute": cell(names),
        "selected_attribute": one_based(selected, column=False),
        "partition_attribute": partitions,
    }
    expected = Expected(
        [names[i] for i in selected], images, labels[:, selected].astype(np.uint8),
        partition_splits,
    )  # fmt: skip
    return {"RAP_annotation": rap}, expected


def write_rap(
    root: Path,
    *,
    version: int = 2,
    v73: bool = False,
    images: bool = False,
    mutate: Mutate = None,
    **options: Any,
) -> Expected:
    """Write ``<root>/RAP_annotation/RAP_annotation.mat`` of RAP v1 or v2."""
    builder = rap1_variables if version == 1 else rap2_variables
    variables, expected = builder(**options)
    path = root / "RAP_annotation" / "RAP_annotation.mat"
    return _finish(path, variables, expected, root / "RAP_dataset", v73, images, mutate)


# --------------------------------------------------------------------------- writing .mat files


def _finish(
    path: Path,
    variables: Variables,
    expected: Expected,
    image_dir: Path,
    v73: bool,
    images: bool,
    mutate: Mutate,
) -> Expected:
    if mutate is not None:
        mutate(variables)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mat(path, variables, v73=v73)
    expected.image_dir = image_dir
    if images:
        write_images(image_dir, expected.image_names)
    return expected


def write_images(folder: Path, names: list[str]) -> None:
    """Tiny distinct images for ``names`` (format from the extension)."""
    from PIL import Image

    for index, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 16), (index * 37 % 256, index * 91 % 256, 128)).save(path)


def write_mat(path: Path, variables: Variables, *, v73: bool = False) -> None:
    """Write ``variables`` as MATLAB v5 (scipy) or v7.3 (h5py) ``.mat`` file.

    dicts become 1x1 structs, object arrays cell arrays, :class:`StructArray` struct arrays,
    str char arrays.
    """
    if v73:
        _write_v73(path, variables)
    else:
        from scipy.io import savemat

        savemat(path, _to_v5(variables), format="5", long_field_names=True)


def _to_v5(value: Any) -> Any:
    if isinstance(value, StructArray):
        fields = list(value.elements.flat[0])
        records = np.empty(value.elements.shape, dtype=[(f, object) for f in fields])
        for index in np.ndindex(value.elements.shape):
            for name in fields:
                records[name][index] = _to_v5(value.elements[index][name])
        return records
    if isinstance(value, dict):
        return {key: _to_v5(item) for key, item in value.items()}
    if isinstance(value, np.ndarray) and value.dtype == object:
        out = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            out[index] = _to_v5(value[index])
        return out
    return value


_V73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."  # noqa: E501


def _write_v73(path: Path, variables: Variables) -> None:
    import h5py

    with h5py.File(path, "w", userblock_size=512) as handle:
        refs = handle.create_group("#refs#")
        for name, value in variables.items():
            _h5_write(handle, name, value, refs, h5py)
    # MATLAB's 128-byte header in the user block: text, subsystem offset, version 0x0200, 'IM'.
    header = _V73_HEADER.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as raw:
        raw.write(header)


def _set_class(node: Any, matlab_class: str) -> None:
    node.attrs["MATLAB_class"] = np.bytes_(matlab_class)


def _h5_write(parent: Any, name: str, value: Any, refs: Any, h5py: Any) -> None:
    if isinstance(value, StructArray):
        group = parent.create_group(name)
        _set_class(group, "struct")
        fields = list(value.elements.flat[0])
        _set_fields(group, fields, h5py)
        for field_name in fields:
            column = np.empty(value.elements.shape, dtype=object)
            for index in np.ndindex(column.shape):
                column[index] = _h5_ref(value.elements[index][field_name], refs, h5py)
            # Struct array fields: references without a MATLAB_class attribute.
            group.create_dataset(field_name, data=column.T, dtype=h5py.ref_dtype)
    elif isinstance(value, dict):
        group = parent.create_group(name)
        _set_class(group, "struct")
        _set_fields(group, list(value), h5py)
        for key, item in value.items():
            _h5_write(group, key, item, refs, h5py)
    elif isinstance(value, str):
        if not value:
            dataset = parent.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
            dataset.attrs["MATLAB_empty"] = np.uint8(1)
        else:
            codes = np.frombuffer(value.encode("utf-16-le"), dtype="<u2").reshape(1, -1)
            dataset = parent.create_dataset(name, data=codes.T)  # 1xK char -> (K, 1)
            dataset.attrs["MATLAB_int_decode"] = np.int32(2)
        _set_class(dataset, "char")
    elif isinstance(value, np.ndarray) and value.dtype == object:
        column = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            column[index] = _h5_ref(value[index], refs, h5py)
        dataset = parent.create_dataset(name, data=column.T, dtype=h5py.ref_dtype)
        _set_class(dataset, "cell")
    else:
        data = np.asarray(value)
        data = data.reshape(1, 1) if data.ndim == 0 else data
        matlab_class = {"float64": "double", "float32": "single", "bool": "logical"}.get(
            data.dtype.name, data.dtype.name
        )
        dataset = parent.create_dataset(name, data=data.astype(np.uint8).T if data.dtype == bool
                                        else data.T)  # fmt: skip
        _set_class(dataset, matlab_class)


def _set_fields(group: Any, fields: list[str], h5py: Any) -> None:
    stored = np.empty(len(fields), dtype=object)
    for index, name in enumerate(fields):
        stored[index] = np.frombuffer(name.encode(), dtype="S1")
    group.attrs.create("MATLAB_fields", stored, dtype=h5py.vlen_dtype(np.dtype("S1")))


def _h5_ref(value: Any, refs: Any, h5py: Any) -> Any:
    key = _ref_name(len(refs))
    _h5_write(refs, key, value, refs, h5py)
    return refs[key].ref


def _ref_name(number: int) -> str:
    # MATLAB names #refs# members a, b, ..., z, ba, bb, ...
    letters = "abcdefghijklmnopqrstuvwxyz"
    name = letters[number % 26]
    while number >= 26:
        number = number // 26
        name = letters[number % 26] + name
    return name


# --------------------------------------------------------------------------- Rethinking of PAR


class _EasyDict(dict):
    """Behaves like ``easydict.EasyDict``: items mirrored as attributes."""

    def __init__(self, data: dict | None = None, **kwargs: Any) -> None:
        super().__init__()
        for key, value in {**(data or {}), **kwargs}.items():
            setattr(self, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        super().__setitem__(name, value)

    __setitem__ = __setattr__


def rethinking_object(kind: str = "pa100k", seed: int = 4) -> tuple[_EasyDict, Expected]:
    """The EasyDict a ``format_*.py`` script of "Rethinking of PAR" pickles.

    Args:
        kind: "pa100k" (one partition of arrays), "peta" (five partitions, ``label_idx.eval``
            a reordered subset) or "rap1" (five partitions of trainval / test only).
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    count, columns = 12, 10
    folder = {"pa100k": "data", "peta": "images", "rap1": "RAP_dataset"}[kind]
    images = [f"{i + 1:05d}.png" for i in range(count)]
    labels = (rng.random((count, columns)) < 0.3).astype(np.int64)
    names = [f"{kind}_attr_{i}" for i in range(columns)]
    evaluate = list(range(columns)) if kind == "pa100k" else [3, 0, 5, 1, 7, 2]
    dataset = _EasyDict(description=kind, reorder="group_order")
    dataset.root = f"/mnt/data1/jiajian/dataset/attribute/{kind}/{folder}"
    dataset.image_name = images
    dataset.label = labels
    dataset.attr_name = names
    dataset.label_idx = _EasyDict(eval=evaluate, color=[], extra=list(range(6, columns)))
    dataset.partition = _EasyDict()
    if kind == "pa100k":
        splits = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
        dataset.partition.train = np.arange(0, 6)
        dataset.partition.val = np.arange(6, 9)
        dataset.partition.test = np.arange(9, 12)
        dataset.partition.trainval = np.arange(0, 9)
        partition_splits = [splits]
    else:
        keys = ("trainval", "test") if kind == "rap1" else ("train", "val", "test")
        sizes = {"train": 9, "test": 3} if kind == "rap1" else {"train": 6, "val": 3, "test": 3}
        partition_splits = [_partition_splits(rng, count, sizes) for _ in range(PARTITIONS)]
        for key in keys:
            split = "train" if key == "trainval" else key
            dataset.partition[key] = [_indices(s, split) for s in partition_splits]
        if kind != "rap1":
            dataset.partition.trainval = [
                np.concatenate([_indices(s, "train"), _indices(s, "val")]) for s in partition_splits
            ]
    dataset.weight_train = np.mean(labels, axis=0).astype(np.float32)
    dataset.weight_scalar = np.float32(0.5)  # numpy scalars appear in such pickles too
    expected = Expected([names[i] for i in evaluate], images, labels[:, evaluate].astype(np.uint8),
                        partition_splits, extra={"image_folder": folder})  # fmt: skip
    return dataset, expected


def write_rethinking_pkl(
    root: Path,
    *,
    kind: str = "pa100k",
    protocol: int = pickle.DEFAULT_PROTOCOL,
    mutate: Callable[[_EasyDict], Any] | None = None,
) -> Expected:
    """Write ``<root>/dataset_all.pkl`` as the real scripts do: a pickled ``easydict.EasyDict``
    (``mutate`` edits it first)."""
    dataset, expected = rethinking_object(kind)
    if mutate is not None:
        mutate(dataset)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset_all.pkl"
    with _fake_easydict_module():
        path.write_bytes(pickle.dumps(dataset, protocol=protocol))
    expected.image_dir = root / expected.extra["image_folder"]
    return expected


@contextmanager
def _fake_easydict_module() -> Iterator[None]:
    """Pickle ``_EasyDict`` as ``easydict.EasyDict`` without easydict installed."""
    saved = sys.modules.get("easydict")
    module = types.ModuleType("easydict")
    module.EasyDict = _EasyDict
    sys.modules["easydict"] = module
    names = (_EasyDict.__module__, _EasyDict.__qualname__)
    _EasyDict.__module__, _EasyDict.__qualname__ = "easydict", "EasyDict"
    try:
        yield
    finally:
        _EasyDict.__module__, _EasyDict.__qualname__ = names
        if saved is None:
            sys.modules.pop("easydict", None)
        else:
            sys.modules["easydict"] = saved


# --------------------------------------------------------------------------- plain text


def write_text_lists(root: Path, *, names: bool = True, seed: int = 5) -> Expected:
    """The authors' lists ``train.txt`` / ``val.txt`` / ``test.txt`` and ``attributes.txt``."""
    rng = np.random.default_rng(seed)
    columns = 5
    attribute_names = [f"list_attr_{i}" for i in range(columns)]
    images, labels, splits = [], [], []
    root.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", 4), ("val", 2), ("test", 3)):
        rows = (rng.random((size, columns)) < 0.4).astype(np.uint8)
        lines = []
        for index, row in enumerate(rows):
            image = f"{split}_images/{split}_{index:03d}.jpg"
            lines.append(" ".join([image, *map(str, row.tolist())]))
            images.append(image)
            splits.append(split)
        labels.append(rows)
        # A blank line in the middle and trailing whitespace, as hand-edited lists have.
        lines.insert(1, "")
        (root / f"{split}.txt").write_text("\n".join(lines) + "  \n", encoding="utf-8")
    if names:
        (root / "attributes.txt").write_text("\n".join(attribute_names) + "\n", encoding="utf-8")
    else:
        attribute_names = [f"attr_{i:02d}" for i in range(columns)]
    return Expected(attribute_names, images, np.concatenate(labels), [splits], image_dir=root)


def write_csv(path: Path, *, split_column: int | None = 2, seed: int = 6) -> Expected:
    """A user CSV ``image,<attr>,...`` with the ``split`` column at ``split_column`` (or none)."""
    rng = np.random.default_rng(seed)
    attribute_names = ["Hat", "Backpack", "Skirt"]
    count = 7
    labels = rng.integers(0, 3, (count, len(attribute_names))).astype(np.uint8)
    images = [f"people/p{i}.jpg" for i in range(count)]
    splits = ["train", "train", "val", "test", "train", "test", "val"]
    header = ["image", *attribute_names]
    rows = [[image, *map(str, row.tolist())] for image, row in zip(images, labels, strict=True)]
    if split_column is not None:
        header.insert(split_column, "split")
        for row, split in zip(rows, splits, strict=True):
            row.insert(split_column, split.upper() if split == "val" else split)
    else:
        splits = ["train"] * count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return Expected(attribute_names, images, labels, [splits], image_dir=path.parent)
