"""A FIFO, socket or device given as an image is refused instead of blocking the reader."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

import pedattr
from pedattr.cli import main
from pedattr.data.dataset import AttributeDataset, DecodeFailure, load_rgb
from pedattr.data.description import DatasetDescription
from pedattr.evaluation.evaluate import image_sizes
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, make_prepared_dataset


@pytest.fixture()
def no_hang():
    """A reader that blocks on a FIFO fails the test instead of hanging it."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")

    def hung(signum, frame):
        raise AssertionError("reading the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def fifo(tmp_path: Path, no_hang) -> Path:
    """A FIFO named like an image."""
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_as_an_image(fifo: Path, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="a FIFO .named pipe., not a regular file"):
        load_rgb(fifo)
    with pytest.raises(IsADirectoryError):  # as open() says for a folder
        load_rgb(tmp_path)


@pytest.mark.slow
def test_predict_refuses_a_fifo_in_one_line(fifo: Path, capsys, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    pedattr.save_checkpoint(
        checkpoint, pedattr.build_model("alm", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    )
    code = main(["predict", "--checkpoint", str(checkpoint), str(fifo), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and str(fifo) in err and "a FIFO (named pipe)" in err


def test_the_dataset_loader_counts_a_fifo_as_unreadable(tmp_path: Path, no_hang) -> None:
    data = make_prepared_dataset(tmp_path / "set", {"train": 2})
    dataset = AttributeDataset(data, "train", input_size=(64, 32))
    fifo = Path(dataset.paths[0])  # inside the image root, so only its kind is wrong
    fifo.unlink()
    os.mkfifo(fifo)
    failure = dataset[0][0]
    assert isinstance(failure, DecodeFailure) and "FIFO" in failure.reason


def test_localization_image_sizes_name_a_fifo(tmp_path: Path, no_hang) -> None:
    description = DatasetDescription.load(make_prepared_dataset(tmp_path, {"train": 2}))
    path = description.image_path(0)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ValueError, match=f"^{path}: a FIFO .named pipe., not a regular file"):
        image_sizes(description, np.array([0]))
