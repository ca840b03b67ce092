"""The output files of a tracking run, each valid at every moment of it.

* ``tracks.jsonl``: one JSON object per finished track, a whole line written and flushed at once.
* ``frames.csv``: one row per person and frame, flushed after every frame.
* ``thumbnails/track_NNNNNN.png``: the track's best crop with its ALM boxes, written atomically.
* ``annotated.mp4``: the frames with boxes, track ids and attributes (OpenCV, MPEG-4 Part 2
  ``mp4v``), finalised by :meth:`AnnotatedVideo.close` (also on Ctrl-C).
* ``summary.json``: counts and times, written atomically at the end (and on interruption).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from pedattr.inference.visualize import level_colour
from pedattr.utils.io import OutputError, atomic_write_text, make_folder
from pedattr.utils.json import json_safe
from pedattr.video.sources import opencv

#: MOTChallenge's columns, then pedattr's.
FRAME_COLUMNS = (
    "frame", "id", "x", "y", "w", "h", "conf", "x3d", "y3d", "z3d",
    "time", "attributed", "attributes",
)  # fmt: skip


def _open(path: Path) -> TextIO:
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as err:
        raise OutputError(err.errno, f"cannot write ({err.strerror})", str(path)) from err


class TracksWriter:
    """``tracks.jsonl``: :meth:`write` appends one finished track as one complete line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = _open(path)
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(json_safe(record), separators=(",", ":")) + "\n")
        self.handle.flush()
        self.count += 1

    def close(self) -> None:
        self.handle.close()


class FramesWriter:
    """``frames.csv``: the MOTChallenge columns (frame from 1, box as x, y, w, h, the detection
    score as conf, -1 for the 3-D columns), the time in seconds, whether the attribute model ran
    on this crop (1/0) and the attributes it found there, separated by ``;``."""

    def __init__(self, path: Path) -> None:
        self.handle = _open(path)
        self.writer = csv.writer(self.handle)
        self.writer.writerow(FRAME_COLUMNS)
        self.handle.flush()

    def write_frame(self, rows: list[list[Any]]) -> None:
        self.writer.writerows(rows)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class AnnotatedVideo:
    """``annotated.mp4``, opened on the first frame (its size is the video's)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: Any = None
        self.frames = 0

    def write(self, frame: np.ndarray, people: list[tuple[int, tuple, list[str]]]) -> None:
        """Draw ``(track id, box, attributes)`` on the RGB ``frame`` and append it."""
        cv2 = opencv()
        if self.writer is None:
            height, width = frame.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self.writer.isOpened():
                raise OutputError(0, "OpenCV cannot write an mp4v video there", str(self.path))
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        for track_id, box, attributes in people:
            r, g, b = level_colour(track_id)
            colour = (b, g, r)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, 2)
            lines = [f"#{track_id}", *attributes[:3]]
            for k, text in enumerate(lines):  # white on the track's colour, above the box
                (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
                y = max(h + base, y0 - 2 - (h + base + 2) * (len(lines) - 1 - k))
                cv2.rectangle(bgr, (x0, y - h - base), (x0 + w + 2, y + 1), colour, cv2.FILLED)
                cv2.putText(
                    bgr, text, (x0 + 1, y - base + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA,
                )  # fmt: skip
        self.writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()  # writes the mp4 index: the file plays from here on
            self.writer = None


def thumbnail_path(folder: Path, track_id: int) -> Path:
    return folder / f"track_{track_id:06d}.png"


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(json_safe(summary), indent=2) + "\n")


def prepare_output(folder: str | os.PathLike, video: bool) -> dict[str, Path]:
    """Create the output folder and ``thumbnails/``; the paths of every output."""
    out = make_folder(folder)
    make_folder(out / "thumbnails")
    paths = {
        "tracks": out / "tracks.jsonl",
        "frames": out / "frames.csv",
        "thumbnails": out / "thumbnails",
        "summary": out / "summary.json",
    }
    if video:
        paths["video"] = out / "annotated.mp4"
    return paths


def crop_image(frame: np.ndarray, region: tuple[int, int, int, int]) -> Image.Image:
    x0, y0, x1, y1 = region
    return Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))
