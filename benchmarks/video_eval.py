"""Benchmark: does combining a track's frames beat single frames? Generated clips with ground truth.

For each seed, ``pedattr generate-video`` writes ``--clips`` clips (with noisy ``file:``
detections made from the ground truth at ``--jitter``, ``--miss`` and ``--false-positives``),
``pedattr track ... --detector file:det/det.txt --eval CLIP`` runs on each, and the clips'
``eval.json`` are pooled (tracking counts summed as TrackEval combines sequences, attribute
samples pooled). Printed: one row per seed (HOTA, MOTA, IDF1; mA and F1 per track and per frame;
the mA gain of tracks over frames) and the mean and standard deviation over seeds.

Usage:
    python benchmarks/video_eval.py --checkpoint runs/demo/run/best.safetensors --seeds 0 1 2
    python benchmarks/video_eval.py --checkpoint CKPT --seeds 100 101 102   # the validation set
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import command_line, load_average  # noqa: E402

from pedattr.cli import main  # noqa: E402
from pedattr.video.evaluate import EVAL_FILE, pool_evaluations  # noqa: E402

COLUMNS = (
    ("HOTA", lambda r: r["tracking"]["HOTA"], 100),
    ("MOTA", lambda r: r["tracking"]["MOTA"], 100),
    ("IDF1", lambda r: r["tracking"]["IDF1"], 100),
    ("mA track", lambda r: r["attributes"]["track"]["mA"], 100),
    ("mA frame", lambda r: r["attributes"]["single_frame"]["mA"], 100),
    ("gain", lambda r: r["attributes"]["track"]["mA"] - r["attributes"]["single_frame"]["mA"], 100),
    ("F1 track", lambda r: r["attributes"]["track"]["f1"], 100),
    ("F1 frame", lambda r: r["attributes"]["single_frame"]["f1"], 100),
    ("people", lambda r: r["attributes"]["identities"], 1),
)


def run(command: list[str]) -> None:
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        status = main(command)
    if status != 0:
        raise SystemExit(f"pedattr {' '.join(command)} exited {status}:\n{quiet.getvalue()}")


def evaluate_seed(args: argparse.Namespace, seed: int, folder: Path) -> dict:
    clips = folder / f"clips_{seed}"
    noise = ["--jitter", str(args.jitter), "--miss", str(args.miss)]
    noise += ["--false-positives", str(args.false_positives)]
    run(
        ["generate-video", str(clips), "--clips", str(args.clips), "--seed", str(seed)]
        + ["--frames", str(args.frames), *noise]
    )
    results = []
    for clip in sorted(p for p in clips.iterdir() if p.is_dir()):
        out = folder / f"track_{seed}" / clip.name
        run(
            ["track", str(clip / "video.mp4"), "--checkpoint", str(args.checkpoint)]
            + ["--detector", f"file:{clip / 'det' / 'det.txt'}", "--out", str(out)]
            + ["--no-video", "--quiet", "--eval", str(clip), *args.track_options]
        )
        results.append(json.loads((out / EVAL_FILE).read_text(encoding="utf-8")))
    return pool_evaluations(results)


def table(rows: dict[str, dict]) -> str:
    head = f"{'seed':<8}" + "".join(f"{name:>10}" for name, _, _ in COLUMNS)
    lines = [head]
    for seed, result in rows.items():
        lines.append(
            f"{seed:<8}" + "".join(f"{get(result) * scale:>10.1f}" for _, get, scale in COLUMNS)
        )
    means, spreads = [], []
    for _, get, scale in COLUMNS:
        values = [get(r) * scale for r in rows.values()]
        means.append(statistics.mean(values))
        spreads.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    lines.append(f"{'mean':<8}" + "".join(f"{m:>10.1f}" for m in means))
    lines.append(f"{'std':<8}" + "".join(f"{s:>10.1f}" for s in spreads))
    return "\n".join(lines)


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the attribute model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clips", type=int, default=6, help="clips per seed (default 6)")
    parser.add_argument("--frames", type=int, default=120, help="frames per clip (default 120)")
    parser.add_argument("--jitter", type=float, default=0.05)
    parser.add_argument("--miss", type=float, default=0.10)
    parser.add_argument("--false-positives", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="also print the pooled results")
    parser.add_argument(
        "track_options", nargs="*", help="more `pedattr track` options, after --", default=[]
    )
    args = parser.parse_args()
    started, load = time.perf_counter(), load_average()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows[str(seed)] = evaluate_seed(args, seed, Path(tmp))
    print(f"$ {command_line()}")
    print(
        f"{args.clips} clips x {args.frames} frames per seed; detections from the ground truth: "
        f"jitter {args.jitter:.0%}, {args.miss:.0%} missed, {args.false_positives:g} false "
        "positives per frame; metrics in %, mA gain in points"
    )
    print(table(rows))
    print(f"{time.perf_counter() - started:.0f} s; load average before: {load}")
    if args.json:
        print(
            json.dumps(
                {seed: {k: r[k] for k in ("tracking", "attributes")} for seed, r in rows.items()}
            )
        )


if __name__ == "__main__":
    main_benchmark()
