"""Weighted binary cross-entropy for attribute recognition (ALM paper, eq. 5) and deep supervision.

Three weightings of the per-attribute BCE circulate under the ALM name; all are offered, with
``a_m`` the positive ratio of attribute ``m`` in the training labels:

========== ============================ ===================== =====================================
name       positive term weight         negative term weight  source
========== ============================ ===================== =====================================
paper      exp(-a_m)                    exp(-a_m)             ALM paper, eq. 5 as printed
authors    exp(1 - a_m)                 1                     ALM released code (default)
deepmar    exp(1 - a_m)                 exp(a_m)              Li et al., DeepMAR (ACPR 2015)
none       1                            1                     plain BCE
========== ============================ ===================== =====================================

``authors`` is the default because it is what produced the paper's numbers: the released code
misplaces a bracket (acknowledged by the authors) so that only the positive term is weighted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pedattr.data import annotations
from pedattr.data.annotations import UNKNOWN

WEIGHTINGS = ("paper", "authors", "deepmar", "none")


def positive_ratio(labels: Tensor | Sequence[Sequence[float]]) -> Tensor:
    """Per-attribute positive ratio of a label matrix, ignoring unknown (2) entries.

    Args:
        labels: Labels [N, M] with values 0, 1 or 2.

    Returns:
        Float32 tensor [M]: positives / known entries per attribute.

    Raises:
        ValueError: if the labels are not 2-D or an attribute has no known entry.
    """
    labels = torch.as_tensor(labels).cpu().numpy()
    return torch.from_numpy(annotations.positive_ratio(labels)).float()


def _term_weights(ratio: Tensor, weighting: str) -> tuple[Tensor, Tensor]:
    """Returns the (positive, negative) term weights [M] of a weighting (see module table)."""
    ones = torch.ones_like(ratio)
    if weighting == "paper":
        return torch.exp(-ratio), torch.exp(-ratio)
    if weighting == "authors":
        return torch.exp(1 - ratio), ones
    if weighting == "deepmar":
        return torch.exp(1 - ratio), torch.exp(ratio)
    return ones, ones.clone()


def _check_ratio(ratio: Tensor) -> None:
    """Raises ValueError unless ``ratio`` is a non-empty 1-D tensor of values in [0, 1]."""
    if ratio.ndim != 1 or ratio.numel() == 0:
        raise ValueError(f"positive_ratio must be 1-D with M entries; got {tuple(ratio.shape)}")
    if not ((ratio >= 0) & (ratio <= 1)).all():  # also rejects NaN
        raise ValueError("positive_ratio values must lie in [0, 1]")


class WeightedBCELoss(nn.Module):
    """Per-attribute weighted BCE on logits, ignoring unknown (2) labels.

    For logit ``z`` and label ``y`` of attribute ``m`` the element loss is
    ``-[w_pos_m * y * log s(z) + w_neg_m * (1 - y) * log(1 - s(z))]``, with the weights of the
    chosen weighting (module docstring):

    * ``"paper"``: ``w_pos = w_neg = exp(-a_m)`` (ALM paper, eq. 5 text);
    * ``"authors"``: ``w_pos = exp(1 - a_m)``, ``w_neg = 1`` (ALM released code, a bracket slip
      acknowledged by the authors; the default, as it produced the reported numbers);
    * ``"deepmar"``: ``w_pos = exp(1 - a_m)``, ``w_neg = exp(a_m)`` (Li et al., DeepMAR);
    * ``"none"``: ``w_pos = w_neg = 1`` (plain BCE).

    The loss is the sum of the weighted element losses divided by the number of known entries,
    i.e. the mean over batch and attributes when no label is unknown. Entries labelled 2 get
    zero weight, so they contribute neither loss nor gradient; a batch with no known entry gives
    a loss of 0.

    Args:
        positive_ratio: ``a_m`` for the M attributes, values in [0, 1] (see ``positive_ratio``).
        weighting: One of ``"paper"``, ``"authors"``, ``"deepmar"``, ``"none"``.
    """

    def __init__(
        self, positive_ratio: Tensor | Sequence[float], weighting: str = "authors"
    ) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
        ratio = torch.as_tensor(positive_ratio, dtype=torch.float32).detach().clone()
        _check_ratio(ratio)
        self.weighting = weighting
        pos_weight, neg_weight = _term_weights(ratio, weighting)
        # Buffers follow .to(device); not persistent since they derive from constructor arguments.
        self.register_buffer("positive_ratio", ratio, persistent=False)
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self.register_buffer("neg_weight", neg_weight, persistent=False)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            logits: Attribute logits [B, M].
            labels: Labels [B, M] with values 0, 1 or 2 (unknown).

        Returns:
            Scalar loss.
        """
        self._check_shapes(logits, labels)
        known = labels != UNKNOWN  # [B, M]
        target = (labels == 1).to(logits.dtype)  # [B, M]
        weight = torch.where(target.bool(), self.pos_weight, self.neg_weight) * known  # [B, M]
        elementwise = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (weight * elementwise).sum() / known.sum().clamp(min=1)

    def _check_shapes(self, logits: Tensor, labels: Tensor) -> None:
        """Raises ValueError on mismatched shapes or a wrong number of attributes."""
        if logits.shape != labels.shape:
            raise ValueError(
                f"logits shape {tuple(logits.shape)} != labels shape {tuple(labels.shape)}"
            )
        num_attributes = self.positive_ratio.numel()
        if logits.ndim != 2 or logits.shape[1] != num_attributes:
            raise ValueError(
                f"expected logits [B, {num_attributes}] (one per positive_ratio entry); "
                f"got {tuple(logits.shape)}"
            )

    def extra_repr(self) -> str:
        return f"weighting={self.weighting!r}, num_attributes={self.positive_ratio.numel()}"


def deep_supervision_loss(
    branch_logits: Sequence[Tensor], labels: Tensor, criterion: nn.Module
) -> Tensor:
    """Sums the criterion over the branches, each supervised by the same labels.

    The ALM paper (Sec. 3.3) supervises the three ALM levels and the global branch separately;
    the total loss is the sum of the four branch losses.

    Args:
        branch_logits: Logits [B, M] of each branch.
        labels: Labels [B, M] shared by all branches.
        criterion: Loss module called as ``criterion(logits, labels)``.

    Returns:
        Scalar sum of the branch losses.
    """
    if len(branch_logits) == 0:
        raise ValueError("branch_logits is empty")
    return torch.stack([criterion(logits, labels) for logits in branch_logits]).sum()
