"""``pedattr predict``: predict files, folders, globs and videos; print, write JSON lines, draw.

:func:`run_predict` does the work so that the command-line layer only parses arguments. Each
input that cannot be read gives one line ``NAME: reason`` on stderr and the others go on; the
caller turns :attr:`PredictSummary.failed` into the exit status.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from pedattr.inference.predictor import Prediction, PredictionFailure, Predictor
from pedattr.inference.sources import (
    Expanded,
    estimate_count,
    expand_paths,
    is_video,
    iter_inputs,
    read_crops,
)
from pedattr.inference.visualize import draw_attribute_boxes, save_image
from pedattr.utils.allocator import keep_freed_memory
from pedattr.utils.io import atomic_write

#: Show a progress bar from this many inputs on (and only on a terminal).
PROGRESS_FROM = 10
#: Widest image-name column of the table; longer names keep their end.
NAME_WIDTH = 48


@dataclass
class PredictSummary:
    """What a :func:`run_predict` call did."""

    predicted: int = 0
    failed: list[str] = field(default_factory=list)  # one line per failed input
    overlays: int = 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _fit(name: str, width: int) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def format_row(prediction: Prediction, width: int) -> str:
    """One table line: the image name, then its positive attributes with probabilities."""
    positives = ", ".join(f"{n} {prediction.probabilities[n]:.2f}" for n in prediction.attributes)
    return f"{_fit(prediction.name, width):<{width}}  {positives or '-'}"


class _OverlayNames:
    """Unique overlay file names in a folder: the image's stem, frame and crop, then -2, -3."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def __call__(self, prediction: Prediction) -> Path:
        stem = Path(prediction.source).stem or "image"
        if prediction.frame is not None:
            stem += f"_frame{prediction.frame:06d}"
        if prediction.crop is not None:
            stem += "_crop" + "-".join(str(v) for v in prediction.crop)
        name, number = stem, 1
        while name in self.used:
            number += 1
            name = f"{stem}-{number}"
        self.used.add(name)
        return self.folder / f"{name}.png"


class _Run:
    """One ``pedattr predict`` run: streams results to the table, the JSON lines and overlays."""

    def __init__(
        self, predictor: Predictor, visualize: Path | None, width: int, out: TextIO, err: TextIO
    ) -> None:
        self.predictor = predictor
        self.visualize = visualize
        self.overlay_path = _OverlayNames(visualize) if visualize is not None else None
        self.width = width
        self.out, self.err = out, err
        self.summary = PredictSummary()

    def run(self, inputs: Iterable[Any], total: int | None, json_stream: TextIO | None) -> None:
        results = self.predictor.predict_iter(inputs, keep_images=self.visualize is not None)
        show = total is None or total >= PROGRESS_FROM
        bar = tqdm(
            results,
            total=total,
            desc="predict",
            unit="image",
            disable=None if show else True,  # None: only on a terminal
            leave=False,
            dynamic_ncols=True,
        )
        with bar:
            for result in bar:
                if isinstance(result, PredictionFailure):
                    self.summary.failed.append(str(result))
                    tqdm.write(str(result), file=self.err)
                else:
                    self._report(result, json_stream)

    def _report(self, prediction: Prediction, json_stream: TextIO | None) -> None:
        self.summary.predicted += 1
        tqdm.write(format_row(prediction, self.width), file=self.out)
        if json_stream is not None:
            json_stream.write(json.dumps(prediction.to_dict(), allow_nan=False) + "\n")
        if self.overlay_path is not None:
            overlay = draw_attribute_boxes(prediction.preview, prediction)
            save_image(overlay, self.overlay_path(prediction))
            self.summary.overlays += 1


def _name_width(expanded: Sequence[Expanded], crops: bool) -> int:
    """The table's name column: the longest input name (videos add frame and crop), capped."""
    suffix = len(" [frame 000000, crop 000,000,000,000]" if crops else " [frame 000000]")
    lengths = [len("image")]
    for item in expanded:
        if not isinstance(item, PredictionFailure):
            lengths.append(len(os.fspath(item)) + (suffix if is_video(item) else 0))
    return min(NAME_WIDTH, max(lengths))


def run_predict(
    checkpoint: str | os.PathLike,
    paths: Sequence[str],
    *,
    json_path: str | os.PathLike | None = None,
    visualize: str | os.PathLike | None = None,
    thresholds: str = "default",
    batch_size: int = 32,
    every: int = 1,
    crops: str | os.PathLike | None = None,
    recursive: bool = False,
    device: str = "auto",
    peaks: bool = True,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> PredictSummary:
    """Predict every input and report: a table on ``out``, failures on ``err``.

    Args:
        checkpoint: a pedattr checkpoint.
        paths: files, folders, glob patterns and videos (see :mod:`pedattr.inference.sources`).
        json_path: write one JSON object per image (:meth:`Prediction.to_dict`) per line here;
            the file appears when the run ends, also when Ctrl-C or SIGTERM ends it (then with
            the images predicted until then).
        visualize: write one overlay PNG per image into this folder
            (:func:`~pedattr.inference.visualize.draw_attribute_boxes`).
        thresholds: "default" (0.5) or "calibrated" (stored in the checkpoint).
        batch_size: images per forward pass.
        every: for videos, every N-th frame.
        crops: a crops file for videos.
        recursive: search folders' subfolders too.
        device: "auto", "cpu", "cuda" or "cuda:N".
        peaks: record where each level's activation map peaks (JSON ``peaks``, the crosses of
            the overlays); False skips that work.
        out, err: where the table and the failures go (default stdout and stderr).

    Raises:
        CheckpointError, ValueError, FileNotFoundError: a bad checkpoint, argument or crops file,
            before anything is predicted.
        KeyboardInterrupt: after Ctrl-C (or SIGTERM, which ``pedattr`` turns into
            :class:`~pedattr.errors.Interrupted`), once what was predicted is written and
            reported.
    """
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    crop_list = read_crops(crops) if crops is not None else None
    keep_freed_memory()  # a long run of forward passes (docs/performance.md)
    predictor = Predictor.from_checkpoint(
        checkpoint, device=device, thresholds=thresholds, batch_size=batch_size, peaks=peaks
    )
    expanded = expand_paths(paths, recursive=recursive)
    out, err = out or sys.stdout, err or sys.stderr
    width = _name_width(expanded, crops=crop_list is not None)
    rule = "0.5" if thresholds == "default" else "calibrated per attribute"
    print(f"{'image':<{width}}  attributes above the threshold ({rule})", file=out)
    run = _Run(predictor, None if visualize is None else Path(visualize), width, out, err)
    inputs = iter_inputs(expanded, every=every, crops=crop_list)
    total = estimate_count(expanded, every=every, crops=crop_list)
    interrupted: KeyboardInterrupt | None = None

    def predict_all(stream: TextIO | None) -> None:
        nonlocal interrupted
        try:
            run.run(inputs, total, stream)
        except KeyboardInterrupt as stop:  # keep what was predicted: every JSON line is whole
            interrupted = stop  # Ctrl-C, or SIGTERM under `pedattr` (then an Interrupted)

    if json_path is None:
        predict_all(None)
    else:

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as stream:
                predict_all(stream)

        atomic_write(json_path, write)
    summary = run.summary
    done = "interrupted after" if interrupted is not None else "predicted"
    line = f"{done} {_count(summary.predicted, 'image')}"
    if summary.failed:
        line += f"; {_count(len(summary.failed), 'input')} failed (listed on stderr)"
    if json_path is not None:
        line += f"; wrote {json_path}"
    if visualize is not None:
        line += f"; {summary.overlays} overlays in {visualize}"
    print(line, file=out)
    if interrupted is not None:
        raise interrupted
    return summary
