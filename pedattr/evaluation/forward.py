"""The one batched forward that ``pedattr eval``, the trainer's validation and ``Predictor`` share.

:func:`forward_batch` runs a model on a batch of uint8 images at its input size and returns a
:class:`BatchOutput`: the fused probabilities, the ALM boxes, the branch that won each max vote
and, when asked for, where each ALM's activation map peaks. Everything that turns those into
metrics (:mod:`pedattr.evaluation.evaluators`) or into pixels of the original images
(:class:`pedattr.inference.predictor.Predictor`) starts from this one result, so that a file
gets the same probabilities whichever command looks at it.

The activation peaks are recorded by forward pre-hooks on the ALM heads
(:func:`pedattr.models.localization.recording_activation_peaks`); the hooks live and die
inside :func:`forward_batch`, so callers see the peaks as one more output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pedattr.data.dataset import Batch
from pedattr.models.localization import max_vote_branch, recording_activation_peaks
from pedattr.models.onnx_runtime import OnnxModel


@dataclass
class BatchOutput:
    """What one forward says about a batch of B images, as CPU numpy arrays.

    Attributes:
        probs: float32 [B, M], fused sigmoid probabilities (computed in float32).
        boxes: float32 [B, L, M, 4], the ALM boxes (s_x, s_y, t_x, t_y) as
            ``ModelOutput.boxes`` gives them; None for a model without boxes (the baseline).
        winners: int64 [B, M], the branch whose logit won the max vote: the levels in order,
            then the global branch (:func:`~pedattr.models.localization.max_vote_branch`); for
            the baseline, whose one branch is the global one, every entry is 0.
        peaks: float32 [B, L, M, 2], where each ALM's activation map peaks, (x, y) in
            network-input pixels; None unless asked for, and for models without ALM levels.
    """

    probs: np.ndarray
    boxes: np.ndarray | None
    winners: np.ndarray
    peaks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.probs)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def forward_batch(
    model: nn.Module,
    images: Tensor,
    *,
    part_boxes: Tensor | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    peaks: bool = False,
) -> BatchOutput:
    """One forward of ``model`` on ``images``, without gradients.

    Args:
        model: an :class:`~pedattr.models.model.AttributeModel` (or a wrapper such as
            DistributedDataParallel around one), in the mode the caller wants (eval, normally).
        images: uint8 RGB [B, 3, H, W] at the model's input size, on any device.
        part_boxes: float32 [B, 3, 4] head, torso and legs boxes of a rigid-parts model
            (:class:`~pedattr.data.dataset.Batch`), or None.
        device: where the images go; None: where the model's parameters are.
        autocast_dtype: run the forward under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16``); probabilities are computed in float32 either way.
        peaks: also record where each ALM's activation map peaks (:attr:`BatchOutput.peaks`).

    Returns:
        The batch's :class:`BatchOutput`.
    """
    if isinstance(model, OnnxModel):
        return _onnx_forward(model, images, part_boxes)
    device = _model_device(model) if device is None else torch.device(device)
    inputs = {}
    if part_boxes is not None:  # per-image body parts for a rigid-parts model
        inputs["part_boxes"] = part_boxes.to(device, non_blocking=True)
    with (
        torch.inference_mode(),
        _autocast(device, autocast_dtype),
        recording_activation_peaks(model, enabled=peaks) as recorded,
    ):
        output = model(images.to(device, non_blocking=True), **inputs)
    if len(recorded) > 1:
        raise RuntimeError(f"one forward recorded {len(recorded)} sets of activation peaks")
    # Sigmoid in float32: in half precision, probabilities near 1 round to exactly 1.0.
    probs = torch.sigmoid(output.logits.float()).cpu().numpy()
    boxes = None if output.boxes is None else output.boxes.float().cpu().numpy()
    winners = max_vote_branch([logits.float().cpu() for logits in output.branch_logits])
    return BatchOutput(
        probs=probs,
        boxes=boxes,
        winners=winners.astype(np.int64),
        peaks=recorded[0].numpy() if recorded else None,
    )


def _onnx_forward(model: OnnxModel, images: Tensor, part_boxes: Tensor | None) -> BatchOutput:
    """:func:`forward_batch` for an exported model: its outputs as a PyTorch model's.

    The graph returns probabilities rather than logits; the max vote's winner is the branch
    with the largest probability, the same as the largest logit (the sigmoid is increasing)
    except where float32 probabilities saturate to equal values, where the lower level wins as
    for ties of logits. An exported graph has no activation maps, so no peaks.
    """
    if part_boxes is not None:
        raise ValueError(
            f"{model.path}: an exported rigid-parts model places its parts by fixed proportions; "
            "it takes no per-image part regions"
        )
    outputs = model.run(images)
    probs = np.asarray(outputs["probabilities"], dtype=np.float32)
    if "boxes" not in outputs:  # the baseline: its one branch is the global one
        return BatchOutput(probs=probs, boxes=None, winners=np.zeros(probs.shape, np.int64))
    branches = np.asarray(outputs["branch_probabilities"], dtype=np.float32)  # [B, branches, M]
    return BatchOutput(
        probs=probs,
        boxes=np.asarray(outputs["boxes"], dtype=np.float32),
        winners=max_vote_branch(list(branches.transpose(1, 0, 2))).astype(np.int64),
    )


@dataclass
class Predictions:
    """A model's outputs over some samples of a prepared dataset.

    Attributes:
        indices: int64 [N], each sample's row in the dataset description.
        labels: float32 [N, M], 0, 1 or 2 (unknown).
        probs: float32 [N, M], fused sigmoid probabilities.
        boxes: float32 [N, levels, M, 4] as the model returns them; None for the baseline.
        winners: int64 [N, M], the branch whose logit won the max vote (levels in order, then
            the global branch, :func:`pedattr.models.localization.max_vote_branch`); None for the
            baseline.
        peaks: float32 [N, levels, M, 2], where each ALM's activation map peaks, (x, y) in
            network-input pixels (:func:`pedattr.models.localization.recording_activation_peaks`);
            None unless asked for.
    """

    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    boxes: np.ndarray | None = None
    winners: np.ndarray | None = None
    peaks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def from_batch(cls, batch: Batch, output: BatchOutput) -> Predictions:
        """A batch's labels and rows with what :func:`forward_batch` said about its images.

        The max-vote winners are kept only for models with boxes, which they index.
        """
        with_boxes = output.boxes is not None
        return cls(
            indices=batch.indices.numpy().astype(np.int64),
            labels=batch.labels.numpy().astype(np.float32),
            probs=output.probs,
            boxes=output.boxes,
            winners=output.winners if with_boxes else None,
            peaks=output.peaks,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        """All ``parts`` one after the other (batches, or the shards of several processes).

        Raises:
            ValueError: no part given, or some parts have boxes and others do not.
        """
        if not parts:
            raise ValueError("no predictions to concatenate")
        with_boxes = [part.boxes is not None for part in parts]
        if any(with_boxes) and not all(with_boxes):
            raise ValueError("cannot concatenate predictions with and without boxes")
        return cls(
            indices=np.concatenate([part.indices for part in parts]).astype(np.int64),
            labels=np.concatenate([part.labels for part in parts]),
            probs=np.concatenate([part.probs for part in parts]),
            boxes=_concatenate_optional([part.boxes for part in parts]),
            winners=_concatenate_optional([part.winners for part in parts]),
            peaks=_concatenate_optional([part.peaks for part in parts]),
        )

    def sorted_by_index(self) -> Predictions:
        """A copy sorted by ``indices`` with every sample once.

        Distributed evaluation pads the shards to equal length by repeating samples; the
        repeats are dropped here (the first occurrence is kept; all are equal anyway).
        """
        _, first = np.unique(self.indices, return_index=True)  # sorted unique values
        return Predictions(
            indices=self.indices[first].copy(),
            labels=self.labels[first].copy(),
            probs=self.probs[first].copy(),
            boxes=None if self.boxes is None else self.boxes[first].copy(),
            winners=None if self.winners is None else self.winners[first].copy(),
            peaks=None if self.peaks is None else self.peaks[first].copy(),
        )


def _concatenate_optional(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    return np.concatenate(arrays) if all(a is not None for a in arrays) else None
