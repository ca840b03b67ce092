"""Per-attribute decision thresholds chosen on the validation split (``pedattr calibrate``).

The paper and every published PAR number use 0.5 for all attributes, and ``pedattr eval`` does
too unless asked otherwise. A rare attribute trained with a weighted loss is often better served
by another threshold; this module picks, per attribute, the threshold that maximises that
attribute's balanced accuracy (its mA term) or its F1 on a held-out split, and stores the
thresholds in the checkpoint.

The honest protocol: thresholds are chosen on the validation split, never on the test split,
whose metrics would otherwise be optimistic; the test split is evaluated once, with the stored
thresholds (``pedattr eval --thresholds calibrated``) and, for comparability, with 0.5.

The prediction rule is the metrics' one (:mod:`pedattr.evaluation.metrics`): positive when
``prob > threshold``. Candidate thresholds are the midpoints between consecutive distinct
probabilities plus one value below the smallest and one above the largest, so every distinct
way of splitting the samples is tried once, at a threshold with a margin on both sides.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pedattr.checkpoint.format import load_checkpoint, model_from_checkpoint, write_checkpoint
from pedattr.checkpoint.thresholds import DEFAULT_THRESHOLD
from pedattr.data.annotations import UNKNOWN
from pedattr.data.description import DatasetDescription, load_description
from pedattr.evaluation.evaluate import check_attributes, predict_split, with_training_split
from pedattr.evaluation.metrics import _validate
from pedattr.utils.json import json_safe

#: ``mA``: balanced accuracy (TP/P + TN/N) / 2 per attribute; ``f1``: 2 TP / (2 TP + FP + FN).
OBJECTIVES = ("mA", "f1")
#: Distance of the outermost candidates from the smallest and largest probability.
_OUTER_MARGIN = 1e-6
#: Scores closer than this to the best count as ties (they differ only by rounding).
_TIE_TOLERANCE = 1e-12


@dataclass
class CalibrationResult:
    """Thresholds chosen per attribute, and the objective before and after.

    Attributes:
        thresholds: float64 [M]; 0.5 where the attribute could not be calibrated.
        scores_before: [M] the objective at 0.5 (NaN for an attribute without a positive or
            without a negative known label).
        scores_after: [M] the objective at ``thresholds`` (NaN likewise).
        uncalibrated: indices of the attributes left at 0.5 because their known labels hold no
            positive or no negative.
        num_positives: [M] positive known labels per attribute.
        num_negatives: [M] negative known labels per attribute (unknown labels are neither).
        objective: "mA" or "f1".
    """

    thresholds: np.ndarray
    scores_before: np.ndarray
    scores_after: np.ndarray
    uncalibrated: list[int] = field(default_factory=list)
    num_positives: np.ndarray | None = None
    num_negatives: np.ndarray | None = None
    objective: str = "mA"


def _candidates_and_counts(
    truth: np.ndarray, prob: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct split of one attribute's samples, with its true-positive and true-negative
    counts.

    Args:
        truth: bool [n], known labels only.
        prob: float64 [n].

    Returns:
        ``(candidates, tp, tn)``, each of length k + 1 for k distinct probabilities, ascending:
        candidate j predicts positive exactly the samples above the j smallest distinct values.
    """
    order = np.argsort(prob, kind="stable")
    values, labels = prob[order], truth[order]
    # Last position of each run of equal probabilities: tied samples fall on one side together.
    last = np.append(np.flatnonzero(np.diff(values) > 0), len(values) - 1)
    distinct = values[last]
    positives_at_or_below = np.concatenate([[0], np.cumsum(labels)[last]])
    negatives_at_or_below = np.concatenate([[0], np.cumsum(~labels)[last]])
    lower, upper = distinct[:-1], distinct[1:]
    middle = (lower + upper) / 2
    # Two adjacent float64 values have no number between them; the lower one splits them the
    # same way under the strict rule (prob > t).
    middle = np.where(middle < upper, middle, lower)
    candidates = np.concatenate(
        [[distinct[0] - _OUTER_MARGIN], middle, [distinct[-1] + _OUTER_MARGIN]]
    )
    tp = positives_at_or_below[-1] - positives_at_or_below
    tn = negatives_at_or_below
    return candidates, tp, tn


def _objective(tp: Any, tn: Any, positives: int, negatives: int, objective: str) -> Any:
    """The objective from counts (arrays or scalars); P and N must both be positive."""
    if objective == "mA":
        return (tp / positives + tn / negatives) / 2
    fp, fn = negatives - tn, positives - tp
    return 2 * tp / (2 * tp + fp + fn)  # the denominator is at least P > 0


def _score_at(truth: np.ndarray, prob: np.ndarray, threshold: float, objective: str) -> float:
    """The objective of one attribute at one threshold (NaN where P or N is 0)."""
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    pred = prob > threshold
    tp, tn = int((truth & pred).sum()), int((~truth & ~pred).sum())
    return float(_objective(tp, tn, positives, negatives, objective))


def _best_threshold(truth: np.ndarray, prob: np.ndarray, objective: str) -> tuple[float, float]:
    """The threshold with the best objective (ties: the one closest to 0.5) and its score."""
    candidates, tp, tn = _candidates_and_counts(truth, prob)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    scores = _objective(tp, tn, positives, negatives, objective)
    best = scores.max()
    tied = np.flatnonzero(scores >= best - _TIE_TOLERANCE)
    # Closest to 0.5 keeps calibrated thresholds near the uncalibrated one when the data does
    # not prefer anything else; argmin takes the lower of two equally close candidates.
    chosen = tied[np.argmin(np.abs(candidates[tied] - DEFAULT_THRESHOLD))]
    return float(candidates[chosen]), float(scores[chosen])


def calibrate_thresholds(labels: Any, probs: Any, *, objective: str = "mA") -> CalibrationResult:
    """Choose one threshold per attribute that maximises its balanced accuracy or F1.

    Per attribute, only samples with a known label (0 or 1) take part; unknown labels (2) are
    left out. The search sorts each attribute's probabilities once and counts with cumulative
    sums, so it costs O(N log N) per attribute whatever the number of candidates.

    Args:
        labels: [N, M] with values 0, 1 or 2 (unknown).
        probs: [N, M] predicted probabilities.
        objective: "mA" (balanced accuracy (TP/P + TN/N) / 2, the attribute's mA term) or "f1"
            (the attribute's own F1, 2 TP / (2 TP + FP + FN)).

    Returns:
        A :class:`CalibrationResult`. Attributes without a positive or without a negative known
        label keep 0.5 and are listed in ``uncalibrated``. The objective at the chosen threshold
        is never below the objective at 0.5.

    Raises:
        ValueError: malformed inputs (shapes, non-finite probabilities, label values) or an
            unknown objective.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    gt, prob = _validate(labels, probs)  # the metrics' own checks: same inputs, same rules
    num_attributes = gt.shape[1]
    thresholds = np.full(num_attributes, DEFAULT_THRESHOLD)
    before = np.full(num_attributes, math.nan)
    after = np.full(num_attributes, math.nan)
    positives = np.zeros(num_attributes, dtype=np.int64)
    negatives = np.zeros(num_attributes, dtype=np.int64)
    uncalibrated = []
    for m in range(num_attributes):
        known = gt[:, m] != UNKNOWN
        truth, score_probs = gt[known, m] == 1, prob[known, m]
        positives[m], negatives[m] = int(truth.sum()), int((~truth).sum())
        before[m] = _score_at(truth, score_probs, DEFAULT_THRESHOLD, objective)
        if positives[m] == 0 or negatives[m] == 0:
            uncalibrated.append(m)
            after[m] = before[m]
            continue
        thresholds[m], after[m] = _best_threshold(truth, score_probs, objective)
    return CalibrationResult(
        thresholds=thresholds,
        scores_before=before,
        scores_after=after,
        uncalibrated=uncalibrated,
        num_positives=positives,
        num_negatives=negatives,
        objective=objective,
    )


def _mean(values: np.ndarray) -> float:
    """Mean over the defined values; NaN when none is defined."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _uncalibrated_reasons(result: CalibrationResult, names: list[str]) -> dict[str, str]:
    reasons = {}
    for m in result.uncalibrated:
        if result.num_positives[m] == 0 and result.num_negatives[m] == 0:
            reasons[names[m]] = "no known labels"
        else:
            reasons[names[m]] = "no positives" if result.num_positives[m] == 0 else "no negatives"
    return reasons


def calibrate_checkpoint(
    checkpoint: str | os.PathLike,
    data: DatasetDescription | str | os.PathLike,
    *,
    split: str = "val",
    objective: str = "mA",
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    allow_test: bool = False,
) -> dict[str, Any]:
    """Choose per-attribute thresholds on a split and store them in the checkpoint.

    The checkpoint is written again, atomically, to ``out`` (default: over itself) with the same
    weights, configuration and metrics, the new thresholds, and ``extra["calibration"]``
    recording the split, objective, dataset and scores.

    Args:
        checkpoint: a pedattr checkpoint.
        data: the prepared dataset folder, or its loaded description.
        split: the split to calibrate on; "val" unless the dataset has none.
        objective: "mA" or "f1" (see :func:`calibrate_thresholds`).
        out: where to write the calibrated checkpoint; default ``checkpoint``.
        batch_size: images per forward.
        workers: DataLoader worker processes.
        device: where the model runs.
        allow_test: permit calibrating on the test split (results are then optimistic).

    Returns:
        A JSON-safe report: ``checkpoint``, ``out``, ``data``, ``split``, ``objective``,
        ``num_images``, ``attributes``, ``thresholds``, ``scores_before``, ``scores_after``,
        ``mean_before``, ``mean_after`` and ``uncalibrated`` (attribute name -> reason).

    Raises:
        ValueError: the test split without ``allow_test``, an unknown objective or split.
        CheckpointError, FileNotFoundError, AttributeMismatchError: as
            :func:`~pedattr.evaluation.evaluate.evaluate_checkpoint`.
    """
    if split == "test" and not allow_test:
        raise ValueError(
            "refusing to calibrate thresholds on the test split: thresholds chosen on the test "
            "images make its metrics optimistic; calibrate on the validation split (--split "
            "val) and evaluate on test once"
        )
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if out is None and not Path(checkpoint).is_file():
        raise ValueError(
            f"{checkpoint}: not a checkpoint file to write the thresholds into (a model name or "
            "folder); give --out FILE for the calibrated checkpoint"
        )
    stored = load_checkpoint(checkpoint)
    model = model_from_checkpoint(stored, checkpoint)
    description = load_description(data)
    names = list(stored.config.attribute_names)
    check_attributes(
        names,
        description.attribute_names,
        model_source=str(checkpoint),
        data_source=str(description.root),
    )
    description = with_training_split(description, split, stored.extra.get("run"), checkpoint)
    predictions = predict_split(
        model, description, split, batch_size=batch_size, workers=workers, device=device
    )
    result = calibrate_thresholds(predictions.labels, predictions.probs, objective=objective)
    scores = {
        "split": split,
        "objective": objective,
        "data": str(description.root),
        "num_images": len(predictions),
        "scores_before": result.scores_before.tolist(),
        "scores_after": result.scores_after.tolist(),
        "mean_before": _mean(result.scores_before),
        "mean_after": _mean(result.scores_after),
        "uncalibrated": _uncalibrated_reasons(result, names),
    }
    stored.thresholds = result.thresholds.tolist()
    stored.extra = {**stored.extra, "calibration": json_safe(scores)}
    out = Path(checkpoint if out is None else out)
    write_checkpoint(out, stored)
    return json_safe(
        {
            "checkpoint": str(checkpoint),
            "out": str(out),
            "attributes": names,
            "thresholds": stored.thresholds,
            **scores,
        }
    )


def _percent(value: float | None) -> str:
    return "     n/a" if value is None or math.isnan(value) else f"{100 * value:8.2f}"


def format_calibration(report: dict[str, Any]) -> str:
    """A report of :func:`calibrate_checkpoint` as text: per attribute the threshold and the
    objective before (at 0.5) and after, then where the checkpoint was written."""
    objective = report["objective"]
    lines = [
        f"calibrated on {report['data']} ({report['split']}, {report['num_images']} images), "
        f"objective {objective} per attribute, unknown labels left out",
        f"{'attribute':<24} {'threshold':>9} {'before':>8} {'after':>8}",
    ]
    rows = zip(
        report["attributes"],
        report["thresholds"],
        report["scores_before"],
        report["scores_after"],
        strict=True,
    )
    for name, threshold, before, after in rows:
        reason = report["uncalibrated"].get(name)
        if reason is not None:
            lines.append(f"{name:<24} {threshold:9.4f} kept ({reason})")
        else:
            lines.append(f"{name:<24} {threshold:9.4f} {_percent(before)} {_percent(after)}")
    lines.append(
        f"{'mean':<24} {'':>9} {_percent(report['mean_before'])} {_percent(report['mean_after'])}"
    )
    lines.append(f"wrote the thresholds to {report['out']}")
    return "\n".join(lines)
