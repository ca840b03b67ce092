"""A straightforward re-creation of the authors' full ALM model, for conversion tests.

Module names follow the authors' released ``InceptionNet`` (``main_branch``, ``finalfc``,
``latlayer_3b/4d/5b``, ``st_3b/4d/5b``) so that its state dict has the layout of their
checkpoints. It shares nothing with pedattr's model except BN-Inception itself: the pyramid is
written out, and the ALMs are the literal per-attribute loop of ``tests/reference_alm.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pedattr.models.bninception import BNInception
from tests.reference_alm import ReferenceALMLevel


class AuthorsALM(nn.Module):
    """The authors' ``InceptionNet``: BN-Inception, concatenating pyramid, 3 ALM groups, global fc.

    Args:
        num_attrs: M.
        align_corners: the ALM sampler's grid convention (True = the authors' PyTorch <= 1.2).
    """

    def __init__(self, num_attrs: int, *, align_corners: bool = True) -> None:
        super().__init__()
        self.main_branch = BNInception()
        self.finalfc = nn.Linear(1024, num_attrs)
        self.latlayer_3b = nn.Conv2d(320, 256, kernel_size=1)
        self.latlayer_4d = nn.Conv2d(608, 256, kernel_size=1)
        self.latlayer_5b = nn.Conv2d(1024, 256, kernel_size=1)
        self.st_3b = ReferenceALMLevel(num_attrs, 256 * 3, align_corners=align_corners)
        self.st_4d = ReferenceALMLevel(num_attrs, 256 * 2, align_corners=align_corners)
        self.st_5b = ReferenceALMLevel(num_attrs, 256, align_corners=align_corners)

    @staticmethod
    def _upsample_cat(top: Tensor, lateral: Tensor) -> Tensor:
        up = F.interpolate(top, size=lateral.shape[2:], mode="bilinear", align_corners=False)
        return torch.cat([up, lateral], 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Logits of the four branches.

        Args:
            x: images already normalised with ImageNet mean/std (RGB), [B, 3, H, W].

        Returns:
            (pred_3b, pred_4d, pred_5b, main_pred), each [B, M].
        """
        feat_3b, feat_4d, feat_5b = self.main_branch(x)
        main_pred = self.finalfc(F.adaptive_avg_pool2d(feat_5b, 1).flatten(1))
        fusion_5b = self.latlayer_5b(feat_5b)
        fusion_4d = self._upsample_cat(fusion_5b, self.latlayer_4d(feat_4d))
        fusion_3b = self._upsample_cat(fusion_4d, self.latlayer_3b(feat_3b))
        pred_3b = self.st_3b(fusion_3b)[0]
        pred_4d = self.st_4d(fusion_4d)[0]
        pred_5b = self.st_5b(fusion_5b)[0]
        return pred_3b, pred_4d, pred_5b, main_pred


def save_authors_file(path: Path, state_dict: dict[str, Tensor], *, legacy: bool) -> None:
    """Save like the authors: DataParallel prefix, epoch and a numpy float64 best_accu.

    With ``legacy`` the file uses the pre-1.6 (non-zip) format of their PyTorch <= 1.2, and the
    numpy scalar is renamed to numpy 1.x's ``numpy.core.multiarray.scalar``, as in their files.
    """
    payload = {
        "epoch": 8,
        "state_dict": {"module." + k: v for k, v in state_dict.items()},
        "best_accu": np.float64(0.8),
    }
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    if legacy:
        data = path.read_bytes()
        new = b"numpy._core.multiarray\nscalar"
        assert new in data
        path.write_bytes(data.replace(new, b"numpy.core.multiarray\nscalar"))
