"""Evaluation: a model's probabilities over a prepared split, and the paper's metrics on them.

:func:`predict_loader` runs a model over any evaluation loader (one process, or one rank's shard
in a distributed run) and returns :class:`Predictions` keyed by the samples' rows in the dataset
description, so that shards can be concatenated and de-duplicated. :func:`evaluate_checkpoint`
is what ``pedattr eval`` runs: load a checkpoint and a prepared dataset, check that they describe
the same attributes in the same order, predict a split and compute
:func:`pedattr.evaluation.metrics.compute_metrics`.

Thresholds: 0.5 is the default, as in every published PAR number, so that results stay
comparable with the paper's tables; thresholds calibrated on the validation split
(:mod:`pedattr.evaluation.calibration`) are used only when asked for.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pedattr.checkpoint.format import load_checkpoint, model_from_checkpoint
from pedattr.checkpoint.thresholds import resolve_thresholds
from pedattr.data.dataset import (
    Batch,
    FailureTracker,
    SpecialFileError,
    build_loader,
    open_image_file,
)
from pedattr.data.description import DatasetDescription, carve_validation, load_description
from pedattr.evaluation.localization import localization_scores
from pedattr.evaluation.metrics import compute_metrics, format_metrics_table
from pedattr.models.localization import (
    boxes_to_pixels,
    level_names,
    level_sizes,
    max_vote_branch,
    points_to_pixels,
    recording_activation_peaks,
)
from pedattr.utils.json import json_safe

_SUMMARY_KEYS = ("mA", "accuracy", "precision", "recall", "f1")


class AttributeMismatchError(ValueError):
    """A model and a dataset disagree on the attributes or their order."""


def check_attributes(
    model_names: Sequence[str],
    data_names: Sequence[str],
    *,
    model_source: str,
    data_source: str,
) -> None:
    """Raise :class:`AttributeMismatchError` unless both lists name the same attributes in order.

    Output column m of a model is attribute m of the dataset it is evaluated on; a model trained
    on another attribute list, or the same list in another order, would be scored against the
    wrong labels without any visible error. The message says exactly what differs.

    Args:
        model_names: the model's attributes, in output order.
        data_names: the dataset's attributes, in label-column order.
        model_source: what the model came from (a checkpoint path), for the message.
        data_source: what the dataset came from (its folder), for the message.
    """
    model_names, data_names = list(model_names), list(data_names)
    if model_names == data_names:
        return
    head = (
        f"{model_source} has {len(model_names)} attributes but {data_source} has {len(data_names)}"
    )
    model_set, data_set = set(model_names), set(data_names)
    only_model = [name for name in model_names if name not in data_set]
    only_data = [name for name in data_names if name not in model_set]
    if only_model or only_data:
        parts = []
        if only_model:
            parts.append(f"only in the model: {only_model}")
        if only_data:
            parts.append(f"only in the dataset: {only_data}")
        hint = ""
        if not only_model:  # the dataset has extra attributes: a subset can be prepared
            hint = "; `pedattr prepare --attributes` keeps a subset of the dataset's attributes"
        raise AttributeMismatchError(f"{head}: {'; '.join(parts)}{hint}")
    if len(model_names) != len(data_names):  # same sets, so one side repeats a name
        raise AttributeMismatchError(f"{head}: the same names, but some are repeated")
    position = next(
        i for i, (a, b) in enumerate(zip(model_names, data_names, strict=True)) if a != b
    )
    raise AttributeMismatchError(
        f"{model_source} and {data_source} have the same {len(model_names)} attributes in a "
        f"different order: position {position} is {model_names[position]!r} in the model but "
        f"{data_names[position]!r} in the dataset; prepare the dataset with `pedattr prepare "
        f"--attributes` in the model's order"
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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    """Run ``model`` over the batches of an evaluation loader.

    Args:
        model: an :class:`~pedattr.models.model.AttributeModel` (or a wrapper returning its
            output), already on ``device``; it is switched to eval mode and back afterwards.
        loader: :class:`~pedattr.data.dataset.Batch` es, as from ``build_loader(...,
            train=False)``; batches left empty by unreadable images are skipped.
        device: where the images go.
        tracker: counts unreadable images and stops when too many failed; its final check runs
            after the last batch.
        autocast_dtype: run the forward under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16``); probabilities are computed in float32 either way.
        description: the progress bar's label.
        peaks: also record where each ALM's activation map peaks (``Predictions.peaks``).

    Returns:
        The predictions in loader order (not de-duplicated; see
        :meth:`Predictions.sorted_by_index`).

    Raises:
        ValueError: the loader yielded no readable image.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    parts: list[Predictions] = []
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=description, leave=False, dynamic_ncols=True):
                if tracker is not None:
                    tracker.update(batch)
                if len(batch.images) == 0:
                    continue
                parts.append(_predict_batch(model, batch, device, autocast_dtype, peaks))
    finally:
        model.train(was_training)
    if tracker is not None:
        tracker.finish()
    if not parts:
        raise ValueError("nothing to evaluate: the loader yielded no readable image")
    return Predictions.concatenate(parts)


def _predict_batch(
    model: nn.Module,
    batch: Batch,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    peaks: bool = False,
) -> Predictions:
    images = batch.images.to(device, non_blocking=True)
    inputs = {}
    if batch.part_boxes is not None:  # per-image body parts for a rigid-parts model
        inputs["part_boxes"] = batch.part_boxes.to(device, non_blocking=True)
    with (
        _autocast(device, autocast_dtype),
        recording_activation_peaks(model, enabled=peaks) as recorded,
    ):
        output = model(images, **inputs)
    if len(recorded) > 1:
        raise RuntimeError(f"one forward recorded {len(recorded)} sets of activation peaks")
    # Sigmoid in float32: in half precision, probabilities near 1 round to exactly 1.0.
    probs = torch.sigmoid(output.logits.float())
    boxes = winners = None
    if output.boxes is not None:
        boxes = output.boxes.float().cpu().numpy()
        winners = max_vote_branch([logits.float().cpu() for logits in output.branch_logits])
    return Predictions(
        indices=batch.indices.numpy().astype(np.int64),
        labels=batch.labels.numpy().astype(np.float32),
        probs=probs.cpu().numpy(),
        boxes=boxes,
        winners=winners,
        peaks=recorded[0].numpy() if recorded else None,
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def predict_split(
    model: nn.Module,
    data: DatasetDescription | str | os.PathLike,
    split: str,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    tracker: FailureTracker | None = None,
    part_regions: Mapping[str, dict] | None = None,
    peaks: bool = False,
) -> Predictions:
    """Predictions of ``model`` over one split of a prepared dataset, at the model's input size.

    The model is moved to ``device``. Unreadable images are skipped and counted by ``tracker``
    (a default :class:`FailureTracker` when None: at most 1 % may fail). ``part_regions``
    (:func:`pedattr.data.part_regions.read_part_file`) places a rigid-parts model's parts per
    image; ``peaks`` records where the ALMs' activation maps peak.
    """
    device = torch.device(device)
    model.to(device)
    loader = build_loader(
        load_description(data),
        split,
        batch_size=batch_size,
        train=False,
        workers=workers,
        input_size=tuple(_unwrap(model).config.input_size),
        pin_memory=device.type == "cuda",
        part_regions=part_regions,
    )
    tracker = tracker if tracker is not None else FailureTracker()
    return predict_loader(
        model, loader, device=device, tracker=tracker, description=split, peaks=peaks
    )


def with_training_split(
    description: DatasetDescription,
    split: str,
    run: dict | None,
    checkpoint: str | os.PathLike,
) -> DatasetDescription:
    """``description`` with the validation images ``pedattr train`` held out, when needed.

    A dataset without a validation split (RAP v1) gets one carved from its training split by
    ``pedattr train``; a checkpoint the run wrote records ``data.val_fraction`` and
    ``data.val_seed``, so the same images are drawn again here, and "train" then means the
    images the run trained on. Other datasets and splits are returned unchanged.
    """
    if split not in ("train", "val") or "val" in set(description.splits.tolist()):
        return description
    data = (run or {}).get("data") or {}
    if data.get("train_split") != "train" or "val_fraction" not in data:
        if split == "train":
            return description
        raise ValueError(
            f"{description.root} has no validation split and {checkpoint} does not record one "
            "held out by `pedattr train`; give --split explicitly"
        )
    carved, _ = carve_validation(description, data["val_fraction"], data["val_seed"])
    return carved


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data: DatasetDescription | str | os.PathLike,
    *,
    split: str = "test",
    thresholds: str = "default",
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    localization: bool = False,
    part_regions: str | os.PathLike | None = None,
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a prepared dataset with the paper's metrics.

    Args:
        checkpoint: a pedattr checkpoint (``.safetensors``).
        data: the folder ``pedattr prepare`` wrote, or its loaded description.
        split: "train", "val", "test" or "trainval".
        thresholds: "default" (0.5 for every attribute, comparable with published numbers) or
            "calibrated" (the per-attribute thresholds stored by ``pedattr calibrate``).
        batch_size: images per forward.
        workers: DataLoader worker processes (0 decodes in this process).
        device: where the model runs.
        localization: also score the learned boxes against the dataset's ground-truth boxes
            (:func:`localization_report`); needs a model with boxes (ALM, attention masks,
            rigid parts) and a dataset with boxes.
        part_regions: rigid-parts models: a file of per-image keypoints or part boxes
            (:func:`pedattr.data.part_regions.read_part_file`); None uses fixed proportions.
        tolerance: with ``localization``, pixels (of the original image) by which every
            ground-truth box is widened on each side for the pointing game; 0 is the strict game.

    Returns:
        A JSON-safe report (NaN stored as None): ``checkpoint``, ``data``, ``split``,
        ``num_images`` (evaluated), ``unreadable_images``, ``threshold_mode``, ``thresholds``
        (0.5 or one per attribute), ``attributes`` and ``metrics``: what
        :func:`~pedattr.evaluation.metrics.compute_metrics` returns plus ``per_attribute``
        (attribute name -> mA), and with ``localization`` the :func:`localization_report`.

    Raises:
        CheckpointError: the checkpoint cannot be read.
        FileNotFoundError: ``data`` is not a prepared dataset folder.
        AttributeMismatchError: the checkpoint and the dataset disagree on the attributes.
        ValueError: calibrated thresholds were asked for but the checkpoint has none, or a bad
            split name.
    """
    check_tolerance(tolerance)  # before minutes of prediction
    stored = load_checkpoint(checkpoint)  # read once: the weights and the run that wrote them
    model = model_from_checkpoint(stored, checkpoint).to(device).eval()
    chosen = resolve_thresholds(model, checkpoint, thresholds)  # before minutes of prediction
    run = stored.extra.get("run")
    description = with_training_split(load_description(data), split, run, checkpoint)
    check_attributes(
        model.attribute_names,
        description.attribute_names,
        model_source=str(checkpoint),
        data_source=str(description.root),
    )
    if localization:
        _check_localizable(model, description, checkpoint)
    tracker = FailureTracker()
    predictions = predict_split(
        model,
        description,
        split,
        batch_size=batch_size,
        workers=workers,
        device=device,
        tracker=tracker,
        part_regions=read_part_regions(part_regions, model.config),
        peaks=localization,
    )
    metrics = compute_metrics(predictions.labels, predictions.probs, chosen)
    names = list(model.attribute_names)
    metrics["per_attribute"] = dict(zip(names, metrics["per_attribute_mA"], strict=True))
    extra = {}
    if localization:
        extra["localization"] = localization_report(
            model, description, predictions, tolerance=tolerance
        )
    return json_safe(
        {
            "checkpoint": str(checkpoint),
            "data": str(description.root),
            "split": split,
            "num_images": len(predictions),
            "unreadable_images": tracker.failed,
            "threshold_mode": thresholds,
            "thresholds": chosen,
            "attributes": names,
            "metrics": metrics,
            **extra,
        }
    )


def read_part_regions(path: str | os.PathLike | None, config: Any) -> dict[str, dict] | None:
    """The part-regions file of a rigid-parts model (None: none given).

    Raises:
        ValueError: a file was given for a model without the rigid-parts head.
    """
    if path is None:
        return None
    if config.arch != "alm" or config.head != "parts":
        raise ValueError(f"{path}: part regions are for the rigid-parts head (model.head=parts)")
    from pedattr.data.part_regions import read_part_file

    return read_part_file(path)


def _check_localizable(
    model: nn.Module, description: DatasetDescription, checkpoint: str | os.PathLike
) -> None:
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


def check_tolerance(tolerance: float) -> None:
    """A pointing-game tolerance is a finite number of pixels, 0 or more."""
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"the pointing-game tolerance must be >= 0 pixels, got {tolerance}")


def localization_report(
    model: nn.Module,
    description: DatasetDescription,
    predictions: Predictions,
    *,
    tolerance: float = 0.0,
) -> dict[str, Any]:
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
    _check_localizable(model, description, "the model")
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
    if predictions.peaks is not None:
        # Each peak ([N, L, M, 2] input pixels) is scored as a zero-size box; it has no IoU.
        points = points_to_pixels(predictions.peaks, input_size=config.input_size, image_size=sizes)
        peak_scores = score(np.concatenate([points, points], axis=-1), level_names=levels)
        scores["activation_peaks"] = _without_iou(peak_scores)
    fixed = fixed_box_reference(description, sizes, config.attribute_names)
    scores["fixed_box_reference"] = score(fixed[:, None], level_names=("fixed",))
    return scores


def _without_iou(value: Any) -> Any:
    """A copy of a scores dict without its ``mean_iou`` entries (a point has no IoU)."""
    if isinstance(value, dict):
        return {k: _without_iou(v) for k, v in value.items() if k != "mean_iou"}
    return value


def _peak_summary(peaks: dict | None, group: str) -> dict:
    best = peaks["mean"][group]["best_level"] if peaks else {}
    return {
        "activation_peak_hit_rate": best.get("hit_rate"),
        "activation_peak_follow": best.get("follow"),
    }


def localization_summary(report: dict) -> dict:
    """The hit rate, IoU and follow at each attribute's best level (and the max-vote hit rate) of
    a :func:`localization_report`, averaged over the location-varying attributes when the
    dataset names them, else over all scored ones; with the fixed box's hit rate."""
    group = "location_varying" if report["mean"]["location_varying"]["attributes"] else "all"
    mean = report["mean"][group]
    reference = report["fixed_box_reference"]["mean"][group]["levels"]["fixed"]
    return {
        "attributes": group,
        "count": mean["attributes"],
        "best_level_hit_rate": mean["best_level"]["hit_rate"],
        "best_level_mean_iou": mean["best_level"]["mean_iou"],
        "best_level_follow": mean["best_level"]["follow"],
        **_peak_summary(report.get("activation_peaks"), group),
        "max_vote_hit_rate": (mean.get("max_vote") or {}).get("hit_rate"),
        "fixed_box_hit_rate": reference["hit_rate"],
    }


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


def _nan_if_none(value: Any) -> float:
    return math.nan if value is None else float(value)


def format_report(report: dict[str, Any]) -> str:
    """A report of :func:`evaluate_checkpoint` as text: a heading, the paper's table and the
    per-attribute mA (undefined attributes say why)."""
    # The report is JSON-safe (NaN stored as None); the table wants NaN back.
    metrics = dict(report["metrics"])
    for key in _SUMMARY_KEYS:
        metrics[key] = _nan_if_none(metrics[key])
    metrics["per_attribute_mA"] = [_nan_if_none(v) for v in metrics["per_attribute_mA"]]
    threshold = (
        "threshold 0.5"
        if report["threshold_mode"] == "default"
        else "calibrated per-attribute thresholds"
    )
    skipped = report.get("unreadable_images", 0)
    skipped_text = f", {skipped} unreadable skipped" if skipped else ""
    heading = (
        f"{report['checkpoint']} on {report['data']} ({report['split']}, "
        f"{report['num_images']} images{skipped_text}, {threshold})"
    )
    return f"{heading}\n{format_metrics_table(metrics, report['attributes'])}"


def format_localization(scores: dict[str, Any]) -> str:
    """:func:`localization_report` as text: the table, then the fixed-box reference."""
    from pedattr.evaluation.localization import format_localization_table

    lines = [format_localization_table(scores)]
    peaks = scores.get("activation_peaks")
    if peaks:
        for group in ("location_varying", "all"):
            mean = peaks["mean"][group]
            if mean["attributes"]:
                cells = ", ".join(
                    f"{level} {100 * mean['levels'][level]['hit_rate']:.1f} %"
                    for level in peaks["levels"]
                )
                follow = mean["best_level"].get("follow")
                lines.append(
                    f"peaks of the activation maps (each classifier at every cell), "
                    f"{group.replace('_', '-')} mean hit: {cells}; best level "
                    f"{100 * mean['best_level']['hit_rate']:.1f} %, follow "
                    f"{'-' if follow is None else f'{follow:.2f}'}"
                )
    reference = scores.get("fixed_box_reference")
    if reference:
        for group in ("location_varying", "all"):
            mean = reference["mean"][group]
            if mean["attributes"]:
                hit = mean["levels"]["fixed"]["hit_rate"]
                iou = mean["levels"]["fixed"]["mean_iou"]
                lines.append(
                    f"reference, a fixed box per attribute (mean training box), "
                    f"{group.replace('_', '-')} mean: hit {100 * hit:.1f} %, IoU {iou:.2f}"
                )
    return "\n".join(lines)
