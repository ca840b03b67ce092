"""The generated pedestrian's figure: body layout, scene and the shapes that paint it.

Everything here is deterministic: :func:`figure_strokes` turns a :class:`Scene` (drawn at random
by :mod:`pedattr.data.synthetic`) into painted shapes, back to front. Strokes tagged with an
attribute are that attribute's evidence; its ground-truth box is the union of their boxes
(:func:`evidence_boxes`). Geometry for every item is in the scene whether the attribute is
positive or not, so a scene can be painted with one attribute switched.

Coordinates are continuous pixels (see :mod:`pedattr.data.synthetic._shapes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pedattr.data.synthetic._shapes import (
    Box,
    Capsule,
    Colour,
    Ellipse,
    Pattern,
    Rect,
    Shape,
    Trapezoid,
    plaid,
    stripes,
    union,
)

ORIENTATIONS = ("Front", "Side", "Back")
LOWER_GARMENTS = ("Trousers", "Shorts", "Skirt&Dress")
SLEEVES = ("ShortSleeve", "LongSleeve")


@dataclass(frozen=True)
class Body:
    """Where the figure's parts are, in pixels (continuous coordinates)."""

    orientation: str
    facing: int  # side view: +1 looks right, -1 left; 0 for front and back views
    cx: float
    top: float
    height: float  # head top to soles
    unit: float  # horizontal unit: ``height`` at the usual 2:1 aspect ratio
    head_r: float
    shoulder_y: float
    waist_y: float
    hip_y: float
    knee_y: float
    ankle_y: float
    foot_y: float
    shoulder_hw: float  # half widths of the torso at shoulders, waist and hips
    waist_hw: float
    hip_hw: float
    leg_hw: float
    leg_x: tuple[float, ...]  # leg centres
    arm_r: float
    arms: tuple[tuple[float, float, float, float], ...]  # (shoulder x, y, hand x, y) each

    @property
    def head_cy(self) -> float:
        return self.top + self.head_r

    @property
    def torso_h(self) -> float:
        return self.hip_y - self.shoulder_y

    @property
    def head_box(self) -> Box:
        r = self.head_r
        return (self.cx - r, self.top, self.cx + r, self.top + 2 * r)

    @property
    def torso_box(self) -> Box:
        half = max(self.shoulder_hw, self.hip_hw)
        return (self.cx - half, self.shoulder_y, self.cx + half, self.hip_y)


@dataclass(frozen=True)
class Scene:
    """Everything random about one sample, drawn by
    ``pedattr.data.synthetic.generator.sample_scene``; ``render_scene`` paints it without further
    randomness.

    Item geometry is drawn for every attribute, positive or not, so a scene can be re-rendered
    with one attribute switched (the tests use this to check that the evidence stays inside
    the box).
    """

    height: int
    width: int
    attributes: dict[str, bool]
    body: Body
    colours: dict[str, Colour]
    draws: dict[str, float]  # uniform [0, 1) draws that place and size the items
    background_seed: int
    noise_seed: int
    noise_sigma: float
    blur_radius: float
    occluder: Rect | None = None


@dataclass(frozen=True)
class Stroke:
    """One painted shape; ``tag`` names the attribute whose evidence it is (None: body)."""

    shape: Shape
    colour: Colour
    tag: str | None = None
    pattern: Pattern | None = None


def lerp(low: float, high: float, u: float) -> float:
    """The point a share ``u`` of the way from ``low`` to ``high`` (a uniform draw to a range)."""
    return low + (high - low) * u


# --- the figure's strokes -------------------------------------------------------------------


def _legs(scene: Scene) -> list[Stroke]:
    """Bare legs, the lower garment over them and its stripes."""
    b, a, c, d = scene.body, scene.attributes, scene.colours, scene.draws
    garment = next((g for g in LOWER_GARMENTS if a[g]), None)
    legs = [Rect(x - b.leg_hw, b.hip_y, x + b.leg_hw, b.ankle_y) for x in b.leg_x]
    strokes = [Stroke(leg, c["skin"], garment) for leg in legs]  # bare legs are evidence too
    left, right = min(b.leg_x) - b.leg_hw, max(b.leg_x) + b.leg_hw
    colour = c["bottom"]
    if garment == "Trousers":
        cloth = [*legs, Rect(left, b.hip_y, right, b.hip_y + 0.07 * b.height)]
    elif garment == "Shorts":
        hem = b.hip_y + lerp(0.09, 0.14, d["shorts_length"]) * b.height
        cloth = [Rect(left - 0.1 * b.leg_hw, b.hip_y, right + 0.1 * b.leg_hw, hem)]
    elif garment == "Skirt&Dress":
        hem = b.hip_y + lerp(0.14, 0.24, d["skirt_length"]) * b.height
        flare = lerp(1.2, 1.5, d["skirt_flare"])
        hip = max(b.hip_hw, right - b.cx, b.cx - left)
        cloth = [
            Trapezoid(b.hip_y, hem, b.cx - hip, b.cx + hip, b.cx - flare * hip, b.cx + flare * hip)
        ]
        colour = c["top"] if d["dress"] < 0.3 else c["bottom"]  # a dress continues the top
    else:
        cloth = []
    strokes += [Stroke(shape, colour, garment) for shape in cloth]
    if a["LowerStripe"]:
        period = lerp(0.025, 0.04, d["lower_stripe_period"]) * b.height
        pattern = stripes(vertical=True, origin=b.cx, period=period, duty=0.45)
        strokes += [Stroke(shape, c["lower_stripe"], "LowerStripe", pattern) for shape in cloth]
    return strokes


def _feet(scene: Scene) -> list[Stroke]:
    b, c = scene.body, scene.colours
    forward = b.facing * 0.8 * b.leg_hw  # shoes point the way a side-view figure looks

    def foot(x: float, top: float, widen: float) -> Rect:
        half = widen * b.leg_hw
        return Rect(x - half + min(forward, 0), top, x + half + max(forward, 0), b.foot_y)

    strokes = [Stroke(foot(x, b.ankle_y, 1.1), c["shoes"]) for x in b.leg_x]
    if scene.attributes["boots"]:
        top = b.ankle_y - lerp(0.07, 0.12, scene.draws["boot_height"]) * b.height
        strokes += [Stroke(foot(x, top, 1.25), c["boots"], "boots") for x in b.leg_x]
    return strokes


def _torso_shapes(b: Body) -> list[Trapezoid]:
    cx = b.cx
    upper = Trapezoid(
        b.shoulder_y,
        b.waist_y,
        cx - b.shoulder_hw,
        cx + b.shoulder_hw,
        cx - b.waist_hw,
        cx + b.waist_hw,
    )
    lower = Trapezoid(
        b.waist_y, b.hip_y, cx - b.waist_hw, cx + b.waist_hw, cx - b.hip_hw, cx + b.hip_hw
    )
    return [upper, lower]


def _logo(scene: Scene) -> Shape:
    b, d = scene.body, scene.draws
    half = lerp(0.025, 0.038, d["logo_size"]) * b.height
    if b.facing:
        # In front of the arm, which hangs from the middle of a side-view torso.
        x = b.cx + b.facing * lerp(0.35, 0.7, d["logo_x"]) * b.shoulder_hw
    else:
        x = b.cx + lerp(-0.5, 0.5, d["logo_x"]) * b.shoulder_hw
    y = b.shoulder_y + lerp(0.15, 0.55, d["logo_y"]) * b.torso_h
    if d["logo_shape"] < 0.4:
        return Ellipse(x, y, half, half)
    if d["logo_shape"] < 0.7:
        return Rect(x - half, y - half, x + half, y + half)
    return Trapezoid(y - half, y + half, x, x, x - 1.2 * half, x + 1.2 * half)  # a triangle


def _torso(scene: Scene) -> list[Stroke]:
    """The upper garment, its pattern and a chest logo."""
    b, a, c, d = scene.body, scene.attributes, scene.colours, scene.draws
    shapes = _torso_shapes(b)
    strokes = [Stroke(shape, c["top"]) for shape in shapes]
    if a["UpperStride"]:
        period = lerp(0.035, 0.055, d["stripe_period"]) * b.height
        origin = b.shoulder_y + d["stripe_phase"] * period
        pattern = stripes(vertical=False, origin=origin, period=period, duty=0.45)
        strokes += [Stroke(shape, c["stripe"], "UpperStride", pattern) for shape in shapes]
    if a["UpperPlaid"]:
        period = lerp(0.04, 0.065, d["plaid_period"]) * b.height
        pattern = plaid(origin=(b.cx, b.shoulder_y), period=period, line=0.3)
        strokes += [Stroke(shape, c["plaid"], "UpperPlaid", pattern) for shape in shapes]
    if a["UpperLogo"]:
        strokes.append(Stroke(_logo(scene), c["logo"], "UpperLogo"))
    return strokes


def _coat(scene: Scene) -> list[Stroke]:
    """A long coat: the upper garment continued to the knees, with a front opening.

    The torso is already painted in the garment's colour and pattern; repainting it here would
    hide an upper-body pattern that the labels say is there.
    """
    if not scene.attributes["LongCoat"]:
        return []
    b, c, d = scene.body, scene.colours, scene.draws
    hem = b.knee_y + lerp(-0.03, 0.03, d["coat_length"]) * b.height
    hip = max(b.hip_hw, b.leg_hw + max(abs(x - b.cx) for x in b.leg_x))
    flare = lerp(1.05, 1.3, d["coat_flare"])
    skirt = Trapezoid(b.hip_y, hem, b.cx - hip, b.cx + hip, b.cx - flare * hip, b.cx + flare * hip)
    line_x = b.cx + b.facing * 0.5 * b.shoulder_hw
    line_top = b.hip_y if b.orientation == "Back" else b.shoulder_y + 0.1 * b.torso_h
    half = max(0.007 * b.height, 0.5)
    opening = Rect(line_x - half, line_top, line_x + half, hem)
    return [
        Stroke(skirt, c["top"], "LongCoat"),
        Stroke(opening, c["coat_line"], "LongCoat"),
    ]


def _hair_bottom(scene: Scene) -> float:
    """Where long hair ends: somewhere on the upper torso."""
    b = scene.body
    return b.shoulder_y + lerp(0.12, 0.4, scene.draws["hair_length"]) * b.torso_h


def _back_hair(scene: Scene) -> list[Stroke]:
    """Long hair seen from behind falls over the upper back."""
    b = scene.body
    if not scene.attributes["LongHair"] or b.orientation != "Back":
        return []
    r = b.head_r
    hair = Rect(b.cx - 1.1 * r, b.head_cy, b.cx + 1.1 * r, _hair_bottom(scene))
    return [Stroke(hair, scene.colours["hair"], "LongHair")]


def _arms_strokes(scene: Scene) -> list[Stroke]:
    """Arms with long sleeves (top colour to the wrist) or short ones (skin below the elbow)."""
    b, a, c = scene.body, scene.attributes, scene.colours
    long = a["LongSleeve"]
    tag = "LongSleeve" if long else ("ShortSleeve" if a["ShortSleeve"] else None)
    strokes = []
    for sx, sy, hx, hy in b.arms:
        strokes.append(
            Stroke(Capsule(sx, sy, hx, hy, b.arm_r), c["top"] if long else c["skin"], tag)
        )
        if not long:
            elbow = (sx + 0.4 * (hx - sx), sy + 0.4 * (hy - sy))
            strokes.append(Stroke(Capsule(sx, sy, *elbow, 1.15 * b.arm_r), c["top"], tag))
        hand = 1.2 * b.arm_r
        strokes.append(Stroke(Ellipse(hx, hy, hand, hand), c["skin"], tag))
    return strokes


def _side(u: float) -> int:
    """Left (-1) or right (+1) from a uniform draw."""
    return -1 if u < 0.5 else 1


def _rect_between(xa: float, xb: float, y0: float, y1: float) -> Rect:
    """The rectangle between two x positions given in either order."""
    return Rect(min(xa, xb), y0, max(xa, xb), y1)


def _backpack(scene: Scene) -> list[Stroke]:
    """On the back seen from behind; seen from the front or side it sticks out on one side."""
    if not scene.attributes["Backpack"]:
        return []
    b, d = scene.body, scene.draws
    y0 = b.shoulder_y + 0.04 * b.torso_h
    y1 = b.shoulder_y + lerp(0.55, 0.8, d["backpack_height"]) * b.torso_h
    strap_r = max(0.008 * b.height, 0.5)
    if b.orientation == "Back":
        half = lerp(0.55, 0.8, d["backpack_width"]) * b.shoulder_hw
        x = b.cx + lerp(-0.25, 0.25, d["backpack_offset"]) * b.shoulder_hw
        top = b.shoulder_y + lerp(0.02, 0.12, d["backpack_offset"]) * b.torso_h
        shapes: list[Shape] = [Rect(x - half, top, x + half, y1)]
    else:
        # Front view: on a random side; side view: behind the back.
        side = -b.facing if b.facing else _side(d["backpack_side"])
        edge = b.cx + side * b.shoulder_hw
        depth = lerp(0.06, 0.1, d["backpack_width"]) * b.unit
        strap_x = b.cx + side * 0.55 * b.shoulder_hw
        shapes = [
            _rect_between(edge - side * 0.1 * b.shoulder_hw, edge + side * depth, y0, y1),
            Capsule(strap_x, b.shoulder_y, strap_x, b.shoulder_y + 0.55 * b.torso_h, strap_r),
        ]
    return [Stroke(shape, scene.colours["backpack"], "Backpack") for shape in shapes]


def _shoulder_bag(scene: Scene) -> list[Stroke]:
    """A bag at hip height on one side, hanging from a strap over the shoulder."""
    if not scene.attributes["ShoulderBag"]:
        return []
    b, d = scene.body, scene.draws
    side = _side(d["shoulder_bag_side"])
    width = lerp(0.07, 0.1, d["shoulder_bag_width"]) * b.unit
    height = lerp(0.06, 0.09, d["shoulder_bag_height"]) * b.height
    top = b.waist_y + lerp(-0.05, 0.08, d["shoulder_bag_drop"]) * b.height
    inner = b.cx + side * lerp(0.6, 1.0, d["shoulder_bag_inset"]) * b.hip_hw
    strap = Capsule(
        b.cx + side * 0.5 * b.shoulder_hw,
        b.shoulder_y,
        inner + side * 0.3 * width,
        top,
        max(0.006 * b.height, 0.5),
    )
    colour = scene.colours["shoulder_bag"]
    return [
        Stroke(strap, colour, "ShoulderBag"),
        Stroke(
            _rect_between(inner, inner + side * width, top, top + height), colour, "ShoulderBag"
        ),
    ]


def _hand_bag(scene: Scene) -> list[Stroke]:
    """A bag hanging from a short handle, at the hand or (a third of the time) the elbow."""
    if not scene.attributes["HandBag"]:
        return []
    b, d = scene.body, scene.draws
    side = _side(d["hand_bag_side"])
    sx, sy, hx, hy = b.arms[0] if len(b.arms) == 1 or side < 0 else b.arms[1]
    width = lerp(0.07, 0.11, d["hand_bag_width"]) * b.unit
    height = lerp(0.06, 0.1, d["hand_bag_height"]) * b.height
    if d["hand_bag_anchor"] < 0.33:  # carried in the crook of the arm, beside the forearm
        ax, ay = (sx + hx) / 2, (sy + hy) / 2
        centre = ax + side * (b.arm_r + 0.5 * width)
    else:
        ax, ay = hx, hy
        centre = ax + lerp(-0.3, 0.3, d["hand_bag_shift"]) * width
    bag_top = ay + lerp(0.01, 0.06, d["hand_bag_handle"]) * b.height
    handle = Capsule(ax, ay, centre, bag_top, max(0.006 * b.height, 0.5))
    bag = Rect(centre - width / 2, bag_top, centre + width / 2, bag_top + height)
    colour = scene.colours["hand_bag"]
    return [Stroke(handle, colour, "HandBag"), Stroke(bag, colour, "HandBag")]


def _held_object(scene: Scene) -> list[Stroke]:
    """An object held in front of the body with both hands, at a random height."""
    if not scene.attributes["HoldObjectsInFront"]:
        return []
    b, c, d = scene.body, scene.colours, scene.draws
    width = lerp(0.07, 0.12, d["held_width"]) * b.unit
    height = lerp(0.045, 0.09, d["held_height"]) * b.height
    if b.facing:
        x = b.cx + b.facing * (b.shoulder_hw + 0.3 * width)
    else:
        x = b.cx + lerp(-0.3, 0.3, d["held_x"]) * b.shoulder_hw
    y = b.shoulder_y + lerp(0.35, 0.85, d["held_y"]) * b.torso_h
    hand = 1.2 * b.arm_r
    hands = [x - width / 2] if b.facing else [x - width / 2, x + width / 2]
    return [
        Stroke(
            Rect(x - width / 2, y - height / 2, x + width / 2, y + height / 2),
            c["held"],
            "HoldObjectsInFront",
        ),
        *[Stroke(Ellipse(hx, y, hand, hand), c["skin"], "HoldObjectsInFront") for hx in hands],
    ]


def _front_hair(scene: Scene) -> list[Stroke]:
    """Long hair seen from the front or side: behind the head and down over the shoulders."""
    b = scene.body
    if not scene.attributes["LongHair"] or b.orientation == "Back":
        return []
    r, cx, cy = b.head_r, b.cx, b.head_cy
    bottom = _hair_bottom(scene)
    shapes: list[Shape] = [Ellipse(cx, cy + 0.1 * r, 1.25 * r, 1.15 * r)]
    if b.facing:
        shapes.append(_rect_between(cx - b.facing * 0.2 * r, cx - b.facing * 1.25 * r, cy, bottom))
    else:
        shapes += [
            Rect(cx - 1.25 * r, cy, cx - 0.55 * r, bottom),
            Rect(cx + 0.55 * r, cy, cx + 1.25 * r, bottom),
        ]
    return [Stroke(shape, scene.colours["hair"], "LongHair") for shape in shapes]


def _hat(scene: Scene) -> list[Shape]:
    b, d = scene.body, scene.draws
    r, cx, cy = b.head_r, b.cx, b.head_cy
    crown_top = b.top - lerp(0.1, 0.5, d["hat_height"]) * r
    if d["hat_style"] < 0.35:  # beanie
        return [Ellipse(cx, cy - 0.35 * r, 1.0 * r, cy - 0.35 * r - crown_top)]
    crown = Rect(cx - 0.95 * r, crown_top, cx + 0.95 * r, cy - 0.3 * r)
    if d["hat_style"] < 0.7:  # brimmed hat
        return [crown, Rect(cx - 1.45 * r, cy - 0.45 * r, cx + 1.45 * r, cy - 0.22 * r)]
    # Cap: the visor points the way the figure looks (forward, across the face, from the front).
    if b.facing:
        visor = _rect_between(
            cx + b.facing * 0.5 * r, cx + b.facing * 1.6 * r, cy - 0.45 * r, cy - 0.25 * r
        )
    else:
        visor = Rect(cx - 1.1 * r, cy - 0.4 * r, cx + 1.1 * r, cy - 0.2 * r)
    return [crown, visor]


def _glasses(scene: Scene) -> list[Shape]:
    b = scene.body
    r, cx, cy = b.head_r, b.cx, b.head_cy
    y0 = cy - 0.25 * r
    y1 = y0 + max(0.42 * r, 1.0)
    if b.facing:
        lens = _rect_between(cx + b.facing * 0.15 * r, cx + b.facing * 0.9 * r, y0, y1)
        temple = _rect_between(
            cx - b.facing * 0.4 * r, cx + b.facing * 0.15 * r, y0, y0 + 0.4 * (y1 - y0)
        )
        return [lens, temple]
    bridge = Rect(cx - 0.1 * r, y0, cx + 0.1 * r, y0 + 0.4 * (y1 - y0))
    return [
        Rect(cx - 0.85 * r, y0, cx - 0.1 * r, y1),
        Rect(cx + 0.1 * r, y0, cx + 0.85 * r, y1),
        bridge,
    ]


def _head(scene: Scene) -> list[Stroke]:
    """Neck, head (face or back of the head by orientation), hat and glasses."""
    b, a, c = scene.body, scene.attributes, scene.colours
    r, cx, cy = b.head_r, b.cx, b.head_cy
    neck = Rect(cx - 0.45 * r, cy + 0.7 * r, cx + 0.45 * r, b.shoulder_y + 0.02 * b.torso_h)
    head = Ellipse(cx, cy, 0.9 * r, r)
    strokes = [*_front_hair(scene), Stroke(neck, c["skin"])]
    if b.orientation == "Back":
        strokes.append(Stroke(head, c["hair"]))
    else:
        strokes.append(Stroke(head, c["skin"]))
        facing = b.facing

        def hair_cap(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            on_top = y < cy - 0.3 * r
            return on_top | (facing * (x - cx) < -0.15 * r) if facing else on_top

        strokes.append(Stroke(head, c["hair"], None, hair_cap))
    if a["Hat"]:
        strokes += [Stroke(shape, c["hat"], "Hat") for shape in _hat(scene)]
    if a["Glasses"]:
        strokes += [Stroke(shape, c["glasses"], "Glasses") for shape in _glasses(scene)]
    return strokes


def figure_strokes(scene: Scene) -> list[Stroke]:
    """Every shape of the pedestrian, back to front; tagged strokes are attribute evidence."""
    return [
        *_legs(scene),
        *_feet(scene),
        *_torso(scene),
        *_coat(scene),
        *_back_hair(scene),
        *_arms_strokes(scene),
        *_backpack(scene),
        *_shoulder_bag(scene),
        *_hand_bag(scene),
        *_held_object(scene),
        *_head(scene),
    ]


def evidence_boxes(strokes: list[Stroke], attributes: Mapping[str, bool]) -> dict[str, Box]:
    """Unclipped box per positive local attribute: the union of its evidence strokes."""
    shapes: dict[str, list[Box]] = {}
    for stroke in strokes:
        if stroke.tag is not None and attributes[stroke.tag]:
            shapes.setdefault(stroke.tag, []).append(stroke.shape.box)
    return {name: union(boxes) for name, boxes in shapes.items()}
