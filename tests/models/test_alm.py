"""The batched ALM equals the literal per-attribute ALM: outputs and gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pedattr.models.alm import BOX_CENTRES, AttributeLocalization
from pedattr.models.localization import boxes_to_pixels
from pedattr.models.pyramid import FeaturePyramid, dense_level
from tests.reference_alm import ReferenceALMLevel, copy_reference_into_batched

# The three pyramid levels at 256x128 input: (C, H, W) for 3b, 4d, 5b.
LEVELS = [(768, 32, 16), (512, 16, 8), (256, 8, 4)]
OPTIONS = list(itertools.product(("avg", "max"), ("border", "zeros"), (True, False)))


def _pair(
    channels: int,
    num_attrs: int,
    box_pooling: str,
    padding: str,
    corners: bool,
    seed: int,
    **other_options,
):
    torch.manual_seed(seed)
    options = dict(box_pooling=box_pooling, padding_mode=padding, align_corners=corners)
    options.update(other_options)
    reference = ReferenceALMLevel(num_attrs, channels, **options).double()
    batched = AttributeLocalization(channels, num_attrs, **options).double()
    # Random parameters with a spread wide enough that boxes vary and leave the map.
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.3)
    copy_reference_into_batched(reference, batched)
    return reference, batched


def _compare(reference, batched, x: torch.Tensor, tol: float = 1e-4) -> None:
    x_ref = x.clone().requires_grad_(True)
    x_bat = x.clone().requires_grad_(True)
    logits_ref, boxes_ref = reference(x_ref)
    logits_bat, boxes_bat = batched(x_bat)
    torch.testing.assert_close(logits_bat, logits_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(boxes_bat, boxes_ref, atol=tol, rtol=tol)

    upstream = torch.randn_like(logits_ref)
    (logits_ref * upstream).sum().backward()
    (logits_bat * upstream).sum().backward()
    torch.testing.assert_close(x_bat.grad, x_ref.grad, atol=tol, rtol=tol)
    ref_box_grad = torch.stack([lin.weight.grad for lin in reference.stn_list])
    torch.testing.assert_close(batched.box_weight.grad, ref_box_grad, atol=tol, rtol=tol)
    ref_cls_grad = torch.stack([lin.weight.grad[0] for lin in reference.fc_list])
    torch.testing.assert_close(batched.cls_weight.grad, ref_cls_grad, atol=tol, rtol=tol)
    if reference.att_list:
        ref_se_grad = torch.stack([a.conv1.weight.grad[..., 0, 0] for a in reference.att_list])
        torch.testing.assert_close(batched.se_reduce_weight.grad, ref_se_grad, atol=tol, rtol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("box_pooling,padding,corners", OPTIONS)
@pytest.mark.parametrize("channels,height,width", LEVELS)
def test_batched_alm_matches_reference(channels, height, width, box_pooling, padding, corners):
    reference, batched = _pair(channels, 3, box_pooling, padding, corners, seed=channels)
    x = torch.randn(2, channels, height, width, dtype=torch.float64)
    _compare(reference, batched, x)


@pytest.mark.slow
@pytest.mark.parametrize("box_pooling,padding,corners", OPTIONS)
def test_batched_alm_matches_reference_in_float32(box_pooling, padding, corners):
    reference, batched = _pair(64, 5, box_pooling, padding, corners, seed=7)
    _compare(reference.float(), batched.float(), torch.randn(3, 64, 9, 5))


@pytest.mark.parametrize("box_pooling,padding,corners", OPTIONS)
@pytest.mark.parametrize("channel_attention", [True, False])
@pytest.mark.parametrize("height,width", [(7, 5), (1, 5), (6, 1), (1, 1)])
# One-cell axes: the reference's affine_grid warns that it centres them (what pedattr does too).
@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid:UserWarning")
def test_evidence_centred_alm_matches_reference(
    box_pooling, padding, corners, channel_attention, height, width
):
    reference, batched = _pair(
        32,
        3,
        box_pooling,
        padding,
        corners,
        seed=11,
        channel_attention=channel_attention,
        box_centre="evidence",
    )
    _compare(reference, batched, torch.randn(2, 32, height, width, dtype=torch.float64))


@pytest.mark.parametrize("corners", [True, False])
def test_evidence_centre_sits_on_the_cell_where_the_classifier_fires(corners):
    """A hand-made map: attribute 0 fires at cell (row 5, col 1), attribute 1 at (2, 3)."""
    alm = AttributeLocalization(
        16, 2, channel_attention=False, align_corners=corners, box_centre="evidence"
    )
    with torch.no_grad():
        alm.cls_weight.zero_()
        alm.cls_weight[0, 0] = 1.0
        alm.cls_weight[1, 1] = 1.0
    x = torch.zeros(1, 16, 8, 4)
    x[0, 0, 5, 1] = 100.0
    x[0, 1, 2, 3] = 100.0
    _, boxes = alm(x)

    def coordinate(cell: int, cells: int) -> float:  # the cell centre in grid_sample's terms
        return 2 * cell / (cells - 1) - 1 if corners else (2 * cell + 1) / cells - 1

    expected = torch.tensor(
        [[coordinate(1, 4), coordinate(5, 8)], [coordinate(3, 4), coordinate(2, 8)]]
    )
    torch.testing.assert_close(boxes[0, :, 2:], expected, atol=1e-5, rtol=0)
    # In image pixels (stride 4 on a 32x16 input) the box is centred on the cell's centre.
    pixels = boxes_to_pixels(
        boxes[:, None],
        level_sizes=[(8, 4)],
        input_size=(32, 16),
        align_corners=corners,
        clip=False,
    )[0, 0]
    centres = (pixels[:, :2] + pixels[:, 2:]) / 2
    np.testing.assert_allclose(centres, [[6.0, 22.0], [14.0, 10.0]], atol=1e-3)


def test_evidence_centre_passes_no_gradient_and_keeps_scales_learnable():
    torch.manual_seed(2)
    alm = AttributeLocalization(16, 3, box_centre="evidence")
    x = torch.randn(2, 16, 6, 4, requires_grad=True)
    _, boxes = alm(x)
    assert alm.box_weight.shape == (3, 2, 16)
    inputs = [x, alm.cls_weight, alm.se_reduce_weight, alm.se_expand_weight, alm.box_weight]
    centre_grads = torch.autograd.grad(
        boxes[..., 2:].sum(), inputs, retain_graph=True, allow_unused=True
    )
    assert all(grad is None or not grad.any() for grad in centre_grads)
    scale_grads = torch.autograd.grad(boxes[..., :2].sum(), [x, alm.box_weight])
    assert all(grad.abs().sum() > 0 for grad in scale_grads)


@pytest.mark.slow
@pytest.mark.parametrize("box_pooling,padding,corners", OPTIONS)
@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
@pytest.mark.parametrize("box_centre", BOX_CENTRES)
def test_factorised_pyramid_level_equals_dense_level(
    box_pooling, padding, corners, upsample, box_centre
):
    """The pyramid's factorised levels give what the ALM computes on the concatenated map."""
    torch.manual_seed(3)
    options = dict(
        box_pooling=box_pooling, padding_mode=padding, align_corners=corners, box_centre=box_centre
    )
    pyramid = FeaturePyramid([5, 6, 7], dim=16, upsample=upsample).double()
    alm = AttributeLocalization(48, 3, **options).double()
    with torch.no_grad():
        for p in alm.parameters():
            p.normal_(0, 0.3)
    taps = [
        torch.randn(2, c, 4 * s, 2 * s, dtype=torch.float64) for c, s in ((5, 4), (6, 2), (7, 1))
    ]
    taps = [t.requires_grad_(True) for t in taps]
    level = pyramid(taps)[0]
    logits, boxes = alm(level)
    dense_logits, dense_boxes = alm(dense_level(level))
    torch.testing.assert_close(logits, dense_logits)
    torch.testing.assert_close(boxes, dense_boxes)
    torch.testing.assert_close(alm.activation_map(level), alm.activation_map(dense_level(level)))
    upstream = torch.randn_like(logits)
    grads = torch.autograd.grad(logits, taps, upstream, retain_graph=True)
    dense_grads = torch.autograd.grad(dense_logits, taps, upstream)
    for grad, dense_grad in zip(grads, dense_grads, strict=True):
        torch.testing.assert_close(grad, dense_grad)


@pytest.mark.parametrize("box_pooling,padding,corners", OPTIONS)
def test_batched_alm_without_channel_attention_matches_reference(box_pooling, padding, corners):
    """Table 1's simplified ALM (no SE sub-network): F_m = X."""
    torch.manual_seed(5)
    options = dict(box_pooling=box_pooling, padding_mode=padding, align_corners=corners)
    reference = ReferenceALMLevel(3, 32, channel_attention=False, **options).double()
    batched = AttributeLocalization(32, 3, channel_attention=False, **options).double()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.3)
    copy_reference_into_batched(reference, batched)
    x = torch.randn(2, 32, 8, 4, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    logits, boxes = batched(x)
    logits_ref, boxes_ref = reference(x_ref)
    torch.testing.assert_close(logits, logits_ref)
    torch.testing.assert_close(boxes, boxes_ref)
    upstream = torch.randn_like(logits)
    (grad,) = torch.autograd.grad(logits, x, upstream)
    (grad_ref,) = torch.autograd.grad(logits_ref, x_ref, upstream)
    torch.testing.assert_close(grad, grad_ref)


def test_parameter_count_per_module_matches_formula():
    for channels in (768, 512, 256):
        alm = AttributeLocalization(channels, 1)
        expected = channels**2 // 8 + 6 * channels + channels // 16 + 5
        assert sum(p.numel() for p in alm.parameters()) == expected
        # Evidence centres: the box regressor is Linear(C, 2).
        evidence = AttributeLocalization(channels, 1, box_centre="evidence")
        assert sum(p.numel() for p in evidence.parameters()) == expected - 2 * channels - 2


def test_boxes_stay_in_paper_ranges():
    alm = AttributeLocalization(32, 4)
    _, boxes = alm(torch.randn(2, 32, 6, 3) * 50)
    assert boxes.shape == (2, 4, 4)
    assert ((boxes[..., :2] >= 0) & (boxes[..., :2] <= 1)).all()
    assert ((boxes[..., 2:] >= -1) & (boxes[..., 2:] <= 1)).all()


@pytest.mark.parametrize("channel_attention", [True, False])
def test_activation_map_is_each_classifier_at_every_cell_of_its_reweighted_map(channel_attention):
    torch.manual_seed(3)
    options = dict(box_pooling="avg", padding_mode="border", align_corners=True)
    reference = ReferenceALMLevel(3, 32, channel_attention=channel_attention, **options).double()
    batched = AttributeLocalization(32, 3, channel_attention=channel_attention, **options)
    batched = batched.double()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.3)
    copy_reference_into_batched(reference, batched)
    x = torch.randn(2, 32, 6, 4, dtype=torch.float64)
    maps = batched.activation_map(x)
    assert maps.shape == (2, 3, 6, 4)
    attentions = reference.att_list or [None] * 3
    for m, (att, fc) in enumerate(zip(attentions, reference.fc_list, strict=True)):
        reweighted = x if att is None else x * att(x) + x  # F_m of the authors' module
        expected = (fc.weight[0][None, :, None, None] * reweighted).sum(dim=1)
        torch.testing.assert_close(maps[:, m], expected)
    # Its mean plus the bias is the logit of a box covering the map (align_corners: s = 1, t = 0
    # samples exactly the cell centres).
    with torch.no_grad():
        for stn in reference.stn_list:
            stn.weight.zero_()
            stn.bias.copy_(torch.tensor([40.0, 40.0, 0.0, 0.0]))  # sigmoid(40) = 1 in float64
    logits, _ = reference(x)
    torch.testing.assert_close(maps.mean(dim=(2, 3)) + batched.cls_bias, logits)


def test_zero_box_init_starts_every_image_at_the_central_box():
    images = torch.randn(3, 32, 6, 3) * 5
    _, default_boxes = AttributeLocalization(32, 4)(images)
    # PyTorch's init gives every image and attribute a box of its own ...
    assert not torch.allclose(default_boxes[0], default_boxes[1])
    zero = AttributeLocalization(32, 4, box_init="zero")
    _, boxes = zero(images)
    # ... the zero init gives every one sigmoid(0) = 0.5 and tanh(0) = 0, and only the box
    # regressor differs from the default init.
    assert torch.equal(boxes, torch.tensor([0.5, 0.5, 0.0, 0.0]).expand(3, 4, 4))
    assert not zero.box_weight.any() and not zero.box_bias.any()
    assert zero.cls_weight.abs().sum() > 0 and zero.se_reduce_weight.abs().sum() > 0


@pytest.mark.parametrize(
    "bad",
    [
        dict(box_pooling="sum"),
        dict(padding_mode="reflection"),
        dict(box_init="identity"),
        dict(box_centre="peak"),
    ],
)
def test_unknown_option_is_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        AttributeLocalization(32, 2, **bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("box_centre", ["regressed", "evidence"])
def test_batched_alm_matches_reference_on_cuda(box_centre):
    reference, batched = _pair(64, 4, "avg", "border", True, seed=11, box_centre=box_centre)
    reference, batched = reference.cuda(), batched.cuda()
    _compare(reference, batched, torch.randn(2, 64, 8, 4, dtype=torch.float64, device="cuda"))
