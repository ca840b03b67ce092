"""Small generated clips for the video tests: generated pedestrians walking over a background,
written with the writer the pipeline uses (OpenCV), with their MOTChallenge detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pedattr.data.synthetic import generate_sample

FRAME_SIZE = (120, 160)  # height, width
PERSON_SIZE = (64, 32)


def person_boxes(frames: int) -> list[list[tuple[int, int, int, int]]]:
    """Per frame, (x, y, w, h) of two people: one walking right, one walking left."""
    h, w = PERSON_SIZE
    return [[(4 + 3 * f, 20, w, h), (120 - 3 * f, 40, w, h)] for f in range(frames)]


def render_frames(frames: int, seed: int = 0) -> list[np.ndarray]:
    """RGB frames of the clip."""
    rng = np.random.default_rng(seed)
    background = rng.integers(60, 90, (*FRAME_SIZE, 3)).astype(np.uint8)
    people = [
        np.asarray(generate_sample(seed, *PERSON_SIZE, index=k).image, np.uint8) for k in range(2)
    ]
    out = []
    for boxes in person_boxes(frames):
        frame = background.copy()
        for person, (x, y, w, h) in zip(people, boxes, strict=True):
            frame[y : y + h, x : x + w] = person
        out.append(frame)
    return out


def write_clip(path: Path, frames: int, fps: float = 10.0) -> Path:
    """An MJPG .avi of the clip (frames of nearly the same pixels: MJPG is lossy)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, FRAME_SIZE[::-1])
    for frame in render_frames(frames):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_frames_folder(folder: Path, frames: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(render_frames(frames)):
        Image.fromarray(frame).save(folder / f"{k + 1:06d}.png")
    return folder


def write_detections(path: Path, frames: int, scores: tuple[float, float] = (0.9, 0.8)) -> Path:
    """det.txt: every person in every frame, frames counted from 1, id -1."""
    lines = []
    for f, boxes in enumerate(person_boxes(frames), 1):
        for (x, y, w, h), score in zip(boxes, scores, strict=True):
            lines.append(f"{f},-1,{x},{y},{w},{h},{score},-1,-1,-1")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
