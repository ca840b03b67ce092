"""One optimisation step with deep supervision (the body of ``pedattr train``'s loop)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pedattr.engine.loss import deep_supervision_loss


def train_step(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    deep_supervision: bool = True,
    part_boxes: Tensor | None = None,
) -> Tensor:
    """One optimisation step with deep supervision; returns the (detached) loss.

    Every branch of the model is supervised by the same labels and the branch losses are
    summed (paper Sec. 3.3). With ``deep_supervision=False`` only the fused logits are
    supervised (Table 1's rows before deep supervision). With ``autocast_dtype`` the forward
    runs in mixed precision while the loss is computed in float32 (in float64 for a float64
    model); ``scaler`` (fp16) scales the loss against underflow. ``part_boxes`` go to a
    rigid-parts model (per-image body parts).
    """
    inputs = {} if part_boxes is None else {"part_boxes": part_boxes}
    with torch.autocast(
        images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
    ):
        output = model(images, **inputs)
    if deep_supervision:
        branch_logits = [_at_least_float32(logits) for logits in output.branch_logits]
        loss = deep_supervision_loss(branch_logits, labels, criterion)
    else:
        loss = criterion(_at_least_float32(output.logits), labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def _at_least_float32(logits: Tensor) -> Tensor:
    """Logits in float32 for the loss, also under autocast; float64 stays float64."""
    return logits if logits.dtype == torch.float64 else logits.float()
