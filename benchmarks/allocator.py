"""Benchmark: inference with and without :func:`pedattr.utils.allocator.keep_freed_memory`.

Each trial is a fresh process (the setting is process-wide and cannot be undone) that loads the
checkpoint as ``pedattr predict`` does and runs the Predictor over the images: decoding,
resizing, forward and records, one torch thread. Two workloads:

* ``batch 32``: every batch full, as ``pedattr predict`` over a folder;
* ``batch 8-24``: a batch size drawn at random for each batch, as ``pedattr serve`` runs under
  load.

Trials alternate (default, kept, default, kept, ...) so that a drift of the machine's speed
touches both; the figure is the median CPU time per image of each setting and their ratio.

Usage:
    python benchmarks/allocator.py                       # the demo's checkpoint and images
    python benchmarks/allocator.py --checkpoint CKPT --images DIR --trials 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import command_line  # noqa: E402

#: What `make demo` (`pedattr demo --out runs/demo`) writes.
DEMO = Path(__file__).resolve().parents[1] / "runs" / "demo"
WORKLOADS = ("batch 32", "batch 8-24")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEMO / "run" / "best.safetensors"))
    parser.add_argument("--images", default=str(DEMO / "data" / "images"))
    parser.add_argument("--count", type=int, default=256, help="images used (default 256)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches (default 40)")
    parser.add_argument("--trials", type=int, default=3, help="trials per setting (default 3)")
    parser.add_argument("--trial", nargs=2, metavar=("SETTING", "WORKLOAD"), help=argparse.SUPPRESS)
    return parser.parse_args()


def trial(args: argparse.Namespace, setting: str, workload: str) -> float:
    """CPU milliseconds per image of one process's batches (after five untimed ones)."""
    import torch
    from PIL import Image

    from pedattr.inference.predictor import ImageInput, Predictor
    from pedattr.utils.allocator import keep_freed_memory

    torch.set_num_threads(1)
    if setting == "kept":
        keep_freed_memory()
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu", batch_size=32)
    files = sorted(Path(args.images).glob("*.png"))[: args.count]
    data = [(f.name, f.read_bytes()) for f in files]
    draw = random.Random(0)
    seconds = images = 0.0
    for k in range(5 + args.batches):
        size = 32 if workload == "batch 32" else draw.randint(8, 24)
        batch = [ImageInput(Image.open(BytesIO(d)), name) for name, d in draw.sample(data, size)]
        start = time.process_time()
        list(predictor.predict_iter(batch))
        if k >= 5:
            seconds += time.process_time() - start
            images += size
    return 1000 * seconds / images


def run_trial(args: argparse.Namespace, setting: str, workload: str) -> float:
    command = [sys.executable, __file__, "--checkpoint", args.checkpoint, "--images", args.images]
    command += ["--count", str(args.count), "--batches", str(args.batches)]
    answer = subprocess.run(
        [*command, "--trial", setting, workload], capture_output=True, text=True, check=True
    )
    return float(answer.stdout)


def main() -> None:
    args = parse_arguments()
    if args.trial:
        print(trial(args, *args.trial))
        return
    print(f"command: {command_line()}")
    results = {}
    for workload in WORKLOADS:
        times: dict[str, list[float]] = {"default": [], "kept": []}
        for _ in range(args.trials):
            for setting in times:
                times[setting].append(run_trial(args, setting, workload))
        default, kept = (statistics.median(times[s]) for s in ("default", "kept"))
        results[workload] = {"trials_ms_per_image": times, "speedup": default / kept}
        print(
            f"{workload:>10}: CPU ms per image, default {default:.2f} "
            f"({', '.join(f'{t:.2f}' for t in times['default'])}), kept {kept:.2f} "
            f"({', '.join(f'{t:.2f}' for t in times['kept'])}): {default / kept:.2f}x"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
