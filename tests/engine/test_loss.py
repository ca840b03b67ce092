"""Tests for pedattr.engine.loss against hand-written per-element formulas."""

import math

import pytest
import torch

from pedattr.engine.loss import (
    WeightedBCELoss,
    deep_supervision_loss,
    positive_ratio,
)

RATIO = [0.1, 0.5, 0.8]
LOGITS = [[1.5, -0.3, 2.0], [-2.2, 0.7, -1.1]]
LABELS = [[1, 0, 1], [0, 1, 0]]


def _weights(weighting, a):
    """(positive, negative) weights of one attribute, written from the formulas."""
    return {
        "paper": (math.exp(-a), math.exp(-a)),
        "authors": (math.exp(1 - a), 1.0),
        "deepmar": (math.exp(1 - a), math.exp(a)),
        "none": (1.0, 1.0),
    }[weighting]


def _manual_loss(logits, labels, ratio, weighting):
    """Sum of weighted per-element BCE over known entries, divided by their count."""
    total, known = 0.0, 0
    for row_z, row_y in zip(logits, labels, strict=True):
        for z, y, a in zip(row_z, row_y, ratio, strict=True):
            if y == 2:
                continue
            s = 1 / (1 + math.exp(-z))
            w_pos, w_neg = _weights(weighting, a)
            total += -(w_pos * y * math.log(s) + w_neg * (1 - y) * math.log(1 - s))
            known += 1
    return total / known


@pytest.mark.parametrize("weighting", ["paper", "authors", "deepmar", "none"])
def test_each_weighting_matches_hand_formula(weighting):
    loss = WeightedBCELoss(RATIO, weighting=weighting)
    got = loss(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS))
    assert got.item() == pytest.approx(_manual_loss(LOGITS, LABELS, RATIO, weighting), rel=1e-6)


def test_default_weighting_is_authors():
    assert WeightedBCELoss(RATIO).weighting == "authors"


def test_none_weighting_equals_plain_bce():
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS, dtype=torch.float32)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert WeightedBCELoss(RATIO, "none")(logits, labels).item() == pytest.approx(expected.item())


def test_unknown_label_gets_no_loss_and_no_gradient():
    labels = [[1, 2, 1], [0, 1, 2]]
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    loss = WeightedBCELoss(RATIO, "deepmar")
    value = loss(logits, torch.tensor(labels))
    value.backward()
    # the mean runs over the 4 known entries only
    assert value.item() == pytest.approx(_manual_loss(LOGITS, labels, RATIO, "deepmar"), rel=1e-6)
    assert logits.grad[0, 1] == 0 and logits.grad[1, 2] == 0
    assert (logits.grad[0, 0] != 0) and (logits.grad[1, 1] != 0)
    moved = torch.tensor(LOGITS, dtype=torch.float64)
    moved[0, 1] = 50.0  # an unknown entry's logit does not change the loss
    assert loss(moved, torch.tensor(labels)).item() == pytest.approx(value.item())


def test_all_unknown_batch_gives_zero():
    logits = torch.zeros(2, 3, requires_grad=True)
    value = WeightedBCELoss(RATIO)(logits, torch.full((2, 3), 2))
    value.backward()
    assert value.item() == 0.0
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("weighting", ["paper", "authors", "deepmar", "none"])
def test_extreme_logits_are_finite(weighting):
    logits = torch.tensor([[100.0, -100.0, 100.0], [-100.0, 100.0, -100.0]], requires_grad=True)
    labels = torch.tensor([[0, 1, 1], [1, 0, 0]])
    value = WeightedBCELoss(RATIO, weighting)(logits, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    # wrong by 100 in logit units -> element loss 100; right -> ~0
    w = [_weights(weighting, a) for a in RATIO]
    expected = 100 * (w[0][1] + w[1][0] + w[0][0] + w[1][1]) / 6
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_deep_supervision_is_sum_of_branch_losses():
    torch.manual_seed(0)
    branches = [torch.randn(5, 3) for _ in range(4)]
    labels = torch.randint(0, 3, (5, 3))
    criterion = WeightedBCELoss(RATIO, "paper")
    manual = sum(criterion(z, labels).item() for z in branches)
    assert deep_supervision_loss(branches, labels, criterion).item() == pytest.approx(manual)
    with pytest.raises(ValueError, match="empty"):
        deep_supervision_loss([], labels, criterion)


def test_positive_ratio_ignores_unknown():
    labels = torch.tensor([[1, 2], [0, 1], [2, 2], [1, 0]])
    # attribute 0: known 1, 0, 1 -> 2/3; attribute 1: known 1, 0 -> 1/2
    assert positive_ratio(labels).tolist() == pytest.approx([2 / 3, 1 / 2])
    assert positive_ratio(labels).dtype == torch.float32


def test_positive_ratio_rejects_fully_unknown_attribute():
    with pytest.raises(ValueError, match=r"\[1\]"):
        positive_ratio(torch.tensor([[1, 2], [0, 2]]))


def test_wrong_attribute_count_raises_at_forward():
    loss = WeightedBCELoss(RATIO)
    with pytest.raises(ValueError, match="positive_ratio"):
        loss(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="labels shape"):
        loss(torch.zeros(2, 3), torch.zeros(3, 3))


@pytest.mark.parametrize("ratio", [[0.2, 1.5], [-0.1, 0.5], [float("nan"), 0.5]])
def test_ratio_out_of_range_raises(ratio):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        WeightedBCELoss(ratio)


def test_unknown_weighting_lists_options():
    with pytest.raises(ValueError, match="paper.*authors.*deepmar.*none"):
        WeightedBCELoss(RATIO, weighting="focal")


def test_weights_are_buffers_that_follow_to():
    loss = WeightedBCELoss(RATIO, "deepmar").to(torch.float64)
    buffers = dict(loss.named_buffers())
    assert {"positive_ratio", "pos_weight", "neg_weight"} <= buffers.keys()
    assert buffers["pos_weight"].dtype == torch.float64
    assert buffers["neg_weight"].tolist() == pytest.approx([math.exp(a) for a in RATIO])
