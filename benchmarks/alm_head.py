"""Benchmark: the authors' per-attribute ALM loop against the batched AttributeLocalization.

For each pyramid level at 256x128 input, both modules get the same weights (copied with
``copy_reference_into_batched``) and the same features; one forward + backward (w.r.t. the input
features and all parameters) is timed on CPU in float32, as the median of ``--repeats`` runs of
the reference and ``--batched-repeats`` runs of the cheap batched module, after one warm-up run.
The warm-up doubles as a correctness check: logits, boxes and input gradients must agree, so the
benchmark never times something wrong.

Memory: "saved MB" is the size of the distinct tensor storages autograd keeps for backward during
the forward (activations only: parameters and the input are left out), measured on the warm-up.

Usage:
    python benchmarks/alm_head.py                 # B = 32, M = 51, table
    python benchmarks/alm_head.py --json          # one JSON object
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

# The reference lives with the tests; make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SavedTensors, command_line, median_seconds, module_state  # noqa: E402

from pedattr.models.alm import AttributeLocalization  # noqa: E402
from tests.reference_alm import ReferenceALMLevel, copy_reference_into_batched  # noqa: E402

# (name, C, H, W) of the three pyramid levels for a 256x128 image (strides 8, 16, 32).
LEVELS = (("3b", 768, 32, 16), ("4d", 512, 16, 8), ("5b", 256, 8, 4))
TOLERANCE = 1e-3


@dataclass
class LevelResult:
    level: str
    channels: int
    height: int
    width: int
    reference_s: float
    batched_s: float
    speedup: float
    max_logit_diff: float
    reference_saved_mb: float
    batched_saved_mb: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="batch size B (default 32)")
    parser.add_argument("--num-attrs", type=int, default=51, help="attributes M (default 51)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of the reference per level (default 3)"
    )
    parser.add_argument(
        "--batched-repeats",
        type=int,
        default=20,
        help="timed runs of the batched module per level; it is cheap, and more runs make its "
        "median robust to a busy machine (default 20)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and features")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def make_pair(channels: int, num_attrs: int) -> tuple[nn.Module, nn.Module]:
    """A reference level and a batched level holding the same weights."""
    reference = ReferenceALMLevel(num_attrs, channels)
    batched = AttributeLocalization(channels, num_attrs)
    copy_reference_into_batched(reference, batched)
    return reference, batched


def forward_backward(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """One training step's worth of ALM work: forward, then backward to x and the weights."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    logits, boxes = module(x)
    logits.sum().backward()
    return logits.detach(), boxes.detach()


def saved_activation_bytes(module: nn.Module, x: Tensor) -> tuple[int, tuple[Tensor, ...]]:
    """Run :func:`forward_backward`, measuring the storages autograd saves in the forward.

    Returns:
        Bytes of distinct saved storages other than parameters and ``x``, and the step's outputs
        plus the input gradient.
    """
    with SavedTensors(exclude=[*module_state(module), x]) as saved:
        logits, boxes = forward_backward(module, x)
    return saved.nbytes, (logits, boxes, x.grad.clone())


def check_and_warm_up(
    reference: nn.Module, batched: nn.Module, x: Tensor
) -> tuple[float, int, int]:
    """Warm both modules up with one step and check that they agree.

    Returns:
        The largest logit difference and each module's saved-activation bytes.

    Raises:
        AssertionError: logits, boxes or input gradients differ by more than the tolerance.
    """
    ref_bytes, ref_out = saved_activation_bytes(reference, x)
    bat_bytes, bat_out = saved_activation_bytes(batched, x)
    for name, ref, bat in zip(("logits", "boxes", "input gradient"), ref_out, bat_out, strict=True):
        torch.testing.assert_close(bat, ref, atol=TOLERANCE, rtol=TOLERANCE, msg=name)
    max_diff = (ref_out[0] - bat_out[0]).abs().max().item()
    return max_diff, ref_bytes, bat_bytes


def bench_level(name: str, c: int, h: int, w: int, args: argparse.Namespace) -> LevelResult:
    reference, batched = make_pair(c, args.num_attrs)
    x = torch.randn(args.batch, c, h, w).requires_grad_(True)
    max_diff, ref_bytes, bat_bytes = check_and_warm_up(reference, batched, x)
    ref_s = median_seconds(lambda: forward_backward(reference, x), args.repeats)
    bat_s = median_seconds(lambda: forward_backward(batched, x), args.batched_repeats)
    return LevelResult(
        name, c, h, w, ref_s, bat_s, ref_s / bat_s, max_diff, ref_bytes / 2**20, bat_bytes / 2**20
    )


def report(results: list[LevelResult], args: argparse.Namespace) -> dict:
    reference_total = sum(r.reference_s for r in results)
    batched_total = sum(r.batched_s for r in results)
    return {
        "command": command_line(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "num_attrs": args.num_attrs,
        "reference_repeats": args.repeats,
        "batched_repeats": args.batched_repeats,
        "dtype": "float32",
        "device": "cpu",
        "levels": [asdict(r) for r in results],
        "reference_total_s": reference_total,
        "batched_total_s": batched_total,
        "speedup": reference_total / batched_total,
    }


def format_report(summary: dict) -> str:
    lines = [
        f"ALM head, forward + backward, B={summary['batch']}, M={summary['num_attrs']}, float32, "
        f"CPU, torch {summary['torch']}, {summary['threads']} threads, "
        f"median of {summary['reference_repeats']} (reference) / {summary['batched_repeats']} "
        "(batched) runs after 1 warm-up/check",
        f"{'level':<6}{'C':>5}{'HxW':>8}{'reference':>13}{'batched':>12}{'speedup':>10}"
        f"{'saved MB ref/batched':>24}",
    ]
    for r in summary["levels"]:
        saved = f"{r['reference_saved_mb']:.0f} / {r['batched_saved_mb']:.1f}"
        lines.append(
            f"{r['level']:<6}{r['channels']:>5}{r['height']:>5}x{r['width']:<3}"
            f"{r['reference_s']:>11.3f} s{r['batched_s'] * 1e3:>9.1f} ms{r['speedup']:>9.1f}x"
            f"{saved:>24}"
        )
    lines.append(
        f"{'total':<19}{summary['reference_total_s']:>11.3f} s"
        f"{summary['batched_total_s'] * 1e3:>9.1f} ms{summary['speedup']:>9.1f}x"
    )
    lines.append(f"command: {summary['command']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    results = [bench_level(*level, args) for level in LEVELS]
    summary = report(results, args)
    print(json.dumps(summary, indent=2) if args.json else format_report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
