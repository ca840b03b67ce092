"""Readers of the official annotation formats, on tiny files in the exact official layouts."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from pedattr.data.annotations import AnnotationError, RawAnnotations
from pedattr.data.formats import (
    FORMATS,
    read_annotations,
    read_csv,
    read_pa100k,
    read_peta,
    read_rap1,
    read_rap2,
    read_rethinking_pkl,
    read_text_lists,
)
from tests import fixtures_formats as fx

# h5py is optional: only MATLAB v7.3 files need it.
needs_h5py = pytest.mark.skipif(find_spec("h5py") is None, reason="h5py not installed")
MAT_VERSIONS = [pytest.param(False, id="v5"), pytest.param(True, id="v73", marks=needs_h5py)]


def assert_matches(raw: RawAnnotations, expected: fx.Expected, partition: int = 0) -> None:
    """``raw`` holds exactly the fixture's images, labels and splits, in file order."""
    assert raw.attribute_names == expected.attribute_names
    assert raw.image_names == expected.image_names
    np.testing.assert_array_equal(raw.labels, expected.labels)
    assert raw.labels.dtype == np.uint8
    assert raw.splits.tolist() == expected.splits(partition)
    if expected.image_dir is not None:
        assert raw.image_root == expected.image_dir
    json.dumps(raw.source)  # the dataset description stores it as JSON


@contextmanager
def raises_naming(*parts: str) -> Iterator[None]:
    """Expect an AnnotationError whose message contains every one of ``parts``."""
    with pytest.raises(AnnotationError) as info:
        yield
    for part in parts:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


# --------------------------------------------------------------------------- PA-100K


@pytest.mark.parametrize("v73", MAT_VERSIONS)
def test_pa100k(tmp_path: Path, v73: bool) -> None:
    expected = fx.write_pa100k(tmp_path, v73=v73, images=True)
    raw = read_pa100k(tmp_path)
    assert_matches(raw, expected)
    assert raw.attribute_names == list(fx.PA100K_ATTRIBUTES)
    assert raw.splits.tolist() == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    assert raw.source["format"] == "pa100k"
    assert raw.source["mat_version"] == ("7.3" if v73 else "5")
    assert raw.source["annotation"] == str(tmp_path / "annotation.mat")
    assert all((raw.image_root / name).is_file() for name in raw.image_names)


@needs_h5py
def test_pa100k_v73_file_is_laid_out_like_matlab(tmp_path: Path) -> None:
    import h5py

    fx.write_pa100k(tmp_path, v73=True)
    data = (tmp_path / "annotation.mat").read_bytes()
    assert data.startswith(b"MATLAB 7.3 MAT-file") and data[512:520] == b"\x89HDF\r\n\x1a\n"
    with h5py.File(tmp_path / "annotation.mat") as handle:
        assert handle["attributes"].attrs["MATLAB_class"] == b"cell"
        assert handle["attributes"].shape == (1, 26)  # a 26x1 cell, dimensions reversed
        assert handle["train_label"].shape == (26, 6)
        first = handle[handle["attributes"][0, 0]]
        assert first.attrs["MATLAB_class"] == b"char" and first.dtype == np.uint16


def test_pa100k_finds_the_older_image_folder(tmp_path: Path) -> None:
    fx.write_pa100k(tmp_path, image_dir="release_data/release_data", images=True)
    assert read_pa100k(tmp_path).image_root == tmp_path / "release_data" / "release_data"
    (tmp_path / "data").mkdir()  # the current layout wins when both exist
    assert read_pa100k(tmp_path).image_root == tmp_path / "data"


def test_explicit_annotation_path(tmp_path: Path) -> None:
    expected = fx.write_pa100k(tmp_path / "ann")
    (tmp_path / "ann" / "annotation.mat").rename(tmp_path / "ann" / "pa100k.mat")
    raw = read_pa100k(tmp_path, annotation=tmp_path / "ann" / "pa100k.mat")
    assert raw.image_names == expected.image_names
    assert read_pa100k(tmp_path, annotation="ann/pa100k.mat").image_names == expected.image_names
    with pytest.raises(FileNotFoundError, match="annotation.mat"):
        read_pa100k(tmp_path)


# --------------------------------------------------------------------------- PETA


@pytest.mark.parametrize("v73", MAT_VERSIONS)
def test_peta_partitions(tmp_path: Path, v73: bool) -> None:
    expected = fx.write_peta(tmp_path, v73=v73)
    for partition in (0, 3):
        raw = read_peta(tmp_path, partition=partition)
        assert_matches(raw, expected, partition)
        assert raw.source["partition"] == partition
        assert raw.source["partitions_in_file"] == 5
    assert expected.splits(0) != expected.splits(3)
    assert raw.image_names[0] == "00001.png" and raw.image_root == tmp_path / "images"
    assert len(raw.attribute_names) == 35 and raw.source["attributes_in_file"] == 105


def test_peta_labels_skip_the_metadata_columns(tmp_path: Path) -> None:
    variables, _ = fx.peta_variables()
    data = variables["peta"]["data"]
    fx.write_peta(tmp_path)
    raw = read_peta(tmp_path)
    np.testing.assert_array_equal(raw.labels, data[:, 4:39])


def test_peta_partition_out_of_range(tmp_path: Path) -> None:
    fx.write_peta(tmp_path)
    with pytest.raises(ValueError, match=r"partition 5 does not exist.*0\.\.4"):
        read_peta(tmp_path, partition=5)


# --------------------------------------------------------------------------- RAP


@pytest.mark.parametrize("v73", MAT_VERSIONS)
@pytest.mark.parametrize("naming", ["released", "alternative"])
def test_rap1(tmp_path: Path, v73: bool, naming: str) -> None:
    expected = fx.write_rap(tmp_path, version=1, v73=v73, naming=naming)
    raw = read_rap1(tmp_path, partition=2)
    assert_matches(raw, expected, partition=2)
    assert set(raw.splits.tolist()) == {"train", "test"}  # RAP v1 has no val split
    assert (raw.labels == 2).any()  # unknown kept
    assert len(raw.attribute_names) == 51 and raw.image_root == tmp_path / "RAP_dataset"


def test_rap1_partition_fields_read_by_position(tmp_path: Path) -> None:
    def rename(variables: dict) -> None:
        for part in variables["RAP_annotation"]["partion"].ravel():
            part["a"], part["b"] = part.pop("train_index"), part.pop("test_index")

    expected = fx.write_rap(tmp_path, version=1, mutate=rename)
    raw = read_rap1(tmp_path, partition=1)
    assert_matches(raw, expected, partition=1)
    assert raw.source["partition_index_fields"] == ["a", "b"]


def test_rap1_checks_only_the_evaluated_columns(tmp_path: Path) -> None:
    def set_value(column: int) -> fx.Mutate:
        return lambda v: v["RAP_annotation"]["label"].__setitem__((0, column), 7)

    fx.write_rap(tmp_path, version=1, mutate=set_value(60))
    read_rap1(tmp_path)
    fx.write_rap(tmp_path, version=1, mutate=set_value(50))
    with raises_naming("RAP_annotation.label", "value 7", "row 1, column 51"):
        read_rap1(tmp_path)


@pytest.mark.parametrize("v73", MAT_VERSIONS)
def test_rap2(tmp_path: Path, v73: bool) -> None:
    expected = fx.write_rap(tmp_path, version=2, v73=v73)
    for partition in (0, 4):
        assert_matches(read_rap2(tmp_path, partition=partition), expected, partition)
    raw = read_rap2(tmp_path)
    assert len(raw.attribute_names) == 54 and raw.source["attributes_in_file"] == 152
    variables, _ = fx.rap2_variables()
    selected = variables["RAP_annotation"]["selected_attribute"].ravel().astype(int) - 1
    assert raw.attribute_names == [f"rap2_attr_{i:03d}" for i in selected]  # 1-based, in order


@pytest.mark.parametrize("v73", MAT_VERSIONS)
def test_partitions_as_struct_array(tmp_path: Path, v73: bool) -> None:
    def to_struct_array(variables: dict) -> None:
        rap = variables["RAP_annotation"]
        rap["partition_attribute"] = fx.StructArray(rap["partition_attribute"])

    expected = fx.write_rap(tmp_path, version=2, v73=v73, mutate=to_struct_array)
    assert_matches(read_rap2(tmp_path, partition=3), expected, partition=3)


# --------------------------------------------------------------------------- malformed .mat


def _pop(*path: str) -> fx.Mutate:
    def mutate(variables: dict) -> None:
        node = variables
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1])

    return mutate


def _set(value: object, *path: str) -> fx.Mutate:
    def mutate(variables: dict) -> None:
        node = variables
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(node[path[-1]]) if callable(value) else value

    return mutate


def _first_partition(field: str, change) -> fx.Mutate:
    def mutate(variables: dict) -> None:
        struct = next(iter(variables.values()))
        key = next(
            k for k in ("partion_attribute", "partion", "partition_attribute") if k in struct
        )
        part = struct[key].ravel()[0]
        part[field] = change(part[field])

    return mutate


def _overlap(variables: dict) -> None:
    part = variables["peta"]["partion_attribute"].ravel()[0]
    part["test"] = np.concatenate([part["test"], part["train"][:1]])


def _drop_val(variables: dict) -> None:
    variables["peta"]["partion_attribute"].ravel()[0].pop("val")


MALFORMED = [
    ("pa100k", _pop("val_label"), ["'val_label'", "missing"]),
    ("pa100k", _set(lambda a: a[:, :25], "train_label"), ["'train_label'", "(6, 25)"]),
    ("pa100k", _set(lambda a: a[:1], "test_images_name"), ["'test_label'", "test_images_name"]),
    ("pa100k", _set(np.zeros((26, 1)), "attributes"), ["'attributes'", "cell array of strings"]),
    ("pa100k", _set(lambda a: a + 3, "val_label"), ["'val_label'", "value 3"]),
    ("peta", _pop("peta", "partion_attribute"), ["'peta.partion_attribute'", "missing"]),
    ("peta", _set(lambda a: a[:, :108], "peta", "data"), ["'peta.data'", "108 columns"]),
    ("peta", _set("not a struct", "peta"), ["'peta'", "1x1 struct"]),
    (
        "peta",
        _first_partition("train", lambda a: a - 1),  # 0-based by mistake
        ["'peta.partion_attribute{1}.train'", "outside 1..10"],
    ),
    (
        "peta",
        _first_partition("val", lambda a: a.reshape(1, -1).repeat(2, 0)),
        ["'peta.partion_attribute{1}.val'", "vector"],
    ),
    ("peta", _drop_val, ["'peta.partion_attribute{1}.val'", "missing"]),
    ("peta", _overlap, ["partion_attribute{1}.test", "already has it in 'train'"]),
    (
        "rap1",
        _set(lambda a: a[:-1], "RAP_annotation", "label"),
        ["'RAP_annotation.label'", "(11, 92)"],
    ),
    (
        "rap1",
        _first_partition("test_index", lambda a: np.concatenate([a, a[:, :1]], axis=1)),
        ["'RAP_annotation.partion{1}.test_index'", "repeats"],
    ),
    (
        "rap2",
        _set(lambda a: np.where(a == a.max(), 153, a), "RAP_annotation", "selected_attribute"),
        ["'RAP_annotation.selected_attribute'", "index 153"],
    ),
    (
        "rap2",
        _pop("RAP_annotation", "partition_attribute"),
        ["'RAP_annotation.partition_attribute'", "partion_attribute"],
    ),
]


WRITERS = {
    "pa100k": (lambda root, **kw: fx.write_pa100k(root, **kw), read_pa100k, "annotation.mat"),
    "peta": (lambda root, **kw: fx.write_peta(root, **kw), read_peta, "PETA.mat"),
    "rap1": (
        lambda root, **kw: fx.write_rap(root, version=1, **kw),
        read_rap1,
        "RAP_annotation/RAP_annotation.mat",
    ),
    "rap2": (
        lambda root, **kw: fx.write_rap(root, version=2, **kw),
        read_rap2,
        "RAP_annotation/RAP_annotation.mat",
    ),
}


@pytest.mark.parametrize(("fmt", "mutate", "parts"), MALFORMED)
def test_malformed_mat_names_file_and_field(tmp_path: Path, fmt, mutate, parts) -> None:
    write, read, name = WRITERS[fmt]
    write(tmp_path, mutate=mutate)
    with raises_naming(str(tmp_path / name), *parts):
        read(tmp_path)


@needs_h5py
def test_malformed_v73_names_file_and_field(tmp_path: Path) -> None:
    fx.write_pa100k(tmp_path, v73=True, mutate=_pop("test_images_name"))
    with raises_naming(str(tmp_path / "annotation.mat"), "'test_images_name'"):
        read_pa100k(tmp_path)


def test_not_a_mat_file(tmp_path: Path) -> None:
    (tmp_path / "annotation.mat").write_bytes(b"this is not MATLAB data at all" * 10)
    with raises_naming(str(tmp_path / "annotation.mat"), "not a readable MATLAB"):
        read_pa100k(tmp_path)


@needs_h5py
def test_v73_without_h5py_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    fx.write_pa100k(tmp_path, v73=True)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match="install h5py to read MATLAB v7.3 files"):
        read_pa100k(tmp_path)


# --------------------------------------------------------------------------- Rethinking pkl


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("kind", ["pa100k", "peta", "rap1"])
def test_rethinking_pkl(tmp_path: Path, kind: str, protocol: int) -> None:
    expected = fx.write_rethinking_pkl(tmp_path, kind=kind, protocol=protocol)
    (tmp_path / expected.extra["image_folder"]).mkdir()  # images beside the pickle
    partition = 0 if kind == "pa100k" else 2
    raw = read_rethinking_pkl(tmp_path, partition=partition)
    assert_matches(raw, expected, partition)
    assert raw.source["partition"] == (None if kind == "pa100k" else partition)
    if kind == "rap1":
        assert set(raw.splits.tolist()) == {"train", "test"}  # trainval becomes train


def test_rethinking_pkl_paths(tmp_path: Path) -> None:
    fx.write_rethinking_pkl(tmp_path)
    pkl = tmp_path / "dataset_all.pkl"
    assert read_rethinking_pkl(pkl).image_root == tmp_path / "data"  # guessed beside it
    assert read_rethinking_pkl(pkl, image_root=tmp_path / "x").image_root == tmp_path / "x"
    fx.write_rethinking_pkl(tmp_path / "peta", kind="peta")
    with pytest.raises(ValueError, match=r"partition 7 does not exist.*0\.\.4"):
        read_rethinking_pkl(tmp_path / "peta", partition=7)


def _write_marker(path: str) -> None:
    Path(path).write_text("code ran while unpickling")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (str(self.marker),))


@pytest.mark.parametrize("where", ["top", "nested"])
def test_rethinking_pkl_refuses_code(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "marker"
    dataset, _ = fx.rethinking_object()
    plain = {k: dict(v) if isinstance(v, dict) else v for k, v in dataset.items()}
    payload = _Evil(marker) if where == "top" else {**plain, "weight_train": _Evil(marker)}
    pkl = tmp_path / "dataset_all.pkl"
    pkl.write_bytes(pickle.dumps(payload))
    with raises_naming(str(pkl), f"'{__name__}._write_marker'"):
        read_rethinking_pkl(pkl)
    assert not marker.exists()


def test_rethinking_pkl_refuses_builtins_that_run_code(tmp_path: Path) -> None:
    pkl = tmp_path / "dataset_all.pkl"
    # GLOBAL builtins.eval, then call it: what a hostile file would do.
    pkl.write_bytes(b"cbuiltins\neval\n(Vprint('ran')\ntR.")
    with raises_naming(str(pkl), "'builtins.eval'"):
        read_rethinking_pkl(pkl)


@pytest.mark.parametrize(
    ("change", "parts"),
    [
        (lambda d: d.pop("partition"), ["'partition'", "missing"]),
        (lambda d: d.__setitem__("label", d["label"][:-1]), ["'label'", "shape (11, 10)"]),
        (lambda d: d["label_idx"].__setitem__("eval", [0, 10]), ["'label_idx.eval'", "index 10"]),
        (lambda d: d["partition"].pop("test"), ["'partition.test'"]),
        (lambda d: d.__setitem__("image_name", [1, 2]), ["'image_name'", "list of strings"]),
    ],
)
def test_rethinking_pkl_malformed(tmp_path: Path, change, parts) -> None:
    dataset, _ = fx.rethinking_object()
    data = dict(dataset)  # a plain dict pickles without easydict
    data["label_idx"] = dict(data["label_idx"])
    data["partition"] = dict(data["partition"])
    change(data)
    pkl = tmp_path / "dataset_all.pkl"
    pkl.write_bytes(pickle.dumps(data))
    with raises_naming(str(pkl), *parts):
        read_rethinking_pkl(pkl)


def test_rethinking_pkl_not_a_pickle(tmp_path: Path) -> None:
    (tmp_path / "dataset_all.pkl").write_bytes(b"\x80\x04garbage")
    with raises_naming(str(tmp_path / "dataset_all.pkl"), "not a readable pickle"):
        read_rethinking_pkl(tmp_path)


# --------------------------------------------------------------------------- text lists, CSV


def test_text_lists(tmp_path: Path) -> None:
    expected = fx.write_text_lists(tmp_path)
    raw = read_text_lists(tmp_path, names_file=tmp_path / "attributes.txt")
    assert_matches(raw, expected)
    default = read_text_lists(tmp_path)
    assert default.attribute_names == [f"attr_{i:02d}" for i in range(5)]
    image_root = read_text_lists(tmp_path, image_root=tmp_path / "imgs").image_root
    assert image_root == tmp_path / "imgs"


def test_text_lists_names_and_files(tmp_path: Path) -> None:
    expected = fx.write_text_lists(tmp_path / "a")
    (tmp_path / "a" / "train.txt").rename(tmp_path / "a" / "PETA_train_val_list.txt")
    raw = read_text_lists(tmp_path / "a")
    assert raw.image_names == expected.image_names  # found by its name pattern
    only = read_text_lists(tmp_path, files={"test": tmp_path / "a" / "test.txt"})
    assert set(only.splits.tolist()) == {"test"}
    (tmp_path / "a" / "train_list.txt").write_text("x.jpg 0 1 0 1 0\n")
    with pytest.raises(ValueError, match="several lists for split 'train'"):
        read_text_lists(tmp_path / "a")


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        ("img.jpg 0 1 x 0 1", ["line 3", "labels 0, 1 or 2"]),
        ("img.jpg", ["line 3"]),
        ("img.jpg 0 1 0", ["line 3", "3 labels, expected 5"]),
        ("img.jpg 0 1 0 1 -1", ["line 3"]),
    ],
)
def test_text_lists_malformed_line(tmp_path: Path, line: str, parts: list[str]) -> None:
    fx.write_text_lists(tmp_path)
    lines = (tmp_path / "val.txt").read_text().splitlines()
    lines.insert(2, line)  # line 3 of the file (line 2 is blank)
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    with raises_naming(str(tmp_path / "val.txt"), *parts):
        read_text_lists(tmp_path)


def test_text_lists_names_file_and_duplicates(tmp_path: Path) -> None:
    fx.write_text_lists(tmp_path)
    (tmp_path / "names.txt").write_text("a\nb\n")
    with raises_naming(str(tmp_path / "names.txt"), "2 attribute names", "5 labels"):
        read_text_lists(tmp_path, names_file=tmp_path / "names.txt")
    first = (tmp_path / "train.txt").read_text().splitlines()[0]
    with open(tmp_path / "test.txt", "a") as handle:
        handle.write(first + "\n")
    with raises_naming(str(tmp_path / "test.txt"), "listed again", "train.txt"):
        read_text_lists(tmp_path)


@pytest.mark.parametrize("split_column", [0, 2, 4, None])
def test_csv(tmp_path: Path, split_column: int | None) -> None:
    expected = fx.write_csv(tmp_path / "own.csv", split_column=split_column)
    assert_matches(read_csv(tmp_path / "own.csv"), expected)


def test_csv_default_split_and_image_root(tmp_path: Path) -> None:
    fx.write_csv(tmp_path / "own.csv", split_column=None)
    raw = read_csv(tmp_path / "own.csv", default_split="test", image_root=tmp_path / "img")
    assert set(raw.splits.tolist()) == {"test"} and raw.image_root == tmp_path / "img"
    assert raw.source["default_split"] == "test"
    with pytest.raises(ValueError, match="default_split"):
        read_csv(tmp_path / "own.csv", default_split="trainval")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("image,Hat\na.jpg,3\n", ["line 2", "column 'Hat'", "'3'"]),
        ("image,Hat\na.jpg,\n", ["line 2", "column 'Hat'"]),
        ("path,Hat\na.jpg,1\n", ["no 'image' column"]),
        ("image,Hat,split\na.jpg,1,holdout\n", ["line 2", "column 'split'", "holdout"]),
        ("image,Hat,Hat\na.jpg,1,0\n", ["repeats columns ['Hat']"]),
        ("image,Hat\na.jpg,1\nb.jpg\n", ["line 3", "1 cells, expected 2"]),
        ("image,Hat\na.jpg,1\na.jpg,0\n", ["'a.jpg' is listed again"]),
        ("image,split\na.jpg,train\n", ["no attribute columns"]),
        ("", ["empty file"]),
    ],
)
def test_csv_malformed(tmp_path: Path, text: str, parts: list[str]) -> None:
    (tmp_path / "own.csv").write_text(text)
    with raises_naming(str(tmp_path / "own.csv"), *parts):
        read_csv(tmp_path / "own.csv")


# --------------------------------------------------------------------------- registry


def test_registry(tmp_path: Path) -> None:
    assert set(FORMATS) == {
        "pa100k", "peta", "rap1", "rap2", "rethinking-pkl", "text-lists", "csv",
    }  # fmt: skip
    expected = fx.write_peta(tmp_path)
    raw = read_annotations("PETA", tmp_path, partition=1)
    assert raw.splits.tolist() == expected.splits(1)
    fx.write_rethinking_pkl(tmp_path / "pkl")
    assert read_annotations("rethinking_pkl", tmp_path / "pkl").source["format"] == "rethinking-pkl"
    with pytest.raises(ValueError, match=r"unknown annotation format 'rap3'.*'rap1'"):
        read_annotations("rap3", tmp_path)
    with pytest.raises(ValueError, match=r"'pa100k' does not take options \['partition'\]"):
        read_annotations("pa100k", tmp_path, partition=1)


def test_names_file_tolerates_bom_comments_and_blank_lines(tmp_path: Path) -> None:
    from pedattr.data.annotations import read_names_file

    names = tmp_path / "names.txt"
    names.write_text("\ufeffFemale  # first\n\n# a comment line\n Hat \n", encoding="utf-8")
    assert read_names_file(names) == ["Female", "Hat"]
    assert read_names_file(names, expected=2) == ["Female", "Hat"]
    with raises_naming(str(names), "2 attribute names", "expected 3"):
        read_names_file(names, expected=3)
