"""Seeded synthetic pedestrians with attribute labels and ground-truth attribute boxes.

Real PAR datasets cannot ship with pedattr, so this generator draws simple pedestrian-like
figures whose attributes have local evidence at varying positions (a hat on a head that moves,
a backpack on either side, a bag at varying height) on cluttered backgrounds. Each positive local
attribute records its box in image pixels, which lets the weakly-supervised boxes be scored.

Everything is a function of the seed: the same seed gives the same images, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# (name, base positive probability). Co-occurrence is added in ``_sample_attributes``.
ATTRIBUTE_PRIORS: tuple[tuple[str, float], ...] = (
    ("Female", 0.45),
    ("Hat", 0.15),
    ("Glasses", 0.12),
    ("LongHair", 0.25),
    ("Backpack", 0.25),
    ("HandBag", 0.15),
    ("HoldObject", 0.08),
    ("UpperStripe", 0.2),
    ("UpperLogo", 0.15),
    ("Skirt", 0.2),
    ("Shorts", 0.15),
    ("Boots", 0.1),
)
ATTRIBUTES: tuple[str, ...] = tuple(name for name, _ in ATTRIBUTE_PRIORS)
#: Attributes whose evidence is a local region; each positive one gets a ground-truth box.
LOCAL_ATTRIBUTES = frozenset(ATTRIBUTES) - {"Female"}

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass
class SyntheticSample:
    image: Image.Image
    labels: np.ndarray  # [M] uint8
    boxes: dict[str, Box] = field(default_factory=dict)


def _sample_attributes(rng: np.random.Generator) -> dict[str, bool]:
    attrs = {name: bool(rng.random() < p) for name, p in ATTRIBUTE_PRIORS}
    # Realistic co-occurrence: long hair and skirts mostly on women; skirt excludes shorts.
    if attrs["Female"]:
        attrs["LongHair"] = attrs["LongHair"] or rng.random() < 0.5
        attrs["Skirt"] = attrs["Skirt"] or rng.random() < 0.2
    else:
        attrs["Skirt"] = attrs["Skirt"] and rng.random() < 0.1
        attrs["LongHair"] = attrs["LongHair"] and rng.random() < 0.3
    if attrs["Skirt"]:
        attrs["Shorts"] = False
    return attrs


def _random_color(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    base = np.array(_random_color(rng, 60, 200), dtype=np.float32)
    noise = rng.normal(0, 25, size=(height // 4 + 1, width // 4 + 1, 3))
    texture = np.kron(noise, np.ones((4, 4, 1)))[:height, :width]
    image = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):  # distractor shapes
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(4, width / 3), rng.uniform(4, height / 5)
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_random_color(rng))
    return image


@dataclass
class _Figure:
    """Key body coordinates of the drawn pedestrian, in pixels."""

    cx: float
    head_top: float
    head_r: float
    shoulder_y: float
    hip_y: float
    knee_y: float
    foot_y: float
    half_width: float


def _figure_geometry(rng: np.random.Generator, height: int, width: int) -> _Figure:
    scale = rng.uniform(0.8, 0.97) * height
    top = rng.uniform(0.01, 1 - scale / height - 0.01) * height
    cx = width / 2 + rng.uniform(-0.12, 0.12) * width
    head_r = 0.065 * scale
    return _Figure(
        cx=cx,
        head_top=top,
        head_r=head_r,
        shoulder_y=top + 2.2 * head_r,
        hip_y=top + 0.55 * scale,
        knee_y=top + 0.77 * scale,
        foot_y=top + scale,
        half_width=rng.uniform(0.16, 0.22) * width,
    )


def _draw_body(draw: ImageDraw.ImageDraw, fig: _Figure, attrs: dict, rng) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    skin, top_color, bottom_color = (
        _random_color(rng, 150, 240),
        _random_color(rng),
        _random_color(rng),
    )
    head = (fig.cx - fig.head_r, fig.head_top, fig.cx + fig.head_r, fig.head_top + 2 * fig.head_r)
    torso = (fig.cx - fig.half_width, fig.shoulder_y, fig.cx + fig.half_width, fig.hip_y)
    if attrs["LongHair"]:
        hair = (
            head[0] - 2,
            head[1] + fig.head_r * 0.3,
            head[2] + 2,
            fig.shoulder_y + 2 * fig.head_r,
        )
        draw.rectangle(hair, fill=(40, 25, 10))
        boxes["LongHair"] = hair
    draw.ellipse(head, fill=skin)
    draw.rectangle(torso, fill=top_color)
    leg_w = fig.half_width * 0.45
    for side in (-1, 1):
        x = fig.cx + side * fig.half_width * 0.5
        draw.rectangle((x - leg_w / 2, fig.hip_y, x + leg_w / 2, fig.foot_y), fill=bottom_color)
    return boxes | {"_head": head, "_torso": torso}


def _draw_local_attributes(draw, fig: _Figure, attrs: dict, parts: dict, rng) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    head, torso = parts["_head"], parts["_torso"]
    side = 1 if rng.random() < 0.5 else -1
    if attrs["Hat"]:
        hat = (head[0] - 2, head[1] - fig.head_r * 0.6, head[2] + 2, head[1] + fig.head_r * 0.5)
        draw.rectangle(hat, fill=_random_color(rng, 0, 120))
        boxes["Hat"] = hat
    if attrs["Glasses"]:
        y = head[1] + fig.head_r * 0.8
        glasses = (head[0] + 1, y, head[2] - 1, y + max(2.0, fig.head_r * 0.35))
        draw.rectangle(glasses, fill=(10, 10, 10))
        boxes["Glasses"] = glasses
    if attrs["UpperStripe"]:
        step = max(3.0, (torso[3] - torso[1]) / 6)
        for y in np.arange(torso[1] + step / 2, torso[3], step):
            draw.rectangle((torso[0], y, torso[2], y + step / 3), fill=(245, 245, 245))
        boxes["UpperStripe"] = torso
    if attrs["UpperLogo"]:
        size = fig.half_width * 0.6
        x0 = fig.cx + rng.uniform(-0.5, 0.0) * fig.half_width
        y0 = torso[1] + rng.uniform(0.15, 0.45) * (torso[3] - torso[1])
        logo = (x0, y0, x0 + size, y0 + size)
        draw.ellipse(logo, fill=(220, 30, 30))
        boxes["UpperLogo"] = logo
    if attrs["Backpack"]:
        x_edge = fig.cx + side * fig.half_width
        pack = sorted((x_edge, x_edge + side * fig.half_width * 0.8))
        backpack = (pack[0], torso[1] + 2, pack[1], torso[1] + 0.75 * (torso[3] - torso[1]))
        draw.rectangle(backpack, fill=(30, 60, 30))
        boxes["Backpack"] = backpack
    if attrs["HandBag"]:
        y0 = rng.uniform(fig.hip_y - 0.2 * (fig.hip_y - fig.shoulder_y), fig.knee_y)
        x_edge = fig.cx - side * fig.half_width
        bag_x = sorted((x_edge, x_edge - side * fig.half_width * 0.7))
        bag = (bag_x[0], y0, bag_x[1], y0 + fig.half_width * 0.7)
        draw.rectangle(bag, fill=(120, 40, 90))
        boxes["HandBag"] = bag
    if attrs["HoldObject"]:
        y0 = rng.uniform(torso[1] + 0.3 * (torso[3] - torso[1]), torso[3])
        obj = (
            fig.cx - fig.half_width * 0.5,
            y0,
            fig.cx + fig.half_width * 0.5,
            y0 + fig.half_width * 0.6,
        )
        draw.rectangle(obj, fill=(230, 200, 40))
        boxes["HoldObject"] = obj
    return boxes


def _draw_lower_attributes(draw, fig: _Figure, attrs: dict, rng) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    if attrs["Skirt"]:
        skirt = (
            fig.cx - fig.half_width * 1.2,
            fig.hip_y,
            fig.cx + fig.half_width * 1.2,
            fig.knee_y,
        )
        draw.polygon(
            [
                (fig.cx - fig.half_width, fig.hip_y),
                (fig.cx + fig.half_width, fig.hip_y),
                (skirt[2], skirt[3]),
                (skirt[0], skirt[3]),
            ],
            fill=_random_color(rng),
        )
        boxes["Skirt"] = skirt
    elif attrs["Shorts"]:
        skin = _random_color(rng, 150, 240)
        leg_w = fig.half_width * 0.45
        for s in (-1, 1):
            x = fig.cx + s * fig.half_width * 0.5
            draw.rectangle((x - leg_w / 2, fig.knee_y - 2, x + leg_w / 2, fig.foot_y), fill=skin)
        boxes["Shorts"] = (
            fig.cx - fig.half_width,
            fig.knee_y - 2,
            fig.cx + fig.half_width,
            fig.foot_y,
        )
    if attrs["Boots"]:
        boot_top = fig.foot_y - 0.08 * (fig.foot_y - fig.head_top)
        boots = (fig.cx - fig.half_width * 0.8, boot_top, fig.cx + fig.half_width * 0.8, fig.foot_y)
        draw.rectangle(boots, fill=(15, 10, 5))
        boxes["Boots"] = boots
    return boxes


def generate_sample(
    rng: np.random.Generator, height: int = 128, width: int = 64
) -> SyntheticSample:
    """Draw one pedestrian with random attributes from ``rng``."""
    attrs = _sample_attributes(rng)
    image = _background(rng, height, width)
    draw = ImageDraw.Draw(image)
    fig = _figure_geometry(rng, height, width)
    parts = _draw_body(draw, fig, attrs, rng)
    boxes = {k: v for k, v in parts.items() if not k.startswith("_")}
    boxes |= _draw_lower_attributes(draw, fig, attrs, rng)
    boxes |= _draw_local_attributes(draw, fig, attrs, parts, rng)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    labels = np.array([attrs[name] for name in ATTRIBUTES], dtype=np.uint8)
    return SyntheticSample(image=image, labels=labels, boxes=_clip_boxes(boxes, height, width))


def _clip_boxes(boxes: dict[str, Box], height: int, width: int) -> dict[str, Box]:
    """Keep the visible part of each box (a backpack may stick out of the frame)."""
    return {
        name: (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
        for name, (x0, y0, x1, y1) in boxes.items()
    }


def generate_arrays(
    num_samples: int, *, seed: int = 0, height: int = 128, width: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``num_samples`` images [N, H, W, 3] uint8 and labels [N, M] uint8."""
    rng = np.random.default_rng(seed)
    samples = [generate_sample(rng, height, width) for _ in range(num_samples)]
    images = np.stack([np.asarray(s.image, dtype=np.uint8) for s in samples])
    labels = np.stack([s.labels for s in samples])
    return images, labels
