"""What ``pedattr predict`` reads: files, folders, glob patterns and videos, as a stream of inputs.

* A file is an image, whatever its extension (Pillow decides), unless its extension is a video
  one (:data:`VIDEO_EXTENSIONS`).
* A folder gives its images (:data:`IMAGE_EXTENSIONS`, any case), sorted by path; with
  ``recursive`` those of its subfolders too. A folder without images is a failure naming it.
* A path that does not exist but holds ``*``, ``?`` or ``[`` is a glob pattern (``**`` matches
  any depth), for patterns the shell did not expand (quoted ones); it gives the images and videos
  it matches, sorted.
* A video gives every ``every``-th frame (0, N, 2N, ...), decoded one at a time with OpenCV (the
  ``video`` extra), or the crops a crops file lists for it.

Crops file: CSV with a header row, or JSON (a list of objects), with the keys ``frame`` (0-based
frame number), ``x0``, ``y0``, ``x1``, ``y1`` (pixels of the frame; x1 and y1 exclusive, as in
``PIL.Image.crop``) and optionally ``video`` (the video's file name or path; a row without one
applies to every video). A crop reaching outside the frame is clipped to it. With crops, a
video gives only its listed crops (of frames that are multiples of ``every``), each as its own
image; images are unaffected.

Failures (a missing path, an empty folder, a video OpenCV cannot open) are yielded as
:class:`~pedattr.inference.predictor.PredictionFailure` in the stream, so one bad input never
stops the others.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedattr.data.dataset import special_file_reason
from pedattr.inference.predictor import ImageInput, PredictionFailure, array_to_rgb

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    | {".ppm", ".pgm", ".pbm", ".pnm"}
)
VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)
_GLOB_CHARACTERS = frozenset("*?[")
_CROP_KEYS = ("frame", "x0", "y0", "x1", "y1")
_MISSING_OPENCV = (
    "reading videos needs OpenCV; install it with `pip install 'pedattr[video]'` "
    "(opencv-python below 5)"
)

#: One expanded input: a file to read, or a failure to report.
Expanded = Path | PredictionFailure


def is_video(path: str | os.PathLike) -> bool:
    """Whether a path names a video, by its extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


# --- crops ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """A region of one video frame to predict on (see the module docstring)."""

    frame: int
    box: tuple[int, int, int, int]
    video: str | None = None

    def applies_to(self, video: Path) -> bool:
        """Whether this crop belongs to ``video`` (by file name or the path as given)."""
        return self.video is None or self.video in (video.name, os.fspath(video))


def _crop_from_row(row: dict[str, Any], where: str) -> Crop:
    missing = [key for key in _CROP_KEYS if row.get(key) in (None, "")]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    try:
        frame = int(row["frame"])
        x0, y0, x1, y1 = (round(float(row[key])) for key in _CROP_KEYS[1:])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: frame and coordinates must be numbers ({err})") from None
    if frame < 0 or x1 <= x0 or y1 <= y0:
        raise ValueError(f"{where}: needs frame >= 0, x1 > x0 and y1 > y0")
    video = row.get("video") or None
    return Crop(frame, (x0, y0, x1, y1), None if video is None else str(video))


def read_crops(path: str | os.PathLike) -> list[Crop]:
    """Read a crops file: CSV with a header (``.csv`` or anything not ``.json``) or JSON.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed file or row; the message names the file and the row.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{path}: expected a JSON list of objects with {_CROP_KEYS}")
        crops = [_crop_from_row(row, f"{path}: item {i}") for i, row in enumerate(rows)]
    else:
        reader = csv.DictReader(text.splitlines())
        missing = [key for key in _CROP_KEYS if key not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: the header must name {', '.join(_CROP_KEYS)} (and optionally video); "
                f"missing {', '.join(missing)}"
            )
        crops = [_crop_from_row(row, f"{path}: line {i}") for i, row in enumerate(reader, 2)]
    if not crops:
        raise ValueError(f"{path}: no crops listed")
    return crops


# --- paths ------------------------------------------------------------------------------------


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and _is_image(p))


def _expand_one(text: str, recursive: bool) -> list[Expanded]:
    path = Path(text)
    if path.is_dir():
        images = _folder_images(path, recursive)
        if images:
            return list(images)
        hint = "" if recursive else " (add --recursive to search its subfolders)"
        return [PredictionFailure(text, f"a folder without images{hint}")]
    if path.exists() and not path.is_file():  # a FIFO or device: reading it could block
        return [PredictionFailure(text, special_file_reason(path.stat().st_mode))]
    if path.exists() or not _GLOB_CHARACTERS & set(text):
        return [path]  # a missing plain path fails when it is read, with the reader's reason
    matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
    files = [m for m in matches if m.is_file() and (_is_image(m) or is_video(m))]
    if not files:
        what = "no image or video" if matches else "nothing"
        return [PredictionFailure(text, f"the pattern matches {what}")]
    return list(files)


def expand_paths(paths: Sequence[str | os.PathLike], *, recursive: bool = False) -> list[Expanded]:
    """Files to read for the command line's PATH arguments, in order, and failures for those
    that give none (an empty folder, a pattern matching nothing)."""
    expanded: list[Expanded] = []
    for path in paths:
        expanded += _expand_one(os.fspath(path), recursive)
    return expanded


# --- video ------------------------------------------------------------------------------------


def _opencv() -> Any:
    try:
        import cv2
    except ImportError:
        raise ImportError(_MISSING_OPENCV) from None
    return cv2


def _clip_crop(
    box: tuple[int, int, int, int], width: int, height: int
) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = box
    clipped = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    return clipped if clipped[2] > clipped[0] and clipped[3] > clipped[1] else None


def _frame_inputs(
    frame: Any, path: Path, index: int, crops: list[Crop] | None
) -> Iterator[ImageInput | PredictionFailure]:
    """The images of one decoded frame (BGR or grey array): whole, or its crops."""
    if frame.ndim == 3:
        frame = frame[..., 2::-1]  # OpenCV decodes BGR(A); drop any alpha
    image = array_to_rgb(frame)
    source = os.fspath(path)
    if crops is None:
        yield ImageInput(image, source, frame=index)
        return
    for crop in crops:
        box = _clip_crop(crop.box, image.width, image.height)
        if box is None:
            reason = f"the crop lies outside the {image.width}x{image.height} frame"
            yield PredictionFailure(source, reason, index, crop.box)
        else:
            yield ImageInput(image.crop(box), source, frame=index, crop=box)


def iter_video(
    path: str | os.PathLike, *, every: int = 1, crops: Sequence[Crop] | None = None
) -> Iterator[ImageInput | PredictionFailure]:
    """Stream a video's frames (every ``every``-th) or its listed crops, one frame in memory.

    Frames that are skipped are only grabbed, not decoded. Without OpenCV, or when it cannot
    open the file, one failure naming the video is yielded.
    """
    path = Path(path)
    source = os.fspath(path)
    try:
        cv2 = _opencv()
    except ImportError as err:
        yield PredictionFailure(source, str(err))
        return
    by_frame: dict[int, list[Crop]] | None = None
    if crops is not None:
        by_frame = {}
        for crop in crops:
            if crop.applies_to(path) and crop.frame % every == 0:
                by_frame.setdefault(crop.frame, []).append(crop)
        if not by_frame:
            yield PredictionFailure(source, "the crops file lists no crop for this video")
            return
    if not path.is_file():
        yield PredictionFailure(source, "no such file")
        return
    capture = cv2.VideoCapture(source)
    try:
        if not capture.isOpened():
            yield PredictionFailure(source, "OpenCV cannot open this video")
            return
        yield from _read_frames(capture, path, every, by_frame)
    finally:
        capture.release()


def _read_frames(
    capture: Any, path: Path, every: int, by_frame: dict[int, list[Crop]] | None
) -> Iterator[ImageInput | PredictionFailure]:
    last = max(by_frame) if by_frame is not None else math.inf
    index = 0
    while index <= last:
        wanted = by_frame is not None and index in by_frame
        wanted = wanted or (by_frame is None and index % every == 0)
        if wanted:
            ok, frame = capture.read()
        else:
            ok, frame = capture.grab(), None
        if not ok:
            break
        if wanted:
            yield from _frame_inputs(
                frame, path, index, None if by_frame is None else by_frame[index]
            )
        index += 1
    if index == 0:
        yield PredictionFailure(os.fspath(path), "OpenCV decodes no frame of this video")
    elif by_frame is not None and index <= last:
        past = sorted(frame for frame in by_frame if frame >= index)
        shown = ", ".join(map(str, past[:5])) + (" ..." if len(past) > 5 else "")
        frames = "frame" if len(past) == 1 else "frames"
        reason = f"crops of {frames} {shown} lie past the video's end ({index} frames)"
        yield PredictionFailure(os.fspath(path), reason)


def video_frame_count(path: str | os.PathLike) -> int | None:
    """The frame count a video's header claims (None when unknown or OpenCV is missing)."""
    try:
        cv2 = _opencv()
    except ImportError:
        return None
    capture = cv2.VideoCapture(os.fspath(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()
    return count if count > 0 else None


# --- the whole stream -------------------------------------------------------------------------


def iter_inputs(
    expanded: Sequence[Expanded], *, every: int = 1, crops: Sequence[Crop] | None = None
) -> Iterator[ImageInput | PredictionFailure]:
    """The images (and failures) of :func:`expand_paths`' output, in order, lazily."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    for item in expanded:
        if isinstance(item, PredictionFailure):
            yield item
        elif is_video(item):
            yield from iter_video(item, every=every, crops=crops)
        else:
            yield ImageInput(item, os.fspath(item))


def estimate_count(
    expanded: Sequence[Expanded], *, every: int = 1, crops: Sequence[Crop] | None = None
) -> int | None:
    """How many results :func:`iter_inputs` will yield, for a progress bar (None: unknown)."""
    total = 0
    for item in expanded:
        if isinstance(item, PredictionFailure) or not is_video(item):
            total += 1
        elif crops is not None:
            total += max(1, sum(c.applies_to(item) and c.frame % every == 0 for c in crops))
        else:
            frames = video_frame_count(item)
            if frames is None:
                return None
            total += math.ceil(frames / every)
    return total
