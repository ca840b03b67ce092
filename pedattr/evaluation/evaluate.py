"""Evaluation: a model's probabilities over a prepared split, and the paper's metrics on them.

:func:`checkpoint_report` is what ``pedattr eval`` runs: load a checkpoint and a prepared
dataset, check that they describe the same attributes in the same order, run the model over a
split once (:func:`pedattr.evaluation.evaluators.run_evaluators`) and return an
:class:`EvaluationReport` from the metrics and, if asked for, the localization evaluators.
:func:`predict_split` returns the raw :class:`~pedattr.evaluation.forward.Predictions` of a
split (calibration uses them).

Thresholds: 0.5 is the default, as in every published PAR number, so that results stay
comparable with the paper's tables; thresholds calibrated on the validation split
(:mod:`pedattr.evaluation.calibration`) are used only when asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pedattr.checkpoint.format import load_checkpoint, model_from_checkpoint
from pedattr.checkpoint.thresholds import resolve_thresholds
from pedattr.data.dataset import Batch, FailureTracker, build_loader
from pedattr.data.description import DatasetDescription, carve_validation, load_description
from pedattr.evaluation.evaluators import (
    LocalizationEvaluator,
    MetricsEvaluator,
    check_tolerance,
    fixed_box_reference,
    image_sizes,
    localization_report,
    predict_loader,
    run_evaluators,
)
from pedattr.evaluation.forward import Predictions
from pedattr.evaluation.localization import LocalizationReport, format_localization_table
from pedattr.evaluation.metrics import MetricsReport, format_metrics_table
from pedattr.models.onnx_runtime import OnnxModel, is_onnx_path
from pedattr.utils.json import json_safe

# Importable from here as before the evaluators had their own module.
__all__ = [
    "AttributeMismatchError",
    "EvaluationReport",
    "Predictions",
    "check_attributes",
    "check_tolerance",
    "checkpoint_report",
    "evaluate_checkpoint",
    "fixed_box_reference",
    "format_localization",
    "format_report",
    "image_sizes",
    "localization_report",
    "localization_summary",
    "predict_loader",
    "predict_split",
    "read_part_regions",
    "with_training_split",
]

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
    loader = _split_loader(
        model, load_description(data), split, batch_size, workers, device, part_regions
    )
    tracker = tracker if tracker is not None else FailureTracker()
    return predict_loader(
        model, loader, device=device, tracker=tracker, description=split, peaks=peaks
    )


def _split_loader(
    model: nn.Module,
    description: DatasetDescription,
    split: str,
    batch_size: int,
    workers: int,
    device: torch.device,
    part_regions: Mapping[str, dict] | None,
) -> Iterable[Batch]:
    """The evaluation loader of one split at the model's input size."""
    return build_loader(
        description,
        split,
        batch_size=batch_size,
        train=False,
        workers=workers,
        input_size=tuple(_unwrap(model).config.input_size),
        pin_memory=device.type == "cuda",
        part_regions=part_regions,
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


@dataclass
class EvaluationReport:
    """What ``pedattr eval`` says about one checkpoint on one split.

    Attributes:
        checkpoint: the checkpoint evaluated.
        data: the prepared dataset's folder.
        split: the split evaluated.
        num_images: images evaluated (readable ones).
        unreadable_images: images skipped because they could not be read.
        threshold_mode: "default" or "calibrated".
        thresholds: 0.5, or one threshold per attribute.
        attributes: the attribute names, in output order.
        metrics: the paper's metrics, with per-attribute mA by name.
        localization: the boxes against the ground-truth boxes, when asked for.
    """

    checkpoint: str
    data: str
    split: str
    num_images: int
    unreadable_images: int
    threshold_mode: str
    thresholds: float | list[float]
    attributes: list[str]
    metrics: MetricsReport
    localization: LocalizationReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe dict ``pedattr eval --json`` writes (NaN stored as None)."""
        extra = {}
        if self.localization is not None:
            extra["localization"] = self.localization.to_dict()
        return json_safe(
            {
                "checkpoint": self.checkpoint,
                "data": self.data,
                "split": self.split,
                "num_images": self.num_images,
                "unreadable_images": self.unreadable_images,
                "threshold_mode": self.threshold_mode,
                "thresholds": self.thresholds,
                "attributes": list(self.attributes),
                "metrics": self.metrics.to_dict(),
                **extra,
            }
        )


def checkpoint_report(
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
) -> EvaluationReport:
    """Evaluate a checkpoint on one split of a prepared dataset with the paper's metrics.

    The model runs over the split once; a :class:`~pedattr.evaluation.evaluators.MetricsEvaluator`
    and, with ``localization``, a
    :class:`~pedattr.evaluation.evaluators.LocalizationEvaluator` see every batch.

    Args:
        checkpoint: a pedattr checkpoint (``.safetensors``), or a model ``pedattr export``
            wrote (``.onnx``, float32 or INT8), which onnxruntime runs; its metadata gives
            the attributes and thresholds, and it has no activation peaks to score.
        data: the folder ``pedattr prepare`` wrote, or its loaded description.
        split: "train", "val", "test" or "trainval".
        thresholds: "default" (0.5 for every attribute, comparable with published numbers) or
            "calibrated" (the per-attribute thresholds stored by ``pedattr calibrate``).
        batch_size: images per forward.
        workers: DataLoader worker processes (0 decodes in this process).
        device: where the model runs.
        localization: also score the learned boxes against the dataset's ground-truth boxes
            (:func:`~pedattr.evaluation.evaluators.localization_report`); needs a model with
            boxes (ALM, attention masks, rigid parts) and a dataset with boxes.
        part_regions: rigid-parts models: a file of per-image keypoints or part boxes
            (:func:`pedattr.data.part_regions.read_part_file`); None uses fixed proportions.
        tolerance: with ``localization``, pixels (of the original image) by which every
            ground-truth box is widened on each side for the pointing game; 0 is the strict game.

    Returns:
        The report; :meth:`EvaluationReport.to_dict` is what ``pedattr eval --json`` writes.

    Raises:
        CheckpointError: the checkpoint cannot be read.
        FileNotFoundError: ``data`` is not a prepared dataset folder.
        AttributeMismatchError: the checkpoint and the dataset disagree on the attributes.
        ValueError: calibrated thresholds were asked for but the checkpoint has none, or a bad
            split name.
    """
    check_tolerance(tolerance)  # before minutes of prediction
    model, run = _model_and_run(checkpoint, device)
    chosen = resolve_thresholds(model, checkpoint, thresholds)  # before minutes of prediction
    description = with_training_split(load_description(data), split, run, checkpoint)
    names = list(model.attribute_names)
    check_attributes(
        names,
        description.attribute_names,
        model_source=str(checkpoint),
        data_source=str(description.root),
    )
    evaluators = [MetricsEvaluator(names, chosen)]
    if localization:  # its checks run now, before minutes of prediction
        located = LocalizationEvaluator(model, description, tolerance=tolerance, source=checkpoint)
        evaluators.append(located)
    device = torch.device(device)
    regions = read_part_regions(part_regions, model.config)
    loader = _split_loader(model, description, split, batch_size, workers, device, regions)
    tracker = FailureTracker()
    metrics, *located_report = run_evaluators(
        model,
        loader,
        evaluators,
        device=device,
        tracker=tracker,
        description=split,
        peaks=localization,
    )
    return EvaluationReport(
        checkpoint=str(checkpoint),
        data=str(description.root),
        split=split,
        num_images=metrics.num_samples,
        unreadable_images=tracker.failed,
        threshold_mode=thresholds,
        thresholds=chosen,
        attributes=names,
        metrics=metrics,
        localization=located_report[0] if located_report else None,
    )


def _model_and_run(
    path: str | os.PathLike, device: torch.device | str
) -> tuple[nn.Module | OnnxModel, dict | None]:
    """The model a file holds, on ``device``, and the training run it records (None for an
    exported ``.onnx`` model, which onnxruntime runs)."""
    if is_onnx_path(path):
        return OnnxModel(path, device=device), None
    stored = load_checkpoint(path)  # read once: the weights and the run that wrote them
    return model_from_checkpoint(stored, path).to(device).eval(), stored.extra.get("run")


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
    """:func:`checkpoint_report` (same arguments) as the JSON-safe dict ``pedattr eval --json``
    writes, NaN stored as None.

    Returns:
        ``checkpoint``, ``data``, ``split``, ``num_images`` (evaluated),
        ``unreadable_images``, ``threshold_mode``, ``thresholds`` (0.5 or one per attribute),
        ``attributes``, ``metrics`` (what :func:`~pedattr.evaluation.metrics.compute_metrics`
        returns plus ``per_attribute``, attribute name -> mA) and, with ``localization``,
        ``localization``.
    """
    return checkpoint_report(
        checkpoint,
        data,
        split=split,
        thresholds=thresholds,
        batch_size=batch_size,
        workers=workers,
        device=device,
        localization=localization,
        part_regions=part_regions,
        tolerance=tolerance,
    ).to_dict()


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


def localization_summary(report: LocalizationReport | Mapping[str, Any]) -> dict[str, Any]:
    """:meth:`LocalizationReport.summary
    <pedattr.evaluation.localization.LocalizationReport.summary>` as a dict, for a report or
    the ``localization`` dict of a JSON report."""
    if not isinstance(report, LocalizationReport):
        report = LocalizationReport.from_dict(report)
    return report.summary().to_dict()


def _nan_if_none(value: Any) -> float:
    return math.nan if value is None else float(value)


def format_report(report: EvaluationReport | Mapping[str, Any]) -> str:
    """A report of :func:`checkpoint_report` (or its dict) as text: a heading, the paper's
    table and the per-attribute mA (undefined attributes say why)."""
    if isinstance(report, EvaluationReport):
        report = report.to_dict()
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


def format_localization(scores: LocalizationReport | Mapping[str, Any]) -> str:
    """A :class:`~pedattr.evaluation.localization.LocalizationReport` (or its dict) as text: the
    table, then the activation peaks and the fixed-box reference."""
    if isinstance(scores, LocalizationReport):
        scores = json_safe(scores.to_dict())  # as the JSON has it, NaN as None
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
