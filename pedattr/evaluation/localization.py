"""How well the ALM boxes find the attributes: pointing game and IoU.

The boxes are first mapped to image pixels (:func:`pedattr.models.localization.boxes_to_pixels`,
whose module describes the mapping).

Two measures, over the test images where the attribute is positive and has a ground-truth box:

* pointing game: a hit when the predicted box's centre lies inside the ground-truth box (edges
  included; an optional tolerance in pixels widens the ground truth);
* IoU between predicted and ground-truth box (0 when they do not overlap).

Both are reported per attribute and per level, for the level that wins the max vote (the branch
whose logit is the fused maximum, per image and attribute), for the best level per attribute,
and as means over attributes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pedattr.models.localization import LEVEL_NAMES
from pedattr.utils.arrays import to_numpy


def pointing_game(pred_boxes: Any, gt_boxes: Any, *, tolerance: float = 0.0) -> np.ndarray:
    """Whether each predicted box's centre lies inside its ground-truth box (edges included).

    Args:
        pred_boxes, gt_boxes: [..., 4] (x0, y0, x1, y1), broadcast against each other.
        tolerance: pixels by which the ground-truth box is widened on every side.

    Returns:
        bool array of the broadcast shape without the last axis.
    """
    p, g = to_numpy(pred_boxes), to_numpy(gt_boxes)
    cx, cy = (p[..., 0] + p[..., 2]) / 2, (p[..., 1] + p[..., 3]) / 2
    inside_x = (cx >= g[..., 0] - tolerance) & (cx <= g[..., 2] + tolerance)
    inside_y = (cy >= g[..., 1] - tolerance) & (cy <= g[..., 3] + tolerance)
    return inside_x & inside_y


def box_iou(pred: Any, gt: Any) -> np.ndarray:
    """Intersection over union of matched boxes [..., 4] (x0, y0, x1, y1); 0 without overlap."""
    p, g = to_numpy(pred), to_numpy(gt)
    inter_w = np.clip(np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]), 0, None)
    inter = inter_w * inter_h

    def area(b: np.ndarray) -> np.ndarray:
        return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)

    union = area(p) + area(g) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def centre_follow(pred_boxes: Any, gt_boxes: Any, image_sizes: Any = None) -> float | None:
    """How far predicted box centres move when the ground-truth centres move: 1 follows, 0 not.

    The least-squares slope of the predicted centre on the ground-truth centre over the images,
    pooled over the two axes (the summed covariances over the summed ground-truth variances, so
    an axis along which the ground truth hardly moves weighs little). A box that ignores the
    image scores 0, one that moves with the evidence 1, whatever its size or offset, which the
    pointing game cannot tell apart. With ``image_sizes`` the centres are first divided by the
    image's width and height, so that a box fixed relative to images of different sizes scores
    0 too.

    Args:
        pred_boxes, gt_boxes: [n, 4] (x0, y0, x1, y1), matched by row.
        image_sizes: [n, 2] (height, width) of each image, or None for pixels as they are.

    Returns:
        The slope, or None with fewer than two images or a ground truth that never moves.
    """
    p, g = to_numpy(pred_boxes), to_numpy(gt_boxes)
    if len(p) < 2:
        return None
    widths_heights = np.ones((len(p), 2)) if image_sizes is None else to_numpy(image_sizes)[:, ::-1]
    covariance = variance = 0.0
    for axis in (0, 1):
        pred_centre = (p[:, axis] + p[:, axis + 2]) / 2 / widths_heights[:, axis]
        gt_centre = (g[:, axis] + g[:, axis + 2]) / 2 / widths_heights[:, axis]
        gt_offset, pred_offset = gt_centre - gt_centre.mean(), pred_centre - pred_centre.mean()
        covariance += float((gt_offset * pred_offset).mean())
        variance += float((gt_offset**2).mean())
    return covariance / variance if variance > 1e-12 else None


def _score(hits: np.ndarray, ious: np.ndarray) -> dict[str, float]:
    return {"hit_rate": float(hits.mean()), "mean_iou": float(ious.mean())}


def _max_vote_score(hits: np.ndarray, ious: np.ndarray, winners: np.ndarray) -> dict:
    """Score each image at the level that won its vote; global-branch wins are counted apart."""
    num_levels = hits.shape[1]
    on_level = winners < num_levels
    rows = np.flatnonzero(on_level)
    won = winners[on_level]
    score: dict[str, Any] = {
        "count": int(on_level.sum()),
        "global_wins": int((~on_level).sum()),
        "hit_rate": None,
        "mean_iou": None,
    }
    if rows.size:
        score |= _score(hits[rows, won], ious[rows, won])
    return score


def _mean_scores(entries: list[dict], level_names: Sequence[str], with_vote: bool) -> dict:
    """Means over attributes of the per-level, best-level and max-vote scores."""

    def mean(values: list[float | None]) -> float | None:
        known = [value for value in values if value is not None]
        return float(np.mean(known)) if known else None

    keys = ("hit_rate", "mean_iou", "follow")
    summary: dict[str, Any] = {
        "attributes": len(entries),
        "levels": {
            level: {key: mean([e["levels"][level].get(key) for e in entries]) for key in keys}
            for level in level_names
        },
        "best_level": {
            key: mean([e["levels"][e["best_level"]].get(key) for e in entries]) for key in keys
        },
    }
    if with_vote:
        voted = [e["max_vote"] for e in entries if e["max_vote"]["count"] > 0]
        summary["max_vote"] = {
            key: mean([v[key] for v in voted]) for key in ("hit_rate", "mean_iou")
        }
    return summary


def localization_scores(
    pixel_boxes: Any,
    gt_boxes: Sequence[Mapping[str, Sequence[float]]],
    attribute_names: Sequence[str],
    *,
    labels: Any,
    winning_level: Any = None,
    level_names: Sequence[str] = LEVEL_NAMES,
    location_varying: Collection[str] | None = None,
    tolerance: float = 0.0,
    image_sizes: Any = None,
) -> dict:
    """Pointing-game hit rate and mean IoU per attribute and level, over positive images.

    An attribute is scored over the images where its label is 1 and a ground-truth box exists;
    attributes with no such image (global attributes, or no positive) are listed under
    ``unscored`` and have no entry (not a zero). Max vote scores each image at the level whose
    branch won the vote; when the global branch won there is no box to score, so the image is
    left out of the max-vote hit rate and counted in ``global_wins`` instead.

    Args:
        pixel_boxes: [N, L, M, 4] pixel boxes
            (:func:`~pedattr.models.localization.boxes_to_pixels`).
        gt_boxes: per image, attribute name -> (x0, y0, x1, y1) in the same pixel coordinates.
        attribute_names: the M names, in the model's order.
        labels: [N, M] ground truth; 1 is positive (0 and 2, unknown, are not).
        winning_level: [N, M] branch index that won the max vote
            (:func:`~pedattr.models.localization.max_vote_branch`), L meaning the global branch;
            None to skip the max-vote scores.
        level_names: names of the L levels.
        location_varying: attributes to average separately (e.g. the generator's
            ``LOCATION_VARYING_ATTRIBUTES``); None for no such mean.
        tolerance: pointing-game tolerance in pixels.
        image_sizes: [N, 2] (height, width) of the images, which :func:`centre_follow` divides
            the centres by; None leaves them in pixels (fine when all images share one size).

    Returns:
        A JSON-serialisable dict: ``levels``, ``tolerance``, ``attributes`` (name -> ``count``,
        ``levels`` (level -> ``hit_rate``, ``mean_iou``, ``follow`` (:func:`centre_follow`, None
        when the ground truth never moves)), ``best_level`` (highest hit rate, then
        IoU, then the lower level), ``max_vote`` (``hit_rate``, ``mean_iou``, ``count``,
        ``global_wins``) when ``winning_level`` is given, ``location_varying``), ``unscored``,
        and ``mean`` with means over ``all`` scored attributes and the ``location_varying`` ones.
    """
    boxes = to_numpy(pixel_boxes)
    truth = to_numpy(labels)
    n, num_levels, m = boxes.shape[:3]
    if len(gt_boxes) != n or truth.shape != (n, m) or len(attribute_names) != m:
        raise ValueError(
            f"{n} images, {m} attributes in the boxes; got {len(gt_boxes)} ground-truth entries, "
            f"labels of shape {truth.shape} and {len(attribute_names)} names"
        )
    if len(level_names) != num_levels:
        raise ValueError(f"{len(level_names)} level names for {num_levels} levels")
    winners = None if winning_level is None else np.asarray(winning_level).astype(int)
    all_sizes = None if image_sizes is None else to_numpy(image_sizes)
    varying = set(location_varying or ())
    attributes: dict[str, dict] = {}
    unscored = []
    for j, name in enumerate(attribute_names):
        rows = [i for i in range(n) if truth[i, j] == 1 and name in gt_boxes[i]]
        if not rows:
            unscored.append(name)
            continue
        gt = np.array([gt_boxes[i][name] for i in rows], dtype=np.float64)[:, None, :]
        predicted = boxes[rows, :, j]  # [n, L, 4]
        sizes = None if all_sizes is None else all_sizes[rows]
        hits = pointing_game(predicted, gt, tolerance=tolerance)  # [n, L]
        ious = box_iou(predicted, gt)
        per_level = {
            level: {
                **_score(hits[:, k], ious[:, k]),
                "follow": centre_follow(predicted[:, k], gt[:, 0], sizes),
            }
            for k, level in enumerate(level_names)
        }
        best = max(
            range(num_levels),
            key=lambda k: (
                per_level[level_names[k]]["hit_rate"],
                per_level[level_names[k]]["mean_iou"],
                -k,
            ),
        )
        entry = {
            "count": len(rows),
            "levels": per_level,
            "best_level": level_names[best],
            "location_varying": name in varying,
        }
        if winners is not None:
            entry["max_vote"] = _max_vote_score(hits, ious, winners[rows, j])
        attributes[name] = entry
    entries = list(attributes.values())
    with_vote = winners is not None
    return {
        "levels": list(level_names),
        "tolerance": float(tolerance),
        "attributes": attributes,
        "unscored": unscored,
        "mean": {
            "all": _mean_scores(entries, level_names, with_vote),
            "location_varying": _mean_scores(
                [e for e in entries if e["location_varying"]], level_names, with_vote
            ),
        },
    }


@dataclass
class LocalizationSummary:
    """The headline localization numbers of a :class:`LocalizationReport`.

    Means over the location-varying attributes when the dataset names them, else over all
    scored ones (``attributes`` says which, ``count`` how many), at each attribute's best level.

    Attributes:
        attributes: "location_varying" or "all".
        count: attributes in the mean.
        best_level_hit_rate, best_level_mean_iou, best_level_follow: the learned boxes.
        activation_peak_hit_rate, activation_peak_follow: the activation-map peaks (None when
            not scored).
        max_vote_hit_rate: the boxes at the level that won the max vote (None when not scored).
        fixed_box_hit_rate: a fixed box per attribute (:func:`fixed_box_reference`).
    """

    attributes: str
    count: int
    best_level_hit_rate: float | None
    best_level_mean_iou: float | None
    best_level_follow: float | None
    activation_peak_hit_rate: float | None
    activation_peak_follow: float | None
    max_vote_hit_rate: float | None
    fixed_box_hit_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "attributes": self.attributes,
            "count": self.count,
            "best_level_hit_rate": self.best_level_hit_rate,
            "best_level_mean_iou": self.best_level_mean_iou,
            "best_level_follow": self.best_level_follow,
            "activation_peak_hit_rate": self.activation_peak_hit_rate,
            "activation_peak_follow": self.activation_peak_follow,
            "max_vote_hit_rate": self.max_vote_hit_rate,
            "fixed_box_hit_rate": self.fixed_box_hit_rate,
        }


@dataclass
class LocalizationReport:
    """How well a model's boxes (and activation peaks) point at the ground-truth boxes.

    Each part is what :func:`localization_scores` returns for one kind of prediction.

    Attributes:
        boxes: the learned boxes, with the max-vote scores.
        fixed_box_reference: a fixed box per attribute, scored on the same images (level
            "fixed"): what an attribute's position alone gives away.
        activation_peaks: the peaks of the ALMs' activation maps scored as points (no
            ``mean_iou``), or None when they were not recorded.
    """

    boxes: dict[str, Any]
    fixed_box_reference: dict[str, Any]
    activation_peaks: dict[str, Any] | None = None

    @property
    def group(self) -> str:
        """ "location_varying" when the dataset names such attributes and some were scored,
        else "all": the mean the summaries quote."""
        return "location_varying" if self.boxes["mean"]["location_varying"]["attributes"] else "all"

    def summary(self) -> LocalizationSummary:
        """The hit rate, IoU and follow at each attribute's best level, the max-vote hit rate,
        the peaks' hit rate and follow, and the fixed box's hit rate, for :attr:`group`."""
        group = self.group
        mean = self.boxes["mean"][group]
        reference = self.fixed_box_reference["mean"][group]["levels"]["fixed"]
        peaks = self.activation_peaks["mean"][group]["best_level"] if self.activation_peaks else {}
        return LocalizationSummary(
            attributes=group,
            count=mean["attributes"],
            best_level_hit_rate=mean["best_level"]["hit_rate"],
            best_level_mean_iou=mean["best_level"]["mean_iou"],
            best_level_follow=mean["best_level"]["follow"],
            activation_peak_hit_rate=peaks.get("hit_rate"),
            activation_peak_follow=peaks.get("follow"),
            max_vote_hit_rate=(mean.get("max_vote") or {}).get("hit_rate"),
            fixed_box_hit_rate=reference["hit_rate"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The boxes' scores with ``activation_peaks`` (when recorded) and
        ``fixed_box_reference`` added, as ``pedattr eval --json`` writes them."""
        extra = {} if self.activation_peaks is None else {"activation_peaks": self.activation_peaks}
        return {**self.boxes, **extra, "fixed_box_reference": self.fixed_box_reference}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LocalizationReport:
        """The report that :meth:`to_dict` wrote (e.g. read back from a JSON report)."""
        boxes = {
            k: v for k, v in values.items() if k not in ("activation_peaks", "fixed_box_reference")
        }
        return cls(
            boxes=boxes,
            fixed_box_reference=values["fixed_box_reference"],
            activation_peaks=values.get("activation_peaks"),
        )


def _cell(score: Mapping[str, Any] | None) -> str:
    if not score or score.get("hit_rate") is None:
        return f"{'-':>9} {'-':>5}"
    return f"{100 * score['hit_rate']:9.1f} {score['mean_iou']:5.2f}"


def _follow_line(scores: Mapping[str, Any]) -> str | None:
    """The mean :func:`centre_follow` per level, over the location-varying attributes if any."""
    group = "location_varying" if scores["mean"]["location_varying"]["attributes"] else "all"
    levels = scores["mean"][group]["levels"]
    values = [(level, levels[level].get("follow")) for level in scores["levels"]]
    if all(value is None for _, value in values):
        return None
    cells = ", ".join(f"{level} {'-' if v is None else f'{v:.2f}'}" for level, v in values)
    which = "location-varying" if group == "location_varying" else "all"
    return (
        f"box follows the evidence (slope of box centre on ground-truth centre; 1 moves with "
        f"it, 0 a fixed box), {which} mean: {cells}"
    )


def format_localization_table(scores: Mapping[str, Any]) -> str:
    """A terminal table: one row per scored attribute, hit rate (%) and mean IoU per level.

    Columns are the levels, the max-vote level when scored, and the best level; ``*`` marks the
    location-varying attributes. The last rows are the means.
    """
    levels = list(scores["levels"])
    with_vote = any("max_vote" in e for e in scores["attributes"].values())
    columns = [*levels, *(["vote"] if with_vote else []), "best"]
    header = f"{'attribute':<22}{'n':>5} " + " ".join(
        f"{c + ' hit%':>9} {'IoU':>5}" for c in columns
    )
    lines = [header]

    def row(label: str, count: str, entry: Mapping[str, Any], best: Mapping | None) -> str:
        cells = [_cell(entry["levels"][level]) for level in levels]
        if with_vote:
            cells.append(_cell(entry.get("max_vote")))
        cells.append(_cell(best))
        return f"{label:<22}{count:>5} " + " ".join(cells)

    for name, entry in scores["attributes"].items():
        label = ("* " if entry["location_varying"] else "  ") + name
        best = entry["levels"][entry["best_level"]]
        lines.append(row(label, str(entry["count"]), entry, best) + f"  ({entry['best_level']})")
    for group, title in (("location_varying", "mean, location-varying"), ("all", "mean, all")):
        summary = scores["mean"][group]
        if summary["attributes"]:
            lines.append(row(title, str(summary["attributes"]), summary, summary["best_level"]))
    follow = _follow_line(scores)
    if follow:
        lines.append(follow)
    if with_vote:
        counted = sum(e["max_vote"]["count"] for e in scores["attributes"].values())
        global_wins = sum(e["max_vote"]["global_wins"] for e in scores["attributes"].values())
        lines.append(
            f"max vote: the global branch won {global_wins} of {counted + global_wins} positive "
            "cases, which have no box and are not in the vote column"
        )
    if scores["unscored"]:
        lines.append(f"not scored (no positive with a box): {', '.join(scores['unscored'])}")
    return "\n".join(lines)
