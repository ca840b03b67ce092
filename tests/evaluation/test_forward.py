"""The one batched forward that `pedattr eval`, the trainer's validation and Predictor share.

Oracles: the model called directly (its logits, boxes and branch logits), the peak hooks used by
hand, and the same images through ``Predictor`` and ``predict_loader``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pedattr
from pedattr.data.dataset import build_loader
from pedattr.evaluation.evaluate import predict_loader
from pedattr.evaluation.forward import BatchOutput, forward_batch
from pedattr.inference.predictor import Predictor
from pedattr.models.localization import max_vote_branch, recording_activation_peaks
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, make_prepared_dataset


@pytest.fixture(scope="module")
def alm() -> torch.nn.Module:
    torch.manual_seed(0)
    return pedattr.build_model("alm", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (5, 3, 64, 32), dtype=torch.uint8, generator=generator)


def test_forward_batch_is_the_models_output_with_its_peaks(alm, images) -> None:
    with torch.no_grad(), recording_activation_peaks(alm) as recorded:
        expected = alm(images)
    output = forward_batch(alm, images, peaks=True)
    assert isinstance(output, BatchOutput) and len(output) == 5
    assert output.probs.dtype == np.float32
    np.testing.assert_allclose(output.probs, torch.sigmoid(expected.logits).numpy(), atol=1e-6)
    np.testing.assert_allclose(output.boxes, expected.boxes.numpy(), atol=1e-6)
    np.testing.assert_array_equal(output.winners, max_vote_branch(expected.branch_logits))
    assert output.winners.dtype == np.int64
    np.testing.assert_array_equal(output.peaks, recorded[0].numpy())
    assert output.peaks.shape == (5, 3, len(LEARNABLE_ATTRIBUTES), 2)
    # The hooks that recorded the peaks are gone once the forward returns.
    assert all(not head._forward_pre_hooks for head in alm.level_heads)


def test_forward_batch_without_peaks_and_for_the_baseline(alm, images) -> None:
    assert forward_batch(alm, images).peaks is None
    baseline = pedattr.build_model("baseline", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    output = forward_batch(baseline.eval(), images, peaks=True)
    assert output.boxes is None and output.peaks is None
    np.testing.assert_array_equal(output.winners, np.zeros((5, 3), dtype=np.int64))  # global


def test_forward_batch_under_autocast_keeps_float32_probabilities(alm, images) -> None:
    exact = forward_batch(alm, images)
    half = forward_batch(alm, images, autocast_dtype=torch.bfloat16)
    assert half.probs.dtype == np.float32 and half.boxes.dtype == np.float32
    np.testing.assert_allclose(half.probs, exact.probs, atol=0.05)


def test_predictor_and_eval_give_the_same_outputs_on_the_same_images(alm, tmp_path: Path) -> None:
    data = make_prepared_dataset(tmp_path, {"test": 7})
    loader = build_loader(data, "test", batch_size=3, train=False, input_size=(64, 32))
    evaluated = predict_loader(alm, loader, device="cpu", peaks=True)
    image_root = Path(json.loads((data / "dataset.json").read_text())["image_root"])
    files = sorted(image_root.glob("*.png"))
    predictions = Predictor(alm, batch_size=4, workers=1).predict(files)
    names = list(LEARNABLE_ATTRIBUTES)
    probs = np.array([[p.probabilities[n] for n in names] for p in predictions])
    # Same forward, same float32 values: equal, not merely close.
    np.testing.assert_array_equal(probs, evaluated.probs.astype(np.float64))
    levels = ("level1", "level2", "level3")
    winners = [[levels.index(p.winning_level[n]) for n in names] for p in predictions]
    np.testing.assert_array_equal(winners, evaluated.winners)
    # The images are at the input size, so pixels of the image are network-input pixels.
    peaks = [[[p.peaks[n][level] for n in names] for level in levels] for p in predictions]
    np.testing.assert_allclose(peaks, evaluated.peaks, atol=1e-5)
