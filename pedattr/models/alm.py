"""Attribute Localization Module (ALM), paper Sec. 3.2, eq. 3-4, batched over attributes.

One :class:`AttributeLocalization` holds the M ALMs of one pyramid level and computes them
together. Per attribute m, on the level's features X of shape [B, C, H, W], the authors' module is

    a_m      = sigmoid(W2_m relu(W1_m GAP(X) + b1_m) + b2_m)          channel attention
    F_m      = X * a_m + X                                               residual re-weighting
    theta_m  = Linear_m(pool(F_m)) -> [[s_x, 0, t_x], [0, s_y, t_y]]     eq. 3, box
    y_m      = Linear_m(GAP(grid_sample(F_m, affine_grid(theta_m))))     eq. 4, prediction

Computing that literally needs a [B, M, C, H, W] tensor and a Python loop. Two identities avoid
both:

* ``F_m = X * (1 + a_m)`` with ``1 + a_m > 0`` per channel, so ``pool(F_m) = (1 + a_m) * pool(X)``
  for average and for max pooling alike.
* With an axis-aligned theta, bilinear ``grid_sample`` is separable: output pixel (i, j) is
  ``sum_{h,w} Ky[i, h] Kx[j, w] F[h, w]``. Averaging over output pixels gives
  ``GAP(grid_sample(F)) = sum_{h,w} ky[h] kx[w] F[h, w]`` with ``ky = mean_i Ky[i, :]`` and
  ``kx = mean_j Kx[j, :]``. Everything after the sampler is linear in X, so all attributes share
  one batched matrix product of X with their [H*W] sampling marginals.

A third identity comes from the pyramid: a level is a concatenation of upsampled lateral maps,
and upsampling is a matrix per axis (X = U_h L U_w^T), so the contraction with the marginals
equals a contraction of the small map L with ``k_y @ U_h`` and ``k_x @ U_w``. The ALM therefore
accepts the pyramid's factorised levels and never materialises an upsampled map.

The result equals the per-attribute computation (including gradients) up to float rounding;
``tests/models/test_alm.py`` checks it against a literal per-attribute reference.

Not in the paper, and off unless ``box_centre="evidence"``: eq. 3 regresses the box's centre
from pooled features, which say little about where in the image the evidence lies, so on
pedestrians whose position varies the boxes hardly move (docs/demo.md). The evidence
centre instead puts the box where the attribute's own classifier finds its evidence:

    A_m      = Linear_m(F_m[:, h, w]) - b_m  at every cell (h, w)        activation map
    P_m      = softmax over cells of standardise(A_m) / T                  T = 0.3
    (t_x, t_y) = sum_{h,w} P_m[h, w] (u_w, u_h)                           soft-argmax

where (u_w, u_h) is the cell's normalised sampler coordinate. The centre is a constant for the
gradient (the classifier learns from what the box samples, not by moving the box), and the
regressor predicts only the scales (s_x, s_y).

Everything is written with matrix products, element-wise operations and reductions (no
``affine_grid``, ``grid_sample`` or ``einsum``), and sizes that follow from the input size are
Python ints, so the module exports to ONNX at any opset from 7 on (``pedattr export``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pedattr.models.config import BOX_CENTRES, BOX_INITS, BOX_POOLINGS, PADDING_MODES
from pedattr.models.pyramid import Level, ResizedMap, level_maps

__all__ = ["BOX_CENTRES", "BOX_INITS", "BOX_POOLINGS", "PADDING_MODES", "AttributeLocalization"]
#: Temperature of the soft-argmax that centres evidence boxes, on activation maps standardised
#: over their cells. Chosen on the demo's validation split among values from 0.1 to 1.0; at 1.0
#: the centre drifts to the map's middle (docs/model.md, "How the design was chosen").
EVIDENCE_TEMPERATURE = 0.3


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def affine_grid_coords(size: int, align_corners: bool, like: Tensor) -> Tensor:
    """Normalised target coordinates that ``F.affine_grid`` uses along one axis.

    Returns:
        A [size] tensor in [-1, 1], computed exactly as PyTorch's affine_grid does.
    """
    if size <= 1:
        return torch.zeros(size, dtype=like.dtype, device=like.device)
    coords = torch.linspace(-1.0, 1.0, size, dtype=like.dtype, device=like.device)
    if not align_corners:
        coords = coords * (size - 1) / size
    return coords


def unnormalize_coords(coords: Tensor, size: int, align_corners: bool) -> Tensor:
    """Map normalised coordinates in [-1, 1] to pixel indices as ``F.grid_sample`` does."""
    if align_corners:
        return (coords + 1) / 2 * (size - 1)
    return ((coords + 1) * size - 1) / 2


def normalize_coords(pixels: Tensor, size: int, align_corners: bool) -> Tensor:
    """The inverse of :func:`unnormalize_coords`: fractional pixel (cell) indices to [-1, 1].

    Other heads use it to state their regions in eq. 3's (s, t) form. With ``align_corners`` and
    a single cell every coordinate samples that cell; the map without it is used there.
    """
    if align_corners and size > 1:
        return pixels * 2 / (size - 1) - 1
    return (pixels * 2 + 1) / size - 1


def sampling_marginal(
    scale: Tensor, shift: Tensor, size: int, *, align_corners: bool, padding_mode: str
) -> Tensor:
    """Average bilinear sampling weight of every input position along one axis.

    For the 1-D transform ``source = scale * target + shift`` (one row of eq. 3), bilinear
    sampling puts weight ``max(0, 1 - |source_pixel - k|)`` on input index k. Averaging those
    weights over the ``size`` output positions gives the axis' share of GAP(grid_sample(.)).

    Args:
        scale: s_x or s_y, shape [B, M, 1].
        shift: t_x or t_y, shape [B, M, 1].
        size: input (= output) length along the axis.
        align_corners: grid convention, as in ``F.affine_grid`` / ``F.grid_sample``.
        padding_mode: "border" clamps source pixels into the map; "zeros" drops taps outside.

    Returns:
        Weights of shape [B, M, size].
    """
    target = affine_grid_coords(size, align_corners, scale)  # [size_out]
    source = scale * target + shift  # [B, M, size_out]   eq. 3
    pixel = unnormalize_coords(source, size, align_corners)  # [B, M, size_out]
    if padding_mode == "border":
        pixel = pixel.clamp(0, size - 1)
    taps = torch.arange(size, dtype=pixel.dtype, device=pixel.device)  # [size_in]
    tent = (1 - (pixel[..., None] - taps).abs()).clamp(min=0)  # [B, M, size_out, size_in]
    # Taps outside [0, size) simply do not exist here, which is exactly zeros padding.
    return tent.mean(dim=-2)  # [B, M, size_in]


def boxes_from_theta(theta_raw: Tensor) -> Tensor:
    """Constrain raw box outputs (paper: s in (0, 1) by sigmoid, t in (-1, 1) by tanh).

    Args:
        theta_raw: [..., 4] linear outputs.

    Returns:
        [..., 4] boxes ordered (s_x, s_y, t_x, t_y).
    """
    scales = torch.sigmoid(theta_raw[..., :2])
    shifts = torch.tanh(theta_raw[..., 2:])
    return torch.cat([scales, shifts], dim=-1)


def _flatten_last_two(x: Tensor) -> Tensor:
    """[B, D, h, w] -> [B, D, h*w]: ``x.flatten(2)`` written as a reshape to (-1, D, h*w).

    With Python ints for D, h and w, an exported graph reshapes to a constant shape, where
    ``flatten`` costs four operators (Shape, Slice, Concat, Reshape) that some runtimes also
    evaluate only once, for batch 1 (OpenCV DNN).
    """
    depth, height, width = (int(size) for size in x.shape[1:])
    return x.reshape(-1, depth, height * width)


def _contract(part: ResizedMap, k_y: Tensor, k_x: Tensor) -> Tensor:
    """sum_{h,w} k_y[h] k_x[w] X[c, h, w] for every (image, attribute): [B, M, C_part].

    With X = rows @ features @ cols^T, the resize folds into the marginals (k_y @ rows,
    k_x @ cols), so the contraction runs on the small un-resized map.
    """
    if part.rows is not None:
        k_y = k_y @ part.rows  # [B, M, h]
    if part.cols is not None:
        k_x = k_x @ part.cols  # [B, M, w]
    k_yx = _flatten_last_two(k_y[..., :, None] * k_x[..., None, :])  # [B, M, h*w]
    # The features stay the left operand so that their gradient comes out contiguous.
    features = _flatten_last_two(part.features)  # [B, C, h*w]
    return torch.bmm(features, k_yx.transpose(1, 2)).transpose(1, 2)


def part_mean(part: ResizedMap) -> Tensor:
    """GAP of one resized map, [B, C_part], without materialising the resize."""
    features = _flatten_last_two(part.features)  # [B, C, h*w]
    # Python ints (ResizedMap.size): an exported graph gets constants, not shape arithmetic.
    # Along an axis without a resize matrix the map already has the level's size.
    height, width = part.size
    if part.rows is None and part.cols is None:
        # A scaled sum: its backward is a broadcast view, whereas mean's materialises a full
        # [B, C, h*w] gradient (a measurable cost at the 3b level).
        return features.sum(dim=-1) * (1.0 / (height * width))
    rows = (
        part.rows.mean(dim=0) if part.rows is not None else features.new_full((height,), 1 / height)
    )
    cols = (
        part.cols.mean(dim=0) if part.cols is not None else features.new_full((width,), 1 / width)
    )
    weights = (rows[:, None] * cols[None, :]).reshape(-1, 1)  # [h*w, 1]
    # A matrix, not a vector: matrix-vector MatMul trips some ONNX runtimes (OpenCV DNN).
    return (features @ weights)[..., 0]  # [B, C]


def level_mean(parts: list[ResizedMap]) -> Tensor:
    """GAP of a whole level, [B, C], from its maps in concatenation order."""
    return torch.cat([part_mean(part) for part in parts], dim=-1)


def _split_channels(weights: Tensor, parts: Sequence[ResizedMap]) -> tuple[Tensor, ...]:
    """[B, M, C] -> one [B, M, C_part] per map of the level, in concatenation order."""
    return weights.split([int(part.features.shape[1]) for part in parts], dim=-1)


def channel_combinations(parts: Sequence[ResizedMap], weights: Sequence[Tensor]) -> Tensor:
    """``sum_c w[k, c] X[c]`` at every cell of a level, [B, K, H*W], from its small maps.

    With X = rows @ L @ cols^T per map, ``sum_c w_c X[c] = rows @ (sum_c w_c L[c]) @ cols^T``:
    the K combinations are taken on each un-resized map and only their result is resized.

    Args:
        parts: the level's maps, in concatenation order.
        weights: one [B or 1, K, C_part] per map (the rows of w that meet its channels).
    """
    combined = None
    for part, part_weights in zip(parts, weights, strict=True):
        # Python ints for h and w only: the batch must stay symbolic for a dynamic export.
        height, width = (int(v) for v in part.features.shape[-2:])
        small = part_weights @ _flatten_last_two(part.features)  # [B, K, h*w]
        small = small.reshape(-1, part_weights.shape[-2], height, width)  # [B, K, h, w]
        resized = _flatten_last_two(ResizedMap(small, part.rows, part.cols).dense())
        combined = resized if combined is None else combined + resized  # [B, K, H*W]
    return combined


def _max_pool(parts: list[ResizedMap]) -> Tensor:
    """Global max of the level, [B, C]; the resized maps are materialised for it."""
    return torch.cat([part.dense().flatten(2).amax(dim=-1) for part in parts], dim=-1)


class AttributeLocalization(nn.Module):
    """The M Attribute Localization Modules of one feature level, computed in one pass.

    Parameters are stacked per attribute so that attribute m's slice holds exactly the weights of
    the authors' m-th module (SE convs ``conv1``/``conv2``, ``stn`` Linear(C, 4), ``fc``
    Linear(C, 1)). Per module: C^2/8 + 6C + C/16 + 5 parameters; 5C + 5 without channel
    attention; 2C + 2 fewer with evidence centres, whose regressor is Linear(C, 2).

    Args:
        channels: C, channels of the level's features.
        num_attrs: M.
        reduction: channel-attention bottleneck ratio (16 in the paper).
        box_pooling: pooling before the box regressor: "avg" (authors' code) or "max".
        padding_mode: sampler padding: "border" (authors' code) or "zeros".
        align_corners: sampler grid convention; True is how the authors' PyTorch <= 1.2 sampled.
        channel_attention: the SE sub-network with its residual (paper Fig. 3); False is the
            "simplified ALM" of Table 1's first rows, where F_m = X.
        box_init: "default" is PyTorch's Linear init, as in the authors' code; "zero" zeroes the
            box regressor's weights and biases, so every image starts from the same central box
            (s = 0.5, t = 0), as the spatial-transformer literature starts from a fixed transform;
            with evidence centres only the scales start at 0.5.
        box_centre: "regressed" is eq. 3; "evidence" (not in the paper) centres each box at the
            soft-argmax of the attribute's activation map (module docstring) and regresses only
            its scale.
    """

    def __init__(
        self,
        channels: int,
        num_attrs: int,
        *,
        reduction: int = 16,
        box_pooling: str = "avg",
        padding_mode: str = "border",
        align_corners: bool = True,
        channel_attention: bool = True,
        box_init: str = "default",
        box_centre: str = "regressed",
    ) -> None:
        super().__init__()
        _check_choice("box_pooling", box_pooling, BOX_POOLINGS)
        _check_choice("padding_mode", padding_mode, PADDING_MODES)
        _check_choice("box_init", box_init, BOX_INITS)
        _check_choice("box_centre", box_centre, BOX_CENTRES)
        if channels % reduction:
            raise ValueError(f"channels ({channels}) must be divisible by reduction ({reduction})")
        self.channels = channels
        self.num_attrs = num_attrs
        self.box_pooling = box_pooling
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self.use_channel_attention = channel_attention
        self.box_init = box_init
        self.box_centre = box_centre
        hidden = channels // reduction
        self.hidden_channels = hidden
        m, c = num_attrs, channels
        if channel_attention:
            # Channel attention (SE): W1 [C -> C/16], W2 [C/16 -> C], both with bias.
            self.se_reduce_weight = nn.Parameter(torch.empty(m, hidden, c))
            self.se_reduce_bias = nn.Parameter(torch.empty(m, hidden))
            self.se_expand_weight = nn.Parameter(torch.empty(m, c, hidden))
            self.se_expand_bias = nn.Parameter(torch.empty(m, c))
        # Box regressor Linear(C, 4), or Linear(C, 2) for the scales alone, and classifier
        # Linear(C, 1).
        box_outputs = 4 if box_centre == "regressed" else 2
        self.box_weight = nn.Parameter(torch.empty(m, box_outputs, c))
        self.box_bias = nn.Parameter(torch.empty(m, box_outputs))
        self.cls_weight = nn.Parameter(torch.empty(m, c))
        self.cls_bias = nn.Parameter(torch.empty(m))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default Linear / Conv init per attribute: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        No identity init of the box, as in the authors' code, unless ``box_init="zero"``.
        """
        fan_ins = {"box": self.channels, "cls": self.channels}
        if self.use_channel_attention:
            fan_ins = {"se_reduce": self.channels, "se_expand": self.hidden_channels, **fan_ins}
        for prefix, fan_in in fan_ins.items():
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(getattr(self, f"{prefix}_weight"), -bound, bound)
            nn.init.uniform_(getattr(self, f"{prefix}_bias"), -bound, bound)
        if self.box_init == "zero":
            nn.init.zeros_(self.box_weight)
            nn.init.zeros_(self.box_bias)

    def channel_attention(self, pooled: Tensor) -> Tensor:
        """SE attention of every attribute from GAP(X) [B, C]; returns a [B, M, C] in (0, 1)."""
        m, k, c = self.num_attrs, self.hidden_channels, self.channels  # M, C/16, C
        # W1 of every attribute in one matrix product: [B, C] @ [C, M*C/16] -> [B, M*C/16].
        hidden = (pooled @ self.se_reduce_weight.reshape(m * k, c).T).reshape(-1, m, k)
        hidden = F.relu(hidden + self.se_reduce_bias)
        # W2 per attribute, batched over M: [M, B, C/16] @ [M, C/16, C] -> [M, B, C].
        logits = (hidden.transpose(0, 1) @ self.se_expand_weight.transpose(1, 2)).transpose(0, 1)
        return torch.sigmoid(logits + self.se_expand_bias)  # [B, M, C]

    def _mean_and_reweighting(self, parts: list[ResizedMap]) -> tuple[Tensor, Tensor | None]:
        """GAP(X), [B, C], and the re-weighting 1 + a_m, [B, M, C] (None without attention)."""
        x_mean = level_mean(parts)  # [B, C]   GAP(X)
        if not self.use_channel_attention:
            return x_mean, None  # F_m = X
        # F_m = X * a_m + X = X * (1 + a_m)
        return x_mean, 1 + self.channel_attention(x_mean)

    def forward(self, x: Tensor | Level) -> tuple[Tensor, Tensor]:
        """Predict every attribute from one level.

        Args:
            x: the level's features X, [B, C, H, W], or the pyramid's factorised level (maps
                resized by matrices, concatenated along channels; see
                :class:`~pedattr.models.pyramid.ResizedMap`).

        Returns:
            logits [B, M] and boxes [B, M, 4] as (s_x, s_y, t_x, t_y) of eq. 3.
        """
        parts = level_maps(x)
        height, width = parts[0].size
        x_mean, reweight = self._mean_and_reweighting(parts)  # [B, C], [B, M, C] or None

        x_pool = x_mean if self.box_pooling == "avg" else _max_pool(parts)  # [B, C]
        if reweight is None:
            f_pool = x_pool[:, None, :].expand(-1, self.num_attrs, -1)  # [B, M, C]   pool(X)
        else:
            f_pool = reweight * x_pool[:, None, :]  # [B, M, C]   pool(F_m)
        # Linear_m(C -> 4, or 2) per attribute, batched over M: [M, B, C] @ [M, C, 4] -> [M, B, 4].
        theta_raw = (f_pool.transpose(0, 1) @ self.box_weight.transpose(1, 2)).transpose(0, 1)
        theta_raw = theta_raw + self.box_bias  # [B, M, 4], or [B, M, 2] for the scales alone
        if self.box_centre == "regressed":
            boxes = boxes_from_theta(theta_raw)  # [B, M, 4]   (s_x, s_y, t_x, t_y)
        else:
            scales = torch.sigmoid(theta_raw)  # [B, M, 2]   (s_x, s_y)
            boxes = torch.cat([scales, self._evidence_centres(parts, reweight)], dim=-1)

        sampler = dict(align_corners=self.align_corners, padding_mode=self.padding_mode)
        # One Split in an exported graph, where indexing costs a Gather and an Unsqueeze each.
        s_x, s_y, t_x, t_y = boxes.split(1, dim=-1)  # each [B, M, 1]
        k_y = sampling_marginal(s_y, t_y, height, **sampler)  # [B, M, H]
        k_x = sampling_marginal(s_x, t_x, width, **sampler)  # [B, M, W]
        x_sampled = torch.cat([_contract(part, k_y, k_x) for part in parts], dim=-1)  # [B, M, C]
        # [B, M, C]   GAP(grid_sample(F_m))
        f_sampled = x_sampled if reweight is None else reweight * x_sampled

        logits = (f_sampled * self.cls_weight).sum(dim=-1) + self.cls_bias  # [B, M]   eq. 4
        return logits, boxes

    def activation_map(self, x: Tensor | Level) -> Tensor:
        """Each attribute's classifier applied at every cell of its re-weighted map F_m.

        ``A_m[h, w] = Linear_m(F_m[:, h, w]) - b_m``: the class activation map of eq. 4's
        classifier, whose mean over the cells plus the bias is the logit a box covering the
        whole map would give. Its peak says where the level's features put the attribute's
        evidence, whatever the box does (``pedattr eval --localization`` scores both).

        Args:
            x: the level's features, as :meth:`forward` takes them.

        Returns:
            [B, M, H, W].
        """
        dtype = self.cls_weight.dtype  # recorded in float32 also when the forward is autocast
        parts = [
            ResizedMap(*(None if t is None else t.to(dtype) for t in (p.features, p.rows, p.cols)))
            for p in level_maps(x)
        ]
        _, reweight = self._mean_and_reweighting(parts)  # [B, M, C] or None
        height, width = parts[0].size
        weights = _split_channels(self._classifier_on_f(reweight), parts)
        maps = channel_combinations(parts, weights)  # [B, M, H*W]
        return maps.reshape(-1, self.num_attrs, height, width)  # [B, M, H, W]

    def _classifier_on_f(self, reweight: Tensor | None) -> Tensor:
        """Linear_m's weights as applied to X rather than F_m: w_m * (1 + a_m), [B or 1, M, C]."""
        weights = self.cls_weight[None]  # [1, M, C]
        return weights if reweight is None else weights * reweight

    def _evidence_centres(self, parts: list[ResizedMap], reweight: Tensor | None) -> Tensor:
        """(t_x, t_y) at the soft-argmax of every attribute's activation map, [B, M, 2].

        Computed from detached inputs: the centre follows the evidence but passes no gradient.
        """
        height, width = parts[0].size
        detached = [ResizedMap(p.features.detach(), p.rows, p.cols) for p in parts]
        weights = self._classifier_on_f(reweight).detach()
        # A_m = sum_c w_mc (1 + a_mc) X[c]: the classifier at every cell, only M maps resized.
        maps = channel_combinations(detached, _split_channels(weights, parts))  # [B, M, H*W]
        centred = maps - maps.mean(dim=-1, keepdim=True)  # [B, M, H*W]
        spread = centred.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp(min=1e-6)
        probs = torch.softmax(centred / (spread * EVIDENCE_TEMPERATURE), dim=-1)
        probs = probs.reshape(-1, self.num_attrs, height, width)  # [B, M, H, W]   P_m
        # The cells' own normalised coordinates: those of an identity grid.
        u_y = affine_grid_coords(height, self.align_corners, probs)  # [H]
        u_x = affine_grid_coords(width, self.align_corners, probs)  # [W]
        t_y = (probs.sum(dim=-1) * u_y).sum(dim=-1, keepdim=True)  # [B, M, 1]
        t_x = (probs.sum(dim=-2) * u_x).sum(dim=-1, keepdim=True)  # [B, M, 1]
        return torch.cat([t_x, t_y], dim=-1)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_attrs={self.num_attrs}, "
            f"box_pooling={self.box_pooling!r}, padding_mode={self.padding_mode!r}, "
            f"align_corners={self.align_corners}, "
            f"channel_attention={self.use_channel_attention}, box_init={self.box_init!r}, "
            f"box_centre={self.box_centre!r}"
        )
