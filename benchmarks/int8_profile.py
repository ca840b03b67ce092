"""Benchmark: where a float32 and an INT8 ONNX model spend their time, operator by operator.

onnxruntime's own profiler times every node of both files at one batch size; the script prints
the time per operator type and the speed-up of the convolutions, which is what the INT8 file
can reach at most if every operator but the convolutions cost nothing. Pass the files that
``pedattr export`` wrote (``--onnx`` and ``--onnx --int8``)::

    python benchmarks/int8_profile.py demo.onnx demo_int8.onnx --batches 1 32
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from common import command_line

CONVOLUTIONS = ("Conv", "QLinearConv", "ConvInteger", "FusedConv")


def profile(path: Path, batch: int, threads: int, calls: int) -> Counter:
    """Mean seconds per call of each operator type of ``path`` over ``calls`` runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]
    shape = [batch, *image.shape[1:]]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    feed = {image.name: pixels if "uint8" in image.type else pixels.astype(np.float32) / 255}
    for _ in range(calls + 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    warm_up_end = runs[0]  # the first call (memory planning, caches) is left out
    events = [event for event in events if event.get("ts", 0) > warm_up_end]
    seconds: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            seconds[event["args"]["op_name"]] += event["dur"] * 1e-6 / calls
    return seconds


def convolution_seconds(seconds: Counter) -> float:
    return sum(value for name, value in seconds.items() if name in CONVOLUTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float_model", type=Path, help="float32 .onnx from pedattr export")
    parser.add_argument("int8_model", type=Path, help="INT8 .onnx from pedattr export --int8")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--calls", type=int, default=20, help="profiled calls (default 20)")
    parser.add_argument("--top", type=int, default=8, help="operator types listed (default 8)")
    args = parser.parse_args()
    for batch in args.batches:
        float_seconds = profile(args.float_model, batch, args.threads, args.calls)
        int8_seconds = profile(args.int8_model, batch, args.threads, args.calls)
        print(f"\nbatch {batch}, {args.threads} thread(s): ms per call by operator type")
        print(f"{'operator':24s} {'float32':>9s} {'INT8':>9s}")
        names = (float_seconds + int8_seconds).most_common(args.top)
        for name, _ in names:
            print(f"{name:24s} {float_seconds[name] * 1e3:9.3f} {int8_seconds[name] * 1e3:9.3f}")
        float_total, int8_total = sum(float_seconds.values()), sum(int8_seconds.values())
        float_conv, int8_conv = (
            convolution_seconds(float_seconds),
            convolution_seconds(int8_seconds),
        )
        print(f"{'all operators':24s} {float_total * 1e3:9.3f} {int8_total * 1e3:9.3f}")
        print(f"{'convolutions':24s} {float_conv * 1e3:9.3f} {int8_conv * 1e3:9.3f}")
        # (C + R) / (c + R) <= C / c when C > c: while the other operators (R) cost the same in
        # both files, the whole model gains at most what its convolutions gain.
        print(
            f"speed-up by the profile {float_total / int8_total:.2f}x; convolutions alone "
            f"{float_conv / int8_conv:.2f}x, the most the whole model can gain while the other "
            "operators cost the same in both files"
        )
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
