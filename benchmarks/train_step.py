"""Benchmark: one full training step of the baseline, pedattr's ALM and the authors' ALM design.

A step is what ``pedattr.engine.trainer.train_step`` does per batch: forward, deep-supervision
weighted BCE (``WeightedBCELoss``, authors' weighting) summed over ``branch_logits``, backward and
an Adam step (lr 1e-4, weight decay 5e-4), on a random batch of B images (default 32 x 3 x 256 x
128) with M = 51 attributes, BN-Inception backbone, float32, training mode, on the CPU (or
``--device cuda``: each timed step then ends with a CUDA synchronisation). Models:

* baseline: BN-Inception, global average pooling, Linear(C, M);
* alm: pedattr's ALM network (feature pyramid, batched ``AttributeLocalization`` per level);
* alm-evidence (``--with-evidence``): the same network with ``box_centre="evidence"``, boxes
  centred on each attribute's activation map (not in the paper);
* authors (``--with-authors``): the same ALM network with each level's ALMs replaced by
  ``tests.reference_alm.ReferenceALMLevel``, the authors' per-attribute loop on the
  concatenated (materialised) pyramid levels, as their code builds them. It shares the ALM
  model's backbone, pyramid and global-branch weights, and pedattr's ALM heads get a copy of its
  per-attribute weights, so both start from the same weights and their first steps must give the
  same loss (checked).

Time: the median of ``--repeats`` timed steps per model after the warm-up steps (2 per model, 1
for the slow authors' design, which gets ``--authors-repeats`` timed steps). Timed steps are
interleaved round-robin (baseline, alm[, authors], baseline, alm, ...), so that a busy phase of
the machine does not fall on one model only.

Memory: "saved MB" is the size of the distinct tensor storages autograd keeps for backward during
the first warm-up step's forward and loss (activations only: parameters, buffers, the images and
the labels are left out). ``--top-saved N`` lists each model's N largest saved storages with the
op (grad_fn) that saved them, and the saving ops with the largest totals.

Usage:
    python benchmarks/train_step.py                             # baseline and ALM, table
    python benchmarks/train_step.py --with-authors --repeats 3  # also the authors' design
    python benchmarks/train_step.py --with-evidence             # also evidence-centred boxes
    python benchmarks/train_step.py --json                      # one JSON object
    python benchmarks/train_step.py --device cuda --with-authors --with-evidence  # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

# The reference lives with the tests; make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    MB,
    SavedTensors,
    add_model_arguments,
    command_line,
    interleaved_seconds,
    load_average,
    module_state,
    saved_tensor_breakdown,
    summarize_by_node,
)

from pedattr.engine.loss import WeightedBCELoss, deep_supervision_loss  # noqa: E402
from pedattr.engine.trainer import train_step  # noqa: E402
from pedattr.models.model import build_model  # noqa: E402
from pedattr.models.pyramid import dense_level  # noqa: E402
from tests.reference_alm import ReferenceALMLevel, copy_reference_into_batched  # noqa: E402

LEARNING_RATE = 1e-4
WEIGHT_DECAY = 5e-4
WARMUP_STEPS = 2
AUTHORS_WARMUP_STEPS = 1
GOAL_TIME_RATIO = 1.15
GOAL_MEMORY_RATIO = 1.2
AUTHORS_REPORTED = {"time": 6.1, "memory": 4.5}  # the authors' design vs the baseline, reported
LOSS_TOLERANCE = 1e-4


@dataclass
class ModelResult:
    name: str
    parameters: int
    step_s: float
    min_step_s: float
    saved_mb: float
    first_loss: float
    warmup_steps: int
    timed_steps: int
    step_times_s: list[float]


@dataclass
class Candidate:
    """A model with its own optimizer, and what its warm-up measured."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    warmup_steps: int
    timed_steps: int
    saved_bytes: int = 0
    first_loss: float = float("nan")
    breakdown: list | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="batch size B (default 32)")
    add_model_arguments(parser, backbone=False)
    parser.add_argument(
        "--repeats",
        type=int,
        default=15,
        help="timed steps per model after the warm-up, interleaved across models (default 15)",
    )
    parser.add_argument(
        "--authors-repeats",
        type=int,
        default=3,
        help="timed steps of the authors' design, at most --repeats; each takes 10+ s (default 3)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--device", default="cpu", help="where the models train: cpu (default), cuda, cuda:N"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    parser.add_argument(
        "--with-authors",
        action="store_true",
        help="also time the authors' per-attribute ALM loop (slow: minutes)",
    )
    parser.add_argument(
        "--with-evidence",
        action="store_true",
        help="also time ALM with box_centre=evidence (boxes centred on the activation maps)",
    )
    parser.add_argument(
        "--top-saved",
        type=int,
        default=0,
        metavar="N",
        help="list each model's N largest saved-for-backward storages and saving ops",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.authors_repeats < 1:
        parser.error("--repeats and --authors-repeats must be at least 1")
    return args


def make_batch(args: argparse.Namespace) -> tuple[Tensor, Tensor, Tensor]:
    """Images in [0, 1], 0/1 labels and the attributes' positive ratios (0.05 to 0.5).

    Drawn from their own generator, so the batch does not depend on which models were built.
    """
    generator = torch.Generator().manual_seed(args.seed)
    ratio = 0.05 + 0.45 * torch.rand(args.num_attrs, generator=generator)
    labels = torch.bernoulli(ratio.expand(args.batch, -1), generator=generator).long()
    images = torch.rand(args.batch, 3, args.height, args.width, generator=generator)
    return images, labels, ratio


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)


class DenseLevelInput(nn.Module):
    """Feeds the authors' ALM the concatenated level tensor, as their pyramid built it."""

    def __init__(self, level_module: nn.Module) -> None:
        super().__init__()
        self.level_module = level_module

    def forward(self, level) -> tuple[Tensor, Tensor]:
        return self.level_module(dense_level(level))


def build_candidates(args: argparse.Namespace) -> list[Candidate]:
    def candidate(name: str, model: nn.Module, warmup: int, timed: int) -> Candidate:
        model.to(args.device).train()
        return Candidate(name, model, make_optimizer(model), warmup, timed)

    torch.manual_seed(args.seed)
    baseline = build_model("baseline", num_attrs=args.num_attrs)
    torch.manual_seed(args.seed)  # same backbone initialisation as the baseline
    alm = build_model("alm", num_attrs=args.num_attrs)
    candidates = [
        candidate("baseline", baseline, WARMUP_STEPS, args.repeats),
        candidate("alm", alm, WARMUP_STEPS, args.repeats),
    ]
    if args.with_authors:
        authors = copy.deepcopy(alm)
        authors.alms = nn.ModuleList(
            DenseLevelInput(ReferenceALMLevel(args.num_attrs, c)) for c in alm.pyramid.out_channels
        )
        # Give pedattr's ALM the authors' ALM weights: both models then compute the same thing.
        for reference, batched in zip(authors.alms, alm.alms, strict=True):
            copy_reference_into_batched(reference.level_module, batched)
        timed = min(args.authors_repeats, args.repeats)
        candidates.append(candidate("authors", authors, AUTHORS_WARMUP_STEPS, timed))
    if args.with_evidence:  # built last: the models above do not depend on this option
        torch.manual_seed(args.seed)
        evidence = build_model("alm", num_attrs=args.num_attrs, box_centre="evidence")
        candidates.append(candidate("alm-evidence", evidence, WARMUP_STEPS, args.repeats))
    return candidates


def measured_step(
    candidate: Candidate,
    criterion: nn.Module,
    images: Tensor,
    labels: Tensor,
    top_saved: int,
) -> None:
    """A warm-up step that records the saved-for-backward storages of its forward and loss."""
    model, optimizer = candidate.model, candidate.optimizer
    exclude = [*module_state(model), *module_state(criterion), images, labels]
    with SavedTensors(exclude=exclude) as saved:
        output = model(images)
        loss = deep_supervision_loss(output.branch_logits, labels, criterion)
    if top_saved:
        candidate.breakdown = saved_tensor_breakdown(loss, exclude)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    candidate.saved_bytes = saved.nbytes
    candidate.first_loss = loss.item()


def run(args: argparse.Namespace) -> tuple[dict, list[Candidate]]:
    load_before = load_average()
    candidates = build_candidates(args)
    images, labels, ratio = (t.to(args.device) for t in make_batch(args))
    criterion = WeightedBCELoss(ratio)
    for candidate in candidates:
        measured_step(candidate, criterion, images, labels, args.top_saved)
        for _ in range(candidate.warmup_steps - 1):
            train_step(candidate.model, images, labels, candidate.optimizer, criterion)
    by_name = {c.name: c for c in candidates}
    if "authors" in by_name:  # same weights, same batch: the first losses must agree
        torch.testing.assert_close(
            torch.tensor(by_name["authors"].first_loss),
            torch.tensor(by_name["alm"].first_loss),
            atol=LOSS_TOLERANCE,
            rtol=LOSS_TOLERANCE,
            msg="the authors' design and pedattr's ALM disagree on the first step's loss",
        )

    def stepper(c: Candidate):
        def step() -> None:
            train_step(c.model, images, labels, c.optimizer, criterion)
            if images.is_cuda:  # CUDA runs asynchronously: time the work, not its launch
                torch.cuda.synchronize(images.device)

        return step

    times = interleaved_seconds(
        {c.name: stepper(c) for c in candidates}, {c.name: c.timed_steps for c in candidates}
    )
    results = [
        ModelResult(
            c.name,
            sum(p.numel() for p in c.model.parameters()),
            statistics.median(times[c.name]),
            min(times[c.name]),
            c.saved_bytes / MB,
            c.first_loss,
            c.warmup_steps,
            c.timed_steps,
            times[c.name],
        )
        for c in candidates
    ]
    return report(results, args, (load_before, load_average())), candidates


def report(
    results: list[ModelResult], args: argparse.Namespace, load: tuple[float | None, ...]
) -> dict:
    by_name = {r.name: r for r in results}
    base = by_name["baseline"]
    summary = {
        "command": command_line(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "num_attrs": args.num_attrs,
        "height": args.height,
        "width": args.width,
        "backbone": "bninception",
        "dtype": "float32",
        "device": str(args.device),
        "optimizer": f"Adam(lr={LEARNING_RATE}, weight_decay={WEIGHT_DECAY})",
        "load_average_1min_before_after": list(load),
        "models": [asdict(r) for r in results],
        "goal_time_ratio": GOAL_TIME_RATIO,
        "goal_memory_ratio": GOAL_MEMORY_RATIO,
        "authors_reported_time_ratio": AUTHORS_REPORTED["time"],
        "authors_reported_memory_ratio": AUTHORS_REPORTED["memory"],
    }
    for name in ("alm", "alm-evidence", "authors"):
        if name in by_name:
            summary[f"{name}_time_ratio"] = by_name[name].step_s / base.step_s
            summary[f"{name}_memory_ratio"] = by_name[name].saved_mb / base.saved_mb
    summary["alm_time_goal_met"] = summary["alm_time_ratio"] <= GOAL_TIME_RATIO
    summary["alm_memory_goal_met"] = summary["alm_memory_ratio"] <= GOAL_MEMORY_RATIO
    return summary


def format_report(summary: dict) -> str:
    models = summary["models"]
    repeats = ", ".join(f"{m['timed_steps']} ({m['name']})" for m in models)
    warmups = ", ".join(f"{m['warmup_steps']} ({m['name']})" for m in models)
    lines = [
        f"Training step (forward, deep-supervision weighted BCE, backward, "
        f"{summary['optimizer']}), B={summary['batch']}, "
        f"{summary['height']}x{summary['width']}, M={summary['num_attrs']}, BN-Inception, "
        f"{summary['dtype']}, {summary['device']}, torch {summary['torch']}, "
        f"{summary['threads']} threads",
        f"median of {repeats} interleaved timed steps after {warmups} warm-up steps",
        f"{'model':<13}{'params':>10}{'step time':>12}{'vs base':>9}{'fastest':>11}"
        f"{'saved MB':>11}{'vs base':>9}{'first loss':>12}",
    ]
    base = models[0]
    for m in models:
        lines.append(
            f"{m['name']:<13}{m['parameters'] / 1e6:>9.2f}M{m['step_s']:>10.3f} s"
            f"{m['step_s'] / base['step_s']:>8.2f}x{m['min_step_s']:>9.3f} s"
            f"{m['saved_mb']:>11.1f}"
            f"{m['saved_mb'] / base['saved_mb']:>8.2f}x{m['first_loss']:>12.5f}"
        )

    def verdict(ratio: float, goal: float) -> str:
        return f"{ratio:.2f}x, goal <= {goal:.2f}x: {'met' if ratio <= goal else 'NOT met'}"

    lines.append(
        f"ALM vs baseline: step time {verdict(summary['alm_time_ratio'], GOAL_TIME_RATIO)}; "
        f"activation memory {verdict(summary['alm_memory_ratio'], GOAL_MEMORY_RATIO)}"
    )
    reported = (
        f"reported {summary['authors_reported_time_ratio']:.1f}x time, "
        f"{summary['authors_reported_memory_ratio']:.1f}x memory"
    )
    if "alm-evidence_time_ratio" in summary:
        lines.append(
            f"ALM with evidence-centred boxes vs baseline: step time "
            f"{summary['alm-evidence_time_ratio']:.2f}x, activation memory "
            f"{summary['alm-evidence_memory_ratio']:.2f}x (not in the paper; no goal)"
        )
    if "authors_time_ratio" in summary:
        lines.append(
            f"authors' design vs baseline: step time {summary['authors_time_ratio']:.2f}x, "
            f"activation memory {summary['authors_memory_ratio']:.2f}x ({reported})"
        )
    else:
        lines.append(f"authors' design not measured (--with-authors); {reported}")
    load = ", ".join(
        "n/a" if v is None else f"{v:.2f}" for v in summary["load_average_1min_before_after"]
    )
    lines.append(f"1-minute load average before / after: {load} ({summary['threads']} threads)")
    lines.append(f"command: {summary['command']}")
    return "\n".join(lines)


def format_breakdown(candidates: list[Candidate], top: int) -> str:
    lines = []
    for c in candidates:
        records = c.breakdown or []
        total = sum(r.nbytes for r in records)
        lines.append(
            f"\n{c.name}: {len(records)} saved storages, {total / MB:.1f} MB found by walking the "
            f"graph ({c.saved_bytes / MB:.1f} MB by the saved-tensor hooks); largest {top}:"
        )
        lines.append(f"{'MB':>9}  {'saved by':<40}{'attribute':<22}{'holders':>8}  shape")
        for r in records[:top]:
            lines.append(
                f"{r.nbytes / MB:>9.2f}  {r.node:<40}{r.attribute:<22}{r.holders:>8}  "
                f"{list(r.shape)} {r.dtype}"
            )
        lines.append(f"{'MB':>9}  {'saving op (totals)':<40}{'storages':>8}")
        for node, count, nbytes in summarize_by_node(records)[:top]:
            lines.append(f"{nbytes / MB:>9.2f}  {node:<40}{count:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    summary, candidates = run(args)
    if args.json:
        if args.top_saved:
            summary["top_saved"] = {
                c.name: [asdict(r) for r in (c.breakdown or [])[: args.top_saved]]
                for c in candidates
            }
        print(json.dumps(summary, indent=2))
    else:
        print(format_report(summary))
        if args.top_saved:
            print(format_breakdown(candidates, args.top_saved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
