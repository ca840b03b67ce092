"""The model card (``README.md`` of the hub layout), written from what a checkpoint records.

The YAML header carries the licence, ``library_name: pedattr``, tags and, when the checkpoint
holds metrics, a ``model-index`` with each split they were measured on. The text gives the
attributes in output order, the training data and recipe (``extra.run``, written by
``pedattr train``; or the conversion of the authors' file), the results, the intended use and
limits, and the paper's citation. Paths are reduced to their last part, so that a card does not
publish the layout of the machine that trained the model.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

import yaml

from pedattr.checkpoint.convert import DATASET_TITLES
from pedattr.checkpoint.format import Checkpoint

__all__ = ["CITATION", "model_card"]

CITATION = """\
@inproceedings{tang2019improving,
  title     = {Improving Pedestrian Attribute Recognition With Weakly-Supervised Multi-Scale
               Attribute-Specific Localization},
  author    = {Tang, Chufeng and Sheng, Lu and Zhang, Zhaoxiang and Hu, Xiaolin},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {4997--5006},
  year      = {2019}
}"""

# Metric keys of pedattr's reports -> (model-index type, the card's column).
_METRICS = {
    "mA": ("mA", "mA"),
    "accuracy": ("accuracy", "Acc"),
    "precision": ("precision", "Prec"),
    "recall": ("recall", "Rec"),
    "f1": ("f1", "F1"),
}
_ARCH_TITLES = {"alm": "ALM", "baseline": "baseline (global branch only)"}

_INTENDED_USE = """\
Recognising visible attributes (clothing, carried objects, apparent gender and age group, view)
in cropped images of single pedestrians, as in the pedestrian attribute recognition literature,
and showing where the model looked for each attribute (ALM's boxes). For research, benchmarking
and building systems whose use has been assessed.

Limits:

- Attributes of people are personal data. Recognising them in surveillance footage can identify,
  profile or track people and is regulated in many places (for example the GDPR and the EU AI
  Act); it needs a lawful basis, proportionality, transparency towards the people filmed and
  human oversight. Do not use the model to infer sensitive characteristics, or to make decisions
  about individuals without human review.
- Labels such as gender and age group are annotators' judgements of appearance in the training
  data, not facts about a person; errors are not evenly spread across groups of people.
- The model has seen only the training dataset's cameras, resolutions and populations; accuracy
  drops on other scenes, on occluded or badly cropped people, and on attributes that were rare
  in training. Measure it on your own data before relying on it.
- The training datasets' licences apply (PETA and RAP are for research only)."""


def model_card(checkpoint: Checkpoint, *, repo_id: str, license: str | None = None) -> str:
    """The model card of ``checkpoint`` as Markdown with a YAML header.

    Args:
        checkpoint: what the card describes.
        repo_id: the name the usage examples load (a Hub repository or a folder).
        license: licence identifier; default ``unknown`` for a conversion of the authors'
            weights (theirs to state), else ``apache-2.0``.
    """
    config = checkpoint.config
    converted = checkpoint.extra.get("source_format") == "authors-alm"
    dataset = _dataset_label(checkpoint)
    results = _results(checkpoint)
    header = {
        "license": license or ("unknown" if converted else "apache-2.0"),
        "library_name": "pedattr",
        "pipeline_tag": "image-classification",
        "tags": [
            "pedattr",
            "pedestrian-attribute-recognition",
            "multi-label-image-classification",
            config.arch,
            config.backbone.replace(":", "-"),
        ],
    }
    if results:
        header["model-index"] = [_model_index(repo_id, dataset, results)]
    parts = [
        "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---",
        f"# {repo_id}",
        _summary(checkpoint, dataset),
        "## Use\n\n" + _usage(repo_id),
        "## Attributes\n\n" + _attributes(checkpoint),
        "## Training data and recipe\n\n" + _training(checkpoint),
        "## Results\n\n" + _results_text(results, dataset),
        "## Intended use and limits\n\n" + _INTENDED_USE,
        "## Citation\n\nThe model implements the method of this paper:\n\n"
        f"```bibtex\n{CITATION}\n```",
    ]
    return "\n\n".join(parts) + "\n"


def _dataset_label(checkpoint: Checkpoint) -> str | None:
    """The training dataset's name: a converted model's dataset, or the prepared folder's name."""
    extra = checkpoint.extra
    if extra.get("dataset") in DATASET_TITLES:
        return DATASET_TITLES[extra["dataset"]]
    root = ((extra.get("run") or {}).get("data") or {}).get("root")
    return PurePath(str(root)).name if root else None


def _summary(checkpoint: Checkpoint, dataset: str | None) -> str:
    config = checkpoint.config
    arch = _ARCH_TITLES.get(config.arch, config.arch)
    height, width = config.input_size
    on = f", trained on {dataset}" if dataset else ""
    return (
        f"A pedestrian attribute recognition model for pedattr: "
        f"{arch} on a `{config.backbone}` backbone, {config.num_attrs} attributes{on}. It takes "
        f"a cropped image of one person, resized to {height}x{width} (RGB, normalised inside "
        "the model), and gives a probability per attribute"
        + (
            " and, for every attribute and pyramid level, the box the model looked at."
            if config.has_boxes
            else "."
        )
    )


def _usage(repo_id: str) -> str:
    return (
        "```python\nimport pedattr\n\n"
        f'model = pedattr.from_pretrained("{repo_id}")\n'
        f'predictor = pedattr.Predictor(model)\n[p] = predictor.predict("person.jpg")\n'
        "p.attributes, p.probabilities\n```\n\n"
        f"```bash\npedattr predict --checkpoint {repo_id} person.jpg\n```"
    )


def _attributes(checkpoint: Checkpoint) -> str:
    names = checkpoint.config.attribute_names
    thresholds = checkpoint.thresholds
    if thresholds is None:
        lines = [f"{i}. {name}" for i, name in enumerate(names, 1)]
        note = "A prediction is positive when its probability is above 0.5."
    else:
        lines = [
            f"{i}. {name} ({t:.3f})"
            for i, (name, t) in enumerate(zip(names, thresholds, strict=True), 1)
        ]
        note = (
            "In brackets: the per-attribute thresholds stored by `pedattr calibrate` "
            "(used with `--thresholds calibrated`; 0.5 otherwise)."
        )
    return "In output order:\n\n" + "\n".join(lines) + f"\n\n{note}"


def _training(checkpoint: Checkpoint) -> str:
    extra = checkpoint.extra
    if extra.get("source_format") == "authors-alm":
        return _converted(extra)
    run = extra.get("run")
    if not isinstance(run, dict):
        return "The checkpoint carries no record of its training."
    return _recipe(run)


def _converted(extra: dict) -> str:
    dataset = DATASET_TITLES.get(extra.get("dataset"), "their dataset")
    epoch = f" (epoch {extra['epoch']})" if "epoch" in extra else ""
    source = (extra.get("pretrained") or {}).get("url")
    where = f", published at {source}" if source else ""
    return (
        f"Trained by the paper's authors on {dataset} with their released code, then converted "
        f"with `pedattr convert` from their file `{extra.get('converted_from')}`{epoch}{where}. "
        "Their recipe (paper, appendix A): BN-Inception from ImageNet, Adam with learning rate "
        "1e-4 and weight decay 5e-4, batch 32, 256x128 inputs with random horizontal flips, 30 "
        "epochs with the rate divided by 10 every 10 epochs on RAP and PA-100K, twice the "
        "epochs on PETA. The "
        "converted model samples as their PyTorch <= 1.2 did (align_corners=True) and "
        "reproduces their logits."
    )


def _recipe(run: dict) -> str:
    data, optim, loss = run.get("data") or {}, run.get("optim") or {}, run.get("loss") or {}
    model, settings = run.get("model") or {}, run.get("run") or {}
    rows = [
        ("prepared dataset", _name(data.get("root"))),
        ("training split", data.get("train_split")),
        (
            "validation",
            f"the dataset's val split; without one, {data['val_fraction']} of train held out"
            if "val_fraction" in data
            else None,
        ),
        ("backbone start", _name(model.get("pretrained")) or "random initialisation"),
        ("optimiser", "Adam"),
        ("learning rate", optim.get("lr")),
        ("weight decay", optim.get("weight_decay")),
        ("batch size", optim.get("batch_size")),
        ("epochs", optim.get("epochs")),
        ("rate schedule", _schedule(optim)),
        ("loss weighting", loss.get("weighting")),
        ("deep supervision", loss.get("deep_supervision")),
        ("selected by", settings.get("select_metric")),
        ("initialised from", _name(settings.get("init_from"))),
        ("mixed precision", settings.get("amp")),
        ("seed", settings.get("seed")),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows if value not in (None, ""))
    return (
        "Trained with `pedattr train`; the settings recorded in the checkpoint:\n\n"
        f"| setting | value |\n|---|---|\n{table}"
    )


def _name(path: Any) -> str | None:
    return PurePath(str(path)).name if path else None


def _schedule(optim: dict) -> str | None:
    if "lr_step" not in optim:
        return None
    return f"x{optim.get('lr_gamma', 0.1)} every {optim['lr_step']} epochs"


def _results(checkpoint: Checkpoint) -> list[tuple[str, dict, str]]:
    """(split, metrics as fractions, who measured) for each split with results."""
    found = []
    for split in ("val", "test"):
        metrics = checkpoint.metrics.get(split)
        if isinstance(metrics, dict) and _finite(metrics.get("mA")):
            found.append((split, metrics, "pedattr"))
    reported = (checkpoint.extra.get("pretrained") or {}).get("reported")
    if not found and isinstance(reported, dict) and _finite(reported.get("mA")):
        found.append((reported.get("split", "test"), {"mA": reported["mA"] / 100}, "authors"))
    return found


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _model_index(repo_id: str, dataset: str | None, results: list) -> dict:
    entries = []
    for split, metrics, _ in results:
        values = [
            {"type": kind, "name": column, "value": round(100 * metrics[key], 2)}
            for key, (kind, column) in _METRICS.items()
            if _finite(metrics.get(key))
        ]
        entries.append(
            {
                "task": {
                    "type": "image-classification",
                    "name": "Pedestrian attribute recognition",
                },
                "dataset": {
                    "name": dataset or "unknown",
                    "type": dataset or "unknown",
                    "split": split,
                },
                "metrics": values,
            }
        )
    return {"name": repo_id, "results": entries}


def _results_text(results: list, dataset: str | None) -> str:
    if not results:
        return "The checkpoint carries no metrics."
    rows = []
    for split, metrics, by in results:
        cells = [
            f"{100 * metrics[key]:.2f}" if _finite(metrics.get(key)) else "" for key in _METRICS
        ]
        images = metrics.get("num_samples", "")
        rows.append(f"| {split} | {by} | {images} | " + " | ".join(cells) + " |")
    columns = " | ".join(column for _, column in _METRICS.values())
    return (
        f"On {dataset or 'the training dataset'}, in percent, at threshold 0.5 (mA: mean of "
        "the attributes' balanced accuracies; the others per instance, as in the paper). "
        "pedattr's numbers are those `pedattr train` recorded: val for the epoch it selected, "
        "test once for the selected checkpoint; the authors' are from their repository.\n\n"
        f"| split | measured by | images | {columns} |\n|---|---|---|"
        + "---|" * len(_METRICS)
        + "\n"
        + "\n".join(rows)
    )
