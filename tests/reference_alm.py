"""A literal, per-attribute ALM as the authors wrote it: the oracle for the batched module.

One SE block, one Linear(C, 4), one affine_grid + grid_sample and one Linear(C, 1) per
attribute, in a Python loop. Module names follow the authors' released code
(``att_list.i.conv1/conv2``, ``stn_list.i``, ``fc_list.i``) so that its state dict has the
layout of their checkpoints.

With ``box_centre="evidence"`` (pedattr's option, not the authors'), each box is centred at the
soft-argmax of the attribute's activation map, computed literally: a 1x1 convolution with the
classifier's weights, standardised, a softmax, and affine_grid's identity grid as the cells'
coordinates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pedattr.models.alm import EVIDENCE_TEMPERATURE


class ChannelAttn(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, x.shape[2:])
        x = F.relu(self.conv1(x))
        return torch.sigmoid(self.conv2(x))


class ReferenceALMLevel(nn.Module):
    """The authors' ``SpatialTransformBlock``: M independent ALMs over one level."""

    def __init__(
        self,
        num_attrs: int,
        channels: int,
        *,
        box_pooling: str = "avg",
        padding_mode: str = "border",
        align_corners: bool = True,
        channel_attention: bool = True,
        box_centre: str = "regressed",
    ) -> None:
        super().__init__()
        self.box_centre = box_centre
        self.box_pooling = box_pooling
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        # Without channel attention (Table 1's simplified ALM) the module samples X itself.
        count = num_attrs if channel_attention else 0
        self.att_list = nn.ModuleList(ChannelAttn(channels) for _ in range(count))
        # pedattr's evidence centres: the regressor predicts the two scales only.
        box_outputs = 4 if box_centre == "regressed" else 2
        self.stn_list = nn.ModuleList(nn.Linear(channels, box_outputs) for _ in range(num_attrs))
        self.fc_list = nn.ModuleList(nn.Linear(channels, 1) for _ in range(num_attrs))

    def theta(self, raw: Tensor, centre: Tensor | None = None) -> Tensor:
        theta = torch.zeros(raw.shape[0], 2, 3, dtype=raw.dtype, device=raw.device)
        theta[:, 0, 0] = torch.sigmoid(raw[:, 0])
        theta[:, 1, 1] = torch.sigmoid(raw[:, 1])
        if centre is None:
            theta[:, 0, 2] = torch.tanh(raw[:, 2])
            theta[:, 1, 2] = torch.tanh(raw[:, 3])
        else:
            theta[:, :, 2] = centre
        return theta

    def evidence_centre(self, stn_feature: Tensor, fc: nn.Linear) -> Tensor:
        """The soft-argmax of fc's activation map over stn_feature, [B, 2] (x, y), no gradient.

        The cells' coordinates are those of affine_grid's identity grid.
        """
        with torch.no_grad():
            activation = F.conv2d(stn_feature, fc.weight[:, :, None, None])[:, 0]  # [B, H, W]
            flat = activation.flatten(1)
            # A constant map (one cell) has no spread: pedattr keeps it from dividing by zero.
            spread = flat.std(1, unbiased=False, keepdim=True).clamp(min=1e-6)
            standardised = (flat - flat.mean(1, keepdim=True)) / spread
            probs = torch.softmax(standardised / EVIDENCE_TEMPERATURE, 1).view_as(activation)
            identity = torch.eye(2, 3, dtype=flat.dtype, device=flat.device).expand(len(flat), 2, 3)
            shape = list(stn_feature.shape)
            grid = F.affine_grid(identity, shape, align_corners=self.align_corners)  # [B,H,W,2]
            return (probs[..., None] * grid).sum(dim=(1, 2))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        preds, boxes = [], []
        attentions = self.att_list or [None] * len(self.fc_list)
        for att, stn, fc in zip(attentions, self.stn_list, self.fc_list, strict=True):
            stn_feature = features if att is None else features * att(features) + features
            if self.box_pooling == "avg":
                pooled = F.avg_pool2d(stn_feature, stn_feature.shape[2:])
            else:
                pooled = F.max_pool2d(stn_feature, stn_feature.shape[2:])
            centre = None
            if self.box_centre == "evidence":
                centre = self.evidence_centre(stn_feature, fc)
            theta = self.theta(stn(pooled.flatten(1)), centre)
            grid = F.affine_grid(theta, list(features.shape), align_corners=self.align_corners)
            sub_feature = F.grid_sample(
                stn_feature,
                grid,
                mode="bilinear",
                padding_mode=self.padding_mode,
                align_corners=self.align_corners,
            )
            preds.append(fc(F.avg_pool2d(sub_feature, sub_feature.shape[2:]).flatten(1)))
            boxes.append(
                torch.stack([theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2]], 1)
            )
        return torch.cat(preds, 1), torch.stack(boxes, 1)


def copy_reference_into_batched(reference: ReferenceALMLevel, batched: nn.Module) -> None:
    """Stack the per-attribute weights of ``reference`` into an AttributeLocalization."""

    def stack(get) -> Tensor:
        return torch.stack([get(i) for i in range(len(reference.fc_list))])

    with torch.no_grad():
        batched.box_weight.copy_(stack(lambda i: reference.stn_list[i].weight))
        batched.box_bias.copy_(stack(lambda i: reference.stn_list[i].bias))
        batched.cls_weight.copy_(stack(lambda i: reference.fc_list[i].weight[0]))
        batched.cls_bias.copy_(stack(lambda i: reference.fc_list[i].bias[0]))
        if not reference.att_list:
            return
        batched.se_reduce_weight.copy_(
            stack(lambda i: reference.att_list[i].conv1.weight[..., 0, 0])
        )
        batched.se_reduce_bias.copy_(stack(lambda i: reference.att_list[i].conv1.bias))
        batched.se_expand_weight.copy_(
            stack(lambda i: reference.att_list[i].conv2.weight[..., 0, 0])
        )
        batched.se_expand_bias.copy_(stack(lambda i: reference.att_list[i].conv2.bias))
