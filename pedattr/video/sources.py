"""Frames to track: a video file, a folder of frame images, a webcam (``0``) or a stream URL.

Every source is opened (and refused with one line naming it) before any frame is read, then
yields :class:`Frame` s in order: the 0-based frame number, its time in seconds, and its pixels
as an RGB array, or ``None`` for a frame that failed to decode (the pipeline skips and counts
it). ``every`` keeps frames 0, N, 2N, ... of those between ``start`` and ``end`` seconds.

OpenCV (the ``video`` extra, below 5) reads files, streams and webcams; folders are read with
Pillow in the order of their sorted file names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pedattr.data.dataset import load_rgb
from pedattr.inference.sources import IMAGE_EXTENSIONS, is_video

#: Frames per second assumed for a folder of frames, or a stream that does not say.
DEFAULT_FPS = 25.0
#: A stream that stops delivering frames is reopened this many times (1, 2, 4 ... s apart).
STREAM_RETRIES = 3
#: A video file that fails this many frames in a row has ended (a truncated file).
MAX_FAILED_IN_A_ROW = 25
MISSING_OPENCV = (
    "reading videos needs OpenCV below 5; install it with `pip install 'pedattr[video]'`"
)


def opencv() -> Any:
    """The cv2 module; an ImportError naming the ``video`` extra when it is missing."""
    try:
        import cv2
    except ImportError:
        raise ImportError(MISSING_OPENCV) from None
    return cv2


@dataclass
class Frame:
    """One frame: ``index`` counts from 0 in the source, ``time`` in seconds."""

    index: int
    time: float
    pixels: np.ndarray | None  # RGB uint8 H x W x 3; None: failed to decode


def _is_stream(spec: str) -> bool:
    return spec.isdigit() or "://" in spec


class FrameSource:
    """A source of frames (see the module docstring); iterate it once.

    Args:
        spec: a video file, a folder of images, a webcam number ("0") or a stream URL.
        every: keep every N-th frame.
        start, end: seconds; frames before ``start`` or after ``end`` are not yielded.
        fps: frames per second of a folder (or of a stream that does not say).

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: a folder without images, or a file, webcam or stream OpenCV cannot open.
        ImportError: OpenCV is needed and missing.
    """

    def __init__(
        self,
        spec: str | os.PathLike,
        *,
        every: int = 1,
        start: float = 0.0,
        end: float | None = None,
        fps: float | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.spec = os.fspath(spec)
        self.every, self.start, self.end = every, start, end
        self.name = self.spec
        self.images: list[Path] | None = None
        self.capture: Any = None
        #: Why reading stopped before the end, for a stream that dropped (else None).
        self.stop_reason: str | None = None
        if _is_stream(self.spec):
            self._open_capture(int(self.spec) if self.spec.isdigit() else self.spec)
            self.fps = fps or self._capture_fps() or DEFAULT_FPS
        else:
            path = Path(self.spec)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file or folder")
            if path.is_dir():
                self.images = sorted(
                    p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                )
                if not self.images:
                    raise ValueError(f"{path}: a folder without frame images")
                self.fps = fps or DEFAULT_FPS
            else:
                if not is_video(path):
                    raise ValueError(
                        f"{path}: not a video (extension {path.suffix or 'none'}); give a video "
                        "file, a folder of frames, a webcam number or a stream URL"
                    )
                if not os.access(path, os.R_OK):
                    raise PermissionError(f"{path}: permission denied")
                self._open_capture(self.spec)
                self.fps = fps or self._capture_fps() or DEFAULT_FPS

    # --- opening ------------------------------------------------------------------------------

    def _open_capture(self, target: int | str) -> None:
        cv2 = opencv()
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise ValueError(f"{self.spec}: OpenCV cannot open it as a video, webcam or stream")

    def _capture_fps(self) -> float | None:
        fps = float(self.capture.get(opencv().CAP_PROP_FPS) or 0)
        return fps if 0 < fps < 1000 else None

    @property
    def frame_count(self) -> int | None:
        """Frames in the source, when it says (not for streams)."""
        if self.images is not None:
            return len(self.images)
        if _is_stream(self.spec):
            return None
        count = int(self.capture.get(opencv().CAP_PROP_FRAME_COUNT) or 0)
        return count if count > 0 else None

    @property
    def expected(self) -> int | None:
        """How many frames iteration will yield, when known (for a progress bar)."""
        count = self.frame_count
        if count is None:
            return None
        first = max(0, round(self.start * self.fps))
        last = count if self.end is None else min(count, int(self.end * self.fps) + 1)
        return max(0, -(-(last - first) // self.every))

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of a video's frames, when OpenCV says."""
        if self.capture is None:
            return None
        cv2 = opencv()
        width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return (width, height) if width > 0 and height > 0 else None

    # --- reading ------------------------------------------------------------------------------

    def _wanted(self, index: int) -> bool | None:
        """True to yield frame ``index``, False to skip it, None past ``end``."""
        seconds = index / self.fps
        if self.end is not None and seconds > self.end:
            return None
        first = max(0, round(self.start * self.fps))
        return index >= first and (index - first) % self.every == 0

    def __iter__(self) -> Iterator[Frame]:
        if self.images is not None:
            yield from self._folder_frames()
        else:
            yield from self._capture_frames()

    def _folder_frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.images or []):
            wanted = self._wanted(index)
            if wanted is None:
                return
            if not wanted:
                continue
            try:
                pixels = np.asarray(load_rgb(path))
            except (OSError, ValueError):  # a corrupt or truncated frame is skipped, counted
                pixels = None
            yield Frame(index, index / self.fps, pixels)

    def _capture_frames(self) -> Iterator[Frame]:
        cv2 = opencv()
        index, failed, retries = 0, 0, 0
        count = self.frame_count
        try:
            while True:
                wanted = self._wanted(index)
                if wanted is None:
                    return
                if not wanted:  # grab() skips a frame without converting it
                    ok = self.capture.grab()
                    pixels = None
                else:
                    ok, bgr = self.capture.read()
                    pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None
                if not ok:
                    if count is not None and index < count and failed < MAX_FAILED_IN_A_ROW:
                        failed += 1  # a frame of the file that does not decode
                    elif _is_stream(self.spec) and retries < STREAM_RETRIES:
                        time.sleep(2.0**retries)  # a dropped stream: reopen with backoff
                        retries += 1
                        self.capture.release()
                        try:
                            self._open_capture(int(self.spec) if self.spec.isdigit() else self.spec)
                        except ValueError:
                            self.stop_reason = (
                                f"the stream stopped ({retries} reconnection attempts)"
                            )
                            return
                        continue
                    else:
                        if _is_stream(self.spec):
                            self.stop_reason = (
                                f"the stream stopped ({retries} reconnection attempts)"
                            )
                        return
                else:
                    failed = retries = 0
                if wanted:
                    yield Frame(index, index / self.fps, pixels)
                index += 1
        finally:
            self.capture.release()
