"""The input pipeline: decoding of every image mode, flips, bad files, loaders, loss weights."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pedattr.data.annotations import RawAnnotations
from pedattr.data.dataset import (
    AttributeDataset,
    Batch,
    DecodeFailure,
    FailureTracker,
    TooManyFailedImages,
    build_loader,
    collate_skip_failed,
    load_rgb,
    to_rgb,
    tracked_batches,
)
from pedattr.data.description import DatasetDescription, write_description

SMALL = (32, 16)  # input size for tests that do not care about it: fast


def noise_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_description(
    tmp_path: Path,
    files: dict[str, Image.Image | bytes],
    *,
    labels: np.ndarray | None = None,
    splits: list[str] | None = None,
) -> DatasetDescription:
    """Write ``files`` (image name -> Pillow image or raw bytes) and a description of them."""
    image_root = tmp_path / "images"
    image_root.mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (image_root / name).write_bytes(content)
        else:
            content.save(image_root / name)
    n = len(files)
    raw = RawAnnotations(
        attribute_names=["Female", "Hat"],
        image_names=list(files),
        labels=np.zeros((n, 2), dtype=np.uint8) if labels is None else labels,
        splits=["train"] * n if splits is None else splits,
        image_root=image_root,
    )
    write_description(raw, tmp_path / "data")
    return DatasetDescription.load(tmp_path / "data")


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --- decoding ---------------------------------------------------------------------------------


def _mode_images() -> dict[str, tuple[Image.Image, str]]:
    rgb = noise_image(20, 10)
    p_transparent = rgb.convert("P")
    p_transparent.info["transparency"] = 0
    return {
        "RGB": (rgb, "jpg"),
        "L": (rgb.convert("L"), "png"),
        "LA": (rgb.convert("LA"), "png"),
        "P": (rgb.convert("P"), "png"),
        "P-transparent": (p_transparent, "png"),
        "RGBA": (rgb.convert("RGBA"), "png"),
        "CMYK": (rgb.convert("CMYK"), "jpg"),
        "I;16": (Image.fromarray(np.full((20, 10), 30000, dtype=np.uint16)), "png"),
        "1": (rgb.convert("1"), "png"),
        "1x1": (Image.new("RGB", (1, 1), (10, 200, 30)), "png"),
    }


@pytest.mark.parametrize("case", list(_mode_images()))
def test_every_mode_decodes_to_uint8_rgb(tmp_path: Path, case: str) -> None:
    image, suffix = _mode_images()[case]
    path = tmp_path / f"image.{suffix}"
    image.save(path)
    description = make_description(tmp_path, {f"image.{suffix}": path.read_bytes()})
    tensor, labels, index = AttributeDataset(description, "train")[0]
    assert isinstance(tensor, torch.Tensor), tensor
    assert tensor.shape == (3, 256, 128) and tensor.dtype == torch.uint8
    assert labels.shape == (2,) and index == 0


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    image = Image.fromarray(np.array([[0, 30000, 65535]], dtype=np.uint16))
    assert image.mode == "I;16"
    # Pillow's own convert("L") would give 0, 255, 255.
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 117, 255]


def _half_transparent(mode: str) -> Image.Image:
    """Two white pixels, the right one fully transparent."""
    if mode == "P":
        image = Image.new("P", (2, 1))
        image.putpalette([255, 255, 255] * 2)
        image.putpixel((0, 0), 1)
        image.info["transparency"] = 0  # palette entry 0, the right pixel
        return image
    rgba = Image.new("RGBA", (2, 1), (255, 255, 255, 255))
    rgba.putpixel((1, 0), (255, 255, 255, 0))
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_become_black(mode: str) -> None:
    pixels = np.asarray(to_rgb(_half_transparent(mode)))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [0, 0, 0]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (32, 16), (255, 0, 0))
    image.paste((0, 0, 255), (16, 0, 32, 16))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 2  # mirrored: a viewer shows blue on the left
    image.save(tmp_path / "mirrored.png", exif=exif)
    pixels = np.asarray(load_rgb(tmp_path / "mirrored.png"))
    assert pixels[8, 0].tolist() == [0, 0, 255]


def test_pipeline_outputs_unnormalised_values(tmp_path: Path) -> None:
    white = Image.new("RGB", (10, 20), (255, 255, 255))
    description = make_description(tmp_path, {"white.png": white})
    tensor = AttributeDataset(description, "train", input_size=SMALL)[0][0]
    # Normalisation is the model's job: the pipeline gives plain uint8 RGB.
    assert torch.equal(tensor, torch.full((3, *SMALL), 255, dtype=torch.uint8))


# --- augmentation -----------------------------------------------------------------------------


def test_flip_only_in_training(tmp_path: Path) -> None:
    description = make_description(tmp_path, {"a.png": noise_image(20, 10)})
    plain = AttributeDataset(description, "train", input_size=SMALL)[0][0]
    never = AttributeDataset(description, "train", input_size=SMALL, flip_prob=1.0)[0][0]
    always = AttributeDataset(description, "train", input_size=SMALL, train=True, flip_prob=1.0)
    assert torch.equal(never, plain)
    assert torch.equal(always[0][0], plain.flip(-1))


def test_flips_are_seeded(tmp_path: Path) -> None:
    description = make_description(tmp_path, {"a.png": noise_image(20, 10)})

    def flips(seed: int) -> list[bool]:
        dataset = AttributeDataset(description, "train", input_size=SMALL, train=True, seed=seed)
        plain = AttributeDataset(description, "train", input_size=SMALL)[0][0]
        return [not torch.equal(dataset[0][0], plain) for _ in range(24)]

    assert flips(1) == flips(1)
    assert 0 < sum(flips(1)) < 24


# --- unreadable files -------------------------------------------------------------------------


def _bad_files() -> dict[str, Image.Image | bytes]:
    good = jpeg_bytes(noise_image(60, 30))
    return {
        "good0.jpg": good,
        "truncated.jpg": good[: len(good) // 2],
        "text.jpg": b"this is not an image\n",
        "good1.jpg": good,
    }


def test_bad_files_are_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    description = make_description(tmp_path, _bad_files())
    loader = build_loader(description, "train", batch_size=4, train=False, input_size=SMALL)
    batch = next(iter(loader))
    assert batch.images.shape == (2, 3, *SMALL)
    assert batch.indices.tolist() == [0, 3]
    failed = dict(batch.failed)
    assert set(failed) == {str(description.image_root / n) for n in ("truncated.jpg", "text.jpg")}
    assert "truncated" in failed[str(description.image_root / "truncated.jpg")]

    tracker = FailureTracker(max_fraction=0.6)
    with caplog.at_level(logging.WARNING, logger="pedattr.data.dataset"):
        pairs = list(tracked_batches(loader, tracker))
    assert [images.shape[0] for images, _ in pairs] == [2]
    assert (tracker.seen, tracker.failed) == (4, 2)
    assert "truncated.jpg" in caplog.text and "text.jpg" in caplog.text
    tracker.finish()  # 50 % is within the 60 % allowed


def test_failed_fraction_limit_stops_the_run(tmp_path: Path) -> None:
    description = make_description(tmp_path, _bad_files())
    loader = build_loader(description, "train", batch_size=2, train=False, input_size=SMALL)
    tracker = FailureTracker(max_fraction=0.01, min_seen=1)
    with pytest.raises(TooManyFailedImages, match="truncated.jpg") as caught:
        list(tracked_batches(loader, tracker))
    assert "more than the allowed 1.00%" in str(caught.value)


def test_tracker_tolerates_early_failures_until_min_seen() -> None:
    def batch(good: int, bad: list[str]) -> Batch:
        failed = tuple((path, "OSError: broken") for path in bad)
        return Batch(torch.zeros(good, 3, 2, 2), torch.zeros(good, 1), torch.arange(good), failed)

    tracker = FailureTracker(max_fraction=0.01, min_seen=200)
    tracker.update(batch(30, ["a.jpg", "b.jpg"]))  # 2 of 32, but 2 <= 1 % of 200
    for _ in range(5):
        tracker.update(batch(32, []))
    assert tracker.failed == 2 and tracker.seen == 192
    with pytest.raises(TooManyFailedImages, match="a.jpg"):
        tracker.update(batch(30, ["c.jpg", "d.jpg"]))  # 4 of 224 > 1 %
    with pytest.raises(ValueError):
        FailureTracker(max_fraction=1.5)


def test_batch_of_failures_only_keeps_shapes() -> None:
    labels = torch.zeros(5)
    batch = collate_skip_failed([(DecodeFailure("x.jpg", "OSError: no", (3, 8, 4)), labels, 7)])
    assert batch.images.shape == (0, 3, 8, 4) and batch.labels.shape == (0, 5)
    assert batch.indices.tolist() == [] and batch.failed == (("x.jpg", "OSError: no"),)


# --- loaders and loss weights -----------------------------------------------------------------


def test_training_loader_shuffles_drops_last_and_is_seeded(tmp_path: Path) -> None:
    files = {f"{i}.png": noise_image(12, 6, seed=i) for i in range(10)}
    description = make_description(tmp_path, files)

    def order(seed: int, train: bool) -> list[int]:
        loader = build_loader(
            description, "train", batch_size=4, train=train, input_size=SMALL, seed=seed
        )
        return [i for batch in loader for i in batch.indices.tolist()]

    assert order(0, train=False) == list(range(10))
    shuffled = order(0, train=True)
    assert len(shuffled) == 8 and shuffled != list(range(8))  # 2 batches of 4, last 2 dropped
    assert order(0, train=True) == shuffled


def test_worker_loader_matches_main_process(tmp_path: Path) -> None:
    files = {f"{i}.jpg": jpeg_bytes(noise_image(25, 10, seed=i)) for i in range(6)}
    files["text.jpg"] = b"not an image"
    description = make_description(tmp_path, files)
    kwargs = dict(batch_size=4, train=False, input_size=SMALL, seed=3)
    main = list(build_loader(description, "train", workers=0, **kwargs))
    worker_loader = build_loader(description, "train", workers=1, **kwargs)
    assert worker_loader.persistent_workers
    workers = list(worker_loader)
    assert [b.indices.tolist() for b in workers] == [b.indices.tolist() for b in main]
    assert all(torch.equal(a.images, b.images) for a, b in zip(main, workers, strict=True))
    assert [b.failed for b in workers] == [b.failed for b in main]


def test_positive_ratio_comes_from_training_split_only(tmp_path: Path) -> None:
    files = {f"{i}.png": noise_image(8, 4, seed=i) for i in range(6)}
    labels = np.array([[1, 0], [1, 2], [0, 1], [0, 0], [0, 0], [0, 0]], dtype=np.uint8)
    splits = ["train", "train", "train", "test", "test", "test"]
    description = make_description(tmp_path, files, labels=labels, splits=splits)
    for split in ("train", "test"):
        ratio = AttributeDataset(description, split).positive_ratio
        # Female: 2 of 3 training images; Hat: 1 of 2 known (one unknown), test ignored.
        assert torch.allclose(ratio, torch.tensor([2 / 3, 1 / 2]))
    test_labels = AttributeDataset(description, "test").labels
    assert test_labels.dtype == torch.float32 and test_labels.sum() == 0
