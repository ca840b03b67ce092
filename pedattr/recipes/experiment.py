"""``pedattr experiment table1|table2``: the paper's Table 1 (components) and Table 2 (other
attribute-specific methods), trained and tested row by row with the same seeds and schedule.

Every row is a configuration file, ``configs/<table>/<row>.yaml``, that names the shared
settings file (``configs/experiments.yaml``, the paper's recipe) as its ``base`` and sets only
what makes the row. The command adds the dataset, the run folder and the seed, then any
``--epochs`` and ``section.key=value`` overrides, the same for every row, and trains each
(row, seed) with ``pedattr train``'s engine in ``OUT/<row>/seed<k>``:

* a run with a ``report.json`` is finished and is read, not trained again;
* a run with a saved state (``state.safetensors``) was interrupted and is resumed;
* a run folder started with other settings is an error, so a table never mixes settings.

For each run it reads the test metrics of the checkpoint selected on validation, and on a
dataset with ground-truth boxes it scores the boxes (``pedattr eval --localization``): the
pointing-game hit rate at each attribute's best level, averaged over the location-varying
attributes when the dataset names them. Parameters and FLOPs come from
:mod:`pedattr.models.complexity` at the configuration's input size. The table is written as
``OUT/<table>.md`` and ``OUT/<table>.json`` after every run, and printed at the end.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pedattr.checkpoint.format import load_model
from pedattr.data.description import load_description
from pedattr.engine.config import TrainConfig, apply_overrides, check_values, read_config_file
from pedattr.engine.distributed import DistributedContext
from pedattr.engine.training import RunPaths, Trainer, claimed_folder, model_config
from pedattr.evaluation.evaluate import checkpoint_report
from pedattr.models.complexity import FLOP_CONVENTION, count_flops, count_parameters
from pedattr.utils.device import resolve_device
from pedattr.utils.io import atomic_write_text, make_folder
from pedattr.utils.json import json_safe

#: The instance-based and label-based metrics of the paper, as the run reports name them.
METRICS = ("mA", "f1", "accuracy", "precision", "recall")
#: Settings that do not change a result, so a run may be resumed with other values of them.
EXECUTION_KEYS = {
    ("data", "workers"),
    ("run", "device"),
    ("run", "eval_batch_size"),
    ("run", "tensorboard"),
    ("run", "checkpoint_every"),
}
#: Settings that differ between any two runs and say nothing about a row.
PER_RUN_KEYS = {("run", "out"), ("run", "seed"), ("data", "root")}


class ExperimentError(ValueError):
    """An experiment that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Row:
    """One row of a paper table.

    Attributes:
        name: the configuration file's stem and the run folder's name.
        label: the row as the paper prints it.
        paper: the paper's RAP result (mA, F1) in percent (its Table 1 or 2), for reference.
    """

    name: str
    label: str
    paper: tuple[float, float]

    @property
    def short_name(self) -> str:
        """The name without its number: ``01_baseline`` -> ``baseline``."""
        number, _, rest = self.name.partition("_")
        return rest if number.isdigit() and rest else self.name


TABLES: dict[str, tuple[Row, ...]] = {
    "table1": (
        Row("01_baseline", "Baseline", (75.76, 78.20)),
        Row("02_alm_single_level", "ALM at Single Level (5b)", (77.45, 79.14)),
        Row("03_alm_multi_level", "ALM at Multiple Levels (3b,4d,5b)", (78.89, 79.50)),
        Row("04_top_down_add", "Top-down (Addition)", (78.51, 79.42)),
        Row("05_top_down_concat", "Top-down (Concatenation)", (79.93, 79.91)),
        Row("06_channel_attention", "Top-down (Channel Attention)", (80.61, 79.98)),
        Row("07_deep_supervision_mean", "Deep Supervision (Averaging)", (80.70, 80.04)),
        Row("08_deep_supervision_max", "Deep Supervision (Maximum) (Ours)", (81.87, 80.16)),
        Row("09_final_without_alm", "Ours w/o ALMs", (78.91, 79.55)),
    ),
    "table2": (
        Row("01_rigid_parts", "Rigid Part", (76.56, 78.84)),
        Row("02_attention_masks", "Attention Mask", (78.35, 79.51)),
        Row("03_alm", "Attribute Region (ALM)", (81.87, 80.16)),
    ),
}
#: The settings every row starts from (the paper's recipe), under the configuration folder.
SHARED_SETTINGS = "experiments.yaml"


# --- configurations -----------------------------------------------------------------------------


def default_config_root() -> Path:
    """``configs/`` in the working directory, else the one beside the installed package."""
    here = Path("configs")
    if (here / SHARED_SETTINGS).is_file():
        return here
    return Path(__file__).resolve().parents[2] / "configs"


def select_rows(table: str, names: Sequence[str] | None) -> list[Row]:
    """The rows of ``table`` to run: all, or those named (full or short names), in table order.

    Raises:
        ExperimentError: an unknown table or row name; the message lists the known ones.
    """
    if table not in TABLES:
        raise ExperimentError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    rows = TABLES[table]
    if not names:
        return list(rows)
    known = {key: row for row in rows for key in (row.name, row.short_name)}
    unknown = [name for name in names if name not in known]
    if unknown:
        listed = ", ".join(row.name for row in rows)
        raise ExperimentError(f"{table} has no row {', '.join(unknown)}; its rows are {listed}")
    chosen = {known[name].name for name in names}
    return [row for row in rows if row.name in chosen]


def epoch_overrides(epochs: int | None) -> list[str]:
    """``--epochs N`` as overrides: N epochs, the rate divided by 10 after each third of them,
    which is the shape of the paper's schedule (30 epochs, steps at 10 and 20)."""
    if epochs is None:
        return []
    if epochs < 1:
        raise ExperimentError(f"epochs must be at least 1, got {epochs}")
    return [f"optim.epochs={epochs}", f"optim.lr_step={max(1, math.ceil(epochs / 3))}"]


def build_config(
    path: Path, overrides: Sequence[str], *, data: Path, out: Path, seed: int
) -> TrainConfig:
    """A row's configuration: its file (with its base), the dataset, run folder and seed, then
    the overrides given for every row."""
    config, stages = read_config_file(path)
    if stages:
        raise ExperimentError(f"{path}: an experiment row is one run, not a recipe with stages")
    config.data.root = str(data)
    config.run.out = str(out)
    config.run.seed = seed
    apply_overrides(config, list(overrides))
    check_values(config, str(path), overrides)
    return config


def _differences(
    config: TrainConfig, other: TrainConfig, ignored: Collection[tuple[str, str]]
) -> list[tuple[str, str, Any, Any]]:
    """(section, key, value in ``other``, value in ``config``) for every setting outside
    ``ignored`` on which the two differ (None where ``other`` lacks the key)."""
    ours, theirs = config.to_dict(), other.to_dict()
    return [
        (section, key, theirs[section].get(key), value)
        for section, values in ours.items()
        for key, value in values.items()
        if (section, key) not in ignored and theirs[section].get(key) != value
    ]


def config_changes(config: TrainConfig, reference: TrainConfig) -> list[str]:
    """``section.key=value`` for every setting of ``config`` that differs from ``reference``,
    leaving out the per-run ones (data, run folder, seed)."""
    return [
        f"{section}.{key}={json.dumps(value)}"
        for section, key, _, value in _differences(config, reference, PER_RUN_KEYS)
    ]


def _differing_settings(saved: TrainConfig, wanted: TrainConfig) -> list[str]:
    """The result-changing settings on which a run folder's configuration and ours differ."""
    return [
        f"{section}.{key}: {json.dumps(old)} there, {json.dumps(new)} now"
        for section, key, old, new in _differences(wanted, saved, EXECUTION_KEYS)
    ]


# --- one run ------------------------------------------------------------------------------------


def run_state(config: TrainConfig) -> str:
    """The state of a run folder: "done", "resume" or "new".

    Raises:
        ExperimentError: the folder holds a run started with other settings.
    """
    paths = RunPaths(Path(config.run.out))
    if paths.config.is_file():
        saved, _ = read_config_file(paths.config)
        different = _differing_settings(saved, config)
        if different:
            raise ExperimentError(
                f"{paths.root} was started with other settings ({'; '.join(different)}); give "
                "another --out, or delete that folder to train it again"
            )
    if paths.report.is_file():
        return "done"
    return "resume" if paths.state.is_file() else "new"


def train_run(config: TrainConfig, state: str) -> dict:
    """Train, resume or read one run (``state`` from :func:`run_state`) with ``pedattr
    train``'s engine; returns its report."""
    paths = RunPaths(Path(config.run.out))
    if state != "done":
        device = resolve_device(config.run.device)
        Trainer(config, DistributedContext(device=device), resume=state == "resume").fit()
    return json.loads(paths.report.read_text(encoding="utf-8"))


def training_seconds(run: Path) -> float:
    """Seconds the run spent in training epochs (over all its sessions), from its log."""
    path = RunPaths(run).log
    if not path.is_file():
        return 0.0
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return float(sum(r.get("seconds") or 0.0 for r in records if r.get("event") == "epoch"))


def run_localization(config: TrainConfig, checkpoint: Path) -> dict:
    """The localization summary of a finished run, computed once and kept in its folder."""
    cached = Path(config.run.out) / "localization.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    report = checkpoint_report(
        checkpoint,
        config.data.root,
        split="test",
        batch_size=config.run.eval_batch_size,
        workers=config.data.workers,
        device=resolve_device(config.run.device),
        localization=True,
        part_regions=config.data.part_regions,
    )
    summary = report.localization.summary().to_dict()
    atomic_write_text(cached, json.dumps(json_safe(summary), indent=2))
    return summary


def complexity(checkpoint: Path, input_size: Sequence[int]) -> dict:
    """Parameters and FLOPs of a trained model for one image of its input size."""
    model = load_model(checkpoint)
    flops = count_flops(model, tuple(input_size))
    return {"params": count_parameters(model), "flops": flops, "gflops": flops / 1e9}


# --- the table ----------------------------------------------------------------------------------


def mean_and_spread(values: Sequence[float | None]) -> dict:
    """Mean and sample standard deviation (None for fewer than two values) of known values."""
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "std": None, "n": 0}
    spread = statistics.stdev(known) if len(known) > 1 else None
    return {"mean": statistics.fmean(known), "std": spread, "n": len(known)}


def summarize_row(runs: list[dict]) -> dict:
    """Mean and spread over seeds of every metric and of the hit rate."""
    summary = {
        key: mean_and_spread([(run["test"] or {}).get(key) for run in runs]) for key in METRICS
    }
    hits = [(run.get("localization") or {}).get("best_level_hit_rate") for run in runs]
    summary["hit_rate"] = mean_and_spread(hits)
    return summary


def _percent(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{100 * stat['mean']:.2f}"
    return text if stat["std"] is None else f"{text} ± {100 * stat['std']:.2f}"


def format_markdown(result: dict) -> str:
    """The table as markdown, like the paper's, with how it was produced."""
    with_hits = result["localization"]
    columns = ["Row", "Setting", "mA", "F1", "Acc", "Prec", "Rec", "Params", "GFLOPs"]
    columns += ["Hit rate (best level)"] if with_hits else []
    columns += ["Paper, RAP (mA / F1)"]
    seeds = f"Seed{'s' if result['seeds'] > 1 else ''} {result['seed_list']}"
    lines = [
        f"# Paper {result['table'].replace('table', 'Table ')}: {result['title']}",
        "",
        f"Produced by `{result['command']}`.",
        "",
        f"Data: `{result['data']}` ({result['num_attributes']} attributes), test split, "
        f"threshold 0.5, in percent. {seeds}; mean ± sample standard deviation over the seeds "
        "(no spread for one seed). Each run is tested once, with the epoch it selected on "
        "validation.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(_row_cells(row, with_hits)) + " |" for row in result["rows"]),
        "",
        *_notes(result),
    ]
    return "\n".join(lines) + "\n"


def _row_cells(row: dict, with_hits: bool) -> list[str]:
    summary, cost = row["summary"], row["complexity"]
    cells = [row["label"], ", ".join(f"`{c}`" for c in row["setting"]) or "the final model"]
    cells += [_percent(summary[key]) for key in METRICS]
    cells += [f"{cost['params'] / 1e6:.2f} M", f"{cost['gflops']:.3f}"]
    if with_hits:
        cells.append(_percent(summary["hit_rate"]))
    return [*cells, f"{row['paper'][0]:.2f} / {row['paper'][1]:.2f}"]


def _notes(result: dict) -> list[str]:
    notes = [
        "The last column is the paper's result on RAP (Tang et al., ICCV 2019), printed for "
        "reference only: it is not a result of this command, and it comes from another dataset.",
        f"GFLOPs per image at {result['input_size'][0]}x{result['input_size'][1]}: "
        f"{FLOP_CONVENTION}.",
    ]
    reference = result.get("fixed_box_reference")
    if result["localization"]:
        notes.append(_hit_rate_note(reference))
    notes.append(
        f"Wall time of this command: {result['wall_seconds'] / 60:.1f} min; training time of "
        f"all runs, including earlier sessions of resumed ones: "
        f"{result['training_seconds'] / 60:.1f} min."
    )
    return [f"- {note}" for note in notes]


def _hit_rate_note(reference: dict | None) -> str:
    varying = reference is not None and reference["attributes"] == "location_varying"
    note = (
        "Hit rate: pointing game (the box centre inside the ground-truth box) at each "
        f"attribute's best level, averaged over the {'location-varying' if varying else 'scored'}"
        " attributes; models without boxes have none."
    )
    if reference is not None:
        note += (
            " A box that ignores the image (each attribute's mean training box) hits "
            f"{100 * reference['fixed_box_hit_rate']:.1f} %."
        )
    return note


TITLES = {
    "table1": "components of the method, added one at a time",
    "table2": "attribute-specific localization methods",
}


@dataclass
class _Plan:
    """Everything a table needs to run, resolved from the arguments."""

    table: str
    rows: list[Row]
    config_root: Path
    data: Path
    out: Path
    seeds: int
    overrides: list[str]
    attribute_names: list[str]

    def config(self, row: Row, seed: int) -> TrainConfig:
        run = self.out / row.name / f"seed{seed}"
        path = self.config_root / self.table / f"{row.name}.yaml"
        return build_config(path, self.overrides, data=self.data, out=run, seed=seed)

    def reference(self) -> TrainConfig:
        """The shared settings with the same overrides: what every row differs from."""
        return build_config(
            self.config_root / SHARED_SETTINGS, self.overrides, data=self.data, out=self.out, seed=0
        )


def _run_row(plan: _Plan, row: Row, position: str, scored: bool) -> dict:
    """Train every seed of one row; returns the row's entry of the result.

    ``scored``: the dataset has ground-truth boxes, so models with boxes get a hit rate.
    """
    with_boxes = scored and model_config(plan.config(row, 0), plan.attribute_names).has_boxes
    runs = []
    for seed in range(plan.seeds):
        config = plan.config(row, seed)
        state = run_state(config)
        tqdm.write(f"{position} {row.name} seed {seed}: {_STATE_WORDS[state]} ({config.run.out})")
        started = time.perf_counter()
        report = train_run(config, state)
        best = Path(report["best_checkpoint"])
        local = run_localization(config, best) if with_boxes else None
        runs.append(
            {
                "seed": seed,
                "run": config.run.out,
                "test": report["test"],
                "localization": local,
                "training_seconds": training_seconds(Path(config.run.out)),
            }
        )
        tqdm.write(f"{position} {row.name} seed {seed}: {_run_line(runs[-1], started)}")
    config = plan.config(row, 0)
    return {
        "name": row.name,
        "label": row.label,
        "paper": list(row.paper),
        "setting": config_changes(config, plan.reference()),
        "config": config.to_dict(),
        "complexity": complexity(
            Path(runs[0]["run"]) / "best.safetensors", config.model.input_size
        ),
        "runs": runs,
        "summary": summarize_row(runs),
    }


_STATE_WORDS = {"done": "finished earlier, read", "resume": "resuming", "new": "training"}


def _run_line(run: dict, started: float) -> str:
    test = run["test"] or {}
    parts = [f"{key} {100 * test[key]:.2f}" for key in ("mA", "f1") if test.get(key) is not None]
    if run["localization"]:
        parts.append(f"hit rate {100 * run['localization']['best_level_hit_rate']:.1f} %")
    return ", ".join(parts) + f" ({time.perf_counter() - started:.0f} s)"


def run_experiment(
    table: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    epochs: int | None = None,
    seeds: int = 1,
    rows: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    config_root: str | os.PathLike | None = None,
    command: str | None = None,
) -> dict:
    """Train every row of a paper table with the same seeds and schedule; write the table.

    Args:
        table: "table1" or "table2".
        data: a prepared dataset folder.
        out: where the runs (``<row>/seed<k>``) and ``<table>.md`` / ``<table>.json`` go.
        epochs: train this many epochs instead of the recipe's, the rate divided by 10 after
            each third (:func:`epoch_overrides`).
        seeds: seeds 0 .. seeds - 1 for every row.
        rows: row names (``01_baseline`` or ``baseline``); None for all.
        overrides: ``section.key=value`` settings applied to every row, after ``epochs``.
        config_root: the folder holding ``experiments.yaml`` and ``<table>/``
            (:func:`default_config_root` when None).
        command: the command line, recorded in the table.

    Returns:
        The result written to ``<table>.json``.
    """
    started = time.perf_counter()
    if seeds < 1:
        raise ExperimentError(f"seeds must be at least 1, got {seeds}")
    description = load_description(data)  # a clear error before anything trains
    plan = _Plan(
        table=table,
        rows=select_rows(table, rows),
        config_root=Path(config_root) if config_root is not None else default_config_root(),
        data=Path(data).resolve(),
        out=Path(out).resolve(),
        seeds=seeds,
        overrides=[*epoch_overrides(epochs), *overrides],
        attribute_names=list(description.attribute_names),
    )
    _check_config_files(plan)
    with_boxes = description.boxes is not None
    result = {
        "table": table,
        "title": TITLES[table],
        "command": command or f"pedattr experiment {table} --data {data} --out {out}",
        "data": str(plan.data),
        "num_attributes": len(description.attribute_names),
        "seed_list": ", ".join(str(k) for k in range(seeds)),
        "seeds": seeds,
        "overrides": plan.overrides,
        "input_size": list(plan.reference().model.input_size),
        "localization": with_boxes,
        "rows": [],
    }
    # One experiment per folder at a time (each run's folder is locked by its Trainer too).
    with claimed_folder(plan.out, [f"{table}.json", f"{table}.md"]):
        for number, row in enumerate(plan.rows, 1):
            entry = _run_row(plan, row, f"[{number}/{len(plan.rows)}]", with_boxes)
            result["rows"].append(entry)
            _write(result, plan, started)
        markdown = _write(result, plan, started)
    print(markdown)
    return result


def _check_config_files(plan: _Plan) -> None:
    missing = [
        str(plan.config_root / plan.table / f"{row.name}.yaml")
        for row in plan.rows
        if not (plan.config_root / plan.table / f"{row.name}.yaml").is_file()
    ]
    if missing or not (plan.config_root / SHARED_SETTINGS).is_file():
        raise ExperimentError(
            f"the experiment's configuration files are missing under {plan.config_root} "
            f"({', '.join(missing) or SHARED_SETTINGS}); run from the project folder or give "
            "--configs DIR"
        )


def _write(result: dict, plan: _Plan, started: float) -> str:
    """Write ``<table>.json`` and ``<table>.md`` for the rows done so far; returns the markdown."""
    result["wall_seconds"] = time.perf_counter() - started
    result["training_seconds"] = sum(
        run["training_seconds"] for row in result["rows"] for run in row["runs"]
    )
    references = [
        run["localization"]
        for row in result["rows"]
        for run in row["runs"]
        if run["localization"] is not None
    ]
    result["fixed_box_reference"] = (
        {key: references[0][key] for key in ("attributes", "fixed_box_hit_rate")}
        if references
        else None
    )
    make_folder(plan.out)
    atomic_write_text(plan.out / f"{plan.table}.json", json.dumps(json_safe(result), indent=2))
    markdown = format_markdown(result)
    atomic_write_text(plan.out / f"{plan.table}.md", markdown)
    return markdown
