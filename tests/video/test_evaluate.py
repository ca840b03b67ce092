"""``pedattr.video.evaluate`` on hand-made cases whose metrics are known: tracking metrics from
TrackEval checked against the definitions, the identity-to-track rule, and mA and F1 per track
and per frame checked against a direct computation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pedattr.video.evaluate import (
    evaluate_run,
    frame_matches,
    identity_tracks,
    read_ground_truth,
    summarize,
    tracking_counts,
)
from pedattr.video.writers import FRAME_COLUMNS

pytest.importorskip("trackeval")

NAMES = ["Hat", "Backpack"]


def write_gt(folder: Path, rows: list[list[float]], labels: dict[int, list[int]] | None) -> Path:
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    text = "".join(",".join(str(v) for v in [*row, 1, 1, 1.0]) + "\n" for row in rows)
    (folder / "gt" / "gt.txt").write_text(text)
    if labels is not None:
        lines = ["id," + ",".join(NAMES)]
        lines += [f"{i}," + ",".join(map(str, v)) for i, v in labels.items()]
        (folder / "gt" / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_run(
    folder: Path,
    rows: list[list[float]],
    attributes: list[list[str]] | None = None,
    probabilities: dict[int, list[float]] | None = None,
    frames: int = 0,
) -> Path:
    """A pedattr track output folder: frames.csv rows (frame, id, x, y, w, h) with the attributes
    found on each crop, tracks.jsonl with each track's probabilities (threshold 0.5)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "frames.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FRAME_COLUMNS)
        for k, row in enumerate(rows):
            found = attributes[k] if attributes else []
            writer.writerow([*row, 0.9, -1, -1, -1, 0.0, 1, ";".join(found)])
    tracks = sorted({int(r[1]) for r in rows})
    probabilities = probabilities or {t: [0.2] * len(NAMES) for t in tracks}
    with open(folder / "tracks.jsonl", "w") as handle:
        for t in tracks:
            record = {
                "id": t,
                "probabilities": dict(zip(NAMES, probabilities[t], strict=True)),
                "thresholds": dict.fromkeys(NAMES, 0.5),
            }
            handle.write(json.dumps(record) + "\n")
    (folder / "summary.json").write_text(json.dumps({"frames": frames}))
    return folder


def walk(identity: int, frames: range, x0: float = 10.0, y: float = 20.0) -> list[list[float]]:
    return [[f, identity, x0 + 5 * f, y, 40.0, 100.0] for f in frames]


def metrics(gt_rows, run_rows, frames=10) -> dict[str, float]:
    counts = tracking_counts(np.array(gt_rows, float), np.array(run_rows, float), frames)
    part = {"name": "x", "tracking_counts": counts, "attributes": None}
    return summarize([part])["tracking"]


def test_perfect_tracks_score_one():
    gt = walk(1, range(1, 11)) + walk(2, range(1, 11), y=200.0)
    run = [[f, 7 if i == 1 else 9, *box] for f, i, *box in gt]
    result = metrics(gt, run)
    assert result["MOTA"] == pytest.approx(1.0)
    assert result["IDF1"] == pytest.approx(1.0)
    assert result["HOTA"] == pytest.approx(1.0)
    assert result["IDSW"] == 0


def test_one_identity_switch_halfway():
    gt = walk(1, range(1, 11))
    run = [[f, 3 if f <= 5 else 4, *box] for f, _, *box in gt]
    result = metrics(gt, run)
    # MOTA = 1 - (FN + FP + IDSW) / GT; IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN), the best
    # one-to-one identity match covering 5 of 10 frames; HOTA = sqrt(DetA AssA) with every box
    # found (DetA 1) and each true positive's association IoU 5 / (5 + 5 + 0).
    assert result["IDSW"] == 1
    assert result["MOTA"] == pytest.approx(1 - (0 + 0 + 1) / 10)
    assert result["IDF1"] == pytest.approx(2 * 5 / (2 * 5 + 5 + 5))
    assert result["HOTA"] == pytest.approx(math.sqrt(1.0 * 5 / 10))


def test_misses_and_false_positives_count_in_mota():
    gt = walk(1, range(1, 11))
    run = [[f, 1, *box] for f, _, *box in gt if f > 2]  # frames 1-2 missed
    run.append([3, 2, 500.0, 300.0, 40.0, 100.0])  # a box where nobody is
    result = metrics(gt, run)
    assert result["MOTA"] == pytest.approx(1 - (2 + 1 + 0) / 10)
    assert result["CLR_FN"] == 2 and result["CLR_FP"] == 1


def test_an_identity_gets_the_track_covering_most_of_its_frames():
    gt = np.array(walk(1, range(1, 11)) + walk(2, range(1, 5), y=300.0), float)
    run = [[f, 3 if f <= 4 else 5, *box] for f, _, *box in walk(1, range(1, 11))]
    # track 8 is on identity 2 for 2 frames, track 6 for 2 frames: a tie, the lower id wins
    run += [[f, 8 if f <= 2 else 6, *box] for f, _, *box in walk(2, range(1, 5), y=300.0)]
    # a box off by more than half its width is not the same person
    run += [[f, 9, 10.0 + 5 * f + 30.0, 20.0, 40.0, 100.0] for f in range(11, 13)]
    run = np.array(run, float)
    pairs = frame_matches(gt, run)
    assert identity_tracks(gt, run, pairs) == {1: (5, 6), 2: (6, 2)}
    assert len(pairs) == 14


def test_attribute_metrics_per_track_and_per_frame(tmp_path):
    # identity 1: Hat; identity 2: Backpack; identity 3: neither, never tracked
    labels = {1: [1, 0], 2: [0, 1], 3: [0, 0]}
    gt_rows = walk(1, range(1, 5)) + walk(2, range(1, 5), y=300.0)
    gt_rows += [[f, 3, 400.0, 10.0, 40.0, 100.0] for f in range(1, 3)]
    gt = write_gt(tmp_path / "clip", gt_rows, labels)
    run_rows = [[f, 11, *box] for f, _, *box in walk(1, range(1, 5))]
    run_rows += [[f, 12, *box] for f, _, *box in walk(2, range(1, 5), y=300.0)]
    found = [["Hat"], ["Hat", "Backpack"], [], ["Hat"], ["Backpack"], [], ["Backpack"], ["Hat"]]
    probabilities = {11: [0.9, 0.6], 12: [0.3, 0.8]}
    out = write_run(tmp_path / "run", run_rows, found, probabilities, frames=4)
    result = evaluate_run(out, gt)
    assert (out / "eval.json").is_file()
    attributes = result["attributes"]
    assert attributes["identities"] == 3 and attributes["identities_without_track"] == 1

    def direct(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
        """mA and F1 as the ALM paper defines them, written out."""
        accuracies = []
        for a in range(truth.shape[1]):
            t, p = truth[:, a] == 1, predicted[:, a] == 1
            accuracies.append((np.sum(t & p) / np.sum(t) + np.sum(~t & ~p) / np.sum(~t)) / 2)
        hits = (truth * predicted).sum(1)
        per_sample = zip(hits, predicted.sum(1), truth.sum(1), strict=True)
        precision = np.mean([h / p if p else 0.0 for h, p, _ in per_sample])
        per_sample = zip(hits, predicted.sum(1), truth.sum(1), strict=True)
        recall = np.mean([h / t if t else 0.0 for h, _, t in per_sample])
        return float(np.mean(accuracies)), 2 * precision * recall / (precision + recall)

    track_truth = np.array([labels[1], labels[2]])
    track_pred = np.array([[1, 1], [0, 1]])  # probabilities above 0.5
    m_a, f1 = direct(track_truth, track_pred)
    assert attributes["track"]["mA"] == pytest.approx(m_a)
    assert attributes["track"]["f1"] == pytest.approx(f1)
    assert attributes["track"]["num_samples"] == 2
    frame_truth = np.array([labels[1]] * 4 + [labels[2]] * 4)
    frame_pred = np.array([[n in f for n in NAMES] for f in found], int)
    m_a, f1 = direct(frame_truth, frame_pred)
    assert attributes["single_frame"]["mA"] == pytest.approx(m_a)
    assert attributes["single_frame"]["f1"] == pytest.approx(f1)
    assert attributes["single_frame"]["num_samples"] == 8


def test_ground_truth_paths_and_ignored_rows(tmp_path):
    folder = write_gt(tmp_path / "seq", walk(1, range(1, 4)), {1: [1, 0]})
    text = (folder / "gt" / "gt.txt").read_text()
    # MOTChallenge: conf 0 means ignore; class 2 is not a pedestrian
    text += "1,5,300,20,40,100,0,1,1.0\n2,6,300,20,40,100,1,2,1.0\n"
    (folder / "gt" / "gt.txt").write_text(text)
    for given in (folder, folder / "gt", folder / "gt" / "gt.txt"):
        gt = read_ground_truth(given)
        assert gt.rows[:, 1].tolist() == [1, 1, 1]
        assert gt.label_names == NAMES and gt.labels[1].tolist() == [1, 0]
