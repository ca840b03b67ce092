"""A small training loop with deep supervision, and batched prediction."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

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
) -> Tensor:
    """One optimisation step with deep supervision; returns the (detached) loss.

    Every branch of the model is supervised by the same labels and the branch losses are
    summed (paper Sec. 3.3). With ``autocast_dtype`` the forward runs in mixed precision while
    the loss is computed in float32; ``scaler`` (fp16) scales the loss against underflow.
    """
    with torch.autocast(
        images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
    ):
        output = model(images)
    branch_logits = [logits.float() for logits in output.branch_logits]
    loss = deep_supervision_loss(branch_logits, labels, criterion)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    device: torch.device | str = "cpu",
    description: str = "train",
) -> float:
    """One pass over ``batches`` of (images, labels); returns the mean loss.

    Images are RGB, uint8 or float in [0, 1], as the model takes them.
    """
    model.train()
    total, count = 0.0, 0
    progress = tqdm(batches, desc=description, leave=False, dynamic_ncols=True)
    for images, labels in progress:
        images, labels = images.to(device), labels.to(device)
        loss = train_step(model, images, labels, optimizer, criterion)
        value = loss.item()  # one device sync per step
        total += value * images.shape[0]
        count += images.shape[0]
        progress.set_postfix(loss=f"{value:.4f}")
    return total / max(count, 1)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Fused probabilities for every batch; returns (labels [N, M], probabilities [N, M])."""
    model.eval()
    all_labels, all_probs = [], []
    for images, labels in tqdm(batches, desc="evaluate", leave=False, dynamic_ncols=True):
        output = model(images.to(device))
        all_probs.append(torch.sigmoid(output.logits).cpu().numpy())
        all_labels.append(labels.numpy())
    return np.concatenate(all_labels), np.concatenate(all_probs)
