"""Detect, track and recognise attributes in video: :class:`VideoPipeline`.

For each frame read, the detector finds people and the tracker links them to tracks. Frames are
gathered in windows of ``window`` frames; in each window, each track's best crops (by quality,
at most one in ``attribute_every`` of its frames) go through the attribute model in batches,
every track's evidence is updated (:mod:`pedattr.video.combine`), and the window's frames are
yielded as :class:`FrameResult` s. A track that has not been seen for ``lost_after`` seconds is
finished: its :class:`TrackResult` comes with the frame that ends it.

Examples:
    >>> pipeline = VideoPipeline("best.safetensors", detector="hog", tracker="bytetrack")
    >>> for result in pipeline.frames("vtest.avi"):
    ...     for person in result.people:
    ...         print(result.number, person.track_id, person.attributes)
    >>> summary = pipeline.run("vtest.avi", "out/")   # writes the files (pedattr track)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from pedattr.checkpoint.format import load_model
from pedattr.checkpoint.thresholds import resolve_thresholds
from pedattr.inference.predictor import ImageInput, Prediction, Predictor
from pedattr.inference.visualize import draw_attribute_boxes, save_image
from pedattr.models.model import AttributeModel
from pedattr.utils.device import resolve_device
from pedattr.video.combine import TrackEvidence, crop_quality, crop_region
from pedattr.video.detectors import Detector, build_detector
from pedattr.video.gallery import GalleryCrop, TrackGallery, write_gallery
from pedattr.video.page import write_index
from pedattr.video.sources import Frame, FrameSource
from pedattr.video.tracking import Tracker
from pedattr.video.writers import (
    AnnotatedVideo,
    FramesWriter,
    TracksWriter,
    crop_image,
    prepare_output,
    thumbnail_path,
    write_summary,
)

STAGES = ("decode", "detect", "track", "attributes", "write")
#: Attributes drawn next to a person in ``annotated.mp4``.
DRAWN_ATTRIBUTES = 3


@dataclass
class Person:
    """One tracked person in one frame.

    Attributes:
        track_id: from 1, the same in every output.
        box: (x0, y0, x1, y1) pixels of the frame.
        score: the detection score.
        region: the cropped region (box padded, at the model's aspect, clipped to the frame).
        quality: the crop's quality (:func:`pedattr.video.combine.crop_quality`).
        prediction: the attribute model's answer on this crop, when it ran on it.
    """

    track_id: int
    box: tuple[float, float, float, float]
    score: float
    region: tuple[int, int, int, int]
    quality: float
    prediction: Prediction | None = None
    #: The track's combined attributes so far (drawn on the video).
    track_attributes: list[str] = field(default_factory=list)

    @property
    def attributes(self) -> list[str]:
        return [] if self.prediction is None else list(self.prediction.attributes)


@dataclass
class TrackResult:
    """A finished track and its combined answer."""

    track_id: int
    boxes: list[
        tuple[int, float, tuple[float, float, float, float], float]
    ]  # frame, time, box, score
    probabilities: dict[str, float]
    attributes: list[str]
    thresholds: dict[str, float]
    frames_used: list[int]
    best_frame: int | None
    best_crop: Image.Image | None = field(default=None, repr=False)
    best_prediction: Prediction | None = field(default=None, repr=False)
    best_region: tuple[int, int, int, int] | None = None
    gallery: list[GalleryCrop] = field(default_factory=list, repr=False)

    def best_boxes(self) -> dict[str, dict[str, list[float]]]:
        """The best crop's ALM boxes of the track's attributes, in pixels of the frame."""
        if self.best_prediction is None or self.best_region is None:
            return {}
        x, y = self.best_region[:2]
        return {
            name: {
                level: [round(v + offset, 1) for v, offset in zip(box, (x, y, x, y), strict=True)]
                for level, box in self.best_prediction.boxes[name].items()
            }
            for name in self.attributes
            if name in self.best_prediction.boxes
        }

    def record(
        self, thumbnail: str | None, gallery: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The ``tracks.jsonl`` object (frames counted from 1)."""
        return {
            "id": self.track_id,
            "first_frame": self.boxes[0][0] + 1,
            "last_frame": self.boxes[-1][0] + 1,
            "first_time": round(self.boxes[0][1], 3),
            "last_time": round(self.boxes[-1][1], 3),
            "boxes": [
                [frame + 1, *(round(v, 1) for v in box), round(score, 4)]
                for frame, _, box, score in self.boxes
            ],
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "attributes": self.attributes,
            "thresholds": self.thresholds,
            "frames_used": len(self.frames_used),
            "attributed_frames": [f + 1 for f in self.frames_used],
            "best_frame": None if self.best_frame is None else self.best_frame + 1,
            "best_region": None if self.best_region is None else list(self.best_region),
            "best_boxes": self.best_boxes(),
            "thumbnail": thumbnail,
            "gallery": gallery or [],
        }


@dataclass
class FrameResult:
    """One frame read: ``index`` from 0 (``number`` from 1), time in seconds, the people in it,
    the tracks that ended with it, and whether it failed to decode."""

    index: int
    time: float
    people: list[Person]
    finished: list[TrackResult]
    pixels: np.ndarray | None = field(default=None, repr=False)
    failed: bool = False

    @property
    def number(self) -> int:
        return self.index + 1


@dataclass
class _Track:
    track_id: int
    boxes: list = field(default_factory=list)
    last_step: int = 0
    evidence: TrackEvidence = field(default_factory=TrackEvidence)
    best_quality: float = -1.0
    best_frame: int | None = None
    best_crop: Image.Image | None = None
    best_prediction: Prediction | None = None
    best_region: tuple[int, int, int, int] | None = None
    attributes: list[str] = field(default_factory=list)
    gallery: TrackGallery = field(default_factory=TrackGallery)


def _source(source: FrameSource | str | os.PathLike, **options: Any) -> FrameSource:
    return source if isinstance(source, FrameSource) else FrameSource(source, **options)


class VideoPipeline:
    """Detection, tracking and attributes per person over video (see the module docstring).

    Args:
        checkpoint: a pedattr checkpoint path, or a model
            (:class:`~pedattr.models.model.AttributeModel`, e.g. from :func:`pedattr.load_model`).
        detector: ``hog``, ``file:DETS``, ``torchvision:NAME``, ``ultralytics:WEIGHTS`` or a
            detector object (:class:`pedattr.video.detectors.Detector`).
        tracker: ``bytetrack`` or ``ocsort``.
        detector_weights: the weight file of a ``torchvision:`` detector.
        attribute_every: run the attribute model on at most one in K frames of a track.
        window: frames gathered before their crops go through the model (at least K).
        lost_after: seconds a track may go unseen before it is finished.
        device: where the model runs ("cpu", "auto", "cuda", "cuda:N").
        thresholds: "default" (0.5) or "calibrated" (those stored in the checkpoint).
        batch_size: crops per forward pass.

    Raises:
        CheckpointError, FileNotFoundError: the checkpoint cannot load.
        ValueError, ImportError: the detector or tracker cannot load.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | AttributeModel,
        *,
        detector: str | Detector = "hog",
        tracker: str = "bytetrack",
        detector_weights: str | os.PathLike | None = None,
        attribute_every: int = 1,
        window: int = 8,
        lost_after: float = 1.0,
        device: str = "cpu",
        thresholds: str = "default",
        batch_size: int = 32,
    ) -> None:
        if attribute_every < 1 or window < 1:
            raise ValueError("attribute_every and window must be at least 1")
        self.detector = (
            build_detector(detector, weights=detector_weights)
            if isinstance(detector, str)
            else detector
        )
        Tracker(tracker)  # refuse an unknown tracker or a missing package now
        self.tracker_name = tracker
        source = None
        if isinstance(checkpoint, AttributeModel):
            model = checkpoint
        else:
            source = os.fspath(checkpoint)
            model = load_model(checkpoint, device=resolve_device(device))
        self.names = list(model.attribute_names)
        self.input_size = tuple(model.config.input_size)
        values = resolve_thresholds(model, source or "the model", thresholds)
        self.thresholds = np.broadcast_to(np.asarray(values, np.float64), (len(self.names),))
        self.checkpoint = source
        self.predictor = Predictor(
            model,
            thresholds=self.thresholds.tolist(),
            batch_size=batch_size,
            workers=1,
            source=source,
            peaks=False,
        )
        self.attribute_every = attribute_every
        self.window = max(window, attribute_every)
        self.lost_after = lost_after
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.crops_predicted = 0

    # --- per-frame results --------------------------------------------------------------------

    def frames(
        self, source: FrameSource | str | os.PathLike, **source_options: Any
    ) -> Iterator[FrameResult]:
        """The results of every frame of ``source`` (a path, webcam number, URL or an open
        :class:`FrameSource`; ``source_options`` are its ``every``, ``start``, ``end``, ``fps``).
        Tracks still open at the end come with the last frame."""
        source = _source(source, **source_options)
        rate = source.fps / source.every
        tracker = Tracker(self.tracker_name, fps=rate, lost_after=self.lost_after)
        # One frame more than the tracker keeps a lost track: it cannot come back after this.
        self._lost_frames = max(1, math.ceil(rate * self.lost_after)) + 1
        self._open: dict[int, _Track] = {}
        self._step = 0
        buffer: list[tuple[Frame, list[Person]]] = []
        iterator = iter(source)
        while True:
            started = time.perf_counter()
            frame = next(iterator, None)
            self.seconds["decode"] += time.perf_counter() - started
            if frame is None:
                break
            if len(buffer) >= self.window:  # flushed only now, so the last window is not empty
                yield from self._flush(buffer, final=False)
                buffer = []
            buffer.append((frame, self._detect_and_track(frame, tracker)))
            self._step += 1
        if buffer:
            yield from self._flush(buffer, final=True)

    def _detect_and_track(self, frame: Frame, tracker: Tracker) -> list[Person]:
        if frame.pixels is None:
            return []
        started = time.perf_counter()
        detections = self.detector(frame.pixels, frame.index)
        tracked_at = time.perf_counter()
        tracked = tracker(detections)
        self.seconds["detect"] += tracked_at - started
        self.seconds["track"] += time.perf_counter() - tracked_at
        size = frame.pixels.shape[:2]
        people = []
        for box in tracked:
            region, inside = crop_region(box.box, size, self.input_size)
            quality = crop_quality(box.box, box.score, inside, self.input_size[0])
            people.append(Person(box.track_id, box.box, box.score, region, quality))
            track = self._open.setdefault(box.track_id, _Track(box.track_id))
            track.boxes.append((frame.index, frame.time, box.box, box.score))
            track.last_step = self._step
        return people

    def _select(self, buffer: list[tuple[Frame, list[Person]]]) -> list[tuple[Frame, Person]]:
        """Each track's best crops in the window: ceil(n / K) of its n, by quality."""
        by_track: dict[int, list[tuple[Frame, Person]]] = {}
        for frame, people in buffer:
            for person in people:
                by_track.setdefault(person.track_id, []).append((frame, person))
        chosen = []
        for entries in by_track.values():
            keep = math.ceil(len(entries) / self.attribute_every)
            chosen += sorted(entries, key=lambda e: -e[1].quality)[:keep]
        return sorted(chosen, key=lambda e: (e[0].index, e[1].track_id))

    def _predict(self, chosen: list[tuple[Frame, Person]]) -> None:
        started = time.perf_counter()
        inputs = []
        for frame, person in chosen:
            x0, y0, x1, y1 = person.region
            inputs.append(
                ImageInput(frame.pixels[y0:y1, x0:x1], "frame", frame.index, person.region)
            )
        predictions = self.predictor.predict(inputs) if inputs else []
        for (frame, person), prediction in zip(chosen, predictions, strict=True):
            person.prediction = prediction
            track = self._open[person.track_id]
            probs = np.array([prediction.probabilities[n] for n in self.names])
            track.evidence.add(probs, person.quality, frame.index)
            crop = partial(crop_image, frame.pixels, person.region)
            track.gallery.offer(
                frame.index, frame.time, person.quality, person.region, crop, prediction.boxes
            )
            if person.quality > track.best_quality:
                track.best_quality, track.best_frame = person.quality, frame.index
                track.best_crop = crop_image(frame.pixels, person.region)
                track.best_prediction, track.best_region = prediction, person.region
        for track_id in {person.track_id for _, person in chosen}:
            track = self._open[track_id]
            combined = track.evidence.combined()
            if combined is not None:
                track.attributes = self._positives(combined)
        self.crops_predicted += len(inputs)
        self.seconds["attributes"] += time.perf_counter() - started

    def _positives(self, probabilities: np.ndarray) -> list[str]:
        return [
            n for n, p, t in zip(self.names, probabilities, self.thresholds, strict=True) if p > t
        ]

    def _flush(
        self, buffer: list[tuple[Frame, list[Person]]], final: bool
    ) -> Iterator[FrameResult]:
        self._predict(self._select(buffer))
        ended = [
            t for t in self._open.values() if final or self._step - t.last_step > self._lost_frames
        ]
        for _, people in buffer:
            for person in people:
                person.track_attributes = list(self._open[person.track_id].attributes)
        for track in ended:
            del self._open[track.track_id]
        finished = [self._finish(t) for t in ended]
        for k, (frame, people) in enumerate(buffer):
            yield FrameResult(
                frame.index,
                frame.time,
                people,
                finished if k == len(buffer) - 1 else [],
                frame.pixels,
                frame.pixels is None,
            )

    def open_tracks(self) -> list[TrackResult]:
        """The tracks not finished yet, as they stand (for a run stopped midway)."""
        return [self._finish(t) for t in getattr(self, "_open", {}).values() if t.boxes]

    def _finish(self, track: _Track) -> TrackResult:
        combined = track.evidence.combined()
        probabilities = (
            {} if combined is None else dict(zip(self.names, map(float, combined), strict=True))
        )
        return TrackResult(
            track.track_id,
            track.boxes,
            probabilities,
            [] if combined is None else self._positives(combined),
            dict(zip(self.names, map(float, self.thresholds), strict=True)),
            track.evidence.frames,
            track.best_frame,
            track.best_crop,
            track.best_prediction,
            track.best_region,
            track.gallery.chosen(),
        )

    # --- writing the outputs ------------------------------------------------------------------

    def run(
        self,
        source: FrameSource | str | os.PathLike,
        out: str | os.PathLike,
        *,
        video: bool = True,
        progress: bool = False,
        **source_options: Any,
    ) -> dict[str, Any]:
        """Process ``source`` and write the outputs into folder ``out`` as frames are read
        (:mod:`pedattr.video.writers`); returns the summary also written to ``summary.json``.

        On Ctrl-C every file is closed valid (tracks still open are written as they stand,
        the video is finalised, the summary says where it stopped) and KeyboardInterrupt
        propagates.
        """
        source = _source(source, **source_options)
        paths = prepare_output(out, video)
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.crops_predicted = 0
        tracks = TracksWriter(paths["tracks"])
        rows = FramesWriter(paths["frames"])
        annotated = AnnotatedVideo(paths["video"], source.fps / source.every) if video else None
        counts = {"frames": 0, "failed_frames": 0, "last_frame": None}
        stopped: str | None = None
        started = time.perf_counter()
        bar = tqdm(total=source.expected, unit="frame", disable=not progress, dynamic_ncols=True)
        try:
            for result in self.frames(source):
                write_started = time.perf_counter()
                self._write_frame(result, rows, annotated, counts)
                for track in result.finished:
                    self._write_track(track, tracks, paths["thumbnails"])
                self.seconds["write"] += time.perf_counter() - write_started
                bar.update(1)
        except KeyboardInterrupt:
            stopped = f"interrupted after frame {counts['last_frame']}"
            for track in self.open_tracks():
                self._write_track(track, tracks, paths["thumbnails"])
            raise
        finally:
            bar.close()
            for writer in (tracks, rows, annotated):
                if writer is not None:
                    writer.close()
            summary = self._summary(source, counts, tracks.count, started, stopped, annotated)
            write_summary(paths["summary"], summary)
            write_index(paths["tracks"].parent)
        return summary

    def _write_frame(
        self,
        result: FrameResult,
        rows: FramesWriter,
        annotated: AnnotatedVideo | None,
        counts: dict[str, Any],
    ) -> None:
        counts["frames"] += 1
        counts["last_frame"] = result.number
        if result.failed:
            counts["failed_frames"] += 1
            return
        rows.write_frame(
            [
                [
                    result.number,
                    p.track_id,
                    *(round(v, 2) for v in _xywh(p.box)),
                    round(p.score, 4),
                    -1,
                    -1,
                    -1,
                    round(result.time, 3),
                    int(p.prediction is not None),
                    ";".join(p.attributes),
                ]  # fmt: skip
                for p in result.people
            ]
        )
        if annotated is not None and result.pixels is not None:
            annotated.write(
                result.pixels,
                [(p.track_id, p.box, self._top(p.track_attributes)) for p in result.people],
            )

    def _top(self, attributes: list[str]) -> list[str]:
        return attributes[:DRAWN_ATTRIBUTES]

    def _write_track(self, track: TrackResult, writer: TracksWriter, folder: Path) -> None:
        thumbnail = None
        if track.best_crop is not None and track.best_prediction is not None:
            shown = replace(
                track.best_prediction,
                probabilities=track.probabilities,
                attributes=track.attributes,
            )
            path = thumbnail_path(folder, track.track_id)
            save_image(draw_attribute_boxes(track.best_crop, shown), path)
            thumbnail = f"{folder.name}/{path.name}"
        gallery = write_gallery(track.gallery, folder, track.track_id, track.attributes)
        writer.write(track.record(thumbnail, gallery))

    def _summary(
        self,
        source: FrameSource,
        counts: dict[str, Any],
        tracks: int,
        started: float,
        stopped: str | None,
        annotated: AnnotatedVideo | None,
    ) -> dict[str, Any]:
        total = time.perf_counter() - started
        return {
            "source": source.name,
            "detector": getattr(self.detector, "name", type(self.detector).__name__),
            "tracker": self.tracker_name,
            "checkpoint": self.checkpoint,
            "every": source.every,
            "attribute_every": self.attribute_every,
            "frames": counts["frames"],
            "failed_frames": counts["failed_frames"],
            "last_frame": counts["last_frame"],
            "tracks": tracks,
            "crops_predicted": self.crops_predicted,
            "video_frames": None if annotated is None else annotated.frames,
            "complete": stopped is None and source.stop_reason is None,
            "stopped": stopped or source.stop_reason,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "total_seconds": round(total, 3),
            "frames_per_second": round(counts["frames"] / total, 3) if total > 0 else None,
        }


def _xywh(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return x0, y0, x1 - x0, y1 - y0
