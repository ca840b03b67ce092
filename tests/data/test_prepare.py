"""``pedattr prepare``: official files -> description -> loader, missing images, selections."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pedattr.cli import build_parser, main
from pedattr.data.annotations import AnnotationError
from pedattr.data.dataset import AttributeDataset, build_loader
from pedattr.data.description import DatasetDescription, training_positive_ratio
from pedattr.data.formats import FORMATS
from pedattr.data.prepare import (
    FORMAT_LAYOUTS,
    MissingImagesError,
    parse_attribute_selection,
    prepare_dataset,
)
from tests.fixtures_formats import (
    Expected,
    write_csv,
    write_images,
    write_pa100k,
    write_peta,
    write_rap,
    write_rethinking_pkl,
    write_text_lists,
)

SMALL = (32, 16)


def _with_images(expected: Expected) -> Expected:
    write_images(expected.image_dir, expected.image_names)
    return expected


# format -> (writes the raw dataset under a folder: (expected, --root, reader options))
RawWriter = Callable[[Path], tuple[Expected, Path, dict]]
RAW_WRITERS: dict[str, RawWriter] = {
    "pa100k": lambda d: (write_pa100k(d, images=True), d, {}),
    "peta": lambda d: (write_peta(d, images=True), d, {"partition": 1}),
    "rap1": lambda d: (write_rap(d, version=1, images=True), d, {}),
    "rap2": lambda d: (write_rap(d, version=2, images=True), d, {"partition": 2}),
    "rethinking-pkl": lambda d: (_with_images(write_rethinking_pkl(d)), d, {}),
    "text-lists": lambda d: (
        _with_images(write_text_lists(d)),
        d,
        {"names_file": d / "attributes.txt"},
    ),
    "csv": lambda d: (_with_images(write_csv(d / "people.csv")), d / "people.csv", {}),
}


def check_matches(description: DatasetDescription, expected: Expected, partition: int) -> None:
    """Every prepared sample has the fixture's labels and split; every listed image exists."""
    rows = {name: i for i, name in enumerate(expected.image_names)}
    splits = expected.splits(partition)
    assert description.attribute_names == expected.attribute_names
    for name, labels, split in zip(
        description.image_names, description.labels, description.splits, strict=True
    ):
        assert labels.tolist() == expected.labels[rows[name]].tolist(), name
        assert split == splits[rows[name]], name
        assert (description.image_root / name).is_file()


@pytest.mark.parametrize("format_name", list(RAW_WRITERS))
def test_prepare_load_and_one_batch(tmp_path: Path, format_name: str) -> None:
    expected, root, options = RAW_WRITERS[format_name](tmp_path / "raw")
    out = prepare_dataset(format_name, root, tmp_path / "data", verbose=False, **options)
    description = DatasetDescription.load(out)
    check_matches(description, expected, options.get("partition", 0))
    assert description.image_root.is_absolute()
    assert description.meta["source"]["format"] == format_name
    assert description.meta["missing_images"] == []

    loader = build_loader(description, "train", batch_size=2, train=True, input_size=SMALL)
    batch = next(iter(loader))
    assert batch.images.shape == (2, 3, *SMALL) and batch.failed == ()
    assert batch.labels.shape == (2, len(expected.attribute_names))
    assert batch.images.dtype == torch.uint8
    rows = batch.indices.numpy()
    assert torch.equal(batch.labels, torch.from_numpy(description.labels[rows].astype(np.float32)))


def test_summary_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_pa100k(tmp_path / "raw", images=True)
    prepare_dataset("pa100k", tmp_path / "raw", tmp_path / "data")
    out = capsys.readouterr().out
    assert "10 images (train 6, val 2, test 2)" in out and "26 attributes: Female" in out


def test_positive_ratios_come_from_training_split_only(tmp_path: Path) -> None:
    expected = write_pa100k(tmp_path / "raw", images=True, sizes=(4, 3, 3))
    description = DatasetDescription.load(
        prepare_dataset("pa100k", tmp_path / "raw", tmp_path / "data", verbose=False)
    )
    splits = np.array(expected.splits(), dtype=object)
    train_only = training_positive_ratio(expected.labels, splits)
    everything = training_positive_ratio(expected.labels, np.full(len(splits), "train"))
    assert not np.allclose(train_only, everything)  # the fixture tells them apart
    assert np.allclose(description.positive_ratio, train_only)
    test_set = AttributeDataset(description, "test")
    assert torch.allclose(test_set.positive_ratio, torch.tensor(train_only, dtype=torch.float32))


# --- missing images ---------------------------------------------------------------------------


def _delete_images(expected: Expected, count: int) -> list[str]:
    gone = expected.image_names[:count]
    for name in gone:
        (expected.image_dir / name).unlink()
    return gone


def test_missing_images_are_refused_counted_and_listed(tmp_path: Path) -> None:
    expected = write_pa100k(tmp_path / "raw", images=True, sizes=(10, 3, 3))
    gone = _delete_images(expected, 12)
    with pytest.raises(MissingImagesError) as caught:
        prepare_dataset("pa100k", tmp_path / "raw", tmp_path / "data", verbose=False)
    message = str(caught.value)
    assert "12 of 16 images" in message and "--allow-missing" in message
    assert all(name in message for name in gone[:10]) and gone[10] not in message
    assert "... and 2 more" in message
    assert not (tmp_path / "data" / "dataset.json").exists()


def test_allow_missing_drops_and_records_them(tmp_path: Path) -> None:
    expected = write_pa100k(tmp_path / "raw", images=True)
    gone = _delete_images(expected, 2)
    out = prepare_dataset(
        "pa100k", tmp_path / "raw", tmp_path / "data", allow_missing=True, verbose=False
    )
    description = DatasetDescription.load(out)
    assert description.meta["missing_images"] == gone
    assert description.image_names == expected.image_names[2:]
    kept_splits = np.array(expected.splits()[2:], dtype=object)
    assert description.positive_ratio.tolist() == pytest.approx(
        training_positive_ratio(expected.labels[2:], kept_splits)
    )


def test_all_images_missing_is_refused_even_when_allowed(tmp_path: Path) -> None:
    write_pa100k(tmp_path / "raw")  # no images at all
    with pytest.raises(MissingImagesError, match="10 of 10"):
        prepare_dataset("pa100k", tmp_path / "raw", tmp_path / "data", allow_missing=True)


# --- attribute selection ----------------------------------------------------------------------


def test_attribute_subset_in_given_order(tmp_path: Path) -> None:
    expected = write_pa100k(tmp_path / "raw", images=True)
    out = prepare_dataset(
        "pa100k",
        tmp_path / "raw",
        tmp_path / "data",
        attributes=["Hat", "Female", "boots"],
        verbose=False,
    )
    description = DatasetDescription.load(out)
    assert description.attribute_names == ["Hat", "Female", "boots"]
    columns = [expected.attribute_names.index(n) for n in ("Hat", "Female", "boots")]
    assert description.labels.tolist() == expected.labels[:, columns].tolist()
    assert description.meta["source"]["attribute_selection"] == ["Hat", "Female", "boots"]


@pytest.mark.parametrize(
    ("selection", "match"),
    [(["Hat", "Wings"], "Wings"), (["Hat", "Hat"], "more than once"), ([" "], "empty")],
)
def test_bad_attribute_selection(tmp_path: Path, selection: list[str], match: str) -> None:
    write_pa100k(tmp_path / "raw", images=True)
    with pytest.raises(AnnotationError, match=match):
        prepare_dataset("pa100k", tmp_path / "raw", tmp_path / "data", attributes=selection)


def test_parse_attribute_selection(tmp_path: Path) -> None:
    assert parse_attribute_selection(" Hat, Female ,") == ["Hat", "Female"]
    (tmp_path / "names.txt").write_text("# mine\nHat\n\nFemale  # the first\n")
    assert parse_attribute_selection(f"@{tmp_path / 'names.txt'}") == ["Hat", "Female"]
    with pytest.raises(AnnotationError):
        parse_attribute_selection(",,")


# --- command line -----------------------------------------------------------------------------


def test_cli_prepares_with_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_peta(tmp_path / "raw", images=True)
    (tmp_path / "names.txt").write_text("peta_attr_003\npeta_attr_000\n")
    argv = ["prepare", "peta", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "data")]
    argv += ["--partition", "3", "--attributes", f"@{tmp_path / 'names.txt'}"]
    assert main(argv) == 0
    description = DatasetDescription.load(tmp_path / "data")
    assert description.attribute_names == ["peta_attr_003", "peta_attr_000"]
    assert description.meta["source"]["partition"] == 3
    assert "prepared" in capsys.readouterr().out


def test_cli_bad_annotation_file_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_pa100k(tmp_path / "raw", images=True, mutate=lambda v: v.pop("train_label"))
    argv = ["prepare", "pa100k", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pedattr prepare: error:") and "'train_label'" in err
    assert len(err.strip().splitlines()) == 1  # one message, no traceback


def test_cli_missing_images_exit_2_and_allow_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = write_pa100k(tmp_path / "raw", images=True)
    _delete_images(expected, 1)
    argv = ["prepare", "pa100k", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    assert expected.image_names[0] in capsys.readouterr().err
    assert main([*argv, "--allow-missing"]) == 0
    assert "missing images left out: 1" in capsys.readouterr().out


def test_cli_rejects_options_the_format_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_pa100k(tmp_path / "raw", images=True)
    argv = ["prepare", "pa100k", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "d")]
    assert main([*argv, "--partition", "1"]) == 2
    assert "partition" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--option", "no-equals-sign"])


def test_help_lists_every_format(capsys: pytest.CaptureFixture) -> None:
    assert set(FORMAT_LAYOUTS) == set(FORMATS)
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["prepare", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    assert all(f"  {name} " in text for name in FORMATS)
    assert "RAP_dataset" in text and "--allow-missing" in text


def test_description_refuses_bad_label_values_and_undefined_weights(tmp_path):
    import numpy as np

    from pedattr.data.annotations import AnnotationError, RawAnnotations
    from pedattr.data.description import DatasetDescription, write_description

    raw = RawAnnotations(
        attribute_names=["a", "b"],
        image_names=["x.jpg", "y.jpg", "z.jpg"],
        labels=np.array([[1, 2], [0, 2], [1, 1]]),
        splits=np.array(["train", "train", "test"]),
        image_root=tmp_path,
    )
    with pytest.raises(AnnotationError, match=r"without any known label.*\['b'\]"):
        write_description(raw, tmp_path / "d")
    test_only = RawAnnotations(
        attribute_names=["a"],
        image_names=["x.jpg"],
        labels=np.array([[1]]),
        splits=np.array(["test"]),
        image_root=tmp_path,
    )
    write_description(test_only, tmp_path / "t")
    assert DatasetDescription.load(tmp_path / "t").positive_ratio is None
    samples = tmp_path / "t" / "samples.csv"
    samples.write_text(samples.read_text().replace("test,1", "test,3"))
    with pytest.raises(AnnotationError, match="0, 1 or 2"):
        DatasetDescription.load(tmp_path / "t")
