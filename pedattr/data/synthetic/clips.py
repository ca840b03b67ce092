"""Generated video clips with ground truth: tracks, visibility and each person's attributes.

Each clip is a generated background (:func:`~pedattr.data.synthetic.generator` textures and
distractors) across which generated pedestrians walk: the demo's figures (the same attributes,
labels and drawing as the image generator, without the image's background and occluder), each
at its own speed and depth. A person lower in the frame is nearer: larger, and drawn over the
people behind. People enter and leave at the frame's sides and drift slowly up or down, so
their scale changes. Some frames are blurred, some have a low contrast, all have sensor noise.

Per clip, in MOTChallenge's layout (frames counted from 1):

* ``video.mp4``: the frames (OpenCV's mp4v), which ``pedattr track`` reads;
* ``gt/gt.txt``: ``frame,id,x,y,w,h,1,1,visibility`` per person per frame: the box around the
  person's visible-or-not figure clipped to the frame, written while at least
  :data:`MIN_INSIDE` of its width and height lies inside the frame; visibility is the share of
  the figure's pixels that are in the frame and not covered by a nearer person;
* ``gt/labels.csv``: ``id`` and one 0/1 column per attribute (:data:`ATTRIBUTES`' order);
* ``det/det.txt``: detections made from the ground truth with controlled noise
  (:class:`DetectionNoise`), for ``pedattr track --detector file:det/det.txt``;
* ``seqinfo.ini``: MOTChallenge's sequence description.

Determinism: clip c of seed s draws everything from ``np.random.default_rng([s, c, part, k])``
streams, so a clip is the same bit for bit whatever else is generated (the video file's bytes
depend on OpenCV's encoder; the ground truth, labels and detections do not).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from pedattr.data.synthetic._figure import figure_strokes
from pedattr.data.synthetic._shapes import paint
from pedattr.data.synthetic.generator import (
    ATTRIBUTES,
    GENERATOR_VERSION,
    _paint_distractors,
    _texture,
    sample_scene,
)
from pedattr.utils.io import atomic_write, make_folder

#: Bumped whenever the same seed and settings would give other clips.
CLIPS_VERSION = 1
#: The size (height, width) each person is drawn at before being scaled into the frame.
SPRITE_SIZE = (256, 128)
#: A person is in the ground truth while this share of its box's width and height is inside.
MIN_INSIDE = 0.3
#: A person with fewer ground-truth frames than this is left out of the clip.
MIN_FRAMES = 10

_PEOPLE, _FRAMES, _BACKGROUND, _DETECTIONS = range(4)


@dataclass(frozen=True)
class ClipSettings:
    """What a clip looks like.

    Attributes:
        size: (height, width) of the frames.
        frames: frames per clip.
        fps: frames per second.
        people: people drawn per clip (those seen fewer than :data:`MIN_FRAMES` frames are
            left out).
        scale: the height range, in pixels, of a person's drawing canvas from the top of the
            frame's walking area to its bottom (an adult is 72-93 % of it, a child 55-68 %).
        speed: walking speed range in pixels per frame.
        blurred: share of frames blurred (Gaussian, sigma 1.2 to 2.5 pixels).
        low_contrast: share of frames whose contrast is cut to 30-55 %.
    """

    size: tuple[int, int] = (360, 640)
    frames: int = 120
    fps: float = 15.0
    people: int = 8
    scale: tuple[float, float] = (150.0, 240.0)
    speed: tuple[float, float] = (2.0, 7.0)
    blurred: float = 0.15
    low_contrast: float = 0.15


@dataclass(frozen=True)
class DetectionNoise:
    """How detections are made from the ground truth.

    Attributes:
        jitter: each box edge moves by a Gaussian of this standard deviation, as a share of the
            box's width (left, right) or height (top, bottom).
        miss: probability that a true box is not detected.
        false_positives: mean number of false boxes per frame (Poisson), person-shaped, anywhere.
        hidden: a true box less visible than this is never detected.
    """

    jitter: float = 0.05
    miss: float = 0.10
    false_positives: float = 0.1
    hidden: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            high = 100 if name == "false_positives" else 1
            if not 0 <= value <= high:
                option = "--" + name.replace("_", "-")  # pedattr generate-video's option
                raise ValueError(f"{option} {value:g}: must be between 0 and {high}")


@dataclass
class _Person:
    rgb: np.ndarray  # [h, w, 3] float32, the figure cut to its tight box at SPRITE_SIZE
    alpha: np.ndarray  # [h, w] float32 in [0, 1]
    labels: np.ndarray  # [M] uint8
    fraction: float  # the tight box's height as a share of the sprite canvas
    start_x: float  # left edge at frame 0 (may be far outside)
    velocity: float  # pixels per frame, signed
    foot: float  # feet's y at frame 0, as a share of the frame height
    drift: float  # change of ``foot`` per frame


def _sprite(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A generated pedestrian's figure (no background, no occluder, no blur) cut to its box."""
    scene = replace(sample_scene(rng, *SPRITE_SIZE), occluder=None)
    height, width = SPRITE_SIZE
    canvas = np.zeros((height, width, 3), np.float32)
    mask = np.zeros((height, width), np.float32)
    for stroke in figure_strokes(scene):
        paint(canvas, stroke.shape, stroke.colour, stroke.pattern)
        paint(mask, stroke.shape, 1.0, stroke.pattern)
    rows, cols = np.nonzero(mask)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    labels = np.array([scene.attributes[name] for name in ATTRIBUTES], np.uint8)
    return canvas[y0:y1, x0:x1], mask[y0:y1, x0:x1], labels, (y1 - y0) / height


def _people(seed: int, clip: int, settings: ClipSettings) -> list[_Person]:
    height, width = settings.size
    people = []
    for k in range(settings.people):
        rng = np.random.default_rng([seed, clip, _PEOPLE, k])
        rgb, alpha, labels, fraction = _sprite(rng)
        speed = rng.uniform(*settings.speed) * (1 if rng.random() < 0.5 else -1)
        # Enter at a side at some frame; a negative entry frame means already inside at frame 0.
        enter = rng.uniform(-0.6, 0.8) * settings.frames
        entry_x = -settings.scale[1] / 2 if speed > 0 else float(width)
        foot = rng.uniform(0.55, 1.0)
        drift = rng.uniform(-0.12, 0.12) / settings.frames
        people.append(
            _Person(rgb, alpha, labels, fraction, entry_x - speed * enter, speed, foot, drift)
        )
    return people


def _placement(person: _Person, t: int, settings: ClipSettings) -> tuple[int, int, int, int]:
    """(x, y, w, h) integer pixels of the person's scaled figure at frame ``t``, unclipped."""
    height = settings.size[0]
    foot = min(max(person.foot + person.drift * t, 0.5), 1.02)
    depth = (foot - 0.55) / 0.45
    canvas = settings.scale[0] + (settings.scale[1] - settings.scale[0]) * depth
    h = max(8, round(canvas * person.fraction))
    w = max(4, round(h * person.alpha.shape[1] / person.alpha.shape[0]))
    bottom = foot * height + np.sin(t * 0.8 + person.start_x) * 1.0  # a step's bob
    return round(person.start_x + person.velocity * t), round(bottom) - h, w, h


def _paste(
    canvas: np.ndarray, owner: np.ndarray, person: _Person, index: int, place: tuple
) -> tuple[int, tuple[int, int, int, int]] | None:
    """Draw the person over ``canvas``; returns its pixel count and its box clipped to the frame
    (None when nothing of it is inside)."""
    cv2 = _opencv()
    x, y, w, h = place
    rgb = cv2.resize(person.rgb, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(person.alpha, (w, h), interpolation=cv2.INTER_AREA)
    frame_h, frame_w = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, frame_w), min(y + h, frame_h)
    pixels = int((alpha > 0.5).sum())
    if x1 <= x0 or y1 <= y0:
        return pixels, None
    part = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    a = alpha[part][..., None]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + rgb[part] * a
    owner[y0:y1, x0:x1][alpha[part] > 0.5] = index
    return pixels, (x0, y0, x1, y1)


def _degrade(pixels: np.ndarray, rng: np.random.Generator, settings: ClipSettings) -> np.ndarray:
    """Blur or cut the contrast of some frames; add sensor noise to every one."""
    blur, contrast = rng.random() < settings.blurred, rng.random() < settings.low_contrast
    sigma, factor, noise = rng.uniform(1.2, 2.5), rng.uniform(0.3, 0.55), rng.uniform(2.0, 5.0)
    if blur:
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    if contrast:
        pixels = pixels.mean() + (pixels - pixels.mean()) * factor
    pixels = pixels + rng.normal(0, noise, pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


@dataclass
class Clip:
    """One generated clip in memory: frames (RGB uint8), ground-truth rows, identity labels."""

    frames: list[np.ndarray]
    gt: np.ndarray  # [R, 9]: frame, id, x, y, w, h, 1, 1, visibility
    labels: dict[int, np.ndarray]  # id -> [M] uint8


def generate_clip(seed: int, clip: int = 0, settings: ClipSettings | None = None) -> Clip:
    """Clip ``clip`` of ``seed`` (see the module docstring)."""
    settings = settings or ClipSettings()
    height, width = settings.size
    background_rng = np.random.default_rng([seed, clip, _BACKGROUND])
    background = _texture(background_rng, height, width)
    _paint_distractors(background, background_rng)
    people = _people(seed, clip, settings)
    frames, rows = [], []
    for t in range(settings.frames):
        places = [_placement(p, t, settings) for p in people]
        canvas, owner = background.copy(), np.full((height, width), -1, np.int16)
        drawn = {}
        for k in sorted(range(len(people)), key=lambda k: places[k][1] + places[k][3]):
            drawn[k] = _paste(canvas, owner, people[k], k, places[k])  # far to near
        visible = np.bincount(owner.ravel() + 1, minlength=len(people) + 1)[1:]
        for k, (pixels, box) in drawn.items():
            x, y, w, h = places[k]
            if (
                box is None
                or (box[2] - box[0]) < MIN_INSIDE * w
                or (box[3] - box[1]) < MIN_INSIDE * h
            ):
                continue
            shown = visible[k] / max(pixels, 1)
            rows.append([t + 1, k, *box, min(shown, 1.0)])
        frames.append(_degrade(canvas, np.random.default_rng([seed, clip, _FRAMES, t]), settings))
    return _numbered(frames, rows, people)


def _numbered(frames: list[np.ndarray], rows: list[list], people: list[_Person]) -> Clip:
    """Keep people seen for MIN_FRAMES frames, numbered from 1 in order of first appearance."""
    counts = np.bincount([r[1] for r in rows], minlength=len(people))
    kept = []
    for row in rows:
        if counts[row[1]] >= MIN_FRAMES and row[1] not in kept:
            kept.append(row[1])
    ids = {k: n + 1 for n, k in enumerate(kept)}
    gt = np.array(
        [
            [frame, ids[k], x0, y0, x1 - x0, y1 - y0, 1, 1, round(float(v), 3)]
            for frame, k, x0, y0, x1, y1, v in rows
            if k in ids
        ],
        np.float64,
    ).reshape(-1, 9)
    return Clip(frames, gt, {ids[k]: people[k].labels for k in kept})


def noisy_detections(
    gt: np.ndarray,
    frames: int,
    size: tuple[int, int],
    noise: DetectionNoise,
    rng: np.random.Generator,
) -> np.ndarray:
    """MOTChallenge detections ``[D, 10]`` (frame, -1, x, y, w, h, score, -1, -1, -1) made from
    ground-truth rows with :class:`DetectionNoise`. True boxes score 0.5-1, false ones 0.3-0.9."""
    height, width = size
    out = []
    for frame, _, x, y, w, h, _, _, visibility in gt:
        missed = rng.random() < noise.miss
        edges = rng.normal(0, noise.jitter, 4) * (w, h, w, h)
        score = rng.uniform(0.5, 1.0)
        if missed or visibility < noise.hidden:
            continue
        x0, y0, x1, y1 = x + edges[0], y + edges[1], x + w + edges[2], y + h + edges[3]
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            out.append([frame, -1, x0, y0, x1 - x0, y1 - y0, score, -1, -1, -1])
    for frame in range(1, frames + 1):
        for _ in range(rng.poisson(noise.false_positives)):
            h = rng.uniform(0.25, 0.6) * height
            w = h * rng.uniform(0.3, 0.5)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            out.append([frame, -1, x, y, w, h, rng.uniform(0.3, 0.9), -1, -1, -1])
    dets = np.array(out, np.float64).reshape(-1, 10)
    return dets[np.argsort(dets[:, 0], kind="stable")]


# --- writing ----------------------------------------------------------------------------------


def _rows_text(rows: np.ndarray, decimals: tuple[int, ...]) -> str:
    lines = []
    for row in rows:
        lines.append(
            ",".join(
                str(int(v)) if d == 0 else f"{v:.{d}f}" for v, d in zip(row, decimals, strict=True)
            )
        )
    return "".join(line + "\n" for line in lines)


GT_DECIMALS = (0, 0, 0, 0, 0, 0, 0, 0, 3)
DET_DECIMALS = (0, 0, 2, 2, 2, 2, 4, 0, 0, 0)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_labels(path: Path, labels: dict[int, np.ndarray]) -> None:
    """``labels.csv``: ``id`` then one 0/1 column per attribute."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *ATTRIBUTES])
            for identity, row in sorted(labels.items()):
                writer.writerow([identity, *(int(v) for v in row)])

    atomic_write(path, write)


def _opencv():
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "generating video needs OpenCV; install it with `pip install 'pedattr[video]'`"
        ) from None
    return cv2


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    cv2 = _opencv()
    height, width = frames[0].shape[:2]
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    os.replace(tmp, path)


def write_clip(
    folder: str | os.PathLike,
    seed: int,
    clip: int = 0,
    settings: ClipSettings | None = None,
    noise: DetectionNoise | None = None,
) -> Path:
    """Generate clip ``clip`` of ``seed`` into ``folder`` (the files of the module docstring)."""
    settings, noise = settings or ClipSettings(), noise or DetectionNoise()
    folder = make_folder(folder)
    generated = generate_clip(seed, clip, settings)
    dets = noisy_detections(
        generated.gt,
        settings.frames,
        settings.size,
        noise,
        np.random.default_rng([seed, clip, _DETECTIONS]),
    )
    _write_text(make_folder(folder / "gt") / "gt.txt", _rows_text(generated.gt, GT_DECIMALS))
    write_labels(folder / "gt" / "labels.csv", generated.labels)
    _write_text(make_folder(folder / "det") / "det.txt", _rows_text(dets, DET_DECIMALS))
    height, width = settings.size
    _write_text(
        folder / "seqinfo.ini",
        f"[Sequence]\nname={folder.name}\nimDir=video.mp4\nframeRate={settings.fps:g}\n"
        f"seqLength={settings.frames}\nimWidth={width}\nimHeight={height}\nimExt=.mp4\n",
    )
    _write_video(folder / "video.mp4", generated.frames, settings.fps)
    return folder


def clip_names(clips: int) -> Iterator[str]:
    return (f"clip_{c:03d}" for c in range(clips))


def write_clips(
    out: str | os.PathLike,
    *,
    clips: int,
    seed: int = 0,
    settings: ClipSettings | None = None,
    noise: DetectionNoise | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write ``clips`` clips of ``seed`` as ``out/clip_000`` ... and ``out/clips.json`` (every
    setting, so the set can be told apart and made again). Returns the clip folders.

    Raises:
        ValueError: fewer than one clip.
        ImportError: OpenCV is not installed (before anything is written).
    """
    if clips < 1:
        raise ValueError(f"--clips {clips}: need at least one clip")
    settings, noise = settings or ClipSettings(), noise or DetectionNoise()
    _opencv()  # refused before anything is written
    out = make_folder(out)
    folders = []
    for c, name in enumerate(tqdm(list(clip_names(clips)), disable=not progress, unit="clip")):
        folders.append(write_clip(out / name, seed, c, settings, noise))
    manifest = {
        "generator": __name__,
        "clips_version": CLIPS_VERSION,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "clips": [f.name for f in folders],
        "attributes": list(ATTRIBUTES),
        "settings": asdict(settings),
        "detection_noise": asdict(noise),
    }
    _write_text(out / "clips.json", json.dumps(manifest, indent=2) + "\n")
    return folders
