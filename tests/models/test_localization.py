"""ALM boxes in pixels: the cell-to-pixel mapping, level sizes, max vote, activation peaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pedattr
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


@pytest.mark.slow
def test_level_sizes_of_a_model_leave_it_untouched():
    model = pedattr.build_model("alm", num_attrs=2, **TINY_MODEL).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert level_sizes(model, (64, 32)) == [(8, 4), (4, 2), (2, 1)]
    assert model.training
    for key, value in stats.items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="no ALM"):
        level_sizes(pedattr.build_model("baseline", num_attrs=2, **TINY_MODEL), (64, 32))


# --- max vote ---------------------------------------------------------------------------------


def test_max_vote_branch_is_the_argmax_with_ties_to_the_lower_level():
    branches = [np.array([[0.0, 5.0]]), np.array([[1.0, 5.0]]), np.array([[2.0, 1.0]])]
    assert max_vote_branch(branches).tolist() == [[2, 0]]


# --- activation peaks and points --------------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
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
