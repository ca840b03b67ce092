"""The ALM network (paper Fig. 2) and the plain baseline, with their builder.

Both models take RGB images in [0, 1] of shape [B, 3, H, W] and return a :class:`ModelOutput`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pedattr.data.part_regions import region_indices
from pedattr.models.alm import AttributeLocalization
from pedattr.models.backbones import build_backbone
from pedattr.models.config import ModelConfig
from pedattr.models.heads import AttentionMaskHead, GlobalPoolingHead, RigidPartHead
from pedattr.models.normalization import InputNormalization
from pedattr.models.pyramid import FeaturePyramid

__all__ = [
    "ALMNet",
    "AttributeModel",
    "BaselineNet",
    "ModelConfig",
    "ModelOutput",
    "build_from_config",
    "build_model",
    "fuse_logits",
]


@dataclass
class ModelOutput:
    """What a forward returns.

    Attributes:
        logits: fused logits [B, M] (max or mean over ``branch_logits``).
        branch_logits: the separately supervised logit vectors, each [B, M]: for ALM the
            3b, 4d and 5b levels (only 5b with ``levels="top"``) then the global branch; for the
            baseline just one.
        boxes: every attribute's box at each level, [B, levels, M, 4] as (s_x, s_y, t_x, t_y)
            of eq. 3 in normalised feature-map coordinates, for ALM and the attention-mask and
            rigid-part heads (see :mod:`pedattr.models.heads`); None otherwise.
    """

    logits: Tensor
    branch_logits: tuple[Tensor, ...]
    boxes: Tensor | None = field(default=None)


def fuse_logits(branch_logits: Sequence[Tensor], fusion: str) -> Tensor:
    """Max voting (the paper's inference) or averaging (Table 1 variant) over branches."""
    stacked = torch.stack(tuple(branch_logits), dim=0)  # [branches, B, M]
    return stacked.amax(dim=0) if fusion == "max" else stacked.mean(dim=0)


class AttributeModel(nn.Module):
    """Shared plumbing: normalisation, backbone and the configuration that built them."""

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.normalize = InputNormalization(config.normalization)
        self.backbone = backbone

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return self.config.attribute_names

    def global_logits(self, top: Tensor) -> Tensor:
        return self.global_fc(top.mean(dim=(2, 3)))  # [B, M]


class BaselineNet(AttributeModel):
    """Backbone, global average pooling of the last tap, Linear(C, M) (paper's baseline)."""

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__(config, backbone)
        self.global_fc = nn.Linear(backbone.feature_info[-1]["num_chs"], config.num_attrs)

    def forward(self, images: Tensor) -> ModelOutput:
        top = self.backbone(self.normalize(images))[-1]  # [B, C, h, w]
        logits = self.global_logits(top)
        return ModelOutput(logits=logits, branch_logits=(logits,))


def build_level_head(
    config: ModelConfig, channels: int, regions: Sequence[int] | None = None
) -> nn.Module:
    """The module that predicts every attribute from one pyramid level (``config.head``).

    ``regions``: for the rigid-parts head, each attribute's region
    (:func:`~pedattr.data.part_regions.region_indices`), worked out once for all levels.
    """
    if config.head == "gap":
        return GlobalPoolingHead(channels, config.num_attrs)
    if config.head == "attention":
        return AttentionMaskHead(channels, config.num_attrs, align_corners=config.align_corners)
    if config.head == "parts":
        return RigidPartHead(
            channels,
            config.attribute_names,
            align_corners=config.align_corners,
            regions=regions,
        )
    return AttributeLocalization(
        channels,
        config.num_attrs,
        box_pooling=config.box_pooling,
        padding_mode=config.padding_mode,
        align_corners=config.align_corners,
        channel_attention=config.channel_attention,
        box_init=config.box_init,
        box_centre=config.box_centre,
    )


class ALMNet(AttributeModel):
    """Backbone taps -> feature pyramid -> one ALM group per level, plus the global branch.

    The per-level groups are ``alms`` (the paper's ALMs) or, for the comparison heads of
    Tables 1 and 2, ``heads``; :attr:`level_heads` is whichever the model has.
    """

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__(config, backbone)
        tap_channels = [info["num_chs"] for info in backbone.feature_info]
        used_taps = tap_channels if config.levels == "all" else tap_channels[-1:]
        self.pyramid = FeaturePyramid(
            used_taps, dim=config.pyramid_dim, upsample=config.upsample, top_down=config.top_down
        )
        # Looked up once: an attribute without a known region is warned about once, not per level.
        regions = region_indices(config.attribute_names) if config.head == "parts" else None
        heads = nn.ModuleList(
            build_level_head(config, channels, regions) for channels in self.pyramid.out_channels
        )
        if config.head == "alm":
            self.alms = heads
        else:
            self.heads = heads
        self.global_fc = nn.Linear(tap_channels[-1], config.num_attrs)

    @property
    def level_heads(self) -> nn.ModuleList:
        """The per-level modules, lowest level first."""
        return self.alms if self.config.head == "alm" else self.heads

    def forward(self, images: Tensor, part_boxes: Tensor | None = None) -> ModelOutput:
        """Predict every attribute.

        Args:
            images: RGB [B, 3, H, W], float in [0, 1] or uint8.
            part_boxes: rigid-parts head only: per image head, torso and legs boxes as
                fractions of the image (x0, y0, x1, y1), [B, 3, 4]; None uses the default
                proportions (:data:`pedattr.data.part_regions.DEFAULT_PART_BOXES`).
        """
        if part_boxes is not None and self.config.head != "parts":
            raise ValueError(f"part boxes are for the rigid-parts head, not {self.config.head!r}")
        taps = self.backbone(self.normalize(images))  # strides 8, 16, 32
        levels = self.pyramid(taps[-len(self.level_heads) :])  # X_1, X_2, X_3 (or X_3)
        extra = {} if part_boxes is None else {"part_boxes": part_boxes}
        per_level = [head(x, **extra) for head, x in zip(self.level_heads, levels, strict=True)]
        level_logits = [logits for logits, _ in per_level]  # levels x [B, M]
        level_boxes = [boxes for _, boxes in per_level]  # levels x [B, M, 4] (or None)
        branch_logits = (*level_logits, self.global_logits(taps[-1]))
        boxes = None if level_boxes[0] is None else torch.stack(level_boxes, dim=1)
        return ModelOutput(
            logits=fuse_logits(branch_logits, self.config.fusion),
            branch_logits=branch_logits,
            boxes=boxes,  # [B, levels, M, 4]
        )


def build_from_config(
    config: ModelConfig, *, pretrained: str | os.PathLike | None = None
) -> AttributeModel:
    """Build a model from its configuration; ``pretrained`` is a local backbone weights file."""
    backbone = build_backbone(config.backbone, pretrained=pretrained)
    model_class = ALMNet if config.arch == "alm" else BaselineNet
    return model_class(config, backbone)


def build_model(
    arch: str = "alm",
    *,
    backbone: str = "bninception",
    num_attrs: int | None = None,
    attribute_names: Sequence[str] | None = None,
    pretrained: str | os.PathLike | None = None,
    **options,
) -> AttributeModel:
    """Build an ALM or baseline model.

    Args:
        arch: "alm" or "baseline".
        backbone: "bninception", "timm:<name>" or "torchvision:<name>".
        num_attrs: number of attributes when no names are given (names become attr_00, ...).
        attribute_names: the attributes, in output order.
        pretrained: local file with ImageNet weights for the backbone; nothing is downloaded.
        **options: any other :class:`~pedattr.models.config.ModelConfig` field (the options
            are declared there, each with its choices or range and its help).

    Examples:
        >>> model = build_model("alm", backbone="bninception", num_attrs=51)
    """
    if attribute_names is None:
        if num_attrs is None:
            raise ValueError("give num_attrs or attribute_names")
        attribute_names = [f"attr_{i:02d}" for i in range(num_attrs)]
    elif num_attrs is not None and num_attrs != len(attribute_names):
        raise ValueError(f"num_attrs={num_attrs} but {len(attribute_names)} attribute names given")
    config = ModelConfig.from_dict(
        dict(arch=arch, backbone=backbone, attribute_names=tuple(attribute_names), **options)
    )
    return build_from_config(config, pretrained=pretrained)
