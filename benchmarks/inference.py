"""Benchmark: inference throughput of the baseline and ALM on the CPU, per engine and batch size.

Models: the baseline and ALM on the same backbone (BN-Inception by default) with ``--num-attrs``
attributes (51, RAP, by default) at ``--height`` x ``--width`` (256 x 128), random weights, in
float32. Both run the same export wrapper (:class:`pedattr.inference.export.ExportModule`), so
every engine computes the same outputs: probabilities, and for ALM the boxes of every attribute
at every level and the per-branch probabilities.

Engines:

* eager: PyTorch in ``torch.inference_mode()``;
* compile: ``torch.compile`` (inductor, static shapes, one compilation per batch size; the
  compilation is part of the warm-up, and its seconds are reported); its outputs are checked
  against eager;
* onnxruntime: both models exported with ``pedattr.inference.export.export_onnx`` (which checks
  parity with PyTorch) to a temporary folder, run on the CPU execution provider with the same
  number of threads as torch.

Time: for each engine and batch size, the two models are timed round-robin (baseline, ALM,
baseline, ...) so that a busy phase of the machine falls on both; each gets ``--warmup``
untimed calls, then ``--repeats`` timed calls, and the median gives images per second.

Goal: ALM at 0.85x the baseline's throughput or better in every engine (its FLOPs, counted by
``pedattr summary``, are 1.07x the baseline's).

Usage:
    python benchmarks/inference.py                 # all engines, batch 1 and 32, table
    python benchmarks/inference.py --quick         # batch 1 and 8, fewer repeats, no compile
    python benchmarks/inference.py --json          # one JSON object
    python benchmarks/inference.py --quick --box-centre evidence  # ALM with evidence boxes
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    add_model_arguments,
    command_line,
    interleaved_seconds,
    load_average,
)

from pedattr.inference.export import ExportModule, export_onnx, max_abs_difference  # noqa: E402
from pedattr.models.model import build_model  # noqa: E402

ENGINES = ("eager", "compile", "onnxruntime")
MODELS = ("baseline", "alm")
GOAL_RATIO = 0.85
COMPILE_TOLERANCE = 1e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument(
        "--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 32)"
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=None,
        help="engines to time (default all; --quick leaves out compile)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (torch, ORT)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and images")
    parser.add_argument(
        "--box-centre",
        choices=("regressed", "evidence"),
        default="regressed",
        help="ALM's boxes: eq. 3's (default) or centred on the activation maps (not in the paper)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="batch 1 and 8, 5 timed calls after 1 warm-up, eager and onnxruntime only",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    defaults = (
        dict(batches=[1, 8], repeats=5, warmup=1, engines=["eager", "onnxruntime"])
        if args.quick
        else dict(batches=[1, 32], repeats=20, warmup=3, engines=list(ENGINES))
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    return args


def build_models(args: argparse.Namespace) -> dict[str, ExportModule]:
    """Baseline and ALM with the same backbone initialisation, in eval mode."""
    modules = {}
    for arch in MODELS:
        torch.manual_seed(args.seed)
        options = {"box_centre": args.box_centre} if arch == "alm" else {}
        model = build_model(
            arch,
            backbone=args.backbone,
            num_attrs=args.num_attrs,
            input_size=(args.height, args.width),
            **options,
        )
        modules[arch] = ExportModule(model.eval()).eval()
    return modules


Runner = Callable[[], object]


def eager_runners(modules: dict[str, ExportModule], images: torch.Tensor) -> dict[str, Runner]:
    def runner(module: ExportModule) -> Runner:
        def run() -> object:
            with torch.inference_mode():
                return module(images)

        return run

    return {name: runner(module) for name, module in modules.items()}


def compiled_runners(
    compiled: dict[str, Callable], images: torch.Tensor, modules: dict[str, ExportModule]
) -> tuple[dict[str, Runner], dict]:
    """Compile (first call) and check against eager; returns runners and what was measured."""
    info: dict = {"compile_s": {}, "max_abs_diff": {}}
    runners = {}
    for name, function in compiled.items():
        start = time.perf_counter()
        with torch.inference_mode():
            outputs = function(images)
        info["compile_s"][name] = time.perf_counter() - start
        with torch.inference_mode():
            expected = modules[name](images)
        difference = max_abs_difference(list(outputs), expected)
        info["max_abs_diff"][name] = difference
        if not difference <= COMPILE_TOLERANCE:
            raise RuntimeError(f"compiled {name} differs from eager by {difference:.3g}")

        def run(function: Callable = function) -> object:
            with torch.inference_mode():
                return function(images)

        runners[name] = run
    return runners, info


def onnxruntime_sessions(
    modules: dict[str, ExportModule], folder: Path, opset: int, threads: int
) -> dict[str, object]:
    """One CPU session per model, from files exported (with the parity check) into ``folder``."""
    import onnxruntime as ort

    sessions = {}
    for name, module in modules.items():
        path = export_onnx(module.model, folder / f"{name}.onnx", opset=opset)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between calls: two sessions timed in turn would otherwise have the
        # idle one's spinning threads take cores from the one being timed.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    return sessions


def onnxruntime_runners(sessions: dict[str, object], images: torch.Tensor) -> dict[str, Runner]:
    feed = {"images": images.numpy()}
    return {
        name: (lambda session=session: session.run(None, feed))
        for name, session in sessions.items()
    }


def measure(runners: dict[str, Runner], args: argparse.Namespace, batch: int) -> dict[str, dict]:
    """Warm up, time round-robin, and turn the median into images per second."""
    for _ in range(args.warmup):
        for run in runners.values():
            run()
    times = interleaved_seconds(runners, {name: args.repeats for name in runners})
    return {
        name: {
            "median_s": statistics.median(values),
            "images_per_s": batch / statistics.median(values),
            "times_s": values,
        }
        for name, values in times.items()
    }


def run(args: argparse.Namespace) -> dict:
    load_before = load_average()
    modules = build_models(args)
    generator = torch.Generator().manual_seed(args.seed)
    results: list[dict] = []
    notes: dict[str, dict] = {}
    compiled = None
    sessions = None
    with tempfile.TemporaryDirectory() as folder:
        for engine in args.engines:
            if engine == "compile":
                compiled = {
                    name: torch.compile(module, dynamic=False) for name, module in modules.items()
                }
            if engine == "onnxruntime":
                start = time.perf_counter()
                sessions = onnxruntime_sessions(
                    modules, Path(folder), args.opset, torch.get_num_threads()
                )
                notes["onnxruntime"] = {"export_and_check_s": time.perf_counter() - start}
            for batch in args.batches:
                images = torch.rand(batch, 3, args.height, args.width, generator=generator)
                entry = {"engine": engine, "batch": batch}
                try:
                    if engine == "eager":
                        runners = eager_runners(modules, images)
                    elif engine == "compile":
                        runners, info = compiled_runners(compiled, images, modules)
                        entry.update(info)
                    else:
                        runners = onnxruntime_runners(sessions, images)
                    entry["models"] = measure(runners, args, batch)
                except Exception as err:  # report the failure, keep measuring the others
                    entry["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
                results.append(entry)
    return summarize(results, notes, args, (load_before, load_average()))


def summarize(
    results: list[dict], notes: dict, args: argparse.Namespace, load: tuple[float | None, ...]
) -> dict:
    eager = {r["batch"]: r for r in results if r["engine"] == "eager" and "models" in r}
    for entry in results:
        if "models" not in entry:
            continue
        models = entry["models"]
        entry["alm_vs_baseline"] = (
            models["alm"]["images_per_s"] / models["baseline"]["images_per_s"]
        )
        entry["goal_met"] = entry["alm_vs_baseline"] >= GOAL_RATIO
        reference = eager.get(entry["batch"])
        if reference is not None and entry["engine"] != "eager":
            entry["vs_eager"] = {
                name: models[name]["images_per_s"] / reference["models"][name]["images_per_s"]
                for name in MODELS
            }
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "command": command_line(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "threads": torch.get_num_threads(),
        "backbone": args.backbone,
        "num_attrs": args.num_attrs,
        "box_centre": args.box_centre,
        "height": args.height,
        "width": args.width,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "dtype": "float32",
        "device": "cpu",
        "goal_ratio": GOAL_RATIO,
        "load_average_1min_before_after": list(load),
        "notes": notes,
        "results": results,
    }


def format_report(summary: dict) -> str:
    lines = [
        f"Inference, {summary['backbone']}, M={summary['num_attrs']}, "
        f"ALM boxes {summary['box_centre']}, "
        f"{summary['height']}x{summary['width']}, {summary['dtype']}, CPU, torch "
        f"{summary['torch']}, onnxruntime {summary['onnxruntime']}, {summary['threads']} "
        f"threads; median of {summary['repeats']} interleaved timed calls after "
        f"{summary['warmup']} warm-up calls",
        f"{'engine':<13}{'batch':>6}{'baseline img/s':>16}{'ALM img/s':>12}{'ALM/base':>10}"
        f"{'vs eager (base, ALM)':>23}",
    ]
    for entry in summary["results"]:
        head = f"{entry['engine']:<13}{entry['batch']:>6}"
        if "error" in entry:
            lines.append(f"{head}  failed: {entry['error']}")
            continue
        models = entry["models"]
        versus = entry.get("vs_eager")
        versus_text = f"{versus['baseline']:.2f}x, {versus['alm']:.2f}x" if versus else "-"
        lines.append(
            f"{head}{models['baseline']['images_per_s']:>16.1f}{models['alm']['images_per_s']:>12.1f}"
            f"{entry['alm_vs_baseline']:>9.2f}x{versus_text:>23}"
        )
    for entry in summary["results"]:
        if "compile_s" in entry:
            seconds = ", ".join(f"{k} {v:.0f} s" for k, v in entry["compile_s"].items())
            worst = max(entry["max_abs_diff"].values())
            lines.append(
                f"compile at batch {entry['batch']}: first call {seconds}; max abs difference "
                f"to eager {worst:.1e}"
            )
    ratios = [e for e in summary["results"] if "alm_vs_baseline" in e]
    if ratios:
        worst = min(ratios, key=lambda e: e["alm_vs_baseline"])
        verdict = "met" if all(e["goal_met"] for e in ratios) else "NOT met"
        lines.append(
            f"ALM vs baseline throughput: lowest {worst['alm_vs_baseline']:.2f}x "
            f"({worst['engine']}, batch {worst['batch']}), goal >= {summary['goal_ratio']}x in "
            f"every engine: {verdict}"
        )
    load = ", ".join(
        "n/a" if v is None else f"{v:.2f}" for v in summary["load_average_1min_before_after"]
    )
    lines.append(f"1-minute load average before / after: {load}")
    lines.append(f"command: {summary['command']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    summary = run(args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
