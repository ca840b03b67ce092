"""A tracking run measured on ground truth: tracking quality and attribute quality per person.

:func:`evaluate_run` reads a ``pedattr track`` output folder (``frames.csv``, ``tracks.jsonl``)
and MOTChallenge ground truth (``gt.txt``, with ``labels.csv`` beside it: each identity's
attributes, as :mod:`pedattr.data.synthetic.clips` writes them), and measures

* **tracking**: HOTA, MOTA and IDF1 (and their parts) computed by TrackEval's metric classes
  (``pip install 'pedattr[video-eval]'``), on the boxes of ``frames.csv`` against the ground
  truth, similarity the boxes' IoU (MOTChallenge's 2-D box evaluation; ground-truth rows with
  ``conf`` 0 and rows of another class than 1, pedestrian, are left out);
* **attributes per track**: each ground-truth identity is matched to the track that covers most
  of its frames (in each frame, ground truth and tracked boxes are paired one to one by largest
  IoU, at least 0.5; ties go to the lower track id); the track's combined answer
  (``tracks.jsonl``) is scored against the identity's labels, one sample per identity;
* **attributes per frame**: every tracked crop paired with an identity in a frame is scored on
  its own (the attributes ``frames.csv`` lists for it) against that identity's labels, one
  sample per frame.

mA and F1 are :func:`pedattr.evaluation.metrics.metrics_report`'s, as ``pedattr eval`` reports
them. :func:`clip_part` keeps what a clip contributes (TrackEval's counts, the samples) so that
:func:`summarize` can pool several clips: tracking counts are summed as TrackEval combines
sequences, attribute samples are pooled before the metrics are computed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pedattr.evaluation.metrics import UndefinedMetricWarning, metrics_report
from pedattr.utils.io import atomic_write
from pedattr.utils.json import json_safe

MISSING_TRACKEVAL = "--eval needs TrackEval; install it with `pip install 'pedattr[video-eval]'`"
#: The file :func:`evaluate_run` writes into the output folder.
EVAL_FILE = "eval.json"
#: The IoU at which a tracked box and a ground-truth box count as the same person.
MATCH_IOU = 0.5
#: The summary numbers of each TrackEval metric kept in ``eval.json``.
TRACKING_FIELDS = {
    "HOTA": ("HOTA", "DetA", "AssA", "LocA"),
    "CLEAR": ("MOTA", "MOTP", "IDSW", "CLR_FN", "CLR_FP", "MT", "ML"),
    "Identity": ("IDF1", "IDP", "IDR"),
}


@dataclass
class GroundTruth:
    """MOTChallenge ground truth: rows ``[R, 6]`` (frame, id, x, y, w, h) and, when a
    ``labels.csv`` lies beside it, each identity's attribute labels by name."""

    path: Path
    rows: np.ndarray
    label_names: list[str] | None = None
    labels: dict[int, np.ndarray] | None = None


def ground_truth_file(path: str | os.PathLike) -> Path:
    """``gt.txt`` given itself, its folder, or a MOTChallenge sequence folder (``gt/gt.txt``)."""
    path = Path(path)
    for candidate in (path, path / "gt.txt", path / "gt" / "gt.txt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"--eval {path}: no ground truth there (a gt.txt, or a folder holding gt.txt or gt/gt.txt)"
    )


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read ``gt.txt`` (see :func:`ground_truth_file`) and the ``labels.csv`` beside it, if any.

    Raises:
        FileNotFoundError: no ground truth at ``path``.
        ValueError: a line that is not ``frame,id,x,y,w,h[,conf,class,visibility]`` numbers with
            frame >= 1, w > 0 and h > 0, an identity twice in a frame, no box at all, or a bad
            ``labels.csv`` (each message names the file and line).
    """
    file = ground_truth_file(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{file}: not a MOTChallenge gt.txt (not UTF-8 text)") from None
    rows, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.replace(" ", "").split(",")]
        except ValueError:
            values = []
        if len(values) < 6 or not all(map(math.isfinite, values)):
            raise ValueError(
                f"{file}: line {number}: expected frame,id,x,y,w,h,conf,class,... numbers"
            )
        frame, identity, x, y, w, h = values[:6]
        if frame < 1 or w <= 0 or h <= 0 or frame != int(frame) or identity != int(identity):
            raise ValueError(f"{file}: line {number}: needs whole frame >= 1 and id, w > 0, h > 0")
        if (len(values) > 6 and values[6] == 0) or (len(values) > 7 and values[7] != 1):
            continue  # MOTChallenge: conf 0 is ignored, other classes are not pedestrians
        if (frame, identity) in seen:
            raise ValueError(
                f"{file}: line {number}: id {int(identity)} twice in frame {int(frame)}"
            )
        seen.add((frame, identity))
        rows.append([frame, identity, x, y, w, h])
    if not rows:
        raise ValueError(f"{file}: no pedestrian box (class 1, conf not 0) in the ground truth")
    names, labels = _read_labels(file.parent / "labels.csv")
    return GroundTruth(file, np.array(rows, np.float64), names, labels)


def _read_labels(path: Path) -> tuple[list[str] | None, dict[int, np.ndarray] | None]:
    if not path.is_file():
        return None, None
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            table = list(csv.reader(handle))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a CSV file (not UTF-8 text)") from None
    if not table or not table[0] or table[0][0] != "id" or len(table[0]) < 2:
        raise ValueError(f"{path}: line 1: expected the header id,ATTRIBUTE,...")
    names, labels = table[0][1:], {}
    for number, row in enumerate(table[1:], 2):
        if not row:
            continue
        try:
            identity, values = int(row[0]), [int(v) for v in row[1:]]
        except ValueError:
            values = []
        if len(values) != len(names) or any(v not in (0, 1, 2) for v in values):
            raise ValueError(f"{path}: line {number}: expected an id and {len(names)} labels 0/1")
        labels[identity] = np.array(values, np.uint8)
    return names, labels


@dataclass
class TrackingRun:
    """What ``pedattr track`` wrote: rows ``[R, 6]`` (frame, id, x, y, w, h), each row's attributes
    (None where the model did not run on the crop), each track's combined probabilities and
    thresholds, and the attribute names in the model's order."""

    rows: np.ndarray
    row_attributes: list[list[str] | None]
    tracks: dict[int, dict[str, Any]]
    names: list[str]
    frames: int


def read_run(out: str | os.PathLike) -> TrackingRun:
    """Read a ``pedattr track`` output folder: frames.csv, tracks.jsonl, summary.json."""
    out = Path(out)
    rows, attributes = [], []
    with open(out / "frames.csv", encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            rows.append([float(record[k]) for k in ("frame", "id", "x", "y", "w", "h")])
            found = [a for a in record["attributes"].split(";") if a]
            attributes.append(found if record["attributed"] == "1" else None)
    tracks, names = {}, []
    for line in (out / "tracks.jsonl").read_text(encoding="utf-8").splitlines():
        track = json.loads(line)
        tracks[int(track["id"])] = track
        names = names or list(track["probabilities"])
    try:
        frames = int(json.loads((out / "summary.json").read_text(encoding="utf-8"))["frames"])
    except (OSError, ValueError, KeyError, TypeError):
        frames = 0
    return TrackingRun(np.array(rows, np.float64).reshape(-1, 6), attributes, tracks, names, frames)


# --- matching ---------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[A, B]`` of boxes given as (x, y, w, h) rows (TrackEval's, so both agree)."""
    from trackeval.datasets._base_dataset import _BaseDataset

    return _BaseDataset._calculate_box_ious(a.reshape(-1, 4), b.reshape(-1, 4), box_format="xywh")


def frame_matches(gt: np.ndarray, run: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (ground-truth row, run row) matched one to one in each frame by largest IoU, at least
    :data:`MATCH_IOU`."""
    from scipy.optimize import linear_sum_assignment

    pairs = []
    for frame in np.unique(gt[:, 0]):
        g = np.flatnonzero(gt[:, 0] == frame)
        r = np.flatnonzero(run[:, 0] == frame)
        if not len(g) or not len(r):
            continue
        iou = box_iou(gt[g, 2:6], run[r, 2:6])
        for i, j in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[i, j] >= MATCH_IOU:
                pairs.append((int(g[i]), int(r[j])))
    return pairs


def identity_tracks(gt: np.ndarray, run: np.ndarray, pairs: list[tuple[int, int]]) -> dict:
    """Ground-truth id -> (the track id covering most of its frames, frames covered), or
    (None, 0) for an identity no track covers; ties go to the lower track id."""
    counts: dict[int, dict[int, int]] = {int(i): {} for i in np.unique(gt[:, 1])}
    for g, r in pairs:
        by_track = counts[int(gt[g, 1])]
        track = int(run[r, 1])
        by_track[track] = by_track.get(track, 0) + 1
    return {
        identity: min(((t, n) for t, n in by_track.items()), key=lambda tn: (-tn[1], tn[0]))
        if by_track
        else (None, 0)
        for identity, by_track in counts.items()
    }


# --- tracking metrics -------------------------------------------------------------------------


def _trackeval_metrics() -> dict[str, Any]:
    try:
        from trackeval.metrics import CLEAR, HOTA, Identity
    except ImportError:
        raise ImportError(MISSING_TRACKEVAL) from None
    quiet = {"THRESHOLD": MATCH_IOU, "PRINT_CONFIG": False}
    return {"HOTA": HOTA(), "CLEAR": CLEAR(quiet), "Identity": Identity(quiet)}


def tracking_counts(gt: np.ndarray, run: np.ndarray, frames: int) -> dict[str, dict]:
    """TrackEval's per-sequence results (HOTA, CLEAR, Identity) of one clip."""
    metrics = _trackeval_metrics()
    frames = int(max(frames, gt[:, 0].max(initial=0), run[:, 0].max(initial=0)))
    gt_ids = {v: k for k, v in enumerate(np.unique(gt[:, 1]))}
    run_ids = {v: k for k, v in enumerate(np.unique(run[:, 1]))}
    data: dict[str, Any] = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for frame in range(1, frames + 1):
        g, r = gt[gt[:, 0] == frame], run[run[:, 0] == frame]
        data["gt_ids"].append(np.array([gt_ids[v] for v in g[:, 1]], int))
        data["tracker_ids"].append(np.array([run_ids[v] for v in r[:, 1]], int))
        data["similarity_scores"].append(box_iou(g[:, 2:6], r[:, 2:6]))
    data.update(
        num_timesteps=frames,
        num_gt_ids=len(gt_ids),
        num_tracker_ids=len(run_ids),
        num_gt_dets=len(gt),
        num_tracker_dets=len(run),
    )
    return {name: metric.eval_sequence(data) for name, metric in metrics.items()}


def _combined(counts: list[dict[str, dict]]) -> dict[str, float]:
    metrics = _trackeval_metrics()
    out = {}
    for name, metric in metrics.items():
        parts = {str(k): _arrays(c[name]) for k, c in enumerate(counts)}
        res = parts["0"] if len(parts) == 1 else metric.combine_sequences(parts)
        for field in TRACKING_FIELDS[name]:
            value = np.asarray(res[field], np.float64)
            out[field] = float(value.mean())  # HOTA's are over IoU thresholds 0.05 .. 0.95
    return out


def _arrays(res: dict) -> dict:
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in res.items()}


def _plain(res: dict) -> dict:
    return {
        k: v.tolist() if isinstance(v, np.ndarray) else (v.item() if hasattr(v, "item") else v)
        for k, v in res.items()
    }


# --- one clip, several clips ------------------------------------------------------------------


def clip_part(gt: GroundTruth, run: TrackingRun, name: str = "clip") -> dict[str, Any]:
    """What one clip contributes to :func:`summarize` (JSON-ready)."""
    part: dict[str, Any] = {
        "name": name,
        "ground_truth": str(gt.path),
        "tracking_counts": {
            k: _plain(v) for k, v in tracking_counts(gt.rows, run.rows, run.frames).items()
        },
        "attributes": None,
    }
    if gt.labels is None or not run.names:
        return part
    columns = _label_columns(gt, run.names)
    pairs = frame_matches(gt.rows, run.rows)
    identities = []
    for identity, (track, covered) in identity_tracks(gt.rows, run.rows, pairs).items():
        if identity not in gt.labels:
            raise ValueError(f"{gt.path.parent / 'labels.csv'}: no labels for id {identity}")
        record = run.tracks.get(track) if track is not None else None
        probabilities = (record or {}).get("probabilities") or None
        identities.append(
            {
                "id": identity,
                "track": track,
                "frames": int((gt.rows[:, 1] == identity).sum()),
                "covered": covered,
                "labels": gt.labels[identity][columns].tolist(),
                "probabilities": None
                if probabilities is None
                else [probabilities[n] for n in run.names],
            }
        )
    frames = [
        [int(gt.rows[g, 0]), int(gt.rows[g, 1]), int(run.rows[r, 1]), run.row_attributes[r]]
        for g, r in pairs
        if run.row_attributes[r] is not None
    ]
    thresholds = next(iter(run.tracks.values()))["thresholds"]
    part["attributes"] = {
        "names": run.names,
        "thresholds": [thresholds[n] for n in run.names],
        "identities": identities,
        "frames": frames,  # frame, gt id, track id, attributes found on that crop
    }
    return part


def _attribute_metrics(parts: list[dict]) -> dict[str, Any] | None:
    attributes = [p["attributes"] for p in parts if p["attributes"] is not None]
    if not attributes:
        return None
    names, thresholds = attributes[0]["names"], attributes[0]["thresholds"]
    labels_of = {}
    track_labels, track_probs, frame_labels, frame_found = [], [], [], []
    missed = 0
    for k, a in enumerate(attributes):
        if a["names"] != names:
            raise ValueError("the runs pooled were made with different attribute names")
        for person in a["identities"]:
            labels_of[k, person["id"]] = person["labels"]
            if person["probabilities"] is None:
                missed += 1
                continue
            track_labels.append(person["labels"])
            track_probs.append(person["probabilities"])
        for _, identity, _, found in a["frames"]:
            frame_labels.append(labels_of[k, identity])
            frame_found.append([float(n in found) for n in names])
    result: dict[str, Any] = {"identities": len(labels_of), "identities_without_track": missed}
    with warnings.catch_warnings():  # undefined attributes are listed in the report instead
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result["track"] = (
            metrics_report(track_labels, track_probs, thresholds, names).to_dict()
            if track_labels
            else None
        )
        # A frame's attributes are already thresholded: found is 1, so 0.5 keeps them as they are.
        result["single_frame"] = (
            metrics_report(frame_labels, frame_found, 0.5, names).to_dict()
            if frame_labels
            else None
        )
    return result


def summarize(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of one or several clips' :func:`clip_part` s, pooled."""
    return {
        "clips": [p["name"] for p in parts],
        "tracking": _combined([p["tracking_counts"] for p in parts]),
        "attributes": _attribute_metrics(parts),
    }


def check_evaluation(
    ground_truth: str | os.PathLike, names: list[str] | None = None
) -> GroundTruth:
    """Read the ground truth and make sure TrackEval imports, before a run starts.

    Args:
        ground_truth: see :func:`ground_truth_file`.
        names: the model's attributes, each of which ``labels.csv`` (when there is one) must
            have.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_ground_truth`, or a label file without
            some of ``names``.
        ImportError: TrackEval is not installed.
    """
    gt = read_ground_truth(ground_truth)
    _trackeval_metrics()
    if names is not None and gt.label_names is not None:
        _label_columns(gt, names)
    return gt


def _label_columns(gt: GroundTruth, names: list[str]) -> list[int]:
    missing = [n for n in names if n not in (gt.label_names or [])]
    if missing:
        raise ValueError(
            f"{gt.path.parent / 'labels.csv'}: no column for the model's attributes {missing}"
        )
    return [gt.label_names.index(n) for n in names]


def evaluate_run(
    out: str | os.PathLike,
    ground_truth: str | os.PathLike | GroundTruth,
    name: str | None = None,
    *,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate the ``pedattr track`` output folder ``out`` on ``ground_truth``: the
    :func:`summarize` of its clip, with the clip's :func:`clip_part` under ``"part"``, also
    written to ``out/eval.json`` unless ``write`` is False."""
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else read_ground_truth(ground_truth)
    part = clip_part(gt, read_run(out), name or Path(out).name)
    result = {**summarize([part]), "part": part}
    if write:
        write_evaluation(Path(out) / EVAL_FILE, result)
    return result


def pool_evaluations(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several clips' :func:`evaluate_run` results pooled into one :func:`summarize`."""
    return summarize([r["part"] for r in results])


def write_evaluation(path: str | os.PathLike, result: dict[str, Any]) -> None:
    """Write a result as JSON (NaN as null), atomically."""
    text = json.dumps(json_safe(result), indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def format_evaluation(result: dict[str, Any]) -> str:
    """The printed table: tracking metrics, then per-track against per-frame attributes."""
    t = result["tracking"]
    lines = [
        f"{'tracking':<14}{'HOTA':>8}{'MOTA':>8}{'IDF1':>8}{'IDSW':>7}",
        f"{'':<14}{t['HOTA']:>8.3f}{t['MOTA']:>8.3f}{t['IDF1']:>8.3f}{t['IDSW']:>7.0f}",
    ]
    a = result["attributes"]
    if a is None:
        return "\n".join([*lines, "attributes: no labels.csv beside the ground truth"])
    lines.append(f"{'attributes':<14}{'mA':>8}{'F1':>8}{'samples':>9}")
    for label, key in (("per track", "track"), ("per frame", "single_frame")):
        m = a[key]
        if m is None:
            lines.append(f"{label:<14}{'-':>8}{'-':>8}{0:>9}")
        else:
            lines.append(
                f"{label:<14}{100 * m['mA']:>8.2f}{100 * m['f1']:>8.2f}{m['num_samples']:>9}"
            )
    lines.append(
        f"{a['identities']} identities, {a['identities_without_track']} without a matching track"
    )
    return "\n".join(lines)
