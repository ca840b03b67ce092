"""The assembled models, the pyramid, normalisation and fusion."""

from __future__ import annotations

import pytest
import torch

import pedattr
from pedattr.models.model import fuse_logits
from pedattr.models.normalization import InputNormalization
from pedattr.models.pyramid import FeaturePyramid, ResizedMap, dense_level

TINY = dict(backbone="timm:resnet18", input_size=(64, 32), pyramid_dim=32)


@pytest.mark.slow
def test_alm_output_shapes_and_max_fusion():
    model = pedattr.build_model("alm", num_attrs=5, **TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 32))
    assert out.logits.shape == (2, 5)
    assert len(out.branch_logits) == 4
    assert all(b.shape == (2, 5) for b in out.branch_logits)
    assert out.boxes.shape == (2, 3, 5, 4)
    torch.testing.assert_close(out.logits, torch.stack(out.branch_logits).amax(0))


def test_mean_fusion_option():
    branches = [torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.0]])]
    torch.testing.assert_close(fuse_logits(branches, "mean"), torch.tensor([[2.0, -1.0]]))
    torch.testing.assert_close(fuse_logits(branches, "max"), torch.tensor([[3.0, 0.0]]))


@pytest.mark.slow
def test_baseline_has_one_branch_and_no_boxes():
    model = pedattr.build_model("baseline", num_attrs=3, **TINY).eval()
    out = model(torch.rand(1, 3, 64, 32))
    assert out.boxes is None
    assert len(out.branch_logits) == 1
    assert out.logits is out.branch_logits[0]


def test_pyramid_concatenates_higher_level_first():
    pyramid = FeaturePyramid([4, 6, 8], dim=2, upsample="nearest")
    taps = [torch.randn(1, 4, 8, 4), torch.randn(1, 6, 4, 2), torch.randn(1, 8, 2, 1)]
    x1, x2, x3 = (dense_level(level) for level in pyramid(taps))
    assert pyramid.out_channels == [6, 4, 2]
    assert [x.shape[1:] for x in (x1, x2, x3)] == [(6, 8, 4), (4, 4, 2), (2, 2, 1)]
    lat = pyramid.laterals
    torch.testing.assert_close(x3, lat[2](taps[2]))
    # Nearest upsampling by 2 repeats each cell; the upsampled higher level comes first.
    up3 = x3.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(x2, torch.cat([up3, lat[1](taps[1])], 1))
    torch.testing.assert_close(x1[:, 4:], lat[0](taps[0]))


def test_pyramid_bilinear_matches_authors_interpolation():
    pyramid = FeaturePyramid([3, 3], dim=2)
    taps = [torch.randn(1, 3, 6, 4), torch.randn(1, 3, 3, 2)]
    low, top = (dense_level(level) for level in pyramid(taps))
    expected = torch.nn.functional.interpolate(
        top, size=(6, 4), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(low[:, :2], expected)


def test_normalization_takes_uint8_as_0_255():
    pixels = torch.randint(0, 256, (2, 3, 4, 2), dtype=torch.uint8)
    for name in ("imagenet", "caffe"):
        norm = InputNormalization(name)
        torch.testing.assert_close(norm(pixels), norm(pixels.float() / 255))


def test_caffe_normalization_is_bgr_0_255_minus_mean():
    rgb = torch.rand(1, 3, 2, 2)
    out = InputNormalization("caffe")(rgb)
    bgr = rgb.flip(1) * 255 - torch.tensor([104.0, 117.0, 128.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, bgr)
    imagenet = InputNormalization("imagenet")(rgb)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet, (rgb - mean) / std)


def test_build_model_validates_arguments():
    with pytest.raises(ValueError, match="num_attrs"):
        pedattr.build_model("alm", **TINY)
    with pytest.raises(ValueError, match="arch"):
        pedattr.build_model("vit", num_attrs=2, **TINY)
    with pytest.raises(ValueError, match="unknown model config keys: colour"):
        pedattr.build_model("alm", num_attrs=2, colour="red", **TINY)
    with pytest.raises(ValueError, match="box_centre must be one of"):
        pedattr.build_model("alm", num_attrs=2, box_centre="peak", **TINY)
    with pytest.raises(ValueError, match="unique"):
        pedattr.build_model("alm", attribute_names=["a", "a"], **TINY)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    "size_in,size_out", [((4, 2), (8, 4)), ((7, 3), (13, 7)), ((5, 5), (3, 9))]
)
def test_resized_map_equals_interpolate(mode, size_in, size_out):
    x = torch.randn(2, 3, *size_in, dtype=torch.float64, requires_grad=True)
    options = dict(align_corners=False) if mode == "bilinear" else {}
    expected = torch.nn.functional.interpolate(x, size=size_out, mode=mode, **options)
    got = ResizedMap(x).resized(size_out, mode).dense()
    torch.testing.assert_close(got, expected)
    upstream = torch.randn_like(expected)
    (grad_expected,) = torch.autograd.grad(expected, x, upstream)
    (grad_got,) = torch.autograd.grad(got, x, upstream)
    torch.testing.assert_close(grad_got, grad_expected)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_composed_resizes_equal_two_interpolations(mode):
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64)
    options = dict(align_corners=False) if mode == "bilinear" else {}
    twice = torch.nn.functional.interpolate(x, size=(6, 4), mode=mode, **options)
    twice = torch.nn.functional.interpolate(twice, size=(12, 8), mode=mode, **options)
    composed = ResizedMap(x).resized((6, 4), mode).resized((12, 8), mode)
    assert composed.size == (12, 8)
    torch.testing.assert_close(composed.dense(), twice)


def test_importing_pedattr_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, pedattr, pedattr.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
