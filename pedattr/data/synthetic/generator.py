"""Generated pedestrians: a seeded benchmark with attribute labels and ground-truth boxes.

Real PAR datasets cannot ship with pedattr, so this generator draws pedestrian-like figures with
23 PA-100K-style attributes. Most attributes have local evidence whose position and size change
from image to image (a hat on a head that moves with the figure, a backpack on either side, a
hand bag at the hand or the elbow, a held object at any height, a logo anywhere on the chest);
some are global (sex from the torso's shape, a child's smaller figure and larger head, the
orientation from the face and the body's width). Labels follow real priors and co-occurrence
(see :data:`PA100K_TEST_POSITIVE_RATIO`), and the images are cluttered: textured backgrounds,
distractor shapes that look like attribute evidence, scale and position jitter, an occasional
foreground occluder, blur and noise.

Every positive local attribute records its ground-truth box ``(x0, y0, x1, y1)`` in continuous
pixel coordinates: the image spans [0, W] x [0, H] and pixel (row i, column j) has its centre at
(j + 0.5, i + 0.5). The box is the union of the shapes that draw the attribute's evidence, and a
shape paints exactly the pixels whose centre lies inside it, so all evidence lies in the box.
Boxes are clipped to the image and never empty.

Labels say what an annotator would see. The figure is painted once as an ownership map (which
attribute's evidence shows at each pixel): an attribute whose evidence box is less than half
inside the frame, or whose evidence is mostly painted over by other parts and items (a logo
behind a held object), is labelled negative. The foreground occluder is then shrunk, or dropped,
until it hides at most 40 % of every labelled attribute's visible evidence (and of the head and
the torso, which carry the global cues), so an occluded attribute stays visible and keeps its
label and box.

Determinism: sample k of seed s depends only on (s, k), through ``np.random.default_rng([s, k])``,
so any subset can be generated alone, in any order or in parallel, bit for bit.

:func:`write_synthetic_dataset` writes PNG images and a prepared dataset description (with
``boxes.json``), which training, evaluation and the demo read like any prepared dataset.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from pedattr.data.annotations import SPLITS, RawAnnotations
from pedattr.data.description import BOXES_FILE, DESCRIPTION_FILE, SAMPLES_FILE, write_description
from pedattr.data.synthetic._figure import (
    LOWER_GARMENTS,
    ORIENTATIONS,
    SLEEVES,
    Body,
    Scene,
    evidence_boxes,
    figure_strokes,
    lerp,
)
from pedattr.data.synthetic._shapes import (
    Box,
    Colour,
    Ellipse,
    Rect,
    box_area,
    clip_box,
    covered_pixels,
    overlap_fraction,
    paint,
    stripes,
)

#: Bumped whenever the same (seed, index) would give a different image or label.
GENERATOR_VERSION = 2


#: The attributes, in output order (PA-100K's names and order where PA-100K has them).
ATTRIBUTES: tuple[str, ...] = (
    "Female",
    "AgeLess18",
    "Front",
    "Side",
    "Back",
    "Hat",
    "Glasses",
    "LongHair",
    "HandBag",
    "ShoulderBag",
    "Backpack",
    "HoldObjectsInFront",
    "ShortSleeve",
    "LongSleeve",
    "UpperStride",
    "UpperLogo",
    "UpperPlaid",
    "LowerStripe",
    "LongCoat",
    "Trousers",
    "Shorts",
    "Skirt&Dress",
    "boots",
)
#: Attributes judged from the whole figure (build, size, pose); they have no box.
GLOBAL_ATTRIBUTES = frozenset({"Female", "AgeLess18", *ORIENTATIONS})
#: Attributes with local evidence; each positive one gets a ground-truth box.
LOCAL_ATTRIBUTES = frozenset(ATTRIBUTES) - GLOBAL_ATTRIBUTES
#: Local attributes whose evidence is a small part or object (at most about a tenth of the
#: figure) whose place in the image changes from image to image: head accessories and feet move
#: with the figure's scale and position jitter, carried objects and logos are also put on a
#: random side, at a random height or offset. The other local attributes are garments whose box
#: is a large body region (torso, arms, legs) near the image centre, which any box covering the
#: figure's middle would hit.
LOCATION_VARYING_ATTRIBUTES = frozenset(
    {
        "Hat",
        "Glasses",
        "LongHair",
        "HandBag",
        "ShoulderBag",
        "Backpack",
        "HoldObjectsInFront",
        "UpperLogo",
        "boots",
    }
)

UPPER_PATTERNS = ("UpperStride", "UpperPlaid", "UpperLogo")
#: Groups of which at most one attribute is positive (exactly one orientation; a lower garment
#: and a sleeve length unless hidden), as in PA-100K.
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (
    ORIENTATIONS,
    LOWER_GARMENTS,
    SLEEVES,
    UPPER_PATTERNS,
    ("Backpack", "ShoulderBag"),
)

#: Positive ratios of the PA-100K test split (10,000 images, the official attribute file order;
#: Liu et al., ICCV 2017), rounded, for the attributes PA-100K has. The sampler below follows
#: them, including their dependence on sex and the mutually exclusive groups (one orientation,
#: one lower garment, one sleeve length, at most one upper-body pattern, a backpack or a
#: shoulder bag); attributes rarer than 5 % there (AgeLess18, Hat, HoldObjectsInFront,
#: LowerStripe, boots) are raised to about 5 % so that a few thousand images hold enough
#: positives to learn and to score them. LongHair is not a PA-100K attribute (PETA's hairLong).
PA100K_TEST_POSITIVE_RATIO: Mapping[str, float] = {
    "Female": 0.390,
    "AgeLess18": 0.009,
    "Front": 0.297,
    "Side": 0.399,
    "Back": 0.304,
    "Hat": 0.029,
    "Glasses": 0.246,
    "HandBag": 0.147,
    "ShoulderBag": 0.196,
    "Backpack": 0.152,
    "HoldObjectsInFront": 0.010,
    "ShortSleeve": 0.441,
    "LongSleeve": 0.559,
    "UpperStride": 0.064,
    "UpperLogo": 0.124,
    "UpperPlaid": 0.122,
    "LowerStripe": 0.003,
    "LongCoat": 0.045,
    "Trousers": 0.786,
    "Shorts": 0.129,
    "Skirt&Dress": 0.082,
    "boots": 0.006,
}

#: Largest share of an attribute's visible evidence (and of the head and torso boxes) that the
#: foreground occluder may cover.
MAX_OCCLUDED = 0.4
#: Smallest share of an attribute's evidence box that must lie inside the frame to label it.
MIN_IN_FRAME = 0.5
#: Smallest share of an attribute's evidence pixels that other parts and items may leave
#: uncovered for it to be labelled (a logo behind a held object is not seen).
MIN_UNCOVERED = 0.3
#: Uncovered area that suffices instead (a share of the image), whichever of the two is smaller:
#: a large garment stays recognisable from a small share of it.
MIN_UNCOVERED_AREA = 0.01


@dataclass
class SyntheticSample:
    """One generated pedestrian.

    Attributes:
        image: RGB image of the requested size.
        labels: [M] uint8 0/1 in :data:`ATTRIBUTES` order.
        boxes: attribute name -> (x0, y0, x1, y1) pixels, for the positive local attributes.
    """

    image: Image.Image
    labels: np.ndarray
    boxes: dict[str, Box] = field(default_factory=dict)


# --- labels ---------------------------------------------------------------------------------


def _coin(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _pick(rng: np.random.Generator, weights: Mapping[str | None, float]) -> str | None:
    """One key of ``weights``; the weights not summing to 1 leaves the rest to ``None``."""
    u = rng.random()
    for key, weight in weights.items():
        if u < weight:
            return key
        u -= weight
    return None


def _sample_attributes(rng: np.random.Generator) -> dict[str, bool]:
    """Labels with PA-100K's priors, sex dependence and exclusions (ratios in comments)."""
    attrs = dict.fromkeys(ATTRIBUTES, False)
    female = attrs["Female"] = _coin(rng, 0.39)  # 0.390
    attrs["AgeLess18"] = _coin(rng, 0.05)  # 0.009, raised
    orientation = _pick(rng, {"Front": 0.30, "Side": 0.40, "Back": 0.30})
    attrs[orientation] = True
    back = orientation == "Back"
    # Lower garment given sex, as in PA-100K (0.786 / 0.129 / 0.082 overall).
    lower = _pick(
        rng,
        {"Trousers": 0.71, "Shorts": 0.08, "Skirt&Dress": 0.21}
        if female
        else {"Trousers": 0.84, "Shorts": 0.16, "Skirt&Dress": 0.0},
    )
    attrs[lower] = True
    # A long coat would hide shorts or a skirt entirely, so it comes with trousers (0.045).
    attrs["LongCoat"] = lower == "Trousers" and _coin(rng, 0.15 if female else 0.006)
    # 98 % of PA-100K's shorts come with short sleeves and 99 % of its coats with long ones.
    short_sleeve = not attrs["LongCoat"] and _coin(rng, 0.95 if lower == "Shorts" else 0.38)
    attrs["ShortSleeve"], attrs["LongSleeve"] = short_sleeve, not short_sleeve
    # At most one upper-body pattern (exclusive in PA-100K); a chest logo is not seen from behind.
    pattern = _pick(
        rng, dict(zip(UPPER_PATTERNS, (0.064, 0.122, 0.0 if back else 0.177), strict=True))
    )
    if pattern is not None:
        attrs[pattern] = True
    attrs["LowerStripe"] = _coin(rng, 0.05)  # 0.003, raised
    attrs["Hat"] = _coin(rng, 0.05)  # 0.029, raised
    attrs["Glasses"] = not back and _coin(rng, 0.17 if female else 0.38)  # 0.246
    attrs["LongHair"] = _coin(rng, 0.70 if female else 0.04)
    # A backpack and a shoulder bag never co-occur in PA-100K; hand bags rarely join backpacks.
    attrs["Backpack"] = _coin(rng, 0.15)  # 0.152
    attrs["ShoulderBag"] = not attrs["Backpack"] and _coin(rng, 0.35 if female else 0.15)  # 0.196
    hand_bag = 0.05 if attrs["Backpack"] else (0.22 if female else 0.13)
    attrs["HandBag"] = _coin(rng, hand_bag)  # 0.147
    attrs["HoldObjectsInFront"] = not back and _coin(rng, 0.07)  # 0.010, raised
    attrs["boots"] = _coin(rng, 0.08 if female else 0.03)  # 0.006, raised
    return attrs


# --- geometry and colours -------------------------------------------------------------------


def _arms(
    rng: np.random.Generator, body: dict, side_view: bool, length: float
) -> tuple[tuple[float, float, float, float], ...]:
    """Arms hanging from the shoulders with a random swing, relative to x = 0."""
    shoulder_y = body["shoulder_y"] + body["arm_r"]
    if side_view:
        x = -body["facing"] * 0.1 * body["shoulder_hw"]
        swing = rng.uniform(-0.45, 0.45)
        return (
            (x, shoulder_y, x + length * math.sin(swing), shoulder_y + length * math.cos(swing)),
        )
    arms = []
    for side in (-1, 1):
        x = side * (body["shoulder_hw"] + 0.5 * body["arm_r"])
        swing = rng.uniform(0.02, 0.22)
        hand = (x + side * length * math.sin(swing), shoulder_y + length * math.cos(swing))
        arms.append((x, shoulder_y, *hand))
    return tuple(arms)


def _sample_body(
    rng: np.random.Generator, attrs: Mapping[str, bool], height: int, width: int
) -> Body:
    """The figure's layout from its global attributes (age, sex, orientation), with scale,
    position, build and arm-swing jitter."""
    child, female = attrs["AgeLess18"], attrs["Female"]
    orientation = next((o for o in ORIENTATIONS if attrs[o]), "Front")
    side_view = orientation == "Side"
    facing = (1 if rng.random() < 0.5 else -1) if side_view else 0
    fig_h = height * (rng.uniform(0.55, 0.68) if child else rng.uniform(0.72, 0.93))
    unit = fig_h * 2.0 * width / height
    top = rng.uniform(0.01 * height, max(0.99 * height - fig_h, 0.01 * height))
    build = rng.uniform(0.9, 1.12)
    head_r = fig_h * (0.078 if child else 0.06) * rng.uniform(0.95, 1.05)
    shoulder_y = top + 2 * head_r + 0.025 * fig_h
    hip_y = top + (0.56 if child else 0.53) * fig_h
    # Sex shows in the torso: a woman's narrows to the waist and widens to the hips, a man's
    # tapers from broader shoulders.
    shoulder, waist, hip = (0.084, 0.056, 0.098) if female else (0.112, 0.097, 0.088)
    profile = 0.62 if side_view else 1.0  # a body seen from the side is narrower
    scale = build * unit * profile
    body = dict(
        facing=facing,
        shoulder_y=shoulder_y,
        shoulder_hw=shoulder * scale,
        waist_hw=waist * scale,
        hip_hw=hip * scale,
        arm_r=0.022 * build * unit,
    )
    leg_hw = 0.038 * build * unit
    if side_view:
        stride = rng.uniform(0.0, 0.06) * unit
        leg_x = (facing * stride, -facing * 0.8 * stride)
    else:
        leg_x = (-(body["hip_hw"] - leg_hw), body["hip_hw"] - leg_hw)
    arms = _arms(rng, body, side_view, (0.35 if child else 0.37) * fig_h)
    # Keep torso, arms and hands inside the frame; carried items may stick out a little.
    extent = max(
        body["shoulder_hw"] + 1.5 * body["arm_r"],
        *(abs(hand_x) + 1.2 * body["arm_r"] for _, _, hand_x, _ in arms),
        *(abs(x) + 1.6 * leg_hw for x in leg_x),
    )
    cx = rng.uniform(min(extent, width / 2), max(width - extent, width / 2))
    return Body(
        orientation=orientation,
        cx=cx,
        top=top,
        height=fig_h,
        unit=unit,
        head_r=head_r,
        waist_y=shoulder_y + 0.62 * (hip_y - shoulder_y),
        hip_y=hip_y,
        knee_y=top + 0.76 * fig_h,
        ankle_y=top + 0.955 * fig_h,
        foot_y=top + fig_h,
        leg_hw=leg_hw,
        leg_x=tuple(cx + x for x in leg_x),
        arms=tuple((cx + sx, sy, cx + hx, hy) for sx, sy, hx, hy in arms),
        **body,
    )


def _random_colour(rng: np.random.Generator, low: float = 0, high: float = 256) -> Colour:
    return tuple(float(c) for c in rng.uniform(low, high, size=3))


def _contrasting(
    rng: np.random.Generator, against: list[Colour], *, low: float = 0, high: float = 256
) -> Colour:
    """A random colour kept visibly apart (RGB distance >= 100) from the colours it sits on."""
    colour = _random_colour(rng, low, high)
    if min(math.dist(colour, c) for c in against) >= 100:
        return colour
    inverted = tuple(255.0 - c for c in colour)  # the farthest simple alternative
    candidates = [colour, inverted, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)]
    return max(candidates, key=lambda c: min(math.dist(c, other) for other in against))


_SKIN_LIGHT, _SKIN_DARK = (236.0, 200.0, 170.0), (105.0, 72.0, 48.0)
_HAIR = ((25.0, 20.0, 15.0), (60.0, 40.0, 25.0), (110.0, 75.0, 40.0), (195, 165, 105), (150,) * 3)


def _sample_colours(rng: np.random.Generator) -> dict[str, Colour]:
    """Skin, hair and garment colours, and item colours that stand out from what they sit on."""
    t = rng.random()
    skin = tuple(a + (b - a) * t for a, b in zip(_SKIN_LIGHT, _SKIN_DARK, strict=True))
    hair = tuple(
        float(c) for c in _HAIR[int(rng.choice(len(_HAIR), p=[0.4, 0.3, 0.15, 0.1, 0.05]))]
    )
    top, bottom = _random_colour(rng), _random_colour(rng)
    return {
        "skin": skin,
        "hair": hair,
        "top": top,
        "bottom": bottom,
        "shoes": _random_colour(rng, 10, 90),
        "hat": _contrasting(rng, [hair, skin]),
        "glasses": _contrasting(rng, [skin], high=70),
        "backpack": _contrasting(rng, [top]),
        "shoulder_bag": _contrasting(rng, [top, bottom]),
        "hand_bag": _contrasting(rng, [top, bottom]),
        "held": _contrasting(rng, [top]),
        "logo": _contrasting(rng, [top]),
        "stripe": _contrasting(rng, [top]),
        "plaid": _contrasting(rng, [top]),
        "lower_stripe": _contrasting(rng, [bottom, top]),
        "coat_line": _contrasting(rng, [top]),
        "boots": _contrasting(rng, [bottom, skin]),
        "occluder": _random_colour(rng),
    }


#: Named uniform draws that place and size the items; always all drawn, positive or not.
_ITEM_DRAWS = (
    "hat_style",
    "hat_height",
    "hair_length",
    "backpack_side",
    "backpack_width",
    "backpack_height",
    "backpack_offset",
    "shoulder_bag_side",
    "shoulder_bag_width",
    "shoulder_bag_height",
    "shoulder_bag_drop",
    "shoulder_bag_inset",
    "hand_bag_side",
    "hand_bag_width",
    "hand_bag_height",
    "hand_bag_handle",
    "hand_bag_anchor",
    "hand_bag_shift",
    "held_width",
    "held_height",
    "held_x",
    "held_y",
    "logo_size",
    "logo_x",
    "logo_y",
    "logo_shape",
    "stripe_period",
    "stripe_phase",
    "plaid_period",
    "lower_stripe_period",
    "coat_length",
    "coat_flare",
    "shorts_length",
    "skirt_length",
    "skirt_flare",
    "dress",
    "boot_height",
)


# --- background, occluder, scene ------------------------------------------------------------


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background: blocky noise, smooth blotches or a facade of bands and lines."""
    kind = int(rng.integers(3))
    base = rng.uniform(40, 220, size=3).astype(np.float32)
    if kind == 0:
        block = int(rng.choice((2, 4, 8)))
        noise = rng.normal(
            0, rng.uniform(10, 35), size=(height // block + 1, width // block + 1, 3)
        )
        texture = noise.repeat(block, axis=0).repeat(block, axis=1)[:height, :width]
    elif kind == 1:
        coarse = rng.normal(0, 45, size=(6, 4, 3))
        rows = np.linspace(0, coarse.shape[0] - 1, height)
        cols = np.linspace(0, coarse.shape[1] - 1, width)
        texture = _bilinear(coarse, rows, cols)
    else:
        period_y, period_x = rng.uniform(6, 24), rng.uniform(5, 20)
        y = np.arange(height)[:, None, None]
        x = np.arange(width)[None, :, None]
        bands = ((y / period_y) % 1.0 < 0.5) * rng.normal(0, 30, size=3)
        lines = ((x / period_x) % 1.0 < 0.15) * rng.normal(0, 40, size=3)
        texture = np.broadcast_to(bands + lines, (height, width, 3))
    canvas = base + texture.astype(np.float32)
    ground = int(rng.uniform(0.6, 0.95) * height)  # a floor of another colour
    canvas[ground:] = canvas[ground:] * 0.5 + rng.uniform(40, 200, size=3).astype(np.float32) * 0.5
    return canvas


def _bilinear(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    r0 = np.floor(rows).astype(int).clip(0, grid.shape[0] - 2)
    c0 = np.floor(cols).astype(int).clip(0, grid.shape[1] - 2)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c0 + 1] * fc
    bottom = grid[r0 + 1][:, c0] * (1 - fc) + grid[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _paint_distractors(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Background shapes that resemble attribute evidence: bags, dark bars, discs, stripes.

    They are painted before the figure, which covers them, so they never change what a human
    would label; beside the figure they look like carried objects without a strap or handle.
    """
    height, width = canvas.shape[:2]
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(4))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.06, 0.25) * width, rng.uniform(0.03, 0.12) * height
        colour = _random_colour(rng)
        if kind == 0:  # a bag-like box
            paint(canvas, Rect(x, y, x + w, y + h), colour)
        elif kind == 1:  # a dark bar like glasses or a strap
            paint(canvas, Rect(x, y, x + w, y + max(0.2 * h, 1.0)), _random_colour(rng, 0, 60))
        elif kind == 2:  # a disc like a logo or a head
            paint(canvas, Ellipse(x, y, w / 2, w / 2), colour)
        else:  # a striped patch like a patterned garment
            pattern = stripes(
                vertical=bool(rng.random() < 0.5), origin=x, period=rng.uniform(2, 6), duty=0.5
            )
            paint(canvas, Rect(x, y, x + w, y + 2 * h), colour, pattern)


_ATTRIBUTE_INDEX = {name: index for index, name in enumerate(ATTRIBUTES)}


@dataclass(frozen=True)
class _Visibility:
    """What the painted figure shows of each positive local attribute's evidence."""

    boxes: dict[str, Box]  # unclipped evidence boxes
    owner: np.ndarray  # [H, W] attribute index owning each pixel last, -1 for body or none
    drawn: dict[str, int]  # pixels each attribute's evidence paints before anything covers it

    def visible(self, name: str) -> np.ndarray:
        return self.owner == _ATTRIBUTE_INDEX[name]


def _visibility(scene: Scene) -> _Visibility:
    """Paint the figure's ownership instead of its colours (as fast as painting it)."""
    strokes = figure_strokes(scene)
    owner = np.full((scene.height, scene.width), -1, dtype=np.int16)
    drawn: dict[str, np.ndarray] = {}
    for stroke in strokes:
        covered = covered_pixels(stroke.shape, stroke.pattern, scene.height, scene.width)
        if covered is None:
            continue
        rows, cols, mask = covered
        tag = stroke.tag
        owner[rows, cols][mask] = -1 if tag is None else _ATTRIBUTE_INDEX[tag]
        if tag is not None:  # everything the attribute's strokes drew, covered later or not
            drawn.setdefault(tag, np.zeros(owner.shape, dtype=bool))[rows, cols] |= mask
    return _Visibility(
        boxes=evidence_boxes(strokes, scene.attributes),
        owner=owner,
        drawn={tag: int(mask.sum()) for tag, mask in drawn.items()},
    )


def _is_shown(name: str, seen: _Visibility, height: int, width: int) -> bool:
    """Mostly inside the frame, and enough of it not painted over by other parts or items."""
    box = seen.boxes.get(name)
    if box is None or box_area(clip_box(box, height, width)) < MIN_IN_FRAME * box_area(box):
        return False
    visible = int(seen.visible(name).sum())
    # Trousers between a long coat and boots show a small share but are plainly trousers.
    enough = min(MIN_UNCOVERED * seen.drawn.get(name, 0), MIN_UNCOVERED_AREA * height * width)
    return visible > 0 and visible >= enough


def _drop_hidden_attributes(scene: Scene) -> tuple[Scene, _Visibility]:
    """Label negative any local attribute an annotator could not see in the painted figure.

    Returns the scene and what its figure shows.
    """
    seen = _visibility(scene)
    hidden = [
        name
        for name in LOCAL_ATTRIBUTES
        if scene.attributes[name] and not _is_shown(name, seen, scene.height, scene.width)
    ]
    if not hidden:
        return scene, seen
    scene = replace(scene, attributes={**scene.attributes, **dict.fromkeys(hidden, False)})
    return scene, _visibility(scene)  # removing items only uncovers the others


def _occluder_candidates(
    kind: float, position: float, size: float, height: int, width: int
) -> Iterator[Rect]:
    """A pole (10 % of images) or a low obstacle (10 %) at decreasing sizes; else nothing."""
    for shrink in (1.0, 0.6, 0.35):
        if kind < 0.1:
            half = 0.5 * lerp(0.08, 0.2, size) * width * shrink
            x = position * width
            yield Rect(x - half, 0.0, x + half, float(height))
        elif kind < 0.2:
            x0 = position * 0.5 * width
            top = height * (1 - lerp(0.1, 0.25, size) * shrink)
            yield Rect(x0, top, x0 + lerp(0.4, 0.8, size) * width, float(height))


def _fit_occluder(scene: Scene, seen: _Visibility, draws: np.ndarray) -> Rect | None:
    """The largest candidate occluder that hides at most :data:`MAX_OCCLUDED` of every positive
    attribute's visible evidence and of the head and torso boxes (the global cues), or None."""
    evidence = [seen.visible(name) for name in seen.boxes]
    body = (scene.body.head_box, scene.body.torso_box)
    for occluder in _occluder_candidates(*(float(u) for u in draws), scene.height, scene.width):
        covered = np.zeros(seen.owner.shape, dtype=bool)
        paint(covered, occluder, True)
        if all((mask & covered).sum() <= MAX_OCCLUDED * mask.sum() for mask in evidence) and all(
            overlap_fraction(box, occluder.box) <= MAX_OCCLUDED for box in body
        ):
            return occluder
    return None


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of ``seed``: independent of every other sample."""
    return np.random.default_rng([seed, index])


def sample_scene(
    source: np.random.Generator | int, height: int = 128, width: int = 64, *, index: int = 0
) -> Scene:
    """Draw everything random about one pedestrian.

    Args:
        source: a seed (the sample is then ``index`` of that seed) or a generator to draw from.
        height, width: image size in pixels.
        index: the sample's number within the seed; ignored when ``source`` is a generator.
    """
    rng = source if isinstance(source, np.random.Generator) else sample_rng(source, index)
    attributes = _sample_attributes(rng)
    body = _sample_body(rng, attributes, height, width)
    colours = _sample_colours(rng)
    draws = {name: float(rng.random()) for name in _ITEM_DRAWS}
    background_seed, noise_seed = (int(s) for s in rng.integers(0, 2**63, size=2))
    noise_sigma = float(rng.uniform(2.0, 7.0))
    blur = float(rng.uniform(0.3, 0.8))
    blur_radius = blur if rng.random() < 0.35 else 0.0
    occluder_draws = rng.random(3)
    scene = Scene(
        height=height,
        width=width,
        attributes=attributes,
        body=body,
        colours=colours,
        draws=draws,
        background_seed=background_seed,
        noise_seed=noise_seed,
        noise_sigma=noise_sigma,
        blur_radius=blur_radius,
    )
    scene, seen = _drop_hidden_attributes(scene)
    return replace(scene, occluder=_fit_occluder(scene, seen, occluder_draws))


def render_scene(scene: Scene) -> SyntheticSample:
    """Paint a scene: background, distractors, figure, occluder, then blur and sensor noise."""
    background_rng = np.random.default_rng(scene.background_seed)
    canvas = _texture(background_rng, scene.height, scene.width)
    _paint_distractors(canvas, background_rng)
    strokes = figure_strokes(scene)
    for stroke in strokes:
        paint(canvas, stroke.shape, stroke.colour, stroke.pattern)
    if scene.occluder is not None:
        paint(canvas, scene.occluder, scene.colours["occluder"])
    pixels = np.clip(canvas, 0, 255).astype(np.uint8)
    if scene.blur_radius > 0:
        blurred = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(scene.blur_radius))
        pixels = np.asarray(blurred)
    noise = np.random.default_rng(scene.noise_seed).normal(0, scene.noise_sigma, pixels.shape)
    pixels = np.clip(pixels + noise.astype(np.float32), 0, 255).astype(np.uint8)
    boxes = {
        name: clip_box(box, scene.height, scene.width)
        for name, box in evidence_boxes(strokes, scene.attributes).items()
    }
    labels = np.array([scene.attributes[name] for name in ATTRIBUTES], dtype=np.uint8)
    return SyntheticSample(image=Image.fromarray(pixels), labels=labels, boxes=boxes)


def generate_sample(
    source: np.random.Generator | int, height: int = 128, width: int = 64, *, index: int = 0
) -> SyntheticSample:
    """One pedestrian: sample ``index`` of seed ``source``, or the next draw of a generator."""
    return render_scene(sample_scene(source, height, width, index=index))


def generate_arrays(
    num_samples: int, *, seed: int = 0, height: int = 128, width: int = 64, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``start`` .. ``start + num_samples - 1`` of ``seed`` as arrays.

    Returns:
        images [N, H, W, 3] uint8 and labels [N, M] uint8 (:data:`ATTRIBUTES` order).
    """
    samples = [generate_sample(seed, height, width, index=start + k) for k in range(num_samples)]
    if not samples:
        return np.zeros((0, height, width, 3), np.uint8), np.zeros((0, len(ATTRIBUTES)), np.uint8)
    images = np.stack([np.asarray(s.image, dtype=np.uint8) for s in samples])
    return images, np.stack([s.labels for s in samples])


# --- the prepared dataset -------------------------------------------------------------------

IMAGE_DIR = "images"


def synthetic_source(*, seed: int, counts: Mapping[str, int], size: tuple[int, int]) -> dict:
    """The ``source`` entry of a generated dataset's description: everything that determines it."""
    return {
        "format": "synthetic",
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        **{f"num_{split}": int(counts[split]) for split in SPLITS},
        "size": [int(size[0]), int(size[1])],
        # Read by `pedattr eval --localization` for the mean over these attributes.
        "location_varying_attributes": sorted(LOCATION_VARYING_ATTRIBUTES),
    }


def _image_name(index: int) -> str:
    return f"{index:06d}.png"


def _is_complete(out_dir: Path, source: dict, num_samples: int) -> bool:
    """A finished dataset with the same generator parameters and all its images."""
    try:
        meta = json.loads((out_dir / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("source") != source:
        return False
    if not ((out_dir / SAMPLES_FILE).is_file() and (out_dir / BOXES_FILE).is_file()):
        return False
    images = out_dir / IMAGE_DIR
    return all((images / _image_name(k)).is_file() for k in range(num_samples))


def _labels_only(seed: int, indices: range, height: int, width: int) -> np.ndarray:
    """Labels without rendering the images, so that a training split that cannot give loss
    weights is refused before anything is written. Sampling a scene still paints its ownership
    map (to tell which attributes stay visible): about a third of the drawing work, done again
    when the images are rendered."""
    rows = []
    for k in indices:
        attributes = sample_scene(seed, height, width, index=k).attributes
        rows.append([attributes[name] for name in ATTRIBUTES])
    return np.array(rows, dtype=np.uint8).reshape(len(indices), len(ATTRIBUTES))


def _check_training_positives(labels: np.ndarray) -> None:
    counts = labels.sum(axis=0)
    missing = [name for name, count in zip(ATTRIBUTES, counts, strict=True) if count == 0]
    if missing:
        raise ValueError(
            f"the {len(labels)} training images have no positive for {missing}, so their loss "
            "weights are undefined; generate more training images (the rarest attributes are "
            "about 5 % positive, so a few hundred suffice) or another seed"
        )


def _render_job(job: tuple[int, int, int, int, str]) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Render sample ``index`` of ``seed`` to ``path``; module level so a Pool can pickle it."""
    seed, index, height, width, path = job
    sample = generate_sample(seed, height, width, index=index)
    sample.image.save(path, format="PNG", compress_level=1)
    # Rounding to 1/1000 pixel never moves a box edge across a pixel centre (k + 0.5).
    boxes = {name: [round(v, 3) for v in box] for name, box in sample.boxes.items()}
    return sample.labels, boxes


def _render_all(jobs: list, workers: int, progress: bool) -> Iterator[tuple]:
    bar = dict(total=len(jobs), disable=not progress, desc="generating", unit="img")
    if workers <= 0:
        yield from tqdm(map(_render_job, jobs), **bar)
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        yield from tqdm(pool.imap(_render_job, jobs, chunksize=64), **bar)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Generate a prepared dataset of PNG images with labels, splits and ground-truth boxes.

    Samples 0 .. num_train - 1 of ``seed`` form the training split, the next ``num_val`` the
    validation split and the last ``num_test`` the test split. Images go to
    ``out_dir/images/NNNNNN.png``; ``out_dir`` becomes a dataset description (``dataset.json``,
    ``samples.csv``, ``boxes.json``) that :class:`~pedattr.data.description.DatasetDescription`
    loads.

    The result is cached: when ``out_dir/dataset.json`` records the same generator parameters
    (seed, counts, size, generator version) and all images are there, nothing is redone. Any
    other ``dataset.json`` is removed before the first image is written and a new one is
    written last, so an interrupted run is never mistaken for a finished one.

    Args:
        out_dir: the dataset folder.
        num_train, num_val, num_test: samples per split (val and test may be 0).
        seed: the generator seed.
        size: (height, width) of the images.
        workers: processes that render in parallel (0: in this process); the output is the
            same either way.
        progress: show a progress bar.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: a negative count, no samples at all, or a training split in which some
            attribute has no positive (its loss weight would be undefined).
    """
    out_dir = Path(out_dir)
    counts = {"train": num_train, "val": num_val, "test": num_test}
    if min(counts.values()) < 0 or sum(counts.values()) == 0:
        raise ValueError(f"sample counts must be >= 0 and not all 0, got {counts}")
    height, width = size
    source = synthetic_source(seed=seed, counts=counts, size=size)
    total = sum(counts.values())
    if _is_complete(out_dir, source, total):
        return out_dir
    if num_train > 0:
        _check_training_positives(_labels_only(seed, range(num_train), height, width))

    (out_dir / DESCRIPTION_FILE).unlink(missing_ok=True)
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    names = [_image_name(k) for k in range(total)]
    jobs = [(seed, k, height, width, str(image_dir / names[k])) for k in range(total)]
    labels, boxes = [], []
    for sample_labels, sample_boxes in _render_all(jobs, workers, progress):
        labels.append(sample_labels)
        boxes.append(sample_boxes)
    raw = RawAnnotations(
        attribute_names=list(ATTRIBUTES),
        image_names=names,
        labels=np.stack(labels),
        splits=np.repeat(list(SPLITS), [counts[split] for split in SPLITS]),
        image_root=Path(IMAGE_DIR),
        source=source,
        boxes=boxes,
    )
    write_description(raw, out_dir)
    return out_dir
