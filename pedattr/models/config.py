"""Every model option, declared once: :class:`ModelConfig`.

Each field states its type (a ``Literal`` for a fixed set of choices), its default, its range
where it is a size, and one line of help. Everything else is derived from it:
``ModelConfig``'s own checks, the ``model:`` section of the training configuration and its
``model.KEY=VALUE`` overrides (:mod:`pedattr.engine.config`), the options ``pedattr summary``
takes and reports, and the check of a checkpoint's model configuration
(:mod:`pedattr.checkpoint.format`). Adding an option is one field here plus the code that uses it.

The module imports no torch, so the command line can read the choices without loading it.
"""

from __future__ import annotations

import functools
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral
from typing import Any, Literal

__all__ = [
    "ModelConfig",
    "NormalizationSpec",
    "option",
    "option_help",
    "option_problem",
    "option_usage",
]


@dataclass(frozen=True)
class NormalizationSpec:
    """What an input normalisation does to RGB in [0, 1] (:mod:`pedattr.models.normalization`)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False
    scale: float = 1.0


#: The input normalisations by name: the choices of ``ModelConfig.normalization``.
NORMALIZATIONS = {
    "imagenet": NormalizationSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "caffe": NormalizationSpec(
        mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), bgr=True, scale=255.0
    ),
}

# The choice lists; the modules that implement them import the tuples below.
Arch = Literal["alm", "baseline"]
Normalization = Literal[tuple(NORMALIZATIONS)]  # type: ignore[valid-type]
Upsample = Literal["bilinear", "nearest"]
BoxPooling = Literal["avg", "max"]
PaddingMode = Literal["border", "zeros"]
Fusion = Literal["max", "mean"]
#: Which pyramid levels carry a head: all three, or only the top one (5b; Table 1, row 2).
Levels = Literal["all", "top"]
#: How a level takes in the level above it: eq. 1's concatenation (the paper's), FPN's addition,
#: or not at all (lateral connections only; Table 1's rows before the top-down pathway).
TopDown = Literal["concat", "add", "none"]
#: What each level runs: the ALM (the paper's) or a comparison head (pedattr.models.heads).
Head = Literal["alm", "gap", "attention", "parts"]
BoxInit = Literal["default", "zero"]
BoxCentre = Literal["regressed", "evidence"]

ARCHS = typing.get_args(Arch)
UPSAMPLE_MODES = typing.get_args(Upsample)
BOX_POOLINGS = typing.get_args(BoxPooling)
PADDING_MODES = typing.get_args(PaddingMode)
FUSIONS = typing.get_args(Fusion)
LEVEL_CHOICES = typing.get_args(Levels)
TOP_DOWN_MODES = typing.get_args(TopDown)
HEADS = typing.get_args(Head)
BOX_INITS = typing.get_args(BoxInit)
BOX_CENTRES = typing.get_args(BoxCentre)

#: Largest sizes accepted, far above any pedestrian model, so that a crafted checkpoint header
#: (or a typo in a config) cannot make the model builder allocate gigabytes.
MAX_PYRAMID_DIM = 8192
MAX_INPUT_SIDE = 8192


def option(
    default: Any,
    help: str,
    *,
    low: int | None = None,
    high: int | None = None,
    names: tuple[str, ...] = (),
) -> Any:
    """A :class:`ModelConfig` field: its default, one line of help, and for whole numbers (or
    lists of them) the range ``low..high``; ``names`` names a fixed-length list's items."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "names": names})


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; a checkpoint stores it next to the weights.

    Defaults follow the authors' released code: bilinear top-down upsampling,
    average-pooled box regression, border padding and the align_corners=True grid of the
    PyTorch they trained with; ImageNet RGB normalisation; max voting over the four branches.

    ``levels``, ``top_down``, ``channel_attention`` and ``head`` describe the variants of the
    paper's Tables 1 and 2 (docs/experiments.md); their defaults are the paper's final model,
    so a configuration saved before they existed rebuilds the same network.
    """

    arch: Arch = option("alm", "alm (the paper's network) or baseline (backbone, one classifier)")
    backbone: str = option("bninception", "bninception, timm:NAME or torchvision:NAME")
    attribute_names: tuple[str, ...] = option((), "the attributes, in output order")
    normalization: Normalization = option(
        "imagenet", "input convention: imagenet (RGB, mean/std) or caffe (BGR, 0..255, mean)"
    )
    input_size: tuple[int, int] = option(
        (256, 128),
        "input (height, width) in pixels",
        low=1,
        high=MAX_INPUT_SIDE,
        names=("height", "width"),
    )
    pyramid_dim: int = option(
        256, "d of eq. 1-2: channels of each lateral 1x1 conv", low=1, high=MAX_PYRAMID_DIM
    )
    upsample: Upsample = option("bilinear", "top-down upsampling of the pyramid")
    box_pooling: BoxPooling = option("avg", "pooling before the ALM box regressor")
    padding_mode: PaddingMode = option("border", "the ALM sampler's padding")
    align_corners: bool = option(True, "the sampler's grid convention (the authors': true)")
    fusion: Fusion = option("max", "inference voting over the branches (Table 1)")
    levels: Levels = option("all", "heads on all three levels or on the top one (Table 1)")
    top_down: TopDown = option("concat", "the pyramid's top-down path (Table 1)")
    channel_attention: bool = option(True, "the ALM's channel attention (false: F = X, Table 1)")
    head: Head = option("alm", "what each level runs (Tables 1 and 2)")
    box_init: BoxInit = option(
        "default", "zero: box regressors start at zero, every box the central one; default: torch's"
    )
    box_centre: BoxCentre = option(
        "regressed", "evidence (not in the paper): boxes centred on their activation map's peak"
    )

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            problem = option_problem(item.name, value, type(self))
            if problem:
                raise ValueError(f"{item.name} {problem}, got {value!r}")
        if len(set(self.attribute_names)) != len(self.attribute_names):
            raise ValueError("attribute names must be unique")
        # Normalise sequences so that a config read back from JSON compares equal.
        object.__setattr__(self, "attribute_names", tuple(self.attribute_names))
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))

    @property
    def num_attrs(self) -> int:
        return len(self.attribute_names)

    @property
    def has_boxes(self) -> bool:
        """Whether the model returns a box per attribute and level (ModelOutput.boxes)."""
        return self.arch == "alm" and self.head != "gap"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)


@functools.cache
def option_types(config_class: type = ModelConfig) -> dict[str, Any]:
    """Each field of ``config_class`` (ModelConfig or a subclass) -> its resolved type."""
    return typing.get_type_hints(config_class)


def option_help(name: str, config_class: type = ModelConfig) -> str:
    """The one line of help declared with option ``name``."""
    return next(f for f in fields(config_class) if f.name == name).metadata.get("help", "")


def _whole(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _range_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    return "" if high is None else f" of at most {high}"


def _in_range(value: Any, low: int | None, high: int | None) -> bool:
    return _whole(value) and (low is None or value >= low) and (high is None or value <= high)


def option_problem(name: str, value: Any, config_class: type = ModelConfig) -> str | None:
    """What is wrong with ``value`` for field ``name`` ("must be ..."), or None if it is valid.

    Values may come from Python or from JSON (a list where the field holds a tuple); the
    wording is JSON's, as a checkpoint's metadata and a config file are.
    """
    hint = option_types(config_class)[name]
    meta = next(f for f in fields(config_class) if f.name == name).metadata
    low, high = meta.get("low"), meta.get("high")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return None if isinstance(value, str) and value in args else f"must be one of {list(args)}"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        ok = _in_range(value, low, high)
        return None if ok else f"must be a whole number{_range_text(low, high)}"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    if origin is tuple and args[-1] is Ellipsis:  # attribute names
        if not isinstance(value, list | tuple) or not value:
            return "must be a non-empty list of names"
        if not all(isinstance(item, str) and item for item in value):
            return "must hold non-empty strings only"
        return None
    if origin is tuple and all(arg is int for arg in args):
        sized = isinstance(value, list | tuple) and len(value) == len(args)
        if sized and all(_in_range(item, low, high) for item in value):
            return None
        shape = "[" + ", ".join(meta.get("names") or ("n",) * len(args)) + "]"
        return f"must be {shape}, whole numbers{_range_text(low, high)}"
    raise TypeError(f"option {name}: no check for type {hint!r}")


def _value_text(name: str, config_class: type) -> str:
    """What option ``name`` takes, as a help text writes it: choices, a range or a kind."""
    hint = option_types(config_class)[name]
    meta = next(f for f in fields(config_class) if f.name == name).metadata
    span = f"{meta.get('low')}..{meta.get('high')}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "|".join(args)
    if hint is bool:
        return "true|false"
    if hint is int:
        return span
    if origin is tuple:
        return "[" + ", ".join(meta.get("names") or ("n",) * len(args)) + f"], each {span}"
    return "TEXT"


def _default_text(value: Any) -> str:
    """A default as a setting writes it: bare strings, YAML's true/false, lists."""
    if isinstance(value, str):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def option_usage(config_class: type = ModelConfig, prefix: str = "model.") -> str:
    """Every option but the attribute names, two lines each (``prefix``NAME=VALUES with the
    default, then the help), for a command's help text."""
    lines = []
    for item in fields(config_class):
        if item.name == "attribute_names":
            continue
        values = _value_text(item.name, config_class)
        lines.append(f"  {prefix}{item.name}={values} (default {_default_text(item.default)})")
        lines.append(f"      {item.metadata.get('help', '')}")
    return "\n".join(lines)
