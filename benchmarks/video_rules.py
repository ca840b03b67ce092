"""Benchmark: which rule should combine a track's frames? Measured on generated validation clips.

For each seed, the clips of ``pedattr generate-video`` (noisy ``file:`` detections from the
ground truth, as ``benchmarks/video_eval.py``) go through :class:`pedattr.VideoPipeline` with
every crop of every track predicted; each frame's probabilities and crop quality are kept, and
each rule below turns a track's frames into one answer. Each ground-truth identity is matched to
the track covering most of its frames (:mod:`pedattr.video.evaluate`), and mA over the identities
is computed per rule, beside the single-frame mA. Printed: mean and standard deviation over seeds.

Rules (z: a crop's logits, q: its quality, p: its probabilities):

* ``quality-weighted logits`` (pedattr's): sum(q z) / sum(q);
* ``mean of logits``: mean(z);
* ``mean of probabilities``: mean(p);
* ``best crop``: the crop of highest quality alone;
* ``best quarter``: mean(z) over the quarter of crops of highest quality (at least one);
* ``most confident``: per attribute, the crop whose probability is farthest from 0.5;
* ``majority vote``: per attribute, positive when most crops say so.

Usage:
    python benchmarks/video_rules.py --checkpoint runs/demo/run/best.safetensors --seeds 100 101 102
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import command_line, load_average  # noqa: E402

import pedattr  # noqa: E402
from pedattr.data.synthetic.clips import ClipSettings, DetectionNoise, write_clips  # noqa: E402
from pedattr.evaluation.metrics import UndefinedMetricWarning, metrics_report  # noqa: E402
from pedattr.video.combine import logits  # noqa: E402
from pedattr.video.evaluate import frame_matches, identity_tracks, read_ground_truth  # noqa: E402


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _best_quarter(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    keep = np.argsort(-q)[: max(1, len(q) // 4)]
    return _sigmoid(logits(p[keep]).mean(0))


def _most_confident(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return p[np.argmax(np.abs(p - 0.5), axis=0), np.arange(p.shape[1])]


def _weighted(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    if q.sum() <= 0:
        return _sigmoid(logits(p).mean(0))
    return _sigmoid((q[:, None] * logits(p)).sum(0) / q.sum())


RULES = {
    "quality-weighted logits": _weighted,
    "mean of logits": lambda p, q: _sigmoid(logits(p).mean(0)),
    "mean of probabilities": lambda p, q: p.mean(0),
    "best crop": lambda p, q: p[np.argmax(q)],
    "best quarter": _best_quarter,
    "most confident": _most_confident,
    "majority vote": lambda p, q: (p > 0.5).mean(0),  # above 0.5: most crops say positive
}


def clip_samples(model, clip: Path) -> tuple[dict, list, list]:
    """Per rule the matched identities' (labels, probabilities); per frame (labels, probs)."""
    pipeline = pedattr.VideoPipeline(model, detector=f"file:{clip / 'det' / 'det.txt'}")
    rows, crops = [], {}
    for result in pipeline.frames(clip / "video.mp4"):
        for person in result.people:
            x0, y0, x1, y1 = person.box
            rows.append([result.number, person.track_id, x0, y0, x1 - x0, y1 - y0])
            if person.prediction is not None:
                probs = [person.prediction.probabilities[n] for n in pipeline.names]
                crops[len(rows) - 1] = (np.array(probs), person.quality)
    gt = read_ground_truth(clip)
    run = np.array(rows, np.float64).reshape(-1, 6)
    columns = [gt.label_names.index(n) for n in pipeline.names]
    pairs = frame_matches(gt.rows, run)
    per_rule: dict[str, list] = {rule: [] for rule in RULES}
    for identity, (track, _) in identity_tracks(gt.rows, run, pairs).items():
        if track is None:
            continue
        mine = [crops[r] for r in np.flatnonzero(run[:, 1] == track) if r in crops]
        p = np.stack([c[0] for c in mine])
        q = np.array([c[1] for c in mine])
        for rule, combine in RULES.items():
            per_rule[rule].append((gt.labels[identity][columns], combine(p, q)))
    frames = [(gt.labels[int(gt.rows[g, 1])][columns], crops[r][0]) for g, r in pairs if r in crops]
    return per_rule, frames, pipeline.names


def mean_accuracy(samples: list) -> float:
    labels = np.stack([s[0] for s in samples])
    probs = np.stack([s[1] for s in samples])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return 100 * metrics_report(labels, probs, 0.5).mA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    started, load = time.perf_counter(), load_average()
    model = pedattr.load_model(args.checkpoint)
    scores: dict[str, list[float]] = {rule: [] for rule in [*RULES, "single frame"]}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            folders = write_clips(
                Path(tmp) / str(seed),
                clips=args.clips,
                seed=seed,
                settings=ClipSettings(frames=args.frames),
                noise=DetectionNoise(),
                progress=False,
            )
            per_rule: dict[str, list] = {rule: [] for rule in RULES}
            frames: list = []
            for folder in folders:
                clip_rules, clip_frames, _ = clip_samples(model, folder)
                for rule, samples in clip_rules.items():
                    per_rule[rule] += samples
                frames += clip_frames
            for rule, samples in per_rule.items():
                scores[rule].append(mean_accuracy(samples))
            scores["single frame"].append(mean_accuracy(frames))
    print(f"$ {command_line()}")
    print(f"seeds {args.seeds}, {args.clips} clips x {args.frames} frames each; mA in %")
    print(f"{'rule':<26}{'mA mean':>9}{'std':>6}   per seed")
    for rule, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        each = " ".join(f"{v:.1f}" for v in values)
        print(f"{rule:<26}{statistics.mean(values):>9.1f}{spread:>6.1f}   {each}")
    print(f"{time.perf_counter() - started:.0f} s; load average before: {load}")


if __name__ == "__main__":
    main()
