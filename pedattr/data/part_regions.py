"""Body-part regions for the rigid-parts baseline (paper Appendix B, Fig. S1 and S3, Table S1).

The rigid-parts model associates every attribute with one region: ``head``, ``torso``, ``legs``
or the ``whole`` image, and classifies it from that region's features only. This module holds:

* the attribute-to-region tables: Table S1 of the paper for RAP v1 (transcribed as printed, under
  the paper's names and under the names of the RAP v1 annotation file), and tables defined here
  for RAP v2, PETA, PA-100K and the generated benchmark (:mod:`pedattr.data.synthetic`);
* :func:`attribute_regions`, the lookup by attribute name;
* where the regions are: fixed proportions of the image by default (:data:`DEFAULT_PART_BOXES`),
  or per image from a file of 14 body keypoints or region boxes (:func:`read_part_file`).

Tables defined here follow the evidence of each attribute: head wear, hair and glasses -> head;
upper-body garments and their patterns, and objects held in front of the body -> torso;
lower-body garments and footwear -> legs; gender, age, build, orientation, roles and bags (which
hang anywhere from the shoulder to the knee, on either side) -> whole image, as Table S1 puts
them. One difference from Table S1 is deliberate: Table S1 assigns RAP's lower-body garments
(LongTrousers, Skirt, Jeans, ...) to the torso, which RAP's table keeps, while the tables defined
here assign them to the legs, where those garments are.

The paper places the regions with a pose model (14 keypoints, SpindleNet's). No pose weights are
available offline, so by default the regions are fixed bands of the image, chosen from the
proportions of an upright pedestrian crop (the crop's top margin and head take about the top
fifth, the shoulders sit near 18 % of the height, the hips near 50-55 %, the feet at the bottom):

* head: top 0-25 % of the height;
* torso: 15-60 %;
* legs: 50-100 %;

each over the full width (pedestrian crops are tight horizontally, and arms, hair and bags swing
out to the sides). The overlaps of 10 % absorb crop jitter and pose. Users with keypoints or part
boxes give them in a file (``data.part_regions``), see :func:`read_part_file`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: The regions, in the order of a region index; the first three are the body parts.
REGIONS: tuple[str, ...] = ("head", "torso", "legs", "whole")
BODY_PARTS: tuple[str, ...] = REGIONS[:3]
#: Default part boxes as fractions of the image, (x0, y0, x1, y1); see the module docstring.
DEFAULT_PART_BOXES: dict[str, tuple[float, float, float, float]] = {
    "head": (0.0, 0.0, 1.0, 0.25),
    "torso": (0.0, 0.15, 1.0, 0.60),
    "legs": (0.0, 0.50, 1.0, 1.0),
}
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)

# --- attribute lists ------------------------------------------------------------------------------

#: Paper Table S1 (attribute-region correspondence in RAP), transcribed as printed.
RAP_TABLE_S1: dict[str, tuple[str, ...]] = {
    "head": ("BaldHead", "LongHair", "BlackHair", "Hat", "Glasses", "Muffler", "Calling"),
    "torso": (
        "Shirt", "Sweater", "Vest", "TShirt", "Cotton", "Jacket", "Suit-Up", "Tight",
        "ShortSleeve", "LongTrousers", "Skirt", "ShortSkirt", "Dress", "Jeans", "TightTrousers",
        "CarryingbyArm", "CarryingbyHand",
    ),
    "legs": ("LeatherShoes", "SportShoes", "Boots", "ClothShoes", "CasualShoes"),
    "whole": (
        "Female", "AgeLess16", "Age17-30", "Age31-45", "BodyFat", "BodyNormal", "BodyThin",
        "Customer", "Clerk", "Backpack", "SSBag", "HandBag", "Box", "PlasticBag", "PaperBag",
        "HandTrunk", "OtherAttachment", "Talking", "Gathering", "Holding", "Pushing", "Pulling",
    ),
}  # fmt: skip

#: RAP v1's 51 evaluated attributes as the annotation file names them, in column order.
RAP_ATTRIBUTES: tuple[str, ...] = (
    "Female", "AgeLess16", "Age17-30", "Age31-45", "BodyFat", "BodyNormal", "BodyThin",
    "Customer", "Clerk", "hs-BaldHead", "hs-LongHair", "hs-BlackHair", "hs-Hat", "hs-Glasses",
    "hs-Muffler", "ub-Shirt", "ub-Sweater", "ub-Vest", "ub-TShirt", "ub-Cotton", "ub-Jacket",
    "ub-SuitUp", "ub-Tight", "ub-ShortSleeve", "lb-LongTrousers", "lb-Skirt", "lb-ShortSkirt",
    "lb-Dress", "lb-Jeans", "lb-TightTrousers", "shoes-Leather", "shoes-Sport", "shoes-Boots",
    "shoes-Cloth", "shoes-Casual", "attach-Backpack", "attach-SingleShoulderBag",
    "attach-HandBag", "attach-Box", "attach-PlasticBag", "attach-PaperBag", "attach-HandTrunk",
    "attach-Other", "action-Calling", "action-Talking", "action-Gathering", "action-Holding",
    "action-Pusing", "action-Pulling", "action-CarrybyArm", "action-CarrybyHand",
)  # fmt: skip
#: The same 51 attributes as Table S1 names them, in the same order.
RAP_PAPER_NAMES: tuple[str, ...] = (
    "Female", "AgeLess16", "Age17-30", "Age31-45", "BodyFat", "BodyNormal", "BodyThin",
    "Customer", "Clerk", "BaldHead", "LongHair", "BlackHair", "Hat", "Glasses", "Muffler",
    "Shirt", "Sweater", "Vest", "TShirt", "Cotton", "Jacket", "Suit-Up", "Tight", "ShortSleeve",
    "LongTrousers", "Skirt", "ShortSkirt", "Dress", "Jeans", "TightTrousers", "LeatherShoes",
    "SportShoes", "Boots", "ClothShoes", "CasualShoes", "Backpack", "SSBag", "HandBag", "Box",
    "PlasticBag", "PaperBag", "HandTrunk", "OtherAttachment", "Calling", "Talking", "Gathering",
    "Holding", "Pushing", "Pulling", "CarryingbyArm", "CarryingbyHand",
)  # fmt: skip
#: RAP v2's 54 evaluated attributes (``selected_attribute``), in order.
RAP2_ATTRIBUTES: tuple[str, ...] = (
    "Femal", "AgeLess16", "Age17-30", "Age31-45", "Age46-60", "BodyFat", "BodyNormal",
    "BodyThin", "Customer", "Employee", "hs-BaldHead", "hs-LongHair", "hs-BlackHair", "hs-Hat",
    "hs-Glasses", "ub-Shirt", "ub-Sweater", "ub-Vest", "ub-TShirt", "ub-Cotton", "ub-Jacket",
    "ub-SuitUp", "ub-Tight", "ub-ShortSleeve", "ub-Others", "lb-LongTrousers", "lb-Skirt",
    "lb-ShortSkirt", "lb-Dress", "lb-Jeans", "lb-TightTrousers", "shoes-Leather", "shoes-Sports",
    "shoes-Boots", "shoes-Cloth", "shoes-Casual", "shoes-Other", "attachment-Backpack",
    "attachment-ShoulderBag", "attachment-HandBag", "attachment-Box", "attachment-PlasticBag",
    "attachment-PaperBag", "attachment-HandTrunk", "attachment-Other", "action-Calling",
    "action-Talking", "action-Gathering", "action-Holding", "action-Pushing", "action-Pulling",
    "action-CarryingByArm", "action-CarryingByHand", "action-Other",
)  # fmt: skip
#: PETA's 35 evaluated attributes (the first 35 label columns), in order.
PETA_ATTRIBUTES: tuple[str, ...] = (
    "accessoryHat", "accessoryMuffler", "accessoryNothing", "accessorySunglasses", "hairLong",
    "upperBodyCasual", "upperBodyFormal", "upperBodyJacket", "upperBodyLogo", "upperBodyPlaid",
    "upperBodyShortSleeve", "upperBodyThinStripes", "upperBodyTshirt", "upperBodyOther",
    "upperBodyVNeck", "lowerBodyCasual", "lowerBodyFormal", "lowerBodyJeans", "lowerBodyShorts",
    "lowerBodyShortSkirt", "lowerBodyTrousers", "footwearLeatherShoes", "footwearSandals",
    "footwearShoes", "footwearSneaker", "carryingBackpack", "carryingOther",
    "carryingMessengerBag", "carryingNothing", "carryingPlasticBags", "personalLess30",
    "personalLess45", "personalLess60", "personalLarger60", "personalMale",
)  # fmt: skip


def _rap2_region(name: str) -> str:
    """RAP v2 by the attribute's group prefix, following Table S1 where RAP v1 has the attribute
    (calling at the head, carrying by arm or hand at the torso), lower-body garments at the legs."""
    if name in ("action-Calling",):
        return "head"
    if name in ("action-CarryingByArm", "action-CarryingByHand"):
        return "torso"
    prefix = name.split("-", 1)[0]  # "Age17-30" gives "Age17", which is no group
    return {"hs": "head", "ub": "torso", "lb": "legs", "shoes": "legs"}.get(prefix, "whole")


def _peta_region(name: str) -> str:
    """PETA by the attribute's group prefix; "accessoryNothing" (no hat, muffler or
    sunglasses) is judged where those accessories would be."""
    for prefix, region in (
        ("accessory", "head"),
        ("hair", "head"),
        ("upperBody", "torso"),
        ("lowerBody", "legs"),
        ("footwear", "legs"),
    ):
        if name.startswith(prefix):
            return region
    return "whole"  # carrying*, personal*


#: PA-100K (26 attributes) and the generated benchmark (23, the same names plus LongHair).
_PA100K_STYLE: dict[str, str] = {
    "Female": "whole", "AgeOver60": "whole", "Age18-60": "whole", "AgeLess18": "whole",
    "Front": "whole", "Side": "whole", "Back": "whole",
    "Hat": "head", "Glasses": "head", "LongHair": "head",
    "HandBag": "whole", "ShoulderBag": "whole", "Backpack": "whole",
    "HoldObjectsInFront": "torso", "ShortSleeve": "torso", "LongSleeve": "torso",
    "UpperStride": "torso", "UpperLogo": "torso", "UpperPlaid": "torso", "UpperSplice": "torso",
    "LongCoat": "torso",
    "LowerStripe": "legs", "LowerPattern": "legs", "Trousers": "legs", "Shorts": "legs",
    "Skirt&Dress": "legs", "boots": "legs",
}  # fmt: skip
#: PA-100K attributes the generator does not draw, and the one it adds.
_PA100K_ONLY = ("AgeOver60", "Age18-60", "UpperSplice", "LowerPattern")
_GENERATED_ONLY = ("LongHair",)
_S1_REGION = {name: region for region, names in RAP_TABLE_S1.items() for name in names}

#: Dataset -> attribute name -> region. "rap" holds Table S1 under both the paper's names and
#: the annotation file's; the others are defined here (module docstring).
PART_TABLES: dict[str, dict[str, str]] = {
    "rap": {
        **_S1_REGION,
        **{
            file_name: _S1_REGION[paper_name]
            for file_name, paper_name in zip(RAP_ATTRIBUTES, RAP_PAPER_NAMES, strict=True)
        },
    },
    "rap2": {name: _rap2_region(name) for name in RAP2_ATTRIBUTES},
    "peta": {name: _peta_region(name) for name in PETA_ATTRIBUTES},
    "pa100k": {k: v for k, v in _PA100K_STYLE.items() if k not in _GENERATED_ONLY},
    "generated": {k: v for k, v in _PA100K_STYLE.items() if k not in _PA100K_ONLY},
}
#: Spellings of the authors' released code for two Table S1 names.
_ALIASES = {"otherattchment": "otherattachment", "pusing": "pushing"}


def _key(name: str) -> str:
    """Case and punctuation do not matter: "Suit-Up" finds "SuitUp"."""
    key = re.sub(r"[^0-9a-z&]", "", name.lower())
    return _ALIASES.get(key, key)


def _keyed(table: Mapping[str, str]) -> dict[str, str]:
    return {_key(name): region for name, region in table.items()}


def best_table(attribute_names: Iterable[str]) -> str:
    """The table that names the most of ``attribute_names`` (ties: the order of PART_TABLES)."""
    keys = {_key(name) for name in attribute_names}
    return max(PART_TABLES, key=lambda table: len(keys & set(_keyed(PART_TABLES[table]))))


def attribute_regions(attribute_names: Sequence[str]) -> list[str]:
    """The region of every attribute, by name.

    The table that names most of the attributes is read first (so a RAP attribute list gets
    Table S1), then the others; names are compared without case or punctuation. An attribute no
    table names gets the whole image, with one warning that lists all such names.

    Args:
        attribute_names: the model's attributes, in output order.

    Returns:
        One of :data:`REGIONS` per attribute.
    """
    first = best_table(attribute_names)
    order = [first, *(table for table in PART_TABLES if table != first)]
    tables = [_keyed(PART_TABLES[table]) for table in order]
    regions, unknown = [], []
    for name in attribute_names:
        key = _key(name)
        region = next((table[key] for table in tables if key in table), None)
        if region is None:
            unknown.append(name)
            region = "whole"
        regions.append(region)
    if unknown:
        logger.warning(
            "no body-part region is known for %s; the rigid-parts model reads the whole image "
            "for them",
            ", ".join(unknown),
        )
    return regions


def region_indices(attribute_names: Sequence[str]) -> list[int]:
    """:func:`attribute_regions` as indices into :data:`REGIONS`."""
    return [REGIONS.index(region) for region in attribute_regions(attribute_names)]


# --- regions per image from keypoints or boxes ------------------------------------------------

#: The 14 keypoints, in the order of the LSP / SpindleNet convention.
KEYPOINTS: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "head_top",
)  # fmt: skip
#: Keypoints whose bounding box makes each part (before the margin).
PART_KEYPOINTS: dict[str, tuple[str, ...]] = {
    "head": ("head_top", "neck"),
    "torso": ("neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip"),
    "legs": ("right_hip", "left_hip", "right_knee", "left_knee", "right_ankle", "left_ankle"),
}
#: Each part's keypoint box grows by this fraction of its height on every side; the head box is
#: also made at least as wide as it is tall (head top and neck are nearly one above the other).
PART_MARGIN = 0.15


def _part_from_points(points: np.ndarray, part: str) -> np.ndarray | None:
    """(x0, y0, x1, y1) around a part's visible keypoints, or None when fewer than two are."""
    rows = [KEYPOINTS.index(name) for name in PART_KEYPOINTS[part]]
    visible = points[rows]
    visible = visible[np.isfinite(visible).all(axis=1)]
    if len(visible) < 2:
        return None
    x0, y0 = visible.min(axis=0)
    x1, y1 = visible.max(axis=0)
    height = max(y1 - y0, 1.0)
    if part == "head":
        half = max((x1 - x0) / 2, height / 2)
        centre = (x0 + x1) / 2
        x0, x1 = centre - half, centre + half
    margin = PART_MARGIN * height
    return np.array([x0 - margin, y0 - margin, x1 + margin, y1 + margin])


def regions_from_keypoints(
    keypoints: Sequence[Sequence[float] | None], image_size: tuple[float, float]
) -> np.ndarray:
    """Head, torso and legs boxes in pixels from 14 keypoints (Fig. S1's division).

    Each part is the bounding box of its keypoints (:data:`PART_KEYPOINTS`) grown by
    :data:`PART_MARGIN`; a part with fewer than two visible keypoints falls back to its default
    proportion of the image.

    Args:
        keypoints: 14 (x, y) pixel positions in :data:`KEYPOINTS` order; None, or a negative or
            non-finite coordinate, marks a keypoint as not visible.
        image_size: (height, width) of the image, for the fallbacks.

    Returns:
        [3, 4] float64 (x0, y0, x1, y1) for head, torso, legs.
    """
    if len(keypoints) != len(KEYPOINTS):
        raise ValueError(f"expected {len(KEYPOINTS)} keypoints, got {len(keypoints)}")
    points = np.full((len(KEYPOINTS), 2), np.nan)
    for row, point in enumerate(keypoints):
        if point is not None and len(point) >= 2 and min(point[0], point[1]) >= 0:
            points[row] = point[:2]
    height, width = image_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    boxes = []
    for part in BODY_PARTS:
        box = _part_from_points(points, part)
        boxes.append(np.asarray(DEFAULT_PART_BOXES[part]) * scale if box is None else box)
    return np.stack(boxes)


def read_part_file(path: str | os.PathLike) -> dict[str, dict]:
    """Read per-image body parts from a JSON file.

    The file maps image names (as in the prepared dataset, e.g. ``000001.jpg``) to either
    ``{"keypoints": [[x, y], ... 14 pairs in KEYPOINTS order]}`` (null or negative for a
    keypoint that is not visible) or ``{"head": [x0, y0, x1, y1], "torso": [...], "legs":
    [...]}``, in the original image's pixels. Images the file does not list use the default
    proportions.

    Returns:
        Image name -> the entry, checked: keypoints are 14 pairs, boxes have 4 numbers each.

    Raises:
        ValueError: the file is not such a mapping; the message names the first bad entry.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such part-regions file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of image name -> parts")
    for name, entry in data.items():
        _check_entry(entry, f"{path}: {name}")
    return data


def _check_entry(entry: object, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with 'keypoints' or head/torso/legs boxes")
    if "keypoints" in entry:
        points = entry["keypoints"]
        if not isinstance(points, list) or len(points) != len(KEYPOINTS):
            raise ValueError(f"{where}: 'keypoints' must list {len(KEYPOINTS)} [x, y] pairs")
        return
    for part in BODY_PARTS:
        box = entry.get(part)
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f"{where}: '{part}' must be [x0, y0, x1, y1] (or give 'keypoints')")


def entry_to_fractions(entry: Mapping | None, image_size: tuple[int, int]) -> np.ndarray:
    """One image's head, torso and legs boxes as fractions of the image, [3, 4] float32.

    Args:
        entry: the image's entry of :func:`read_part_file`, or None for the defaults.
        image_size: (height, width) of the original image in pixels.
    """
    if entry is None:
        return np.array([DEFAULT_PART_BOXES[part] for part in BODY_PARTS], dtype=np.float32)
    height, width = image_size
    if "keypoints" in entry:
        boxes = regions_from_keypoints(entry["keypoints"], (height, width))
    else:
        boxes = np.array([entry[part] for part in BODY_PARTS], dtype=np.float64)
    fractions = boxes / np.array([width, height, width, height], dtype=np.float64)
    return np.clip(fractions, 0.0, 1.0).astype(np.float32)
