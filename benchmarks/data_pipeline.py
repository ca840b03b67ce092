"""Benchmark: input pipeline throughput against the rate at which ALM training consumes images.

Pipeline: ``--images`` JPEGs of typical pedestrian-crop size (width 80-120, height 200-300 px,
quality 90; synthetic pedestrians from :mod:`pedattr.data.synthetic`) are written to a temporary
folder and described with ``write_description``; the training loader of
:func:`pedattr.data.dataset.build_loader` (decode, any mode to RGB, resize to 256 x 128 with
antialiasing, random flip, float in [0, 1], collate) is then timed with 0, 1 and 2 workers at
batch 32: one warm-up epoch (starts the persistent workers), then ``--epochs`` timed epochs.

Model: one training step of ALM on BN-Inception with 51 attributes at batch 32 and 256 x 128
(forward, deep-supervision weighted BCE, backward, Adam), as in ``train_epoch``, on the CPU in
float32: the median of ``--steps`` steps after one warm-up step.

Goal: the best pipeline setting delivers images at least 3 times as fast as the model consumes
them. Both are measured alone; in a real run with workers they share the same cores.

Usage:
    python benchmarks/data_pipeline.py            # table
    python benchmarks/data_pipeline.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import command_line, time_call  # noqa: E402

from pedattr.data.annotations import RawAnnotations  # noqa: E402
from pedattr.data.dataset import build_loader  # noqa: E402
from pedattr.data.description import DatasetDescription, write_description  # noqa: E402
from pedattr.data.synthetic.generator import generate_sample  # noqa: E402
from pedattr.engine.loss import WeightedBCELoss  # noqa: E402
from pedattr.engine.trainer import train_step  # noqa: E402
from pedattr.models.model import build_model  # noqa: E402

GOAL_RATIO = 3.0
NUM_ATTRS = 51


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="JPEGs to generate (default 200)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--height", type=int, default=256, help="output height (default 256)")
    parser.add_argument("--width", type=int, default=128, help="output width (default 128)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="DataLoader worker counts to time (default 0 1 2)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="timed loader epochs (default 3)")
    parser.add_argument(
        "--steps", type=int, default=3, help="timed model steps after one warm-up (default 3)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seed for images and weights")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.images < args.batch:
        parser.error("--images must be at least --batch")
    return args


def write_jpegs(folder: Path, count: int, seed: int) -> DatasetDescription:
    """``count`` pedestrian JPEGs of about 100 x 250 px and their description."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir()
    names = []
    for i in range(count):
        height, width = int(rng.integers(200, 301)), int(rng.integers(80, 121))
        sample = generate_sample(rng, height=height, width=width)
        names.append(f"{i:05d}.jpg")
        sample.image.save(images / names[-1], "JPEG", quality=90)
    labels = rng.integers(0, 2, size=(count, NUM_ATTRS))
    raw = RawAnnotations(
        attribute_names=[f"attr_{m:02d}" for m in range(NUM_ATTRS)],
        image_names=names,
        labels=labels,
        splits=["train"] * count,
        image_root=images,
        source={"format": "benchmark"},
    )
    write_description(raw, folder / "data")
    return DatasetDescription.load(folder / "data")


def pipeline_rate(description: DatasetDescription, workers: int, args) -> float:
    """Images per second out of the training loader, after a warm-up epoch."""
    loader = build_loader(
        description,
        "train",
        batch_size=args.batch,
        train=True,
        workers=workers,
        input_size=(args.height, args.width),
        seed=args.seed,
    )
    for _ in loader:  # warm-up: starts the persistent workers, fills the page cache
        pass
    count = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:
            count += len(batch.images)
    seconds = time.perf_counter() - start
    del loader  # stops its workers before the next setting is timed
    return count / seconds


def model_rate(args) -> float:
    """Images per second of ALM training steps (median step time)."""
    torch.manual_seed(args.seed)
    model = build_model("alm", backbone="bninception", num_attrs=NUM_ATTRS).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-4)
    criterion = WeightedBCELoss(torch.full((NUM_ATTRS,), 0.3))
    images = torch.rand(args.batch, 3, args.height, args.width)
    labels = torch.randint(0, 2, (args.batch, NUM_ATTRS)).float()

    def step() -> None:
        train_step(model, images, labels, optimizer, criterion)

    step()  # warm-up
    seconds = statistics.median(time_call(step) for _ in range(args.steps))
    return args.batch / seconds


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="pedattr-bench-") as tmp:
        description = write_jpegs(Path(tmp), args.images, args.seed)
        per_workers = {w: pipeline_rate(description, w, args) for w in args.workers}
    model = model_rate(args)
    best_workers = max(per_workers, key=per_workers.get)
    best = per_workers[best_workers]
    return {
        "pipeline_images_per_s": round(best, 1),
        "pipeline_best_workers": best_workers,
        "pipeline_images_per_s_by_workers": {str(w): round(r, 1) for w, r in per_workers.items()},
        "model_images_per_s": round(model, 2),
        "ratio": round(best / model, 1),
        "goal_ratio": GOAL_RATIO,
        "goal_met": best / model >= GOAL_RATIO,
        # Time the pipeline takes out of the model's cores when both run on them: the model's
        # rate over the single-process pipeline rate.
        "pipeline_cpu_share": round(model / per_workers[min(per_workers)], 4),
        "batch": args.batch,
        "input_size": [args.height, args.width],
        "images": args.images,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": command_line(),
    }


def format_report(result: dict) -> str:
    lines = [
        f"input pipeline, {result['images']} JPEGs of ~100x250 px -> "
        f"{result['input_size'][0]}x{result['input_size'][1]}, batch {result['batch']}, "
        f"{result['cores']} cores:",
    ]
    for workers, rate in result["pipeline_images_per_s_by_workers"].items():
        lines.append(f"  workers {workers}: {rate:9.1f} images/s")
    lines += [
        f"ALM training step (BN-Inception, {NUM_ATTRS} attributes, batch {result['batch']}, "
        f"{result['torch_threads']} threads): {result['model_images_per_s']:.2f} images/s",
        f"ratio pipeline (workers {result['pipeline_best_workers']}) / model: "
        f"{result['ratio']:.1f}x (goal >= {result['goal_ratio']:.0f}x: "
        f"{'met' if result['goal_met'] else 'NOT met'})",
        "note: both were measured alone; in training with workers, the workers and the model "
        "share the same cores, so the pipeline costs the model about "
        f"{result['pipeline_cpu_share']:.2%} of its CPU time (decoding in one process).",
        f"command: {result['command']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_report(result))


if __name__ == "__main__":
    main()
