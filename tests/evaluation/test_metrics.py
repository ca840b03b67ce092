"""pedattr.evaluation.metrics against hand-computed values and an independent loop version."""

import math

import numpy as np
import pytest
import torch

from pedattr.evaluation.metrics import (
    AttributeEvaluator,
    UndefinedMetricWarning,
    compute_metrics,
    format_metrics_table,
)

# Worked example, 4 samples x 3 attributes, threshold 0.5 (strict: 0.5 itself is negative).
LABELS = np.array(
    [
        [1, 0, 1],
        [0, 1, 1],
        [1, 1, 0],
        [0, 0, 1],
    ]
)
PROBS = np.array(
    [
        [0.9, 0.5, 0.4],  # pred [1, 0, 0]  (0.5 is not > 0.5)
        [0.6, 0.7, 0.1],  # pred [1, 1, 0]
        [0.8, 0.3, 0.7],  # pred [1, 0, 1]
        [0.1, 0.4, 0.9],  # pred [0, 0, 1]
    ]
)
# Label-based, per attribute (truth column vs pred column):
#   a0: truth [1,0,1,0] pred [1,1,1,0]: TP/P = 2/2, TN/N = 1/2 -> 0.75
#   a1: truth [0,1,1,0] pred [0,1,0,0]: TP/P = 1/2, TN/N = 2/2 -> 0.75
#   a2: truth [1,1,0,1] pred [0,0,1,1]: TP/P = 1/3, TN/N = 0/1 -> 1/6
#   mA = (0.75 + 0.75 + 1/6) / 3 = 5/9
# Instance-based, per sample (Yt, Yp -> acc, prec, rec):
#   s0: {0,2}, {0}   -> 1/2, 1/1, 1/2
#   s1: {1,2}, {0,1} -> 1/3, 1/2, 1/2
#   s2: {0,1}, {0,2} -> 1/3, 1/2, 1/2
#   s3: {2},   {2}   -> 1,   1,   1
#   acc = (1/2 + 1/3 + 1/3 + 1) / 4 = 13/24
#   prec = (1 + 1/2 + 1/2 + 1) / 4 = 3/4
#   rec = (1/2 + 1/2 + 1/2 + 1) / 4 = 5/8
#   F1 = 2 * 3/4 * 5/8 / (3/4 + 5/8) = 15/22
EXPECTED = {
    "mA": 5 / 9,
    "accuracy": 13 / 24,
    "precision": 3 / 4,
    "recall": 5 / 8,
    "f1": 15 / 22,
}


def test_worked_example_every_number():
    m = compute_metrics(LABELS, PROBS)
    for key, value in EXPECTED.items():
        assert m[key] == pytest.approx(value), key
    assert m["per_attribute_mA"] == pytest.approx([0.75, 0.75, 1 / 6])
    assert m["undefined_attributes"] == []
    assert m["num_positives"] == [2, 2, 3]
    assert m["num_samples"] == 4
    assert all(isinstance(m[key], float) for key in EXPECTED)


def test_empty_predicted_true_and_both_sets_contribute_zero():
    labels = np.array([[1, 0], [0, 0], [0, 0], [1, 1]])
    probs = np.array([[0.1, 0.2], [0.3, 0.8], [0.1, 0.1], [0.9, 0.2]])
    # s0: Yt {0},   Yp {}  -> acc 0/1, prec 0 (|Yp| = 0), rec 0/1
    # s1: Yt {},    Yp {1} -> acc 0/1, prec 0/1, rec 0 (|Yt| = 0)
    # s2: Yt {},    Yp {}  -> all three 0 (by convention)
    # s3: Yt {0,1}, Yp {0} -> acc 1/2, prec 1/1, rec 1/2
    m = compute_metrics(labels, probs)
    assert m["accuracy"] == pytest.approx(1 / 8)
    assert m["precision"] == pytest.approx(1 / 4)
    assert m["recall"] == pytest.approx(1 / 8)
    # F1 from the averaged P and R: 2 * 1/4 * 1/8 / (3/8) = 1/6
    assert m["f1"] == pytest.approx(1 / 6)


def test_all_samples_empty_gives_zero_not_nan():
    labels = np.zeros((2, 2))
    labels[0, 0] = 1  # keep attribute 0 defined; attribute 1 has no positives
    probs = np.zeros((2, 2))
    with pytest.warns(UndefinedMetricWarning):
        m = compute_metrics(labels, probs)
    # s0: Yt {0}, Yp {} -> 0; s1: both empty -> 0
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0, 0.0)


def test_attribute_without_positives_is_reported_and_excluded():
    labels = LABELS.copy()
    labels[:, 1] = 0  # attribute 1 now has no positives
    with pytest.warns(UndefinedMetricWarning, match="1 attribute"):
        m = compute_metrics(labels, PROBS)
    assert math.isnan(m["per_attribute_mA"][1])
    assert m["undefined_attributes"] == [1]
    assert m["mA"] == pytest.approx((0.75 + 1 / 6) / 2)


def test_attribute_without_negatives_is_reported():
    labels = LABELS.copy()
    labels[:, 0] = 1
    with pytest.warns(UndefinedMetricWarning, match="1 attribute"):
        m = compute_metrics(labels, PROBS)
    assert m["undefined_attributes"] == [0]
    assert m["mA"] == pytest.approx((0.75 + 1 / 6) / 2)


def test_all_attributes_undefined_gives_nan_ma():
    with pytest.warns(UndefinedMetricWarning, match="3 attribute"):
        m = compute_metrics(np.zeros((4, 3)), PROBS)
    assert math.isnan(m["mA"])
    assert m["undefined_attributes"] == [0, 1, 2]


def test_no_warning_when_all_defined(recwarn):
    compute_metrics(LABELS, PROBS)
    assert not [w for w in recwarn if issubclass(w.category, UndefinedMetricWarning)]


def test_unknown_label_counts_as_negative():
    with_unknown = LABELS.copy()
    with_unknown[0, 1] = 2
    with_unknown[2, 2] = 2
    as_zero = np.where(with_unknown == 2, 0, with_unknown)
    assert compute_metrics(with_unknown, PROBS) == compute_metrics(as_zero, PROBS)


def test_per_attribute_thresholds():
    thresholds = [0.95, 0.45, 0.35]
    # preds: s0 [0,1,1], s1 [0,1,0], s2 [0,0,1], s3 [0,0,1]
    m = compute_metrics(LABELS, PROBS, thresholds)
    binary = np.greater(PROBS, thresholds).astype(float)
    assert m == compute_metrics(LABELS, binary)
    # a0: truth [1,0,1,0] pred all 0 -> (0/2 + 2/2) / 2 = 0.5
    # a1: truth [0,1,1,0] pred [1,1,0,0] -> (1/2 + 1/2) / 2 = 0.5
    # a2: truth [1,1,0,1] pred [1,0,1,1] -> (2/3 + 0/1) / 2 = 1/3
    assert m["per_attribute_mA"] == pytest.approx([0.5, 0.5, 1 / 3])
    assert compute_metrics(LABELS, PROBS, np.array(thresholds)) == m


def test_threshold_of_wrong_length_raises():
    with pytest.raises(ValueError, match="one entry per attribute"):
        compute_metrics(LABELS, PROBS, [0.5, 0.5])


def test_f1_uses_averaged_precision_and_recall():
    labels = np.array([[1, 1, 1, 1], [1, 0, 0, 0]])
    probs = np.array([[0.9, 0.1, 0.1, 0.1], [0.9, 0.9, 0.9, 0.9]])
    # s0: P 1, R 1/4, F1 0.4; s1: P 1/4, R 1, F1 0.4 -> mean per-sample F1 = 0.4
    # averaged P = R = 5/8 -> F1 = 5/8
    with pytest.warns(UndefinedMetricWarning):  # attribute 0 has no negatives
        m = compute_metrics(labels, probs)
    assert m["f1"] == pytest.approx(5 / 8)
    assert m["f1"] != pytest.approx(0.4)


def test_evaluator_two_batches_equal_one_call():
    names = ["Female", "Hat", "Backpack"]
    evaluator = AttributeEvaluator(names)
    evaluator.process(LABELS[:1], PROBS[:1])
    evaluator.process(torch.tensor(LABELS[1:]), torch.tensor(PROBS[1:], dtype=torch.float32))
    result = evaluator.evaluate()
    single = compute_metrics(LABELS, PROBS)
    for key in EXPECTED:
        assert result[key] == pytest.approx(single[key])
    assert result["per_attribute"] == pytest.approx(
        dict(zip(names, [0.75, 0.75, 1 / 6], strict=True))
    )
    evaluator.reset()
    with pytest.raises(ValueError, match="before any batch"):
        evaluator.evaluate()


def test_evaluator_rejects_wrong_attribute_count():
    evaluator = AttributeEvaluator(["a", "b"])
    with pytest.raises(ValueError, match="expects 2"):
        evaluator.process(LABELS, PROBS)


def test_tensor_and_numpy_agree():
    from_numpy = compute_metrics(LABELS, PROBS)
    from_tensor = compute_metrics(torch.tensor(LABELS), torch.tensor(PROBS))
    from_half = compute_metrics(torch.tensor(LABELS), torch.tensor(PROBS, dtype=torch.bfloat16))
    assert from_tensor == from_numpy
    assert from_half["mA"] == pytest.approx(from_numpy["mA"])


@pytest.mark.parametrize(
    "labels, probs, match",
    [
        (np.zeros(3), np.zeros(3), "2-D"),
        (np.zeros((2, 3)), np.zeros((2, 4)), "does not match"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "zero samples"),
        (np.zeros((1, 2)), np.array([[0.1, np.nan]]), "NaN or infinite"),
        (np.zeros((1, 2)), np.array([[0.1, np.inf]]), "NaN or infinite"),
        (np.array([[0, 3]]), np.zeros((1, 2)), "values"),
    ],
)
def test_bad_inputs_raise(labels, probs, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(labels, probs)


def _reference_metrics(labels, probs, threshold):
    """Straightforward loop implementation of the conventions, written independently."""
    n, m = len(labels), len(labels[0])
    per_attr = []
    for j in range(m):
        tp = tn = p = q = 0
        for i in range(n):
            truth = labels[i][j] == 1
            pred = probs[i][j] > threshold
            p += truth
            q += not truth
            tp += truth and pred
            tn += (not truth) and (not pred)
        per_attr.append((tp / p + tn / q) / 2 if p and q else float("nan"))
    acc = prec = rec = 0.0
    for i in range(n):
        yt = {j for j in range(m) if labels[i][j] == 1}
        yp = {j for j in range(m) if probs[i][j] > threshold}
        both = len(yt & yp)
        acc += both / len(yt | yp) if yt | yp else 0.0
        prec += both / len(yp) if yp else 0.0
        rec += both / len(yt) if yt else 0.0
    acc, prec, rec = acc / n, prec / n, rec / n
    defined = [v for v in per_attr if not math.isnan(v)]
    return {
        "mA": sum(defined) / len(defined),
        "accuracy": acc,
        "precision": prec,
        "recall": rec,
        "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        "per_attribute_mA": per_attr,
    }


@pytest.mark.parametrize("seed", range(5))
def test_matches_loop_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice([0, 1, 2], size=(40, 7), p=[0.6, 0.3, 0.1])
    labels[:, 3] = 0  # one undefined attribute
    probs = rng.random((40, 7)).round(1)  # rounding creates ties at the threshold
    with pytest.warns(UndefinedMetricWarning):
        got = compute_metrics(labels, probs, 0.5)
    want = _reference_metrics(labels.tolist(), probs.tolist(), 0.5)
    for key in ("mA", "accuracy", "precision", "recall", "f1"):
        assert got[key] == pytest.approx(want[key]), key
    np.testing.assert_allclose(got["per_attribute_mA"], want["per_attribute_mA"])


def test_format_metrics_table():
    labels = LABELS.copy()
    labels[:, 1] = 0  # no positives
    labels[:, 2] = 1  # no negatives
    with pytest.warns(UndefinedMetricWarning):
        m = compute_metrics(labels, PROBS)
    text = format_metrics_table(m, ["Female", "Hat", "Backpack"])
    lines = text.splitlines()
    assert lines[0].split() == ["mA", "Acc", "Prec", "Rec", "F1"]
    assert lines[1].split()[0] == "75.00"
    assert "Female" in text and "75.00" in text
    assert "Hat" in text and "undefined (no positives)" in text
    assert "Backpack" in text and "undefined (no negatives)" in text
    summary = format_metrics_table(compute_metrics(LABELS, PROBS))
    assert summary.splitlines()[1].split() == ["55.56", "54.17", "75.00", "62.50", "68.18"]


def test_format_metrics_table_name_count_mismatch():
    with pytest.raises(ValueError, match="names"):
        format_metrics_table(compute_metrics(LABELS, PROBS), ["only-one"])
