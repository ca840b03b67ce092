"""Per-level attribute heads that replace the ALM in the paper's comparisons.

Each head serves all M attributes of one pyramid level in one pass (no loop over attributes) and,
like :class:`~pedattr.models.alm.AttributeLocalization`, takes the level as a tensor
[B, C, H, W] or as the pyramid's factorised level and returns ``(logits [B, M], boxes)``:

* :class:`GlobalPoolingHead` ("gap"): GAP of the level and a linear classifier, the
  "Ours w/o ALMs" row of Table 1 (the same pyramid and deep supervision, no localization); no
  boxes.
* :class:`AttentionMaskHead` ("attention"): paper Appendix B, Fig. S2, eq. S1. The level is
  averaged across channels, a 3x3 Conv-BN-ReLU turns that map into one spatial mask per
  attribute, the mask multiplies every channel of X, and a fully-connected layer classifies
  the GAP of the masked features. The paper names no normalisation of the mask beyond the ReLU,
  so none is applied.
* :class:`RigidPartHead` ("parts"): Appendix B, Fig. S3. Head, torso and legs regions plus the
  whole image are pooled from X with ``torchvision.ops.roi_align``; each attribute is classified
  from the features of its region (:mod:`pedattr.data.part_regions`, Table S1).

Boxes are given in eq. 3's form, (s_x, s_y, t_x, t_y) in the level's normalised sampler
coordinates under the model's ``align_corners`` convention, so that
:func:`pedattr.models.localization.boxes_to_pixels` maps them to the image exactly as it maps ALM's:
for rigid parts, the box of each attribute's region; for attention masks, the box with the
mask's centre of mass and the extent of a uniform mask of the same spread (a half-extent of
sqrt(3) standard deviations, each cell counted as a uniform square), which recovers a box exactly
when the mask is uniform on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from pedattr.data.part_regions import BODY_PARTS, DEFAULT_PART_BOXES, WHOLE_IMAGE, region_indices
from pedattr.models.alm import channel_combinations, level_mean, normalize_coords
from pedattr.models.pyramid import Level, ResizedMap, dense_level, level_maps


def channel_mean(parts: Sequence[ResizedMap]) -> Tensor:
    """Cross-channel average of a level, [B, 1, H, W]; each map is averaged before resizing."""
    channels = sum(int(part.features.shape[1]) for part in parts)
    height, width = parts[0].size
    # One constant [1, 1, C_part] per map: a split weight would be a Split node in the graph,
    # which OpenCV DNN cannot run there.
    uniform = [
        part.features.new_full((1, 1, int(part.features.shape[1])), 1 / channels) for part in parts
    ]
    return channel_combinations(parts, uniform).reshape(-1, 1, height, width)


def masked_mean(parts: Sequence[ResizedMap], masks: Tensor) -> Tensor:
    """GAP(S_m * X) for every attribute m: [B, M, C] from masks [B, M, H, W].

    With X = R L Q^T for a resized map L, sum_{H,W} S X = sum_{h,w} (R^T S Q) L: the mask is
    brought down to the small map instead of resizing the map.
    """
    height, width = parts[0].size
    pooled = []
    for part in parts:
        weights = masks
        if part.rows is not None:
            weights = part.rows.T @ weights  # [B, M, h, W]
        if part.cols is not None:
            weights = weights @ part.cols  # [B, M, h, w]
        features = part.features.flatten(2)  # [B, C, h*w]
        pooled.append(torch.bmm(weights.flatten(2), features.transpose(1, 2)))  # [B, M, C]
    return torch.cat(pooled, dim=-1) / (height * width)


def span_to_theta(
    low: Tensor, high: Tensor, size: int, align_corners: bool
) -> tuple[Tensor, Tensor]:
    """(s, t) of eq. 3 for a span between two cell-edge positions along one axis.

    ``low`` and ``high`` are fractional cell indices of the span's edges (cell j covers
    [j - 0.5, j + 0.5]); :func:`pedattr.models.localization.boxes_to_pixels` maps the result back to
    exactly that span of the image.
    """
    u_low = normalize_coords(low, size, align_corners)
    u_high = normalize_coords(high, size, align_corners)
    return (u_high - u_low) / 2, (u_high + u_low) / 2


def fractions_to_theta(boxes: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """Boxes as fractions of the image, (x0, y0, x1, y1) [..., 4], to (s_x, s_y, t_x, t_y).

    A fraction f of the image is cell f * n - 0.5 of an n-cell axis (cell j's centre maps to
    pixel (j + 0.5) * stride).
    """
    height, width = size
    x0, y0, x1, y1 = boxes.unbind(dim=-1)
    s_x, t_x = span_to_theta(x0 * width - 0.5, x1 * width - 0.5, width, align_corners)
    s_y, t_y = span_to_theta(y0 * height - 0.5, y1 * height - 0.5, height, align_corners)
    return torch.stack([s_x, s_y, t_x, t_y], dim=-1)


def _axis_spread(marginal: Tensor, align_corners: bool) -> tuple[Tensor, Tensor]:
    """(s, t) of the uniform span with the mean and variance of a distribution over cells."""
    size = marginal.shape[-1]
    cells = torch.arange(size, dtype=marginal.dtype, device=marginal.device)
    mean = (marginal * cells).sum(dim=-1)
    # + 1/12: each cell is a uniform unit square, not a point, so n uniform cells span n.
    variance = (marginal * (cells - mean[..., None]) ** 2).sum(dim=-1) + 1 / 12
    half = torch.sqrt(3 * variance)  # half-width of a uniform distribution with this variance
    return span_to_theta(mean - half, mean + half, size, align_corners)


def mask_boxes(masks: Tensor, align_corners: bool) -> Tensor:
    """A box per mask [B, M, H, W]: centre of mass, extent of a uniform mask of equal spread.

    An all-zero mask (every ReLU output 0) gets the whole map.
    """
    height, width = masks.shape[-2:]
    total = masks.sum(dim=(-2, -1), keepdim=True)
    weights = torch.where(
        total > 0, masks / total.clamp(min=torch.finfo(masks.dtype).tiny), 1 / (height * width)
    )
    s_y, t_y = _axis_spread(weights.sum(dim=-1), align_corners)  # rows: marginal over width
    s_x, t_x = _axis_spread(weights.sum(dim=-2), align_corners)
    return torch.stack([s_x, s_y, t_x, t_y], dim=-1)  # [B, M, 4]


class AttributeClassifier(nn.Module):
    """M fully-connected layers Linear(C, 1), one per attribute, applied to [B, M, C] at once.

    Initialised like ``nn.Linear``: U(-1/sqrt(C), 1/sqrt(C)) for weights and biases.
    """

    def __init__(self, channels: int, num_attrs: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(channels)
        self.weight = nn.Parameter(torch.empty(num_attrs, channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_attrs).uniform_(-bound, bound))

    def forward(self, features: Tensor) -> Tensor:
        return (features * self.weight).sum(dim=-1) + self.bias  # [B, M]


class GlobalPoolingHead(nn.Module):
    """GAP of the level, then Linear(C, M): a level's branch without localization.

    Parameters: C * M + M.
    """

    def __init__(self, channels: int, num_attrs: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(channels, num_attrs)

    def forward(self, x: Tensor | Level) -> tuple[Tensor, None]:
        pooled = level_mean(level_maps(x))  # [B, C]
        return self.classifier(pooled), None


class AttentionMaskHead(nn.Module):
    """One spatial attention mask per attribute (paper Appendix B, Fig. S2, eq. S1).

    S_m = ReLU(BN(Conv3x3(mean_c X)))_m; y_m = f_m(GAP(S_m * X)) with f_m a Linear(C, 1).
    The 3x3 convolution maps the one-channel average to M masks at once; it has no bias, since
    the BN that follows has one. Parameters: 9M (conv) + 2M (BN) + (C + 1)M (classifiers).

    Args:
        channels: C.
        num_attrs: M.
        align_corners: the grid convention of the returned boxes (the model's).
    """

    def __init__(self, channels: int, num_attrs: int, *, align_corners: bool = True) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.mask_conv = nn.Conv2d(1, num_attrs, kernel_size=3, padding=1, bias=False)
        self.mask_bn = nn.BatchNorm2d(num_attrs)
        self.classifier = AttributeClassifier(channels, num_attrs)

    def masks(self, x: Tensor | Level) -> Tensor:
        """The attention masks S [B, M, H, W] (non-negative)."""
        average = channel_mean(level_maps(x))  # [B, 1, H, W]   cross-channel averaging
        return F.relu(self.mask_bn(self.mask_conv(average)))  # [B, M, H, W]

    def forward(self, x: Tensor | Level) -> tuple[Tensor, Tensor]:
        parts = level_maps(x)
        masks = self.masks(parts)
        logits = self.classifier(masked_mean(parts, masks))  # [B, M]   eq. S1
        boxes = mask_boxes(masks.detach(), self.align_corners)  # [B, M, 4], not trained
        return logits, boxes


class RigidPartHead(nn.Module):
    """Each attribute classified from its body part's features (paper Appendix B, Fig. S3).

    The three parts and the whole image are pooled from the level by ``roi_align`` with one
    output cell sampled over the region (``sampling_ratio`` adaptive, ``aligned=True``): the
    region's average, which stays sub-cell accurate on the coarse levels where a quantising ROI
    max pooling would snap a part to whole cells. Attribute m then takes its region's
    features (:func:`pedattr.data.part_regions.region_indices`) into its Linear(C, 1).
    Parameters: (C + 1) M.

    The region of each attribute and the default part boxes are persistent buffers, so a
    checkpoint keeps the table and proportions it was trained with.

    Args:
        channels: C.
        attribute_names: the M attributes, which choose their regions.
        align_corners: the grid convention of the returned boxes (the model's).
        regions: each attribute's region, as :func:`~pedattr.data.part_regions.region_indices`
            gives it for ``attribute_names``; None looks it up here.
    """

    def __init__(
        self,
        channels: int,
        attribute_names: Sequence[str],
        *,
        align_corners: bool = True,
        regions: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        if regions is None:
            regions = region_indices(attribute_names)
        if len(regions) != len(attribute_names):
            raise ValueError(f"{len(regions)} regions for {len(attribute_names)} attributes")
        indices = torch.tensor(list(regions), dtype=torch.int64)
        self.register_buffer("attribute_regions", indices)  # [M] indices into REGIONS
        defaults = torch.tensor([DEFAULT_PART_BOXES[part] for part in BODY_PARTS])
        self.register_buffer("default_part_boxes", defaults)  # [3, 4] fractions
        self.classifier = AttributeClassifier(channels, len(attribute_names))

    def region_boxes(self, batch: int, part_boxes: Tensor | None, like: Tensor) -> Tensor:
        """Head, torso, legs and whole image as fractions (x0, y0, x1, y1), [B, 4, 4]."""
        if part_boxes is None:
            part_boxes = self.default_part_boxes.expand(batch, -1, -1)
        if part_boxes.shape != (batch, len(BODY_PARTS), 4):
            raise ValueError(f"part boxes must be [{batch}, 3, 4], got {tuple(part_boxes.shape)}")
        whole = like.new_tensor(WHOLE_IMAGE).expand(batch, 1, 4)
        return torch.cat([part_boxes.to(like), whole], dim=1)

    def region_features(self, x: Tensor | Level, part_boxes: Tensor | None) -> Tensor:
        """The average of X over head, torso, legs and the whole image: [B, 4, C]."""
        features = dense_level(x)  # [B, C, H, W]: ROI pooling needs the map itself
        return self._pool_regions(
            features, self.region_boxes(features.shape[0], part_boxes, features)
        )

    @staticmethod
    def _pool_regions(features: Tensor, regions: Tensor) -> Tensor:
        """The average of features [B, C, H, W] over regions [B, R, 4] (fractions): [B, R, C]."""
        batch, channels, height, width = features.shape
        scale = features.new_tensor([width, height, width, height])
        rois = (regions * scale).reshape(-1, 4)  # [B*4, 4] in feature-map coordinates
        index = torch.arange(batch, device=features.device, dtype=features.dtype)
        rois = torch.cat([index.repeat_interleave(regions.shape[1])[:, None], rois], dim=1)
        pooled = roi_align(features, rois, output_size=1, sampling_ratio=-1, aligned=True)
        return pooled.reshape(batch, regions.shape[1], channels)

    def forward(self, x: Tensor | Level, part_boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Classify every attribute from its region.

        Args:
            x: the level.
            part_boxes: per image head, torso and legs boxes as fractions of the image
                (x0, y0, x1, y1), [B, 3, 4]; None for the default proportions.

        Returns:
            logits [B, M] and each attribute's region as a box [B, M, 4] (s_x, s_y, t_x, t_y).
        """
        features = dense_level(x)  # [B, C, H, W]: ROI pooling needs the map itself
        regions = self.region_boxes(features.shape[0], part_boxes, features)  # [B, 4, 4]
        pooled = self._pool_regions(features, regions)  # [B, 4, C]
        logits = self.classifier(pooled[:, self.attribute_regions])  # [B, M]
        chosen = regions[:, self.attribute_regions]  # [B, M, 4]
        size = (int(features.shape[-2]), int(features.shape[-1]))
        return logits, fractions_to_theta(chosen, size, self.align_corners)
