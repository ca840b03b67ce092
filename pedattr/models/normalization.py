"""Input normalisation, kept inside the model so a checkpoint or an ONNX file carries it.

Models take RGB images as float in [0, 1] or as uint8 in 0..255 (what the input pipeline
yields). BN-Inception's public weights were trained on BGR
images in 0..255 minus a per-channel mean ("caffe"); the authors' code, like most later code,
feeds ImageNet-normalised RGB instead and fine-tunes through the mismatch ("imagenet").
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import Tensor, nn

# The table of normalisations is the choice list of ModelConfig.normalization, declared with it.
from pedattr.models.config import NORMALIZATIONS, NormalizationSpec

__all__ = ["NORMALIZATIONS", "InputNormalization", "NormalizationSpec"]


class InputNormalization(nn.Module):
    """RGB in [0, 1] -> the backbone's input convention (channel order, range, mean, std)."""

    def __init__(self, name: str = "imagenet") -> None:
        super().__init__()
        if name not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)}, got {name!r}")
        self.name = name
        spec = NORMALIZATIONS[name]
        self.bgr = spec.bgr
        # Fold scale into the affine map: (x * scale - mean) / std = x * a + b.
        a = torch.tensor([spec.scale / s for s in spec.std]).view(1, 3, 1, 1)
        b = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std, strict=True)]).view(
            1, 3, 1, 1
        )
        # Not persistent: derived from the name, which the checkpoint records.
        self.register_buffer("multiplier", a, persistent=False)
        self.register_buffer("offset", b, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Normalise RGB images given as float in [0, 1] or uint8 in 0..255."""
        multiplier = self.multiplier
        if not images.is_floating_point():
            images = images.to(multiplier.dtype)
            multiplier = multiplier / 255
        if self.bgr:
            images = images.flip(1)
        return images * multiplier + self.offset

    def extra_repr(self) -> str:
        return f"{self.name!r}: {asdict(NORMALIZATIONS[self.name])}"
