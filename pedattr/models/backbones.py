"""Backbones that return feature maps at strides 8, 16 and 32, for ALM's feature pyramid.

Supported names (see :func:`build_backbone`):

- ``"bninception"``: BN-Inception, the paper's backbone; ``pretrained`` is the public
  ``bn_inception-52deb4733.pth`` file.
- ``"timm:<model>"``, e.g. ``"timm:resnet50"``, ``"timm:convnext_tiny"``: any timm model whose
  ``features_only`` variant has levels at strides 8, 16 and 32; ``pretrained`` is a local timm
  checkpoint (``.pth``/``.bin``/``.safetensors``) of the classification model.
- ``"torchvision:<model>"``, e.g. ``"torchvision:resnet50"``, ``"torchvision:mobilenet_v2"``:
  models whose taps are children of ``model.features`` (MobileNet, EfficientNet, ConvNeXt, VGG),
  of ``model.trunk_output`` (RegNet) or of the model itself (ResNet, ResNeXt, Wide ResNet);
  ``pretrained`` is a local state dict file of the classification model, as torchvision
  publishes them.

Every backbone's ``forward(x)`` returns ``[stride 8, stride 16, stride 32]`` NCHW feature maps
and its ``feature_info`` is a list of three ``dict(num_chs=, reduction=, module=)``. Nothing is
ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from pedattr.models.bninception import BNInception, load_bninception_weights
from pedattr.models.weight_files import read_weight_file, state_dict_mismatch

__all__ = ["STRIDES", "FeatureTaps", "backbone_names", "build_backbone"]

STRIDES: tuple[int, ...] = (8, 16, 32)

# (probe height, probe width) for finding torchvision tap strides: unequal sides so that
# channels-last outputs cannot pass for NCHW, and large enough for every stride-32 model.
_PROBE_SIZE = (128, 160)


class FeatureTaps(nn.Module):
    """Wraps a timm or torchvision feature extractor to return a list of taps.

    Args:
        body: Module returning the taps as a list, tuple or dict (in stride order).
        feature_info: One ``dict(num_chs=, reduction=, module=)`` per tap.
    """

    def __init__(self, body: nn.Module, feature_info: list[dict]) -> None:
        super().__init__()
        self.body = body
        self.feature_info = feature_info

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.body(x)
        return list(taps.values()) if isinstance(taps, dict) else list(taps)


def backbone_names() -> list[str]:
    """Returns the forms of backbone names that :func:`build_backbone` accepts."""
    return ["bninception", "timm:<model>", "torchvision:<model>"]


def build_backbone(name: str, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
    """Builds a backbone returning feature maps at strides 8, 16 and 32.

    Args:
        name: ``"bninception"``, ``"timm:<model>"`` or ``"torchvision:<model>"``.
        pretrained: Local weight file to load; None for random initialisation.

    Returns:
        A module whose ``forward(x)`` returns three feature maps and whose ``feature_info`` lists
        their channels, strides and source modules.

    Raises:
        ValueError: Unknown name, a model without all three strides, or a weight file that does
            not fit the model.
        FileNotFoundError: ``pretrained`` does not exist.
    """
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(f"pretrained weights not found: {os.fspath(pretrained)}")
    family, _, model_name = name.partition(":")
    if name == "bninception":
        return _bninception(pretrained)
    if family == "timm" and model_name:
        return _timm_backbone(model_name, pretrained)
    if family == "torchvision" and model_name:
        return _torchvision_backbone(model_name, pretrained)
    raise ValueError(f"unknown backbone {name!r}; expected one of {backbone_names()}")


def _bninception(pretrained: str | os.PathLike | None) -> BNInception:
    model = BNInception()
    if pretrained is not None:
        load_bninception_weights(model, pretrained)
    return model


def _pick_levels(reductions: list[int], strides: tuple[int, ...], name: str) -> list[int]:
    """Returns, for each stride, the index of the last (deepest) level with that reduction."""
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise ValueError(f"{name} has no feature level at stride {missing} (levels: {reductions})")
    return [max(i for i, r in enumerate(reductions) if r == s) for s in strides]


def _timm_reductions(model_name: str) -> list[int]:
    """Reductions of all ``features_only`` levels of a timm model."""
    import timm  # imported on use: BN-Inception users never pay for timm's import

    try:
        # A meta-device build reads the layout without allocating or initialising weights.
        with torch.device("meta"):
            probe = timm.create_model(model_name, pretrained=False, features_only=True)
    except (RuntimeError, NotImplementedError):  # models that compute with tensors in __init__
        probe = timm.create_model(model_name, pretrained=False, features_only=True)
    return probe.feature_info.reduction()


def _timm_backbone(model_name: str, pretrained: str | os.PathLike | None) -> FeatureTaps:
    import timm

    if not timm.is_model(model_name):
        raise ValueError(f"unknown timm model {model_name!r}")
    out_indices = _pick_levels(_timm_reductions(model_name), STRIDES, f"timm:{model_name}")
    kwargs = dict(features_only=True, out_indices=out_indices, pretrained=pretrained is not None)
    if pretrained is None:
        body = timm.create_model(model_name, **kwargs)
    else:
        # classifier=None stops timm from dropping the head and then loading non-strictly (its
        # rule for features_only models), which would hide a wrong file: the whole classification
        # model is loaded strictly, and the features wrapper then discards the head.
        read_weight_file(pretrained, wrapped=True)  # no weight file: one clear line
        overlay = dict(file=os.fspath(pretrained), classifier=None)
        try:
            body = timm.create_model(model_name, **kwargs, pretrained_cfg_overlay=overlay)
        except (RuntimeError, KeyError) as err:  # load_state_dict's or a checkpoint filter's
            raise ValueError(
                f"{os.fspath(pretrained)} does not fit timm:{model_name}: {err}"
            ) from err
    return FeatureTaps(body, body.feature_info.get_dicts(keys=("num_chs", "reduction", "module")))


def _torchvision_backbone(model_name: str, pretrained: str | os.PathLike | None) -> FeatureTaps:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    if model_name not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision model {model_name!r}")
    model = torchvision.models.get_model(model_name, weights=None)
    if pretrained is not None:
        _load_torchvision_weights(model, pretrained, model_name)
    feature_info = _torchvision_taps(model, model_name)
    return_nodes = [info["module"] for info in feature_info]
    body = create_feature_extractor(model, return_nodes=return_nodes)
    return FeatureTaps(body, feature_info)


def _load_torchvision_weights(model: nn.Module, path: str | os.PathLike, model_name: str) -> None:
    state = read_weight_file(path)
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{os.fspath(path)} does not fit torchvision:{model_name}: {problem}")
    model.load_state_dict(state, strict=True)


def _tap_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose outputs may be taps, by qualified name.

    These are the children of the model's stage container (``features`` in MobileNet,
    EfficientNet, ConvNeXt and VGG, ``trunk_output`` in RegNet), else the model's own children
    (``layer2``... in ResNet).
    """
    for container in ("features", "trunk_output"):
        stages = getattr(model, container, None)
        if isinstance(stages, nn.Sequential):
            return {f"{container}.{name}": child for name, child in stages.named_children()}
    return dict(model.named_children())


@torch.no_grad()
def _torchvision_taps(model: nn.Module, model_name: str) -> list[dict]:
    """Finds the last module at each stride in ``STRIDES`` with one probe forward pass."""
    height, width = _PROBE_SIZE
    outputs: dict[str, tuple[int, int]] = {}  # module name -> (channels, stride), in run order

    def record(name: str, out: object) -> None:
        if isinstance(out, Tensor) and out.dim() == 4:
            stride = height // out.shape[2]
            if (out.shape[2] * stride, out.shape[3] * stride) == (height, width):
                outputs[name] = (out.shape[1], stride)

    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
        for name, module in _tap_candidates(model).items()
    ]
    was_training = model.training
    try:
        model.eval()  # batch-1 probe; keeps BatchNorm running statistics untouched
        model(torch.zeros(1, 3, height, width))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    names = list(outputs)
    levels = _pick_levels([s for _, s in outputs.values()], STRIDES, f"torchvision:{model_name}")
    return [
        dict(num_chs=outputs[names[i]][0], reduction=outputs[names[i]][1], module=names[i])
        for i in levels
    ]
