"""Pedestrian attribute recognition metrics (ALM paper, Sec. 4.1).

Two families of metrics are reported in the literature and in the paper's tables:

* label-based mean accuracy (mA): for every attribute the mean of the true-positive rate and
  the true-negative rate, averaged over attributes;
* instance-based accuracy, precision, recall and F1, computed per sample on the sets of
  predicted and true attributes.

Conventions (the ones every published number uses):

* A prediction is positive when ``prob > threshold`` (strictly greater, as in the released
  code's ``probs > 0.5``); a probability exactly at the threshold is negative.
* Label value 2 (RAP's "unknown") counts as 0 (negative).
* A sample whose instance-based denominator is 0 contributes 0 to that metric, even when the
  predicted and true sets are both empty; each metric is averaged over all samples.
* F1 is ``2 P R / (P + R)`` from the averaged precision and recall, not the mean of the
  per-sample F1 scores.
* An attribute with no positives or no negatives in the evaluated set has an undefined mA term:
  it is reported (NaN, listed, warned about) and left out of the mean.

All functions accept numpy arrays, torch tensors or nested lists.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pedattr.data.annotations import UNKNOWN
from pedattr.utils.arrays import to_numpy

_VALID_LABELS = (0, 1, UNKNOWN)


class UndefinedMetricWarning(UserWarning):
    """Warned when some attributes' mA terms are undefined on the evaluated set."""


def _validate(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Converts and checks a label matrix and a probability matrix.

    Returns:
        ``(labels, probs)`` as float64 arrays of shape [N, M].

    Raises:
        ValueError: if the shapes differ, are not 2-D or hold no sample, if a probability is
            not finite, or if a label is not 0, 1 or 2.
    """
    gt, prob = to_numpy(labels), to_numpy(probs)
    if gt.ndim != 2 or prob.ndim != 2:
        raise ValueError(
            f"labels and probs must be 2-D [N, M]; got shapes {gt.shape} and {prob.shape}"
        )
    if gt.shape != prob.shape:
        raise ValueError(f"labels shape {gt.shape} does not match probs shape {prob.shape}")
    if gt.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if not np.isfinite(prob).all():
        raise ValueError("probs contain NaN or infinite values")
    if not np.isin(gt, _VALID_LABELS).all():
        raise ValueError(f"labels must only contain the values {_VALID_LABELS}")
    return gt, prob


def _thresholds(threshold: float | Sequence[float] | np.ndarray, num_attributes: int) -> Any:
    """Returns a scalar threshold or a [M] array, checking a per-attribute one's length."""
    thr = to_numpy(threshold)
    if thr.ndim == 0:
        return float(thr)
    if thr.shape != (num_attributes,):
        raise ValueError(
            f"threshold must be a float or have one entry per attribute ({num_attributes}); "
            f"got shape {thr.shape}"
        )
    return thr


def _ratio(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    """Element-wise ``num / den`` with ``fill`` where ``den`` is 0."""
    out = np.full(num.shape, fill, dtype=np.float64)
    return np.divide(num, den, out=out, where=den > 0)


def _label_based(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-attribute (TP/P + TN/N) / 2, NaN where P or N is 0. Inputs are bool [N, M]."""
    pos = truth.sum(axis=0)
    neg = truth.shape[0] - pos
    tpr = _ratio((truth & pred).sum(axis=0), pos, np.nan)
    tnr = _ratio((~truth & ~pred).sum(axis=0), neg, np.nan)
    return (tpr + tnr) / 2  # NaN propagates from either undefined rate


def _instance_based(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Averaged instance accuracy, precision and recall; a zero denominator counts as 0."""
    inter = (truth & pred).sum(axis=1)
    acc = _ratio(inter, (truth | pred).sum(axis=1), 0.0)
    prec = _ratio(inter, pred.sum(axis=1), 0.0)
    rec = _ratio(inter, truth.sum(axis=1), 0.0)
    return float(acc.mean()), float(prec.mean()), float(rec.mean())


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean of the averaged precision and recall (0 when both are 0)."""
    total = precision + recall
    return 2 * precision * recall / total if total > 0 else 0.0


def _mean_accuracy(per_attribute: np.ndarray) -> tuple[float, list[int]]:
    """Returns mA over the defined attributes and the indices of the undefined ones."""
    undefined = np.flatnonzero(np.isnan(per_attribute)).tolist()
    if undefined:
        warnings.warn(
            f"{len(undefined)} attribute(s) have no positives or no negatives in the evaluated "
            f"set; their mA is undefined and excluded from the mean (indices {undefined})",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    if len(undefined) == per_attribute.size:
        return float("nan"), undefined
    return float(np.nanmean(per_attribute)), undefined


def compute_metrics(
    labels: Any, probs: Any, threshold: float | Sequence[float] | np.ndarray = 0.5
) -> dict[str, Any]:
    """Computes mA and the instance-based metrics of the ALM paper.

    A prediction is positive when ``probs > threshold`` (strict, as in the released code); label
    value 2 (unknown) counts as negative. See the module docstring for the conventions on empty
    sets and undefined attributes.

    Args:
        labels: Ground truth [N, M] with values 0, 1 or 2.
        probs: Predicted probabilities [N, M].
        threshold: One threshold for all attributes, or one per attribute (length M).

    Returns:
        A dict with ``mA``, ``accuracy``, ``precision``, ``recall``, ``f1`` (fractions in
        [0, 1]; ``mA`` is NaN when no attribute is defined), ``per_attribute_mA`` (list of M
        floats, NaN where undefined), ``undefined_attributes`` (indices of those attributes),
        ``num_positives`` (list of M ints, for reporting why an attribute is undefined) and
        ``num_samples``.

    Raises:
        ValueError: on malformed inputs (see ``_validate``) or a threshold of the wrong length.

    Warns:
        UndefinedMetricWarning: when some attributes have no positives or no negatives.
    """
    return _report_of_valid(*_validate(labels, probs), threshold).to_dict()


@dataclass
class MetricsReport:
    """The paper's metrics on a set of samples (what :func:`compute_metrics` returns, typed).

    Attributes:
        mA: label-based mean accuracy over the defined attributes (NaN when none is).
        accuracy, precision, recall, f1: the instance-based metrics.
        per_attribute_mA: M values, NaN where undefined.
        undefined_attributes: indices of the attributes without positives or negatives.
        num_positives: M counts, which say why an attribute is undefined.
        num_samples: N.
        attribute_names: the M names, when known; :meth:`to_dict` then adds ``per_attribute``.
    """

    mA: float  # the paper's name
    accuracy: float
    precision: float
    recall: float
    f1: float
    per_attribute_mA: list[float]
    undefined_attributes: list[int]
    num_positives: list[int]
    num_samples: int
    attribute_names: list[str] | None = None

    @property
    def per_attribute(self) -> dict[str, float]:
        """Attribute name -> mA (NaN where undefined).

        Raises:
            ValueError: the report was computed without attribute names.
        """
        if self.attribute_names is None:
            raise ValueError("these metrics were computed without attribute names")
        return dict(zip(self.attribute_names, self.per_attribute_mA, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """The dict :func:`compute_metrics` returns, plus ``per_attribute`` when names are known
        (NaN kept: :func:`pedattr.utils.json.json_safe` turns it into None for JSON)."""
        values: dict[str, Any] = {
            "mA": self.mA,
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "per_attribute_mA": list(self.per_attribute_mA),
            "undefined_attributes": list(self.undefined_attributes),
            "num_positives": list(self.num_positives),
            "num_samples": self.num_samples,
        }
        if self.attribute_names is not None:
            values["per_attribute"] = self.per_attribute
        return values


def metrics_report(
    labels: Any,
    probs: Any,
    threshold: float | Sequence[float] | np.ndarray = 0.5,
    attribute_names: Sequence[str] | None = None,
) -> MetricsReport:
    """:func:`compute_metrics` as a :class:`MetricsReport`, with the attributes' names if given.

    Raises:
        ValueError: as :func:`compute_metrics`, or a number of names other than M.
    """
    return _report_of_valid(*_validate(labels, probs), threshold, attribute_names)


def _report_of_valid(
    gt: np.ndarray,
    prob: np.ndarray,
    threshold: float | Sequence[float] | np.ndarray,
    attribute_names: Sequence[str] | None = None,
) -> MetricsReport:
    """:func:`metrics_report` on inputs that ``_validate`` already accepted."""
    if attribute_names is not None and len(attribute_names) != gt.shape[1]:
        raise ValueError(f"got {len(attribute_names)} names for {gt.shape[1]} attributes")
    truth = gt == 1  # unknown (2) counts as negative
    pred = prob > _thresholds(threshold, gt.shape[1])
    per_attribute = _label_based(truth, pred)
    mean_accuracy, undefined = _mean_accuracy(per_attribute)
    accuracy, precision, recall = _instance_based(truth, pred)
    return MetricsReport(
        mA=mean_accuracy,
        accuracy=accuracy,
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        per_attribute_mA=per_attribute.tolist(),
        undefined_attributes=undefined,
        num_positives=truth.sum(axis=0).tolist(),
        num_samples=int(gt.shape[0]),
        attribute_names=None if attribute_names is None else list(attribute_names),
    )


class AttributeEvaluator:
    """Accumulates label and probability arrays batch by batch and computes the metrics at the
    end: ``reset()``, ``process(labels, probs)`` per batch, ``evaluate()`` once.

    This is the array-level accumulator; the evaluator that takes batches and model outputs
    (``process(batch, outputs)``) is :class:`pedattr.evaluation.evaluators.MetricsEvaluator`,
    built on it.

    Args:
        attribute_names: Names of the M attributes, in label-column order.
        threshold: One threshold for all attributes, or one per attribute.
    """

    def __init__(
        self,
        attribute_names: Sequence[str],
        threshold: float | Sequence[float] | np.ndarray = 0.5,
    ) -> None:
        self.attribute_names = list(attribute_names)
        self.threshold = threshold
        _thresholds(threshold, len(self.attribute_names))  # fail early on a wrong length
        self.reset()

    def reset(self) -> None:
        """Forgets everything processed so far."""
        self._labels: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    def process(self, labels: Any, probs: Any) -> None:
        """Adds a batch of labels [B, M] and probabilities [B, M] (tensors are copied to CPU)."""
        gt, prob = _validate(labels, probs)
        if gt.shape[1] != len(self.attribute_names):
            raise ValueError(
                f"batch has {gt.shape[1]} attributes, evaluator expects {len(self.attribute_names)}"
            )
        self._labels.append(gt)
        self._probs.append(prob)

    def report(self) -> MetricsReport:
        """The metrics of all processed batches, with the attributes' names.

        Raises:
            ValueError: no batch was processed since the last reset.
        """
        if not self._labels:
            raise ValueError("evaluate() called before any batch was processed")
        # Every batch was validated in process(); the concatenation needs no second pass.
        return _report_of_valid(
            np.concatenate(self._labels),
            np.concatenate(self._probs),
            self.threshold,
            self.attribute_names,
        )

    def evaluate(self) -> dict[str, Any]:
        """Returns ``compute_metrics`` on all processed batches plus ``per_attribute``.

        ``per_attribute`` maps each attribute name to its mA (NaN where undefined).
        """
        return self.report().to_dict()


def _attribute_line(name: str, value: float, positives: int) -> str:
    """One per-attribute row: the mA in percent, or why it is undefined."""
    if not np.isnan(value):
        return f"{name:<24} {100 * value:6.2f}"
    reason = "no positives" if positives == 0 else "no negatives"
    return f"{name:<24} undefined ({reason})"


def format_metrics_table(
    metrics: dict[str, Any], attribute_names: Sequence[str] | None = None
) -> str:
    """Formats metrics as the paper's table row, optionally followed by per-attribute mA.

    Args:
        metrics: The dict returned by ``compute_metrics`` or ``AttributeEvaluator.evaluate``.
        attribute_names: Names for the per-attribute listing; omitted, only the summary is shown.

    Returns:
        Multi-line text; values are percentages with two decimals.
    """
    keys = ("mA", "accuracy", "precision", "recall", "f1")
    lines = [
        "   mA     Acc    Prec     Rec      F1",
        " ".join(f"{100 * metrics[key]:6.2f}" for key in keys),
    ]
    if attribute_names is None:
        return "\n".join(lines)
    values = metrics["per_attribute_mA"]
    if len(attribute_names) != len(values):
        raise ValueError(f"got {len(attribute_names)} names for {len(values)} attributes")
    rows = zip(attribute_names, values, metrics["num_positives"], strict=True)
    lines.append("")
    lines += [_attribute_line(name, v, p) for name, v, p in rows]
    return "\n".join(lines)
