"""Bad annotation and prepared-dataset files: refused in one line naming the file and the row.

Image names that leave the image root, pickles that ask for memory, CSV cells over the csv
module's limit, a ``dataset.json`` of the wrong shape, files that are not UTF-8, byte-order
marks and attribute names with control characters.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pedattr.cli import main
from pedattr.data.annotations import AnnotationError, read_names_file
from pedattr.data.dataset import AttributeDataset, DecodeFailure
from pedattr.data.description import DatasetDescription
from pedattr.data.formats import (
    read_annotations,
    read_csv,
    read_rethinking_pkl,
    read_text_lists,
)
from pedattr.data.formats.rethinking import load_restricted_pickle
from pedattr.data.prepare import prepare_dataset
from tests import fixtures_formats as fx
from tests.helpers import make_prepared_dataset

OUTSIDE_NAMES = ["../outside.png", "/etc/passwd", "C:/Windows/x.png", "a/../../x.png", "..\\x.png"]


def _one_line_error(capsys: pytest.CaptureFixture, *parts: str) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one message, no traceback
    for part in parts:
        assert part in err, f"{part!r} not in {err!r}"
    return err


def _csv(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["image,Hat,split", *rows]) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- names outside


def _set_entry(field: str, name: str, index: int = 1):
    def mutate(variables: dict) -> None:
        container = variables.get("RAP_annotation", variables)
        container[field][index, 0] = name

    return mutate


@pytest.mark.parametrize("name", OUTSIDE_NAMES)
def test_pa100k_refuses_names_outside_the_root(tmp_path: Path, name: str) -> None:
    fx.write_pa100k(tmp_path, mutate=_set_entry("val_images_name", name))
    with pytest.raises(AnnotationError) as info:
        read_annotations("pa100k", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "annotation.mat") in message and repr(name) in message
    assert "'val_images_name' entry 2" in message and "--allow-external-images" in message


@pytest.mark.parametrize(("version", "field"), [(1, "imagesname"), (2, "name")])
def test_rap_refuses_names_outside_the_root(tmp_path: Path, version: int, field: str) -> None:
    fx.write_rap(tmp_path, version=version, mutate=_set_entry(field, "/etc/shadow", 3))
    with pytest.raises(AnnotationError, match=rf"RAP_annotation\.{field}' entry 4: image name"):
        read_annotations(f"rap{version}", tmp_path)


def test_rethinking_refuses_names_outside_the_root(tmp_path: Path) -> None:
    def mutate(dataset) -> None:
        dataset.image_name = ["../../secret.png", *dataset.image_name[1:]]

    fx.write_rethinking_pkl(tmp_path, mutate=mutate)
    with pytest.raises(AnnotationError, match=r"dataset_all\.pkl: field 'image_name' entry 1"):
        read_rethinking_pkl(tmp_path)
    assert read_rethinking_pkl(tmp_path, allow_external_images=True).image_names[0] == (
        "../../secret.png"
    )


def test_text_lists_refuse_names_outside_the_root(tmp_path: Path) -> None:
    fx.write_text_lists(tmp_path)
    val = tmp_path / "val.txt"
    val.write_text(val.read_text() + "..\\..\\secret.jpg 1 0 1 0 1\n", encoding="utf-8")
    lines = len(val.read_text().splitlines())
    with pytest.raises(AnnotationError, match=rf"val\.txt, line {lines}: image name '\.\./\.\./"):
        read_text_lists(tmp_path)
    raw = read_text_lists(tmp_path, allow_external_images=True)
    assert "../../secret.jpg" in raw.image_names


@pytest.mark.parametrize("name", OUTSIDE_NAMES)
def test_csv_refuses_names_outside_the_root(tmp_path: Path, name: str) -> None:
    path = _csv(tmp_path / "labels.csv", ["a.png,1,train", f"{name},0,train"])
    with pytest.raises(AnnotationError, match=r"labels\.csv, line 3: image name"):
        read_csv(path)
    assert len(read_csv(path, allow_external_images=True).image_names) == 2


def test_nul_in_a_name_is_refused_even_when_allowed(tmp_path: Path) -> None:
    path = _csv(tmp_path / "labels.csv", ["a\0b.png,1,train"])
    with pytest.raises(AnnotationError, match="NUL character"):
        read_csv(path, allow_external_images=True)


def _outside_layout(tmp_path: Path) -> tuple[Path, Path]:
    """A CSV whose second image climbs out of its folder, and that image on disk."""
    fx.write_images(tmp_path / "raw", ["a.png"])
    fx.write_images(tmp_path, ["outside.png"])
    return _csv(tmp_path / "raw" / "labels.csv", ["a.png,1,train", "../outside.png,0,train"]), (
        tmp_path / "outside.png"
    )


def test_cli_prepare_refuses_then_allows_external_images(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, outside = _outside_layout(tmp_path)
    argv = ["prepare", "csv", "--root", str(csv_path), "--out", str(tmp_path / "data")]
    assert main(argv) == 2
    _one_line_error(capsys, f"{csv_path}, line 3", "'../outside.png'", "--allow-external-images")
    assert not (tmp_path / "data").exists()
    assert main([*argv, "--allow-external-images"]) == 0
    description = DatasetDescription.load(tmp_path / "data")
    assert description.meta["external_images"] is True
    dataset = AttributeDataset(description, "train")
    assert not isinstance(dataset[1][0], DecodeFailure)  # the user allowed it: it is read
    assert outside.is_file()


def test_symlink_leading_out_is_refused_by_prepare(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fx.write_images(tmp_path / "raw", ["a.png"])
    fx.write_images(tmp_path, ["outside.png"])
    (tmp_path / "raw" / "b.png").symlink_to(tmp_path / "outside.png")
    (tmp_path / "raw" / "inside.png").symlink_to(tmp_path / "raw" / "a.png")  # stays inside
    csv_path = _csv(tmp_path / "raw" / "labels.csv", ["a.png,1,train", "inside.png,1,val"])
    argv = ["prepare", "csv", "--root", str(csv_path), "--out", str(tmp_path / "data")]
    assert main(argv) == 0
    capsys.readouterr()
    _csv(csv_path, ["a.png,1,train", "b.png,0,train"])
    assert main(argv) == 2
    _one_line_error(capsys, str(csv_path), "'b.png'", str(tmp_path / "outside.png"))
    assert main([*argv, "--allow-external-images"]) == 0
    fx.write_images(tmp_path / "elsewhere", ["c.png"])
    (tmp_path / "raw" / "sub").symlink_to(tmp_path / "elsewhere")  # a folder leading out
    _csv(csv_path, ["a.png,1,train", "sub/c.png,0,train"])
    assert main(argv) == 2
    _one_line_error(capsys, "'sub/c.png'", str(tmp_path / "elsewhere" / "c.png"))


def test_symlink_made_after_prepare_is_never_opened(tmp_path: Path) -> None:
    data = make_prepared_dataset(tmp_path, {"train": 4, "val": 2, "test": 2})
    description = DatasetDescription.load(data)
    target = description.image_path(0)
    fx.write_images(tmp_path / "elsewhere", ["secret.png"])
    target.unlink()
    target.symlink_to(tmp_path / "elsewhere" / "secret.png")
    dataset = AttributeDataset(description, "train")
    image = dataset[0][0]
    assert isinstance(image, DecodeFailure) and "outside the image root" in image.reason
    assert not isinstance(dataset[1][0], DecodeFailure)


def _edit_samples(data: Path, old: str, new: str) -> Path:
    samples = data / "samples.csv"
    samples.write_text(samples.read_text().replace(old, new, 1))
    return samples


@pytest.mark.parametrize("name", ["../../x.png", "/etc/passwd"])
def test_hand_edited_samples_csv_is_refused(tmp_path: Path, name: str) -> None:
    data = make_prepared_dataset(tmp_path, {"train": 4, "val": 2, "test": 2})
    samples = _edit_samples(data, "00001.png", name)
    with pytest.raises(AnnotationError, match=rf"{samples}, line 3: image name"):
        DatasetDescription.load(data)
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**meta, "external_images": True}))
    assert DatasetDescription.load(data).image_names[1] == name


# --------------------------------------------------------------------------- pickle memory


_BOMBS = {
    # A permitted constructor called with a huge size (6 GiB, 48 GiB).
    "bytearray": b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\x80\x01\x85R.",
    "ndarray": b"\x80\x02cnumpy\nndarray\n\x8a\x05\x00\x00\x00\x80\x01\x85\x85R.",
    "reconstruct": b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    b"\x8a\x05\x00\x00\x00\x80\x01\x85C\x01b\x87R.",
    "set-range": b"\x80\x02cbuiltins\nset\ncbuiltins\nrange\n"
    b"\x8a\x05\x00\x00\x00\x80\x01\x85R\x85R.",
    # Sizes CPython's own unpickler allocates before reading: bytes of 6 GiB, memo index 400 M.
    "binbytes8": b"\x80\x05\x8e" + struct.pack("<Q", 6 << 30) + b"ab.",
    "memo": b"\x80\x02Nr\xff\xff\xff\x17.",
}


def _array_state_bomb() -> bytes:
    """A real array pickle whose state claims 6 GiB of object pointers from a short list."""
    data = pickle.dumps(np.array([None, None], dtype=object), protocol=2)
    return data.replace(b"K\x02\x85", b"\x8a\x05\x00\x00\x00\xc0\x00\x85", 1)


def test_pickle_memory_bombs_fail_fast_in_bounded_memory(tmp_path: Path) -> None:
    bombs = {**_BOMBS, "array-state": _array_state_bomb()}
    for name, data in bombs.items():
        (tmp_path / f"{name}.pkl").write_bytes(data)
        assert len(data) < 300
    # A child under a 2 GiB address-space limit: each bomb asks for more, so without the bounds
    # it would fail with MemoryError (or be killed) instead of the refusal checked here, and
    # this test never allocates gigabytes either way.
    code = textwrap.dedent(
        f"""
        import json, resource, sys
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from pedattr.data.formats.rethinking import read_rethinking_pkl
        out = {{}}
        for name in {sorted(bombs)!r}:
            try:
                read_rethinking_pkl(Path({str(tmp_path)!r}) / f"{{name}}.pkl")
                out[name] = "accepted"
            except MemoryError:
                out[name] = "MemoryError"
            except Exception as err:
                out[name] = f"{{type(err).__name__}}: {{err}}"
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    outcome = json.loads(result.stdout)
    for name in ("bytearray", "set-range"):
        assert "refusing to load global 'builtins." in outcome[name], outcome[name]
    for name in ("ndarray", "reconstruct", "array-state"):
        assert "refusing to build" in outcome[name], outcome[name]
        assert "more than a pickle of" in outcome[name]
    assert "the data ends early" in outcome["binbytes8"], outcome["binbytes8"]
    assert "expected a dict" in outcome["memo"], outcome["memo"]
    for name, message in outcome.items():
        assert message.startswith("AnnotationError: " + str(tmp_path / name)), message


def test_pickle_shared_references_and_depth_are_bounded(tmp_path: Path) -> None:
    row = [0] * 100
    square = [row] * 100
    cube = [square] * 100
    expanding = {"partition": {"train": [cube] * 100}}  # 10^8 entries from a ~1 kB pickle
    (tmp_path / "wide.pkl").write_bytes(pickle.dumps(expanding))
    assert (tmp_path / "wide.pkl").stat().st_size < 2000
    with pytest.raises(AnnotationError, match="more objects than a pickle of"):
        load_restricted_pickle(tmp_path / "wide.pkl")
    deep: list = []
    for _ in range(100):
        deep = [deep]
    (tmp_path / "deep.pkl").write_bytes(pickle.dumps({"description": deep}))
    with pytest.raises(AnnotationError, match="nested more than"):
        load_restricted_pickle(tmp_path / "deep.pkl")
    (tmp_path / "keys.pkl").write_bytes(pickle.dumps({1: 2, "a": 3}))
    with pytest.raises(AnnotationError, match="keys that are not strings"):
        load_restricted_pickle(tmp_path / "keys.pkl")


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_real_layouts_stay_within_the_bounds(tmp_path: Path, protocol: int) -> None:
    fx.write_rethinking_pkl(tmp_path, kind="peta", protocol=protocol)
    data = load_restricted_pickle(tmp_path / "dataset_all.pkl")
    assert isinstance(data["label"], np.ndarray) and data["label"].shape == (12, 10)


# --------------------------------------------------------------------------- csv and json


def test_csv_cell_over_the_field_limit_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _csv(tmp_path / "labels.csv", ["a.png,1,train", '"' + "x" * 200_000 + '",1,train'])
    argv = ["prepare", "csv", "--root", str(path), "--out", str(tmp_path / "data")]
    assert main(argv) == 2
    _one_line_error(capsys, f"{path}, line 3", "field limit")


def test_samples_csv_over_the_field_limit_or_short_rows(tmp_path: Path) -> None:
    data = make_prepared_dataset(tmp_path, {"train": 4, "val": 2, "test": 2})
    samples = data / "samples.csv"
    original = samples.read_text()
    samples.write_text(original + '"' + "y" * 200_000 + '",train,1,0,1\n')
    with pytest.raises(AnnotationError, match=rf"{samples}, line 10: not a CSV row"):
        DatasetDescription.load(data)
    samples.write_text(original + "short.png,train\n")
    with pytest.raises(AnnotationError, match=rf"{samples}, line 10: 2 cells, expected 5"):
        DatasetDescription.load(data)


def _broken_meta(meta: dict) -> list[tuple[object, str]]:
    without_attributes = {k: v for k, v in meta.items() if k != "attributes"}
    return [
        ([meta], "expected a JSON object, found list"),
        ("text", "expected a JSON object, found str"),
        (without_attributes, "missing key 'attributes'"),
        ({**meta, "attributes": "Hat"}, "'attributes' must be a list of strings"),
        ({**meta, "attributes": [1, 2, 3]}, "'attributes' must be a list of strings"),
        ({**meta, "image_root": 7}, "'image_root' must be a folder name"),
        ({**meta, "positive_ratio": [0.5]}, "'positive_ratio' must be null or 3 numbers"),
        ({**meta, "positive_ratio": "x"}, "'positive_ratio' must be null or 3 numbers"),
        ({**meta, "format_version": "1"}, "not a dataset description"),
        ({**meta, "external_images": "yes"}, "'external_images' must be true or false"),
    ]


def test_dataset_json_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    data = make_prepared_dataset(tmp_path, {"train": 4, "val": 2, "test": 2})
    meta_path = data / "dataset.json"
    meta = json.loads(meta_path.read_text())
    for broken, problem in _broken_meta(meta):
        meta_path.write_text(json.dumps(broken))
        with pytest.raises(AnnotationError) as info:
            DatasetDescription.load(data)
        assert str(info.value).startswith(f"{meta_path}: ") and problem in str(info.value)
    for text, problem in (("{not json", "not valid JSON"), ("[" * 100_000, "nested too deeply")):
        meta_path.write_text(text)
        with pytest.raises(AnnotationError, match=problem):
            DatasetDescription.load(data)
    meta_path.write_text(json.dumps(meta))
    (data / "boxes.json").write_text("[]")
    with pytest.raises(AnnotationError, match="boxes.json: expected a JSON object"):
        DatasetDescription.load(data)


# --------------------------------------------------------------------------- encodings


def test_non_utf8_files_are_named_with_the_line(tmp_path: Path) -> None:
    fx.write_text_lists(tmp_path / "lists")
    val = tmp_path / "lists" / "val.txt"
    val.write_bytes(val.read_bytes() + "caf\xe9.jpg 1 0 1 0 1\n".encode("latin-1"))
    lines = len(val.read_bytes().splitlines())
    with pytest.raises(AnnotationError, match=rf"val\.txt, line {lines}: not UTF-8 .*0xe9"):
        read_text_lists(tmp_path / "lists")
    path = tmp_path / "labels.csv"
    path.write_bytes(b"image,Hat\n\xff\xfea.png,1\n")
    with pytest.raises(AnnotationError, match=r"labels\.csv, line 2: not UTF-8 text \(byte 0xff"):
        read_csv(path)
    names = tmp_path / "names.txt"
    names.write_bytes("Hat\nM\xfctze\n".encode("cp1252"))
    with pytest.raises(AnnotationError, match=r"names\.txt, line 2: not UTF-8"):
        read_names_file(names)


def test_byte_order_mark_is_stripped_from_list_files(tmp_path: Path) -> None:
    expected = fx.write_text_lists(tmp_path)
    train = tmp_path / "train.txt"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    raw = read_text_lists(tmp_path, names_file=tmp_path / "attributes.txt")
    assert raw.image_names[0] == expected.image_names[0]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfimage,Hat,split\r\na.png,1,train\r\n")
    assert read_csv(csv_path).image_names == ["a.png"]


def test_control_characters_in_attribute_names_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    names = tmp_path / "names.txt"
    names.write_text("Hat\x1b[2J\nHat\x1b[2J\n", encoding="utf-8")
    with pytest.raises(AnnotationError) as info:
        read_names_file(names)
    assert "\x1b" not in str(info.value) and "'Hat\\x1b[2J'" in str(info.value)
    fx.write_images(tmp_path / "raw", ["a.png", "b.png"])
    path = tmp_path / "raw" / "labels.csv"
    path.write_text("image,Bag\x07,split\na.png,1,train\nb.png,0,train\n", encoding="utf-8")
    prepare_dataset("csv", path, tmp_path / "data")
    out = capsys.readouterr().out
    assert "\x07" not in out and "'Bag\\x07'" in out


def test_missing_image_names_are_escaped(tmp_path: Path) -> None:
    fx.write_images(tmp_path, ["a.png"])
    path = _csv(tmp_path / "labels.csv", ["a.png,1,train", "b\x1b[2J.png,0,train"])
    with pytest.raises(FileNotFoundError) as info:
        prepare_dataset("csv", path, tmp_path / "data", verbose=False)
    assert "\x1b" not in str(info.value) and "'b\\x1b[2J.png'" in str(info.value)
