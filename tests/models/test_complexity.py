"""Parameter and FLOP counts of the ALM and baseline models, checked against independent counts.

Parameters: a closed form per module. FLOPs: forward hooks on every Conv2d / Linear
(2 FLOPs per multiply-add, biases not counted), which is what ``FlopCounterMode`` counts for those
layers; the ALM heads add einsum/bmm products that the hooks cannot see, counted here in closed
form from the shapes in ``AttributeLocalization.forward``.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import pedattr
from pedattr.cli import main
from pedattr.models.complexity import count_flops, count_parameters, format_summary
from pedattr.models.model import build_model

INPUT_SIZE = (256, 128)
BACKBONE_PARAMS = 10_270_240  # BN-Inception without last_linear
TAP_CHANNELS = (320, 608, 1024)  # 3b, 4d, 5b
DIM = 256  # pyramid width d
LEVEL_CHANNELS = (768, 512, 256)  # 3d, 2d, d
LEVEL_SIZES = ((32, 16), (16, 8), (8, 4))  # feature maps at 256x128 (strides 8, 16, 32)


def expected_alm_params(num_attrs: int) -> int:
    """Backbone + lateral 1x1 convs + M ALMs per level + global Linear(1024, M)."""
    laterals = sum(TAP_CHANNELS) * DIM + len(TAP_CHANNELS) * DIM
    per_alm = sum(c * c // 8 + 6 * c + c // 16 + 5 for c in LEVEL_CHANNELS)
    return BACKBONE_PARAMS + laterals + num_attrs * per_alm + 1024 * num_attrs + num_attrs


def expected_baseline_params(num_attrs: int) -> int:
    return BACKBONE_PARAMS + 1024 * num_attrs + num_attrs


def alm_head_matmul_flops(num_attrs: int) -> int:
    """FLOPs of the matrix products of the three batched ALM levels, for one image at 256x128.

    Level i (C channels at H x W) is the concatenation of the d = 256-channel lateral maps of
    its own and all higher levels (h_j x w_j), kept un-upsampled. Per attribute: SE reduce and
    expand (C x C/16 each) and the box regressor (C x 4); per map the contraction with the
    sampling marginals (d * h_j * w_j) and, for an upsampled map, folding its resize matrices
    into the marginals (H * h_j + W * w_j), plus the GAP of the map, a product with its
    [h_j * w_j, 1] weights (d * h_j * w_j, once per image). The top lateral map reaches level 3b
    through two upsamplings whose matrices are composed once. The classifier is an element-wise
    product and sum, which FlopCounterMode does not count.
    """
    total = 0
    for level, (c, (h, w)) in enumerate(zip(LEVEL_CHANNELS, LEVEL_SIZES, strict=True)):
        total += 2 * num_attrs * (2 * c * (c // 16) + 4 * c)
        for map_h, map_w in LEVEL_SIZES[level:]:
            total += 2 * num_attrs * 256 * map_h * map_w
            if (map_h, map_w) != (h, w):
                total += 2 * num_attrs * (h * map_h + w * map_w) + 2 * 256 * map_h * map_w
    return total + 2 * (32 * 16 * 8 + 16 * 8 * 4)


def hooked_layer_flops(model: nn.Module, input_size: tuple[int, int]) -> int:
    """Straightforward count: 2 * outputs * (inputs per output) for every Conv2d and Linear."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    model.eval()
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, *input_size))
    finally:
        for handle in handles:
            handle.remove()
    return total


@pytest.fixture(scope="module")
def alm51() -> nn.Module:
    return build_model("alm", backbone="bninception", num_attrs=51)


@pytest.fixture(scope="module")
def baseline51() -> nn.Module:
    return build_model("baseline", backbone="bninception", num_attrs=51)


def test_alm_params_51(alm51):
    assert count_parameters(alm51) == expected_alm_params(51) == 17_147_760


@pytest.mark.parametrize("num_attrs,expected", [(35, 15_147_120), (26, 14_021_760)])
def test_alm_params_other_datasets(num_attrs, expected):
    model = build_model("alm", backbone="bninception", num_attrs=num_attrs)
    assert count_parameters(model) == expected_alm_params(num_attrs) == expected


def test_baseline_params(baseline51):
    assert count_parameters(baseline51) == expected_baseline_params(51) == 10_322_515


@pytest.mark.slow
def test_baseline_flops_match_layer_hooks(baseline51):
    flops = count_flops(baseline51, INPUT_SIZE)
    assert flops == hooked_layer_flops(baseline51, INPUT_SIZE)
    assert 2.6e9 < flops < 2.7e9  # BN-Inception at 256x128: 2.65 GFLOPs by this count


@pytest.mark.slow
def test_flops_scale_with_batch(baseline51):
    assert count_flops(baseline51, (64, 32), batch_size=3) == 3 * count_flops(baseline51, (64, 32))


@pytest.mark.slow
def test_alm_flops_are_layers_plus_alm_products(alm51, baseline51):
    flops = count_flops(alm51, INPUT_SIZE)
    # Backbone, lateral convs and global Linear are seen by the hooks; the ALMs' products not.
    assert flops == hooked_layer_flops(alm51, INPUT_SIZE) + alm_head_matmul_flops(51)
    # The ALM model adds ~140 M FLOPs of lateral convs and ~35 M of ALM products (+6.6 %) to
    # the ~2.65 G backbone; a literal grid_sample ALM would add ~5.8 % because grid_sample
    # counts 0 there. Either way well under 20 %.
    ratio = flops / count_flops(baseline51, INPUT_SIZE)
    assert 1.0 < ratio < 1.2


@pytest.mark.slow
def test_count_flops_restores_training_mode(baseline51):
    baseline51.train()
    count_flops(baseline51, (64, 32))
    assert baseline51.training


@pytest.mark.slow
@pytest.mark.parametrize("model,expected", [("alm", 17_147_760), ("baseline", 10_322_515)])
def test_cli_summary_json(capsys, model, expected):
    argv = ["summary", "--model", model, "--backbone", "bninception", "--num-attrs", "51"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["params"] == expected
    assert summary["gflops"] > 0
    assert summary["gmacs"] == pytest.approx(summary["gflops"] / 2)
    assert summary["input_size"] == [256, 128]
    assert "1 multiply-add = 2 FLOPs" in summary["flop_convention"]
    assert f"{expected:,}" in format_summary(summary)


@pytest.mark.slow
def test_cli_summary_takes_model_settings_and_checkpoints(capsys, tmp_path):
    size = ["--height", "64", "--width", "32"]
    argv = ["summary", "--backbone", "timm:test_efficientnet", "--num-attrs", "5", *size, "--json"]

    def summary(*extra: str) -> dict:
        assert main([*argv, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    full = summary("model.pyramid_dim=32")
    plain = summary("model.pyramid_dim=32", "model.channel_attention=false")
    assert full["options"] == {"pyramid_dim": 32}
    assert plain["options"] == {"pyramid_dim": 32, "channel_attention": False}
    model = pedattr.build_model(
        "alm", backbone="timm:test_efficientnet", num_attrs=5, input_size=(64, 32), pyramid_dim=32
    )
    # An ALM without attention has 5C + 5 parameters instead of C^2/8 + 6C + C/16 + 5.
    attention = sum(c * c // 8 + c + c // 16 for c in model.pyramid.out_channels)
    assert full["params"] - plain["params"] == 5 * attention

    path = tmp_path / "model.safetensors"
    pedattr.save_checkpoint(path, model)
    measured = summary("--checkpoint", str(path))
    assert {k: measured[k] for k in ("params", "flops", "options", "input_size")} == {
        k: full[k] for k in ("params", "flops", "options", "input_size")
    }

    baseline = summary("--model", "baseline", "model.pyramid_dim=32", "model.normalization=caffe")
    assert baseline["options"] == {"normalization": "caffe"}  # the pyramid is not the baseline's

    assert main(["summary", "optim.lr=1"]) == 2
    assert "only model.* settings describe a model" in capsys.readouterr().err
    assert main(["summary", "--checkpoint", str(path), "model.head=parts"]) == 2
    assert "drop the model.* settings" in capsys.readouterr().err
