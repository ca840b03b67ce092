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

INT8 rows (``--int8-checkpoint CKPT --calibration DATA``, engine "int8"): a trained checkpoint
exported to float32 ONNX and to INT8 (``pedattr export --int8``, calibrated on DATA's validation
split), both run by onnxruntime with the same session options as the onnxruntime rows, timed
round-robin at every batch size: images per second of each and their ratio, by wall-clock time
and by the process's CPU time (which a busy, shared machine disturbs less), then the test mA of
both files on DATA, measured as ``pedattr eval`` measures it. Goal: INT8 at 1.8x float32's
throughput or better at every batch size, with test mA within 1.0 point of float32's.

Usage:
    python benchmarks/inference.py                 # all engines, batch 1 and 32, table
    python benchmarks/inference.py --quick         # batch 1 and 8, fewer repeats, no compile
    python benchmarks/inference.py --json          # one JSON object
    python benchmarks/inference.py --quick --box-centre evidence  # ALM with evidence boxes
    python benchmarks/inference.py --engines int8 --threads 1 \
        --int8-checkpoint runs/demo/run/best.safetensors --calibration runs/demo/data
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

from pedattr.inference.export import (  # noqa: E402
    ExportModule,
    export_onnx,
    max_abs_difference,
    read_onnx_metadata,
)
from pedattr.models.model import build_model  # noqa: E402

#: The engines timed by default; int8 joins them when --int8-checkpoint names a trained model.
DEFAULT_ENGINES = ("eager", "compile", "onnxruntime")
ENGINES = (*DEFAULT_ENGINES, "int8")
MODELS = ("baseline", "alm")
GOAL_RATIO = 0.85
COMPILE_TOLERANCE = 1e-3
#: INT8 rows: throughput over float32 onnxruntime, and the largest loss of test mA (points).
INT8_GOAL_RATIO = 1.8
INT8_GOAL_MA_POINTS = 1.0


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
        help="engines to time (default eager, compile and onnxruntime, and int8 with "
        "--int8-checkpoint; --quick leaves out compile)",
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
    parser.add_argument(
        "--int8-checkpoint",
        metavar="CKPT",
        help="trained checkpoint of the INT8 rows (adds the int8 engine)",
    )
    parser.add_argument(
        "--calibration",
        metavar="DATA_DIR",
        help="prepared dataset of the INT8 rows: its validation split calibrates, its test "
        "split measures mA",
    )
    parser.add_argument(
        "--calibration-images", type=int, default=256, help="INT8 calibration images (256)"
    )
    parser.add_argument(
        "--int8-first-conv",
        action="store_true",
        help="INT8 rows: quantise the first convolution too (pedattr export --int8-first-conv)",
    )
    parser.add_argument(
        "--no-accuracy", action="store_true", help="INT8 rows: skip the test mA of both files"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    defaults = (
        dict(batches=[1, 8], repeats=5, warmup=1, engines=["eager", "onnxruntime"])
        if args.quick
        else dict(batches=[1, 32], repeats=20, warmup=3, engines=list(DEFAULT_ENGINES))
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    if args.int8_checkpoint and "int8" not in args.engines:
        args.engines.append("int8")
    if "int8" in args.engines and not (args.int8_checkpoint and args.calibration):
        parser.error("the int8 engine needs --int8-checkpoint CKPT and --calibration DATA_DIR")
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

    sessions = {}
    for name, module in modules.items():
        path = export_onnx(module.model, folder / f"{name}.onnx", opset=opset)
        sessions[name] = _session(path, threads)
    return sessions


def onnxruntime_runners(sessions: dict[str, object], images: torch.Tensor) -> dict[str, Runner]:
    feed = {"images": images.numpy()}
    return {
        name: (lambda session=session: session.run(None, feed))
        for name, session in sessions.items()
    }


def _session(path: Path, threads: int) -> object:
    """A CPU session with the onnxruntime rows' options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # No busy-waiting between calls: two sessions timed in turn would otherwise have the
    # idle one's spinning threads take cores from the one being timed.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def int8_files(args: argparse.Namespace, folder: Path) -> tuple[dict[str, Path], dict]:
    """The checkpoint exported to float32 and to INT8 ONNX in ``folder``, and what it took."""
    from pedattr.inference.quantize import export_int8

    start = time.perf_counter()
    paths = {"float32": export_onnx(args.int8_checkpoint, folder / "float32.onnx")}
    result = export_int8(
        args.int8_checkpoint,
        folder / "int8.onnx",
        calibration=args.calibration,
        calibration_images=args.calibration_images,
        quantize_first_conv=args.int8_first_conv,
    )
    paths["int8"] = result.path
    info = {
        "input_size": read_onnx_metadata(paths["float32"])["input_size"],
        "export_s": time.perf_counter() - start,
        "calibration_images": result.calibration_images,
        "float_nodes": {group: len(nodes) for group, nodes in result.float_nodes.items()},
        "parity": result.parity,
    }
    return paths, info


def int8_accuracy(paths: dict[str, Path], data: str) -> dict[str, float]:
    """Test mA (percent) of each file, as ``pedattr eval`` measures it."""
    from pedattr.evaluation.evaluate import checkpoint_report

    return {
        name: 100 * checkpoint_report(path, data, split="test").metrics.mA
        for name, path in paths.items()
    }


def time_cpu_and_wall(fn: Runner) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call (CPU time counts every thread)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_int8(runners: dict[str, Runner], args: argparse.Namespace, batch: int) -> dict:
    """Warm up, then time float32 and INT8 in turn; images per second by wall and CPU time."""
    for _ in range(args.warmup):
        for run in runners.values():
            run()
    walls: dict[str, list[float]] = {name: [] for name in runners}
    cpus: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            wall, cpu = time_cpu_and_wall(run)
            walls[name].append(wall)
            cpus[name].append(cpu)
    models = {
        name: {
            "median_s": statistics.median(walls[name]),
            "images_per_s": batch / statistics.median(walls[name]),
            "cpu_images_per_s": batch / statistics.median(cpus[name]),
            "times_s": walls[name],
        }
        for name in runners
    }
    return {
        "models": models,
        "int8_vs_float32": models["int8"]["images_per_s"] / models["float32"]["images_per_s"],
        "int8_vs_float32_cpu": (
            models["int8"]["cpu_images_per_s"] / models["float32"]["cpu_images_per_s"]
        ),
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
    # The INT8 rows run their own checkpoint: no random models when they are all that runs.
    modules = build_models(args) if set(args.engines) - {"int8"} else {}
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
            if engine == "int8":
                paths, notes["int8"] = int8_files(args, Path(folder))
                threads = torch.get_num_threads()
                int8_sessions = {name: _session(path, threads) for name, path in paths.items()}
                if not args.no_accuracy:
                    notes["int8"]["test_mA"] = int8_accuracy(paths, args.calibration)
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
                    elif engine == "int8":  # at the checkpoint's input size
                        height, width = notes["int8"]["input_size"]
                        pixels = torch.rand(batch, 3, height, width, generator=generator)
                        runners = onnxruntime_runners(int8_sessions, pixels)
                        entry.update(measure_int8(runners, args, batch))
                        results.append(entry)
                        continue
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
        if "models" not in entry or entry["engine"] == "int8":
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
        "int8_goal": {"ratio": INT8_GOAL_RATIO, "ma_points": INT8_GOAL_MA_POINTS},
        "int8_checkpoint": args.int8_checkpoint,
        "calibration": args.calibration,
        "load_average_1min_before_after": list(load),
        "notes": notes,
        "results": results,
    }


def format_report(summary: dict) -> str:
    float_rows = any(entry["engine"] != "int8" for entry in summary["results"])
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
    if not float_rows:  # INT8 rows only: their own heading
        lines = [
            f"Inference, CPU, torch {summary['torch']}, onnxruntime {summary['onnxruntime']}, "
            f"{summary['threads']} threads; median of {summary['repeats']} interleaved timed "
            f"calls after {summary['warmup']} warm-up calls"
        ]
    for entry in summary["results"]:
        head = f"{entry['engine']:<13}{entry['batch']:>6}"
        if entry["engine"] == "int8":
            continue  # a table of its own, below
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
    lines.extend(format_int8(summary))
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


def format_int8(summary: dict) -> list[str]:
    """The INT8 rows: float32 and INT8 onnxruntime per batch, their ratio, mA and the goal."""
    rows = [e for e in summary["results"] if e["engine"] == "int8"]
    if not rows:
        return []
    notes = summary["notes"]["int8"]
    kept = ", ".join(f"{group} {count} nodes" for group, count in notes["float_nodes"].items())
    lines = [
        f"INT8 rows: {summary['int8_checkpoint']}, calibrated on "
        f"{notes['calibration_images']} validation images of {summary['calibration']} "
        f"(kept float: {kept})",
        f"{'engine':<13}{'batch':>6}{'float32 img/s':>15}{'INT8 img/s':>12}{'INT8/fp32':>11}"
        f"{'by CPU time':>13}",
    ]
    for entry in rows:
        head = f"{'int8':<13}{entry['batch']:>6}"
        if "error" in entry:
            lines.append(f"{head}  failed: {entry['error']}")
            continue
        models = entry["models"]
        lines.append(
            f"{head}{models['float32']['images_per_s']:>15.1f}{models['int8']['images_per_s']:>12.1f}"
            f"{entry['int8_vs_float32']:>10.2f}x{entry['int8_vs_float32_cpu']:>12.2f}x"
        )
    goal = summary["int8_goal"]
    measured = [e for e in rows if "int8_vs_float32" in e]
    speed_met = bool(measured) and all(e["int8_vs_float32"] >= goal["ratio"] for e in measured)
    verdict = (
        f"throughput goal >= {goal['ratio']}x at every batch: {'met' if speed_met else 'NOT met'}"
    )
    accuracy = notes.get("test_mA")
    if accuracy is not None:
        loss = accuracy["float32"] - accuracy["int8"]
        lines.append(
            f"test mA: float32 {accuracy['float32']:.2f}, INT8 {accuracy['int8']:.2f} "
            f"({-loss:+.2f} points; goal within {goal['ma_points']:.1f}: "
            f"{'met' if loss <= goal['ma_points'] else 'NOT met'})"
        )
    lines.append(verdict)
    return lines


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
