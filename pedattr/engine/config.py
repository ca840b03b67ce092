"""Typed training configuration: YAML files under ``configs/``, overridable from the command line.

A configuration has five sections (``model``, ``data``, ``optim``, ``loss``, ``run``) whose
fields are the dataclasses below. A YAML file may name a ``base`` file (relative to itself)
whose values it overrides, and may list ``stages`` (a two-stage recipe: each stage a name plus
overrides, see :func:`expand_stages`). Every key is checked: an unknown key or a value of the
wrong type is a :class:`ConfigError` that names the key and the file.

Command-line overrides are ``section.key=value`` with YAML values, e.g. ``optim.lr=3e-4``,
``model.input_size=[128,64]``, ``run.amp=bf16``.
"""

from __future__ import annotations

import math
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pedattr.models.config import ModelConfig, option_problem, option_types


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and its source."""


#: ModelConfig fields that a config does not set: the attribute names come from the dataset.
_FROM_DATA = ("attribute_names",)
#: The one model setting that is not a ModelConfig field: where the backbone's weights are.
_PRETRAINED = {"help": "local ImageNet weights for the backbone (nothing is downloaded)"}


def model_section(config_class: type = ModelConfig) -> type:
    """The ``model:`` section's dataclass, made from the fields of ``config_class`` (their
    types, defaults and help; ModelConfig declares the options) plus ``pretrained``."""
    hints = option_types(config_class)
    specs: list[tuple[str, Any, Any]] = []
    for item in fields(config_class):
        if item.name in _FROM_DATA:
            continue
        option = field(default=item.default, metadata=item.metadata)
        specs.append((item.name, hints[item.name], option))
        if item.name == "backbone":
            specs.append(("pretrained", str | None, field(default=None, metadata=_PRETRAINED)))
    # config_class (not a field) tells check_values whose declarations judge the values.
    section = make_dataclass("ModelSection", specs, namespace={"config_class": config_class})
    section.__module__ = __name__  # so that it pickles, like the other sections
    section.__doc__ = (
        "The network: every ModelConfig field but the attribute names (pedattr.models.config "
        "declares them), plus ``pretrained``, which is not part of the checkpoint."
    )
    return section


ModelSection = model_section()


@dataclass
class DataSection:
    """Which prepared dataset, and how validation is chosen."""

    #: A folder written by ``pedattr prepare``.
    root: str | None = None
    #: Split trained on; "trainval" for a final model without validation.
    train_split: Literal["train", "trainval"] = "train"
    #: Fraction of the training split held out for validation when the dataset has no val
    #: split (RAP v1); the subset is drawn with ``val_seed`` and listed in the run folder.
    val_fraction: float = 0.1
    val_seed: int = 0
    workers: int = 2
    #: The run stops once more than this fraction of images cannot be read.
    max_failed_fraction: float = 0.01
    #: Rigid-parts head only: a JSON file of per-image keypoints or part boxes
    #: (:func:`pedattr.data.part_regions.read_part_file`); null uses fixed proportions.
    part_regions: str | None = None


@dataclass
class OptimSection:
    """Adam with a step schedule (the paper's Appendix A)."""

    lr: float = 1e-4
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    #: Global batch size, divided among the processes of a distributed run.
    batch_size: int = 32
    epochs: int = 30
    #: Multiply the learning rate by ``lr_gamma`` every ``lr_step`` epochs.
    lr_step: int = 10
    lr_gamma: float = 0.1
    #: Learning-rate multiplier for the ALM box regressors (eq. 3's Linear(C, 4), or Linear(C, 2)
    #: with evidence centres).
    box_lr_scale: float = 1.0


@dataclass
class LossSection:
    weighting: Literal["authors", "paper", "deepmar", "none"] = "authors"
    #: Supervise every branch (paper Sec. 3.3, the default); false supervises only the fused
    #: logits, as Table 1's rows before "Deep Supervision".
    deep_supervision: bool = True


@dataclass
class RunSection:
    """Where the run goes and how it executes."""

    out: str = "runs/train"
    seed: int = 0
    #: "auto" is CUDA when available (one GPU per process under torchrun), else the CPU.
    device: str = "auto"
    #: Mixed precision on CUDA; "bf16" also works on recent CPUs.
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    #: Synchronise batch-norm statistics across processes (a distributed run then computes
    #: what one process with the global batch would).
    sync_bn: bool = True
    #: Also save the resumable state every N steps (0: at the end of each epoch only).
    checkpoint_every: int = 0
    eval_batch_size: int = 64
    #: The validation metric that picks the best checkpoint (higher is better).
    select_metric: Literal["mA", "accuracy", "precision", "recall", "f1"] = "mA"
    #: Initialise from a checkpoint's backbone (the two-stage warm-up the authors reported
    #: using): a checkpoint path, or the name of an earlier stage of a recipe.
    init_from: str | None = None
    #: Log to TensorBoard as well when it is installed.
    tensorboard: bool = True


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Section name -> its dataclass.
SECTIONS: dict[str, type] = typing.get_type_hints(TrainConfig)
#: Top-level keys of a YAML file that are not sections.
FILE_KEYS = ("base", "stages")


def _plain(value: Any) -> Any:
    """Tuples as lists, so that YAML and JSON write plain sequences."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --- type checking ------------------------------------------------------------------------------


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        return "a list [" + ", ".join(_type_name(a) for a in typing.get_args(hint)) + "]"
    return "null" if hint is type(None) else hint.__name__


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint``; raises ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    wrong = ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise wrong
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise wrong
    if origin is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise wrong
        return tuple(_coerce(v, t, key) for v, t in zip(value, items, strict=True))
    if hint is type(None):
        if value is not None:
            raise wrong
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if hint is float:
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept any number written as text.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise wrong from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _section_hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def _set(config: TrainConfig, dotted: str, value: Any, source: str) -> None:
    section, _, key = dotted.partition(".")
    where = f"{source}: {dotted}"
    if section not in SECTIONS or not key:
        raise ConfigError(f"{where}: unknown key; sections are {', '.join(SECTIONS)}")
    hints = _section_hints(section)
    if key not in hints:
        raise ConfigError(f"{where}: unknown key; {section} has {', '.join(sorted(hints))}")
    setattr(getattr(config, section), key, _coerce(value, hints[key], where))


def apply_mapping(config: TrainConfig, mapping: dict, source: str) -> None:
    """Set every ``{section: {key: value}}`` (or ``{"section.key": value}``) of ``mapping``."""
    for section, values in mapping.items():
        if "." in str(section):
            _set(config, str(section), values, source)
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section {section!r}; expected {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {section} must be a mapping of keys to values")
        for key, value in values.items():
            _set(config, f"{section}.{key}", value, source)


# --- files and overrides --------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    return data


def read_config_file(
    path: str | os.PathLike, _seen: tuple[Path, ...] = ()
) -> tuple[TrainConfig, list]:
    """A file's configuration (its ``base`` chain applied first) and its ``stages`` list."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: config files include each other in a loop")
    data = _read_yaml(path)
    base = data.pop("base", None)
    stages = data.pop("stages", None)
    if base is not None:
        config, base_stages = read_config_file(path.parent / base, (*_seen, path))
        stages = base_stages if stages is None else stages
    else:
        config = TrainConfig()
    apply_mapping(config, data, str(path))
    if stages is not None and not isinstance(stages, list):
        raise ConfigError(f"{path}: stages must be a list")
    return config, list(stages or [])


def check_values(config: TrainConfig, source: str, overrides: Sequence[str] = ()) -> None:
    """Ranges the types cannot express; raises ConfigError naming the key and where its value
    came from: the ``section.key=value`` override that set it, if one of ``overrides`` did, else
    ``source`` (the YAML file)."""
    blamed = override_sources(overrides)

    def require(ok: bool, key: str, rule: str, value: Any) -> None:
        if not ok:
            where = blamed.get(key, source)
            raise ConfigError(f"{where}: {key}: must be {rule}, got {value!r}")

    optim, data, run, model = config.optim, config.data, config.run, config.model
    require(math.isfinite(optim.lr) and optim.lr > 0, "optim.lr", "a positive number", optim.lr)
    decay = optim.weight_decay
    require(math.isfinite(decay) and decay >= 0, "optim.weight_decay", ">= 0", decay)
    require(all(0 <= b < 1 for b in optim.betas), "optim.betas", "in [0, 1)", optim.betas)
    for key in ("batch_size", "epochs", "lr_step"):
        value = getattr(optim, key)
        require(value >= 1, f"optim.{key}", "at least 1", value)
    require(optim.lr_gamma > 0, "optim.lr_gamma", "positive", optim.lr_gamma)
    box_scale = optim.box_lr_scale
    require(math.isfinite(box_scale) and box_scale > 0, "optim.box_lr_scale", "positive", box_scale)
    fraction = data.val_fraction
    require(0 < fraction < 1, "data.val_fraction", "in (0, 1)", fraction)
    require(data.workers >= 0, "data.workers", ">= 0", data.workers)
    failed = data.max_failed_fraction
    require(0 <= failed <= 1, "data.max_failed_fraction", "in [0, 1]", failed)
    require(run.checkpoint_every >= 0, "run.checkpoint_every", ">= 0", run.checkpoint_every)
    require(run.eval_batch_size >= 1, "run.eval_batch_size", "at least 1", run.eval_batch_size)
    # The model's ranges (and choices) as ModelConfig declares them, in its words.
    for name, value in architecture(model).items():
        problem = option_problem(name, value, model.config_class)
        if problem:
            key = f"model.{name}"
            raise ConfigError(f"{blamed.get(key, source)}: {key}: {problem}, got {_plain(value)!r}")


def override_sources(overrides: Sequence[str]) -> dict[str, str]:
    """``section.key`` -> the override that set it last, as errors name it."""
    return {parse_override(text)[0]: _override_name(text) for text in overrides}


def _override_name(text: str) -> str:
    return f"override {text!r}"


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` -> (``section.key``, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. optim.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    return key.strip(), value


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> None:
    """Set each ``section.key=value``; a bad one is a ConfigError naming the override."""
    for text in overrides:
        key, value = parse_override(text)
        _set(config, key, value, _override_name(text))


def architecture(model: ModelSection) -> dict[str, Any]:
    """The settings of ``model`` that make the network (all but ``pretrained``, which only says
    where its starting weights are), as :func:`pedattr.build_model` takes them."""
    options = asdict(model)
    options.pop("pretrained")
    return options


def model_options(overrides: Sequence[str]) -> dict[str, Any]:
    """:func:`architecture` after ``model.key=value`` overrides of the defaults, parsed and
    checked as ``pedattr train`` does."""
    for text in overrides:
        key, _ = parse_override(text)
        if not key.startswith("model."):
            raise ConfigError(f"command line: {key}: only model.* settings describe a model")
    config = TrainConfig()
    apply_overrides(config, list(overrides))
    check_values(config, "command line", overrides)
    return architecture(config.model)


def config_from_dict(data: dict, source: str) -> TrainConfig:
    config = TrainConfig()
    apply_mapping(config, data, source)
    return config


@dataclass
class Stage:
    """One stage of a recipe: a name (its sub-folder of ``run.out``) and its configuration."""

    name: str
    config: TrainConfig


def expand_stages(config: TrainConfig, stages: list, source: str) -> list[Stage]:
    """The stages of a recipe, each the base configuration plus its own overrides.

    Every stage writes to ``<run.out>/<name>``; a stage whose ``run.init_from`` names an earlier
    stage starts from that stage's best checkpoint. Without stages there is one, unnamed.
    """
    if not stages:
        return [Stage("", config)]
    names: list[str] = []
    result = []
    for number, entry in enumerate(stages, 1):
        where = f"{source}: stage {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: each stage needs a name and overrides")
        name = entry["name"]
        if name in names or not name or "/" in name:
            raise ConfigError(f"{where}: stage name {name!r} is empty, repeated or has a '/'")
        stage_config = config_from_dict(config.to_dict(), source)
        apply_mapping(stage_config, {k: v for k, v in entry.items() if k != "name"}, where)
        stage_config.run.out = str(Path(config.run.out) / name)
        init = stage_config.run.init_from
        if init in names:
            stage_config.run.init_from = str(Path(config.run.out) / init / "best.safetensors")
        elif init is not None and init in [s.get("name") for s in stages]:
            raise ConfigError(f"{where}: init_from {init!r} names a later stage")
        names.append(name)
        result.append(Stage(name, stage_config))
    return result
