"""Feature pyramid with top-down concatenation (paper Sec. 3.1, eq. 1-2), and the variants of
Table 1: top-down by element-wise addition (FPN-like), and lateral connections only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The choices are declared with the model's options (pedattr.models.config).
from pedattr.models.config import TOP_DOWN_MODES, UPSAMPLE_MODES


def interpolation_matrix(size_in: int, size_out: int, mode: str, like: Tensor) -> Tensor:
    """The [size_out, size_in] matrix of 1-D ``F.interpolate`` (linear without align_corners,
    or nearest), read off by interpolating the identity so it matches PyTorch exactly.

    Both modes are separable, so a 2-D resize is U_h @ X @ U_w^T: the ALM folds the matrices
    into its sampling weights, and the graph exports as plain MatMul.
    """
    eye = torch.eye(size_in, dtype=like.dtype, device=like.device).unsqueeze(0)  # [1, in, in]
    options = dict(mode="linear", align_corners=False) if mode == "bilinear" else dict(mode=mode)
    return F.interpolate(eye, size=size_out, **options)[0].T


@dataclass(frozen=True)
class ResizedMap:
    """A feature map resized to a pyramid level's size, kept as ``rows @ features @ cols^T``.

    The top-down path only upsamples and concatenates, so every level is a channel
    concatenation of lateral maps, each resized by a (composed) linear map per axis. Keeping
    the factors instead of the product lets the ALM fold the resize into its sampling weights
    (see :mod:`pedattr.models.alm`): no upsampled map or concatenation is ever materialised.

    Attributes:
        features: the lateral map, [B, C, h, w].
        rows: [H, h] resize matrix along the height, None for identity.
        cols: [W, w] resize matrix along the width, None for identity.
    """

    features: Tensor
    rows: Tensor | None = None
    cols: Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the level this map belongs to, as Python ints.

        Ints rather than traced sizes: the sizes follow from the fixed input size, so an exported
        graph (ONNX, torch.export) holds the resize matrices and the ALM's sampling grid as
        constants instead of computing them from Shape operators at run time.
        """
        height = self.features.shape[-2] if self.rows is None else self.rows.shape[0]
        width = self.features.shape[-1] if self.cols is None else self.cols.shape[0]
        return int(height), int(width)

    def resized(self, size: tuple[int, int], mode: str) -> ResizedMap:
        """This map upsampled further to ``size``: the new matrices compose with the old."""
        rows = interpolation_matrix(self.size[0], size[0], mode, self.features)
        cols = interpolation_matrix(self.size[1], size[1], mode, self.features)
        return ResizedMap(
            self.features,
            rows if self.rows is None else rows @ self.rows,
            cols if self.cols is None else cols @ self.cols,
        )

    def dense(self) -> Tensor:
        """The resized map itself, [B, C, H, W]."""
        x = self.features
        if self.cols is not None:
            x = x @ self.cols.T
        if self.rows is not None:
            x = self.rows @ x
        return x


#: A pyramid level X_i: the channel concatenation of its maps, higher levels first.
Level = Sequence[ResizedMap]


def level_maps(level: Tensor | Level) -> list[ResizedMap]:
    """A level as its list of (resized) maps, concatenated along channels; a dense tensor is one
    map without resize."""
    return [ResizedMap(level)] if isinstance(level, Tensor) else list(level)


def dense_level(level: Tensor | Level) -> Tensor:
    """X_i as one [B, C, H, W] tensor (for visualisation, tests and max pooling)."""
    if isinstance(level, Tensor):
        return level
    return torch.cat([part.dense() for part in level], dim=1)


class FeaturePyramid(nn.Module):
    """X_3 = f(phi_3) (eq. 2); X_i = [g(X_{i+1}), f(phi_i)] for lower levels (eq. 1).

    ``f`` is a lateral 1x1 conv (with bias) to ``dim`` channels and ``g`` an upsampling; the
    higher level comes first in each concatenation, and no BN, ReLU or smoothing conv follows
    (as in the authors' code). Level i therefore has ``dim * (number of levels above it + 1)``
    channels: 3d / 2d / d for three levels.

    Levels are returned factorised, as lists of :class:`ResizedMap` (``dense_level`` gives the
    tensor). Upsampling is exactly ``F.interpolate``'s, written as a matrix per axis.

    The Table 1 variants (``top_down``): "add" sums the upsampled higher level and the lateral
    map, X_i = g(X_{i+1}) + f(phi_i), as FPN does (every level then has d channels, and the sum
    is materialised); "none" keeps the lateral maps alone, X_i = f(phi_i).

    Args:
        in_channels: channels of the backbone taps, lowest level (largest map) first.
        dim: d, the lateral width (256 in the paper).
        upsample: "bilinear" (authors' code, align_corners=False) or "nearest" (paper text).
        top_down: "concat" (eq. 1, the paper's), "add" or "none".
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        *,
        dim: int = 256,
        upsample: str = "bilinear",
        top_down: str = "concat",
    ):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if top_down not in TOP_DOWN_MODES:
            raise ValueError(f"top_down must be one of {TOP_DOWN_MODES}, got {top_down!r}")
        self.upsample = upsample
        self.top_down = top_down
        self.laterals = nn.ModuleList(nn.Conv2d(c, dim, kernel_size=1) for c in in_channels)
        num_levels = len(in_channels)
        if top_down == "concat":
            self.out_channels = [dim * (num_levels - i) for i in range(num_levels)]
        else:
            self.out_channels = [dim] * num_levels

    def forward(self, features: Sequence[Tensor]) -> list[list[ResizedMap]]:
        """Fuse backbone taps (lowest level first) into pyramid levels (lowest level first)."""
        level = [ResizedMap(self.laterals[-1](features[-1]))]  # X_3 = f(phi_3)   eq. 2
        levels = [level]
        for lateral, feature in zip(self.laterals[-2::-1], features[-2::-1], strict=True):
            reduced = lateral(feature)  # f(phi_i), [B, d, H_i, W_i]
            level = self._combine(level, reduced)
            levels.append(level)
        return levels[::-1]

    def _combine(self, higher: list[ResizedMap], reduced: Tensor) -> list[ResizedMap]:
        """X_i from the level above and this level's lateral map, by ``top_down``."""
        if self.top_down == "none":
            return [ResizedMap(reduced)]  # X_i = f(phi_i)
        size = tuple(int(s) for s in reduced.shape[-2:])  # ints: see ResizedMap.size
        upsampled = [part.resized(size, self.upsample) for part in higher]  # g(X_{i+1})
        if self.top_down == "concat":
            return [*upsampled, ResizedMap(reduced)]  # X_i = [g(X_{i+1}), f(phi_i)]   eq. 1
        return [ResizedMap(dense_level(upsampled) + reduced)]  # X_i = g(X_{i+1}) + f(phi_i)
