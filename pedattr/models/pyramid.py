"""Feature pyramid with top-down concatenation (paper Sec. 3.1, eq. 1-2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UPSAMPLE_MODES = ("bilinear", "nearest")


def interpolation_matrix(size_in: int, size_out: int, mode: str, like: Tensor) -> Tensor:
    """The [size_out, size_in] matrix of 1-D ``F.interpolate`` (linear without align_corners,
    or nearest), read off by interpolating the identity so it matches PyTorch exactly."""
    eye = torch.eye(size_in, dtype=like.dtype, device=like.device).unsqueeze(0)  # [1, in, in]
    options = dict(mode="linear", align_corners=False) if mode == "bilinear" else dict(mode=mode)
    return F.interpolate(eye, size=size_out, **options)[0].T


def resize_separable(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """``F.interpolate(x, size, mode)`` (bilinear: align_corners=False) as two matrix products.

    Both modes are separable, so resizing is U_h @ X @ U_w^T. On CPU this runs several times
    faster than ``upsample_bilinear2d`` and its backward, and exports as plain MatMul.
    """
    u_h = interpolation_matrix(x.shape[-2], size[0], mode, x)  # [H_out, H]
    u_w = interpolation_matrix(x.shape[-1], size[1], mode, x)  # [W_out, W]
    return u_h @ (x @ u_w.T)  # [B, C, H_out, W_out]


class FeaturePyramid(nn.Module):
    """X_3 = f(phi_3) (eq. 2); X_i = [g(X_{i+1}), f(phi_i)] for lower levels (eq. 1).

    ``f`` is a lateral 1x1 conv (with bias) to ``dim`` channels and ``g`` an upsampling; the
    higher level comes first in each concatenation, and no BN, ReLU or smoothing conv follows
    (as in the authors' code). Level i therefore has ``dim * (number of levels above it + 1)``
    channels: 3d / 2d / d for three levels.

    Args:
        in_channels: channels of the backbone taps, lowest level (largest map) first.
        dim: d, the lateral width (256 in the paper).
        upsample: "bilinear" (authors' code, align_corners=False) or "nearest" (paper text).
    """

    def __init__(self, in_channels: Sequence[int], *, dim: int = 256, upsample: str = "bilinear"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        self.laterals = nn.ModuleList(nn.Conv2d(c, dim, kernel_size=1) for c in in_channels)
        num_levels = len(in_channels)
        self.out_channels = [dim * (num_levels - i) for i in range(num_levels)]

    def _upsample(self, x: Tensor, size: torch.Size) -> Tensor:
        return resize_separable(x, tuple(size), self.upsample)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Fuse backbone taps (lowest level first) into pyramid levels (lowest level first)."""
        top = self.laterals[-1](features[-1])  # [B, d, H3, W3]   eq. 2
        levels = [top]
        for lateral, feature in zip(self.laterals[-2::-1], features[-2::-1], strict=True):
            reduced = lateral(feature)  # [B, d, Hi, Wi]
            top = torch.cat([self._upsample(top, reduced.shape[-2:]), reduced], dim=1)  # eq. 1
            levels.append(top)
        return levels[::-1]
