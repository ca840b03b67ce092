"""Localization scores: pointing game, IoU, centre follow and their tallies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pedattr.evaluation.localization import (
    box_iou,
    centre_follow,
    format_localization_table,
    localization_scores,
    pointing_game,
)

# --- pointing game and IoU --------------------------------------------------------------------

GT = [0.0, 0.0, 10.0, 10.0]


def test_pointing_game_hits_when_the_centre_is_inside_edges_included():
    predictions = np.array(
        [
            [2, 2, 4, 4],  # contained: centre (3, 3)
            [5, 5, 15, 15],  # partial overlap, centre (10, 10) on the corner: inclusive
            [8, 8, 14, 14],  # partial overlap, centre (11, 11) outside
            [20, 20, 30, 30],  # disjoint
            [-10, -10, 30, 30],  # containing the ground truth, centre (10, 10)
        ],
        dtype=float,
    )
    assert pointing_game(predictions, GT).tolist() == [True, True, False, False, True]
    assert pointing_game(predictions, GT, tolerance=1.0).tolist() == [True, True, True, False, True]


def test_iou_of_hand_made_pairs():
    pairs = [
        ([0, 0, 10, 10], GT, 1.0),  # identical
        ([2, 2, 4, 4], GT, 4 / 100),  # contained
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),  # partial overlap: 1 / (4 + 4 - 1)
        ([20, 20, 30, 30], GT, 0.0),  # disjoint
        ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),  # touching edges
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.0),  # empty boxes: no union
    ]
    predicted, truth, expected = (
        np.array(column, dtype=float) for column in zip(*pairs, strict=True)
    )
    np.testing.assert_allclose(box_iou(predicted, truth), expected)
    assert box_iou(predicted[:, None], truth[None]).shape == (6, 6)  # broadcasting


# --- localization_scores ----------------------------------------------------------------------

NAMES = ["Hat", "Bag", "Female"]


HAT, BAG = [0, 0, 10, 10], [20, 20, 30, 30]


@pytest.fixture
def hand_made():
    """3 images, 2 levels ("a", "b"), attributes Hat, Bag, Female (no boxes)."""
    gt = [{"Hat": HAT, "Bag": BAG}, {"Hat": HAT, "Bag": BAG}, {}]
    labels = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 1]])  # image 2's hat has no box
    boxes = np.zeros((3, 2, 3, 4))
    boxes[0, :, 0] = [HAT, [10, 10, 20, 20]]  # a: hit, IoU 1; b: centre (15, 15) misses, IoU 0
    boxes[1, :, 0] = [[5, 5, 15, 15], [0, 0, 20, 20]]  # a: hit (corner), IoU 1/7; b: hit, 1/4
    boxes[1, :, 1] = [[0, 0, 1, 1], BAG]  # a: miss, IoU 0; b: hit, IoU 1
    boxes[0, :, 1] = [BAG, BAG]  # the bag is negative in image 0: never counted
    return boxes, gt, labels


def test_scores_count_only_positives_with_boxes(hand_made):
    boxes, gt, labels = hand_made
    scores = localization_scores(boxes, gt, NAMES, labels=labels, level_names=("a", "b"))
    assert set(scores["attributes"]) == {"Hat", "Bag"}
    assert scores["unscored"] == ["Female"]
    hat, bag = scores["attributes"]["Hat"], scores["attributes"]["Bag"]
    assert hat["count"] == 2 and bag["count"] == 1
    # The ground truth never moves here, so "follow" has nothing to measure.
    assert hat["levels"]["a"] == pytest.approx(
        {"hit_rate": 1.0, "mean_iou": (1 + 1 / 7) / 2, "follow": None}
    )
    assert hat["levels"]["b"] == pytest.approx({"hit_rate": 0.5, "mean_iou": 0.125, "follow": None})
    assert bag["levels"]["a"] == {"hit_rate": 0.0, "mean_iou": 0.0, "follow": None}
    assert bag["levels"]["b"] == {"hit_rate": 1.0, "mean_iou": 1.0, "follow": None}
    assert (hat["best_level"], bag["best_level"]) == ("a", "b")
    assert "max_vote" not in hat
    overall = scores["mean"]["all"]
    assert overall["levels"]["a"]["hit_rate"] == pytest.approx(0.5)
    assert overall["levels"]["b"]["hit_rate"] == pytest.approx(0.75)
    assert overall["best_level"] == pytest.approx(
        {"hit_rate": 1.0, "mean_iou": (4 / 7 + 1) / 2, "follow": None}
    )
    assert scores["mean"]["location_varying"]["attributes"] == 0


def test_max_vote_scores_the_winning_level_and_tallies_global_wins(hand_made):
    boxes, gt, labels = hand_made
    winners = np.array([[1, 0, 0], [2, 1, 0], [0, 0, 0]])  # 2: the global branch won
    scores = localization_scores(
        boxes,
        gt,
        NAMES,
        labels=labels,
        winning_level=winners,
        level_names=("a", "b"),
        location_varying={"Hat"},
    )
    hat, bag = scores["attributes"]["Hat"], scores["attributes"]["Bag"]
    # Hat: image 0 voted level b (a miss), image 1 the global branch (not scored).
    assert hat["max_vote"] == {"count": 1, "global_wins": 1, "hit_rate": 0.0, "mean_iou": 0.0}
    assert bag["max_vote"] == {"count": 1, "global_wins": 0, "hit_rate": 1.0, "mean_iou": 1.0}
    assert hat["location_varying"] and not bag["location_varying"]
    varying = scores["mean"]["location_varying"]
    assert varying["attributes"] == 1 and varying["max_vote"]["hit_rate"] == 0.0
    assert varying["best_level"]["hit_rate"] == 1.0
    assert scores["mean"]["all"]["max_vote"]["hit_rate"] == pytest.approx(0.5)
    json.dumps(scores, allow_nan=False)  # JSON-serialisable, no NaN

    table = format_localization_table(scores)
    assert "* Hat" in table and "Bag" in table and "Female" in table.splitlines()[-1]
    assert "won 1 of 3" in table
    hat_row = next(line for line in table.splitlines() if "Hat" in line)
    assert "100.0" in hat_row and "(a)" in hat_row


def test_all_global_wins_leave_the_vote_unscored(hand_made):
    boxes, gt, labels = hand_made
    scores = localization_scores(
        boxes, gt, NAMES, labels=labels, winning_level=np.full((3, 3), 2), level_names=("a", "b")
    )
    vote = scores["attributes"]["Hat"]["max_vote"]
    assert vote == {"count": 0, "global_wins": 2, "hit_rate": None, "mean_iou": None}
    assert scores["mean"]["all"]["max_vote"]["hit_rate"] is None
    assert "-" in format_localization_table(scores)


def test_follow_is_the_slope_of_box_centres_on_ground_truth_centres():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=float)
    centres = np.array([[5, 5], [25, 25], [45, 45]], dtype=float)  # the ground-truth centres
    # a box of another size and offset that moves with the evidence: slope 1 on both axes
    assert centre_follow(np.hstack([centres - 2 + 7, centres + 2 + 7]), gt) == pytest.approx(1.0)
    # one that moves half as far along x and not at all along y; the axes vary alike, so the
    # pooled slope is (0.5 + 0) / 2
    half = np.column_stack([centres[:, 0] / 2, np.full(3, 9.0)])
    assert centre_follow(np.hstack([half - 1, half + 1]), gt) == pytest.approx(0.25)
    # a fixed box: 0; one that moves the other way: negative
    assert centre_follow(np.tile([1.0, 2.0, 3.0, 4.0], (3, 1)), gt) == 0.0
    assert centre_follow(np.hstack([-centres, -centres]), gt) == pytest.approx(-1.0)
    # a ground truth that moves along one axis only is scored on that axis
    gt_x = gt.copy()
    gt_x[:, [1, 3]] = [0, 10]
    assert centre_follow(np.hstack([centres, centres]), gt_x) == pytest.approx(1.0)
    # nothing to measure: one image, or a ground truth that never moves
    assert centre_follow(gt[:1], gt[:1]) is None
    assert centre_follow(gt, np.tile(gt[0], (3, 1))) is None


def test_follow_compares_centres_relative_to_each_images_size():
    sizes = np.array([[100, 100], [200, 200], [300, 300]], dtype=float)  # (height, width)
    relative_gt = np.array([0.2, 0.5, 0.8])
    gt_centres = relative_gt * sizes[:, 1]
    gt = np.column_stack([gt_centres - 1, gt_centres - 1, gt_centres + 1, gt_centres + 1])
    # a box that always sits in the middle of its image: it moves in pixels, not in the image
    middle = sizes[:, 1] / 2
    fixed = np.column_stack([middle - 5, middle - 5, middle + 5, middle + 5])
    assert centre_follow(fixed, gt) > 0.2
    assert centre_follow(fixed, gt, sizes) == pytest.approx(0.0, abs=1e-12)
    assert centre_follow(gt, gt, sizes) == pytest.approx(1.0)


def test_follow_reaches_the_scores_and_the_table():
    gt_boxes = [{"Hat": [x, 0, x + 10, 10]} for x in (0, 10, 20, 30)]
    boxes = np.zeros((4, 2, 1, 4))
    for i, x in enumerate((0, 10, 20, 30)):
        boxes[i, 0, 0] = [x, 0, x + 10, 10]  # level a moves with the hat
        boxes[i, 1, 0] = [0, 0, 10, 10]  # level b stays put
    scores = localization_scores(
        boxes,
        gt_boxes,
        ["Hat"],
        labels=np.ones((4, 1)),
        level_names=("a", "b"),
        location_varying={"Hat"},
    )
    levels = scores["attributes"]["Hat"]["levels"]
    assert levels["a"]["follow"] == pytest.approx(1.0) and levels["b"]["follow"] == 0.0
    varying = scores["mean"]["location_varying"]
    assert varying["levels"]["a"]["follow"] == pytest.approx(1.0)
    assert varying["best_level"]["follow"] == pytest.approx(1.0)  # a hits every image
    assert "location-varying mean: a 1.00, b 0.00" in format_localization_table(scores)


def test_mismatched_inputs_are_refused(hand_made):
    boxes, gt, labels = hand_made
    with pytest.raises(ValueError, match="ground-truth"):
        localization_scores(boxes, gt[:2], NAMES, labels=labels, level_names=("a", "b"))
    with pytest.raises(ValueError, match="level names"):
        localization_scores(boxes, gt, NAMES, labels=labels)
