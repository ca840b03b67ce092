"""Localization measures: pixel mapping of ALM boxes, pointing game, IoU and their tallies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pedattr
from pedattr.evaluation.localization import (
    box_iou,
    centre_follow,
    format_localization_table,
    localization_scores,
    pointing_game,
)
from pedattr.models.alm import unnormalize_coords
from pedattr.models.localization import (
    boxes_to_pixels,
    level_sizes,
    max_vote_branch,
    points_to_pixels,
    recording_activation_peaks,
)
from tests.helpers import TINY_MODEL

IDENTITY = [1.0, 1.0, 0.0, 0.0]  # (s_x, s_y, t_x, t_y)
THETA = [0.5, 0.25, 0.2, -0.4]


def one_box(theta, **kwargs) -> np.ndarray:
    """boxes_to_pixels of a single box at a single level."""
    return boxes_to_pixels(np.array(theta, dtype=float).reshape(1, 1, 1, 4), **kwargs)[0, 0, 0]


# --- boxes_to_pixels --------------------------------------------------------------------------


def test_identity_box_spans_the_cell_centres_or_the_whole_map():
    # A 4x2 map on a 32x16 input: stride 8, cell centres at 4, 12 (x) and 4, ..., 28 (y).
    grid = dict(level_sizes=[(4, 2)], input_size=(32, 16))
    np.testing.assert_allclose(one_box(IDENTITY, **grid, align_corners=True), [4, 4, 12, 28])
    np.testing.assert_allclose(one_box(IDENTITY, **grid, align_corners=False), [0, 0, 16, 32])


def test_known_box_maps_to_hand_computed_pixels():
    # 8x4 map, 64x32 input, stride 8. x spans u in [-0.3, 0.7], y spans u in [-0.65, -0.15].
    # align_corners=True: j = (u + 1) / 2 * (w - 1): x cells 1.05 .. 2.55, y cells 1.225 .. 2.975.
    # align_corners=False: j = ((u + 1) * w - 1) / 2: x cells 0.9 .. 2.9, y cells 0.9 .. 2.9.
    # Pixels: (j + 0.5) * 8.
    grid = dict(level_sizes=[(8, 4)], input_size=(64, 32))
    aligned = [12.4, 13.8, 24.4, 27.8]
    np.testing.assert_allclose(one_box(THETA, **grid, align_corners=True), aligned)
    np.testing.assert_allclose(
        one_box(THETA, **grid, align_corners=False), [11.2, 11.2, 27.2, 27.2]
    )
    # The original image was 128x64: everything doubles.
    doubled = one_box(THETA, **grid, image_size=(128, 64), align_corners=True)
    np.testing.assert_allclose(doubled, np.array(aligned) * 2)


def test_image_size_per_image_and_levels_of_different_strides():
    boxes = np.tile(np.array(IDENTITY), (2, 3, 1, 1))  # [N=2, L=3, M=1, 4]
    pixels = boxes_to_pixels(
        boxes,
        level_sizes=[(8, 4), (4, 2), (2, 1)],
        input_size=(64, 32),
        image_size=[(64, 32), (128, 32)],
    )
    assert pixels.shape == (2, 3, 1, 4)
    np.testing.assert_allclose(pixels[0, 0, 0], [4, 4, 28, 60])  # stride 8
    np.testing.assert_allclose(pixels[0, 1, 0], [8, 8, 24, 56])  # stride 16
    # One column: align_corners samples it everywhere, so the map's edges bound the box.
    np.testing.assert_allclose(pixels[0, 2, 0], [0, 16, 32, 48])
    np.testing.assert_allclose(pixels[1, 0, 0], [4, 8, 28, 120])  # twice as tall an image


def test_boxes_leaving_the_map_are_clipped_to_the_image():
    grid = dict(level_sizes=[(4, 2)], input_size=(32, 16), align_corners=False)
    # x spans u in [0, 1.8]: cells 0.5 .. 2.3, pixels 8 .. 22.4, clipped to the width 16.
    far_right = [0.9, 0.1, 0.9, 0.0]
    assert one_box(far_right, **grid)[[0, 2]].tolist() == [8.0, 16.0]
    np.testing.assert_allclose(one_box(far_right, **grid, clip=False)[[0, 2]], [8.0, 22.4])


@pytest.mark.parametrize("align_corners", [True, False])
def test_mapping_uses_the_samplers_own_grid_convention(align_corners):
    """The fractional cell of a box edge is where the ALM's sampler puts that coordinate."""
    width, stride = 4, 8
    for u in (-1.0, -0.3, 0.45, 1.0):
        cell = float(unnormalize_coords(torch.tensor(u, dtype=torch.float64), width, align_corners))
        box = one_box(  # a box of zero width at u
            [0.0, 1.0, u, 0.0],
            level_sizes=[(4, width)],
            input_size=(32, 32),
            align_corners=align_corners,
            clip=False,
        )
        assert box[0] == box[2] == pytest.approx((cell + 0.5) * stride)


def test_level_sizes_of_a_model_leave_it_untouched():
    model = pedattr.build_model("alm", num_attrs=2, **TINY_MODEL).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert level_sizes(model, (64, 32)) == [(8, 4), (4, 2), (2, 1)]
    assert model.training
    for key, value in stats.items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="no ALM"):
        level_sizes(pedattr.build_model("baseline", num_attrs=2, **TINY_MODEL), (64, 32))


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


def test_max_vote_branch_is_the_argmax_with_ties_to_the_lower_level():
    branches = [np.array([[0.0, 5.0]]), np.array([[1.0, 5.0]]), np.array([[2.0, 1.0]])]
    assert max_vote_branch(branches).tolist() == [[2, 0]]


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


def test_activation_peaks_are_the_centres_of_the_hottest_cells(monkeypatch):
    model = pedattr.build_model("alm", num_attrs=2, **TINY_MODEL).eval()  # input 64x32
    sizes = level_sizes(model, TINY_MODEL["input_size"])

    def hot(h: int, w: int) -> list[tuple[int, int]]:
        """(row, column) of the hottest cell of each attribute on an h x w level."""
        return [(h - 1, w - 1), (h // 2, 0)]

    def fake_map(self, x):
        h, w = sizes[list(model.alms).index(self)]
        maps = torch.zeros(x[0].features.shape[0], 2, h, w)
        for m, (row, col) in enumerate(hot(h, w)):
            maps[:, m, row, col] = 1.0
        return maps

    monkeypatch.setattr(type(model.alms[0]), "activation_map", fake_map)
    with recording_activation_peaks(model) as recorded:
        model(torch.rand(3, 3, 64, 32))
    (peaks,) = recorded
    assert peaks.shape == (3, len(sizes), 2, 2)
    for k, (h, w) in enumerate(sizes):
        stride_y, stride_x = 64 / h, 32 / w
        for m, (row, col) in enumerate(hot(h, w)):
            expected = [(col + 0.5) * stride_x, (row + 0.5) * stride_y]
            for image in range(3):
                assert peaks[image, k, m].tolist() == pytest.approx(expected)
    model(torch.rand(1, 3, 64, 32))
    assert len(recorded) == 1  # nothing is recorded once the block is left


def test_peaks_are_recorded_for_alm_levels_only():
    images = torch.rand(2, 3, *TINY_MODEL["input_size"])
    top = pedattr.build_model("alm", num_attrs=3, levels="top", **TINY_MODEL).eval()
    with recording_activation_peaks(top) as recorded:
        top(images)
    assert [tuple(p.shape) for p in recorded] == [(2, 1, 3, 2)]
    masks = pedattr.build_model("alm", num_attrs=3, head="attention", **TINY_MODEL).eval()
    with recording_activation_peaks(masks) as recorded:
        masks(images)
    assert recorded == []
    with recording_activation_peaks(top, enabled=False) as recorded:
        top(images)
    assert recorded == [] and not top.level_heads[0]._forward_pre_hooks


def test_points_scale_from_the_input_to_each_image():
    points = np.array([[8.0, 16.0], [32.0, 0.0]]).reshape(2, 1, 1, 2)  # (x, y), input 64x32
    sizes = np.array([[128, 32], [32, 96]])  # (H, W): twice as tall; half as tall, 3x as wide
    pixels = points_to_pixels(points, input_size=(64, 32), image_size=sizes)
    assert pixels[:, 0, 0].tolist() == [[8.0, 32.0], [96.0, 0.0]]
    same = points_to_pixels(points, input_size=(64, 32))
    assert same.tolist() == points.tolist()


def test_mismatched_inputs_are_refused(hand_made):
    boxes, gt, labels = hand_made
    with pytest.raises(ValueError, match="ground-truth"):
        localization_scores(boxes, gt[:2], NAMES, labels=labels, level_names=("a", "b"))
    with pytest.raises(ValueError, match="level names"):
        localization_scores(boxes, gt, NAMES, labels=labels)
