"""Evaluators: ``reset()`` / ``process(batch, outputs)`` / ``evaluate()``, fed by one forward.

An evaluator sees every batch of an evaluation loader together with what
:func:`~pedattr.evaluation.forward.forward_batch` said about it (a
:class:`~pedattr.evaluation.forward.BatchOutput`), and turns them into a report at the end, as
detectron2's ``DatasetEvaluator`` does. :func:`run_evaluators` runs the model over a loader once
and feeds any number of evaluators:

* :class:`MetricsEvaluator`: the paper's metrics
  (:class:`~pedattr.evaluation.metrics.MetricsReport`);
* :class:`LocalizationEvaluator`: how well the boxes and activation peaks point at the
  ground-truth boxes (:class:`~pedattr.evaluation.localization.LocalizationReport`);
* :class:`PredictionsCollector`: the raw :class:`~pedattr.evaluation.forward.Predictions`, for
  callers that gather shards across processes (the trainer) or choose thresholds (calibration).

``pedattr eval`` (:func:`pedattr.evaluation.evaluate.checkpoint_report`) runs the first two;
:func:`predict_loader` is :func:`run_evaluators` with a collector.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pedattr.data.dataset import Batch, FailureTracker, SpecialFileError, open_image_file
from pedattr.data.description import DatasetDescription
from pedattr.evaluation.forward import BatchOutput, Predictions, forward_batch
from pedattr.evaluation.localization import LocalizationReport, localization_scores
from pedattr.evaluation.metrics import AttributeEvaluator, MetricsReport
from pedattr.models.localization import (
    boxes_to_pixels,
    level_names,
    level_sizes,
    points_to_pixels,
)


class DatasetEvaluator:
    """The evaluator protocol: forget, see batches one by one, report once.

    :func:`run_evaluators` calls :meth:`reset` before the first batch, :meth:`process` for every
    batch with at least one readable image, and :meth:`evaluate` after the last.
    """

    def reset(self) -> None:
        """Forget every batch processed so far."""

    def process(self, batch: Batch, outputs: BatchOutput) -> None:
        """Take in one batch (labels, rows in the description) and the model's outputs on it."""

    def evaluate(self) -> Any:
        """The report on every batch processed since the last :meth:`reset`."""
        raise NotImplementedError


class PredictionsCollector(DatasetEvaluator):
    """Keeps the outputs of every batch; :meth:`evaluate` returns them as one
    :class:`~pedattr.evaluation.forward.Predictions`, in loader order (not de-duplicated; see
    :meth:`~pedattr.evaluation.forward.Predictions.sorted_by_index`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._parts: list[Predictions] = []

    def process(self, batch: Batch, outputs: BatchOutput) -> None:
        self._parts.append(Predictions.from_batch(batch, outputs))

    def evaluate(self) -> Predictions:
        """Raises: ValueError: no batch was processed."""
        if not self._parts:
            raise ValueError("nothing to evaluate: the loader yielded no readable image")
        return Predictions.concatenate(self._parts)


class MetricsEvaluator(DatasetEvaluator):
    """The paper's metrics (:func:`~pedattr.evaluation.metrics.compute_metrics`) over all batches.

    Args:
        attribute_names: the M attributes, in label-column order.
        threshold: one threshold for all attributes, or one per attribute.

    Raises:
        ValueError: a per-attribute threshold of the wrong length.
    """

    def __init__(
        self,
        attribute_names: Sequence[str],
        threshold: float | Sequence[float] | np.ndarray = 0.5,
    ) -> None:
        self._arrays = AttributeEvaluator(attribute_names, threshold)

    def reset(self) -> None:
        self._arrays.reset()

    def process(self, batch: Batch, outputs: BatchOutput) -> None:
        """Raises: ValueError: malformed labels or probabilities, or another attribute count."""
        self._arrays.process(batch.labels, outputs.probs)

    def evaluate(self) -> MetricsReport:
        """Raises: ValueError: no batch was processed."""
        return self._arrays.report()


class LocalizationEvaluator(DatasetEvaluator):
    """The boxes (and activation peaks, when recorded) against the dataset's ground-truth boxes:
    :func:`localization_report` on every batch processed.

    Args:
        model: the model whose outputs are processed (its configuration says how to map boxes
            to pixels).
        description: the prepared dataset the batches come from, with its ``boxes.json``.
        tolerance: pixels by which every ground-truth box is widened for the pointing games.
        source: what the model came from (a checkpoint path), named in messages.

    Raises:
        ValueError: a negative tolerance, a dataset without boxes or a model without boxes.
    """

    def __init__(
        self,
        model: nn.Module,
        description: DatasetDescription,
        *,
        tolerance: float = 0.0,
        source: str | os.PathLike = "the model",
    ) -> None:
        check_tolerance(tolerance)
        check_localizable(model, description, source)
        self.model = model
        self.description = description
        self.tolerance = tolerance
        self._collector = PredictionsCollector()

    def reset(self) -> None:
        self._collector.reset()

    def process(self, batch: Batch, outputs: BatchOutput) -> None:
        self._collector.process(batch, outputs)

    def evaluate(self) -> LocalizationReport:
        """Raises: ValueError: no batch was processed."""
        predictions = self._collector.evaluate()
        return localization_report(
            self.model, self.description, predictions, tolerance=self.tolerance
        )


def run_evaluators(
    model: nn.Module,
    loader: Iterable[Batch],
    evaluators: Sequence[DatasetEvaluator],
    *,
    device: torch.device | str,
    tracker: FailureTracker | None = None,
    autocast_dtype: torch.dtype | None = None,
    description: str = "evaluate",
    peaks: bool = False,
) -> list[Any]:
    """Run ``model`` once over an evaluation loader and feed every batch to ``evaluators``.

    Args:
        model: an :class:`~pedattr.models.model.AttributeModel` (or a wrapper returning its
            output), already on ``device``; it is switched to eval mode and back afterwards.
        loader: :class:`~pedattr.data.dataset.Batch` es, as from ``build_loader(...,
            train=False)``; batches left empty by unreadable images are skipped.
        evaluators: reset first, then given each batch with its
            :class:`~pedattr.evaluation.forward.BatchOutput`.
        device: where the images go.
        tracker: counts unreadable images and stops when too many failed; its final check runs
            after the last batch.
        autocast_dtype: run the forward under ``torch.autocast`` with this dtype.
        description: the progress bar's label.
        peaks: also record where each ALM's activation map peaks (``BatchOutput.peaks``).

    Returns:
        What each evaluator's ``evaluate()`` returns, in order.

    Raises:
        ValueError: the loader yielded no readable image.
    """
    device = torch.device(device)
    for evaluator in evaluators:
        evaluator.reset()
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in tqdm(loader, desc=description, leave=False, dynamic_ncols=True):
            if tracker is not None:
                tracker.update(batch)
            if len(batch.images) == 0:
                continue
            outputs = forward_batch(
                model,
                batch.images,
                part_boxes=batch.part_boxes,
                device=device,
                autocast_dtype=autocast_dtype,
                peaks=peaks,
            )
            for evaluator in evaluators:
                evaluator.process(batch, outputs)
            seen += 1
    finally:
        model.train(was_training)
    if tracker is not None:
        tracker.finish()
    if not seen:
        raise ValueError("nothing to evaluate: the loader yielded no readable image")
    return [evaluator.evaluate() for evaluator in evaluators]


def predict_loader(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    device: torch.device | str,
    tracker: FailureTracker | None = None,
    autocast_dtype: torch.dtype | None = None,
    description: str = "evaluate",
    peaks: bool = False,
) -> Predictions:
    """Run ``model`` over the batches of an evaluation loader (:func:`run_evaluators` with a
    :class:`PredictionsCollector`; the arguments are the same).

    Returns:
        The predictions in loader order (not de-duplicated; see
        :meth:`~pedattr.evaluation.forward.Predictions.sorted_by_index`).

    Raises:
        ValueError: the loader yielded no readable image.
    """
    [predictions] = run_evaluators(
        model,
        loader,
        [PredictionsCollector()],
        device=device,
        tracker=tracker,
        autocast_dtype=autocast_dtype,
        description=description,
        peaks=peaks,
    )
    return predictions


# --- localization of a model's predictions on a prepared dataset ------------------------------


def check_tolerance(tolerance: float) -> None:
    """A pointing-game tolerance is a finite number of pixels, 0 or more."""
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"the pointing-game tolerance must be >= 0 pixels, got {tolerance}")


def check_localizable(
    model: nn.Module, description: DatasetDescription, checkpoint: str | os.PathLike
) -> None:
    """Raise ValueError unless the dataset has ground-truth boxes and the model predicts boxes
    (``checkpoint`` names the model in the message)."""
    if description.boxes is None:
        raise ValueError(
            f"{description.root}: the dataset has no ground-truth boxes (boxes.json), so the "
            "learned boxes cannot be scored"
        )
    if not model.config.has_boxes:
        kind = model.config.arch if model.config.arch != "alm" else f"{model.config.head}-head"
        raise ValueError(f"{checkpoint}: a {kind} model predicts no boxes")


def image_sizes(description: DatasetDescription, indices: np.ndarray) -> np.ndarray:
    """(height, width) of each sample's image, upright, [N, 2], read from the file headers."""
    from PIL import Image

    sizes = []
    for index in indices:
        path = description.image_path(int(index))
        description.check_inside(path)
        try:
            handle = open_image_file(path)
        except SpecialFileError as err:  # its message does not name the file
            raise ValueError(f"{path}: {err}") from None
        with handle, Image.open(handle) as image:
            width, height = image.size
            # EXIF orientations 5-8 turn the image by 90 degrees, as the pipeline shows it.
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
        sizes.append((height, width))
    return np.array(sizes, dtype=np.float64).reshape(-1, 2)


def localization_report(
    model: nn.Module,
    description: DatasetDescription,
    predictions: Predictions,
    *,
    tolerance: float = 0.0,
) -> LocalizationReport:
    """How well the learned boxes point at the ground-truth boxes (paper Sec. 4.3).

    Each attribute's box at each level is mapped to the original image's pixels
    (:func:`pedattr.models.localization.boxes_to_pixels`) and scored over the positive images that
    carry a ground-truth box for it: pointing-game hit rate and mean IoU per level, at the best
    level and at the level that won the max vote. The dataset may name the attributes whose
    position varies from image to image (the generator does), which get their own mean.
    ``fixed_box_reference`` scores a box that ignores the image (:func:`fixed_box_reference`)
    the same way, for comparison. When the predictions carry the peaks of the ALMs' activation
    maps, ``activation_peaks`` scores those points the same way (hit rate and follow; a point
    has no IoU): where the level's features put each attribute's evidence, box or not. A
    ``tolerance`` in pixels widens every ground-truth box for all three pointing games.
    """
    check_tolerance(tolerance)
    check_localizable(model, description, "the model")
    config = model.config
    sizes = image_sizes(description, predictions.indices)
    pixel_boxes = boxes_to_pixels(
        predictions.boxes,
        level_sizes=level_sizes(model, config.input_size),
        input_size=config.input_size,
        image_size=sizes,
        align_corners=config.align_corners,
    )
    names = [description.image_names[int(i)] for i in predictions.indices]
    ground_truth = [description.boxes.get(name, {}) for name in names]
    varying = (description.meta.get("source") or {}).get("location_varying_attributes")
    # The boxes, the peaks and the fixed box are scored on the same images and ground truth.
    score = functools.partial(
        localization_scores,
        gt_boxes=ground_truth,
        attribute_names=list(config.attribute_names),
        labels=predictions.labels,
        location_varying=varying,
        tolerance=tolerance,
        image_sizes=sizes,
    )
    levels = level_names(config)
    scores = score(pixel_boxes, winning_level=predictions.winners, level_names=levels)
    peak_scores = None
    if predictions.peaks is not None:
        # Each peak ([N, L, M, 2] input pixels) is scored as a zero-size box; it has no IoU.
        points = points_to_pixels(predictions.peaks, input_size=config.input_size, image_size=sizes)
        points_as_boxes = np.concatenate([points, points], axis=-1)
        peak_scores = _without_iou(score(points_as_boxes, level_names=levels))
    fixed = fixed_box_reference(description, sizes, config.attribute_names)
    return LocalizationReport(
        boxes=scores,
        fixed_box_reference=score(fixed[:, None], level_names=("fixed",)),
        activation_peaks=peak_scores,
    )


def _without_iou(value: Any) -> Any:
    """A copy of a scores dict without its ``mean_iou`` entries (a point has no IoU)."""
    if isinstance(value, dict):
        return {k: _without_iou(v) for k, v in value.items() if k != "mean_iou"}
    return value


def fixed_box_reference(
    description: DatasetDescription, image_size: np.ndarray, attribute_names: Sequence[str]
) -> np.ndarray:
    """A box that ignores the image: each attribute's mean training box, [N, M, 4] pixels.

    Ground-truth boxes of the training split are averaged per attribute in coordinates relative
    to the image size, then placed in each evaluated image. What this constant box scores is
    what an attribute's position alone gives away; boxes that follow the evidence beat it.
    Attributes without training boxes get the whole image.
    """
    train = description.split_indices("train")
    train_sizes = image_sizes(description, train)
    relative = np.tile([0.0, 0.0, 1.0, 1.0], (len(attribute_names), 1))
    for j, name in enumerate(attribute_names):
        boxes = [
            np.asarray(description.boxes[description.image_names[i]][name]) / np.tile(size[::-1], 2)
            for i, size in zip(train, train_sizes, strict=True)
            if name in description.boxes.get(description.image_names[i], {})
        ]
        if boxes:
            relative[j] = np.mean(boxes, axis=0)
    scale = np.tile(image_size[:, ::-1], 2)[:, None, :]  # [N, 1, 4]: W, H, W, H
    return relative[None] * scale
