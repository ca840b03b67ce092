"""Evaluators (reset / process / evaluate) and the typed reports of `pedattr eval`.

Oracles: ``compute_metrics`` on the same arrays, the same evaluators fed one batch instead of
several, and the dicts ``evaluate_checkpoint`` returned before the reports were typed (the
golden files in tests/golden check the written JSON itself).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pedattr
from pedattr.checkpoint.format import save_checkpoint
from pedattr.data.dataset import Batch, build_loader
from pedattr.data.description import DatasetDescription
from pedattr.evaluation.evaluate import (
    EvaluationReport,
    checkpoint_report,
    evaluate_checkpoint,
    format_localization,
    format_report,
    localization_summary,
)
from pedattr.evaluation.evaluators import (
    DatasetEvaluator,
    LocalizationEvaluator,
    MetricsEvaluator,
    PredictionsCollector,
    localization_report,
    predict_loader,
    run_evaluators,
)
from pedattr.evaluation.forward import BatchOutput
from pedattr.evaluation.localization import LocalizationReport
from pedattr.evaluation.metrics import MetricsReport, compute_metrics, metrics_report
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, assert_json_close, make_prepared_dataset

NAMES = list(LEARNABLE_ATTRIBUTES)


def batch_of(labels: np.ndarray, start: int) -> Batch:
    n = len(labels)
    return Batch(
        images=torch.zeros((n, 3, 4, 4), dtype=torch.uint8),
        labels=torch.from_numpy(labels.astype(np.float32)),
        indices=torch.arange(start, start + n),
        failed=(),
    )


def output_of(probs: np.ndarray) -> BatchOutput:
    return BatchOutput(
        probs=probs.astype(np.float32), boxes=None, winners=np.zeros(probs.shape, np.int64)
    )


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (20, 3))  # 2 is unknown
    labels[0], labels[1] = 1, 0
    return labels, rng.random((20, 3)).astype(np.float32)


def fed(evaluator: DatasetEvaluator, labels: np.ndarray, probs: np.ndarray, cuts: list[int]):
    evaluator.reset()
    for start, stop in zip([0, *cuts], [*cuts, len(labels)], strict=True):
        evaluator.process(batch_of(labels[start:stop], start), output_of(probs[start:stop]))
    return evaluator.evaluate()


@pytest.mark.parametrize("threshold", [0.5, [0.3, 0.5, 0.7]])
def test_metrics_evaluator_equals_compute_metrics_whatever_the_batches(arrays, threshold) -> None:
    labels, probs = arrays
    evaluator = MetricsEvaluator(NAMES, threshold)
    one = fed(evaluator, labels, probs, [])
    several = fed(evaluator, labels, probs, [3, 4, 11])
    assert isinstance(one, MetricsReport)
    expected = compute_metrics(labels, probs, threshold)
    expected["per_attribute"] = dict(zip(NAMES, expected["per_attribute_mA"], strict=True))
    assert one.to_dict() == expected
    assert several.to_dict() == expected
    assert one.mA == expected["mA"] and one.per_attribute == expected["per_attribute"]
    evaluator.reset()
    with pytest.raises(ValueError, match="before any batch"):
        evaluator.evaluate()


def test_metrics_evaluator_refuses_bad_batches_and_thresholds(arrays) -> None:
    labels, probs = arrays
    with pytest.raises(ValueError, match="one entry per attribute"):
        MetricsEvaluator(NAMES, [0.5, 0.5])
    evaluator = MetricsEvaluator(NAMES[:2])
    with pytest.raises(ValueError, match="expects 2"):
        evaluator.process(batch_of(labels, 0), output_of(probs))


def test_metrics_report_without_names_has_no_per_attribute(arrays) -> None:
    labels, probs = arrays
    report = metrics_report(labels, probs)
    assert report.to_dict() == compute_metrics(labels, probs)
    with pytest.raises(ValueError, match="without attribute names"):
        _ = report.per_attribute
    with pytest.raises(ValueError, match="2 names for 3 attributes"):
        metrics_report(labels, probs, attribute_names=["a", "b"])


def test_predictions_collector_keeps_rows_and_outputs_in_order(arrays) -> None:
    labels, probs = arrays
    predictions = fed(PredictionsCollector(), labels, probs, [7])
    np.testing.assert_array_equal(predictions.indices, np.arange(20))
    np.testing.assert_array_equal(predictions.labels, labels.astype(np.float32))
    np.testing.assert_array_equal(predictions.probs, probs)
    assert predictions.boxes is None and predictions.winners is None  # no boxes, no winners
    with pytest.raises(ValueError, match="no readable image"):
        PredictionsCollector().evaluate()


class Recorder(DatasetEvaluator):
    """Counts what run_evaluators calls."""

    def __init__(self) -> None:
        self.resets, self.sizes = 0, []

    def reset(self) -> None:
        self.resets += 1

    def process(self, batch: Batch, outputs: BatchOutput) -> None:
        assert len(batch.images) == len(outputs) > 0
        self.sizes.append(len(outputs))

    def evaluate(self) -> list[int]:
        return self.sizes


# --- a model on a prepared dataset with ground-truth boxes -------------------------------------


@pytest.fixture(scope="module")
def boxed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny ALM checkpoint and a prepared dataset whose images carry boxes for two attributes,
    two of whose attributes are named location-varying."""
    root = tmp_path_factory.mktemp("boxed")
    data = make_prepared_dataset(root, {"train": 8, "test": 10})
    description = DatasetDescription.load(data)
    rng = np.random.default_rng(3)
    boxes = {}
    for name in description.image_names:
        x0, y0 = rng.uniform(0, 20), rng.uniform(0, 50)
        boxes[name] = {"TopPatch": [x0, y0, x0 + 8, y0 + 8], "Reddish": [0, 0, 32, 64]}
    (data / "boxes.json").write_text(json.dumps(boxes))
    meta = json.loads((data / "dataset.json").read_text())
    meta["source"] = {"location_varying_attributes": ["TopPatch"]}
    (data / "dataset.json").write_text(json.dumps(meta))
    torch.manual_seed(0)
    model = pedattr.build_model("alm", attribute_names=NAMES, **TINY_MODEL).eval()
    save_checkpoint(root / "alm.safetensors", model)
    return {"data": data, "model": model, "checkpoint": root / "alm.safetensors"}


def test_run_evaluators_feeds_every_batch_once_after_a_reset(boxed) -> None:
    loader = build_loader(boxed["data"], "test", batch_size=4, train=False, input_size=(64, 32))
    recorder = Recorder()
    [sizes, metrics] = run_evaluators(
        boxed["model"], loader, [recorder, MetricsEvaluator(NAMES)], device="cpu"
    )
    assert recorder.resets == 1 and sizes == [4, 4, 2]
    assert metrics.num_samples == 10


@pytest.mark.slow
def test_localization_evaluator_whatever_the_batches_equals_the_report(boxed) -> None:
    model, description = boxed["model"], DatasetDescription.load(boxed["data"])

    def localized(batch_size: int) -> LocalizationReport:
        loader = build_loader(description, "test", batch_size=batch_size, train=False)
        evaluator = LocalizationEvaluator(model, description, tolerance=2.0)
        [report] = run_evaluators(model, loader, [evaluator], device="cpu", peaks=True)
        return report

    one, several = localized(10), localized(3)
    assert isinstance(one, LocalizationReport) and one.activation_peaks is not None
    assert_json_close(several.to_dict(), one.to_dict(), rel=1e-5, abs_=1e-6)
    loader = build_loader(description, "test", batch_size=10, train=False)
    predictions = predict_loader(model, loader, device="cpu", peaks=True)
    direct = localization_report(model, description, predictions, tolerance=2.0)
    assert direct.to_dict() == one.to_dict()
    assert one.boxes["tolerance"] == 2.0 and one.group == "location_varying"
    # The dict form reads back into the same report and summary.
    again = LocalizationReport.from_dict(json.loads(json.dumps(one.to_dict())))
    assert again == one
    summary = one.summary()
    assert summary.attributes == "location_varying" and summary.count == 1
    assert (
        summary.best_level_hit_rate
        == one.boxes["mean"]["location_varying"]["best_level"]["hit_rate"]
    )
    assert localization_summary(one.to_dict()) == summary.to_dict()
    assert format_localization(one) == format_localization(one.to_dict())


def test_localization_evaluator_checks_before_any_forward(boxed, tmp_path: Path) -> None:
    description = DatasetDescription.load(boxed["data"])
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        LocalizationEvaluator(boxed["model"], description, tolerance=-1)
    baseline = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    with pytest.raises(ValueError, match="base.safetensors: a baseline model predicts no boxes"):
        LocalizationEvaluator(baseline, description, source="base.safetensors")


@pytest.mark.slow
def test_checkpoint_report_is_what_evaluate_checkpoint_returns(boxed) -> None:
    options = dict(split="test", batch_size=4, localization=True, tolerance=1.0)
    report = checkpoint_report(boxed["checkpoint"], boxed["data"], **options)
    assert isinstance(report, EvaluationReport)
    assert isinstance(report.metrics, MetricsReport)
    assert isinstance(report.localization, LocalizationReport)
    assert report.num_images == report.metrics.num_samples == 10
    as_dict = evaluate_checkpoint(boxed["checkpoint"], boxed["data"], **options)
    assert report.to_dict() == as_dict
    assert format_report(report) == format_report(as_dict)
    assert list(as_dict) == [
        "checkpoint",
        "data",
        "split",
        "num_images",
        "unreadable_images",
        "threshold_mode",
        "thresholds",
        "attributes",
        "metrics",
        "localization",
    ]
    assert "localization" not in evaluate_checkpoint(boxed["checkpoint"], boxed["data"])
