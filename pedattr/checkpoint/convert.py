"""Convert the ALM checkpoints released by the paper's authors into pedattr checkpoints.

The authors published their trained PETA / RAP / PA-100K models as ``*.pth.tar`` files: a
pickled dict ``{"epoch": int, "state_dict": OrderedDict, "best_accu": float}`` whose keys carry
the ``module.`` prefix of ``nn.DataParallel``. Their module names map onto ours as follows
(M attributes, levels 3b / 4d / 5b = pyramid index 0 / 1 / 2):

===========================================  ===============================================
authors' key                                 pedattr key
===========================================  ===============================================
``main_branch.<BN-Inception name>``          ``backbone.<same name>``
``finalfc.{weight,bias}``                    ``global_fc.{weight,bias}``
``latlayer_<lvl>.{weight,bias}``             ``pyramid.laterals.<k>.{weight,bias}``
``st_<lvl>.att_list.<i>.conv1.weight``       ``alms.<k>.se_reduce_weight[i]`` (1x1 squeezed)
``st_<lvl>.att_list.<i>.conv1.bias``         ``alms.<k>.se_reduce_bias[i]``
``st_<lvl>.att_list.<i>.conv2.weight``       ``alms.<k>.se_expand_weight[i]`` (1x1 squeezed)
``st_<lvl>.att_list.<i>.conv2.bias``         ``alms.<k>.se_expand_bias[i]``
``st_<lvl>.stn_list.<i>.{weight,bias}``      ``alms.<k>.box_{weight,bias}[i]``
``st_<lvl>.fc_list.<i>.weight`` [1, C]       ``alms.<k>.cls_weight[i]`` [C]
``st_<lvl>.fc_list.<i>.bias`` [1]            ``alms.<k>.cls_bias[i]``
===========================================  ===============================================

The file is read with ``torch.load(weights_only=True)``: only tensors, plain containers and the
numpy scalars the authors stored as ``best_accu`` are rebuilt, so no pickled code can run.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pedattr.checkpoint.format import Checkpoint, write_checkpoint
from pedattr.models.bninception import TAPS
from pedattr.models.model import ModelConfig, build_from_config

__all__ = [
    "AUTHORS_ATTRIBUTES",
    "DATASET_TITLES",
    "PA100K_ATTRIBUTES",
    "authors_state_dict_to_pedattr",
    "convert_authors_checkpoint",
]

# PA-100K's 26 attributes in annotation.mat order.
PA100K_ATTRIBUTES: tuple[str, ...] = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses",
    "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve",
    "UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern",
    "LongCoat", "Trousers", "Shorts", "Skirt&Dress", "boots",
)  # fmt: skip

# PETA's 35 evaluated attributes in the authors' output order: their label lists (and the
# ``description['peta']`` list of their utils/datasets.py) sort the names alphabetically, which is
# not the column order of PETA.mat, and spell them their own way.
PETA_ATTRIBUTES: tuple[str, ...] = (
    "Age16-30", "Age31-45", "Age46-60", "AgeAbove61", "Backpack", "CarryingOther",
    "Casual lower", "Casual upper", "Formal lower", "Formal upper", "Hat", "Jacket", "Jeans",
    "Leather Shoes", "Logo", "Long hair", "Male", "Messenger Bag", "Muffler", "No accessory",
    "No carrying", "Plaid", "PlasticBags", "Sandals", "Shoes", "Shorts", "Short Sleeve", "Skirt",
    "Sneaker", "Stripes", "Sunglasses", "Trousers", "Tshirt", "UpperOther", "V-Neck",
)  # fmt: skip

# RAP v1's 51 evaluated attributes (the first 51 columns) as the authors name them, typing slips
# ("OtherAttchment", "Pusing") included, so that their lists and ours compare equal.
RAP_ATTRIBUTES: tuple[str, ...] = (
    "Female", "AgeLess16", "Age17-30", "Age31-45", "BodyFat", "BodyNormal", "BodyThin",
    "Customer", "Clerk", "BaldHead", "LongHair", "BlackHair", "Hat", "Glasses", "Muffler",
    "Shirt", "Sweater", "Vest", "TShirt", "Cotton", "Jacket", "Suit-Up", "Tight", "ShortSleeve",
    "LongTrousers", "Skirt", "ShortSkirt", "Dress", "Jeans", "TightTrousers", "LeatherShoes",
    "SportShoes", "Boots", "ClothShoes", "CasualShoes", "Backpack", "SSBag", "HandBag", "Box",
    "PlasticBag", "PaperBag", "HandTrunk", "OtherAttchment", "Calling", "Talking", "Gathering",
    "Holding", "Pusing", "Pulling", "CarryingbyArm", "CarryingbyHand",
)  # fmt: skip

#: The attribute names of each dataset the authors trained on, in their models' output order
#: (``pedattr convert --dataset``).
AUTHORS_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "peta": PETA_ATTRIBUTES,
    "rap": RAP_ATTRIBUTES,
    "pa100k": PA100K_ATTRIBUTES,
}
#: How each dataset is written in prose.
DATASET_TITLES = {"peta": "PETA", "rap": "RAP", "pa100k": "PA-100K"}

# The authors' pyramid levels (BN-Inception's tapped blocks), in the order of our
# ``pyramid.laterals`` and ``alms``.
LEVELS = TAPS

# Our stacked ALM parameter -> (the authors' per-attribute key under ``st_<lvl>.``, the shape of
# that tensor given the shape of attribute i's slice of ours).
_ALM_PARAMS: dict[str, tuple[str, Callable[[tuple[int, ...]], tuple[int, ...]]]] = {
    "se_reduce_weight": ("att_list.{i}.conv1.weight", lambda s: (*s, 1, 1)),
    "se_reduce_bias": ("att_list.{i}.conv1.bias", lambda s: s),
    "se_expand_weight": ("att_list.{i}.conv2.weight", lambda s: (*s, 1, 1)),
    "se_expand_bias": ("att_list.{i}.conv2.bias", lambda s: s),
    "box_weight": ("stn_list.{i}.weight", lambda s: s),
    "box_bias": ("stn_list.{i}.bias", lambda s: s),
    "cls_weight": ("fc_list.{i}.weight", lambda s: (1, *s)),
    "cls_bias": ("fc_list.{i}.bias", lambda s: (1, *s)),
}

# Everything a numpy float64 scalar (``best_accu``) pickles to, and nothing more. Files written
# with numpy 1.x name the scalar constructor ``numpy.core.multiarray.scalar``; numpy 2.x moved it
# to ``numpy._core`` and keeps the old name as an alias, so both names map to the same function.
_SCALAR = np._core.multiarray.scalar
_NUMPY_SAFE_GLOBALS: list = [
    _SCALAR,
    (_SCALAR, "numpy.core.multiarray.scalar"),
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    np.dtypes.Int64DType,
]

_MAX_LISTED = 5


def convert_authors_checkpoint(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    attribute_names: Sequence[str] | None = None,
    dataset: str | None = None,
    modern_sampling: bool = False,
    extra: Mapping | None = None,
) -> Checkpoint:
    """Convert one of the authors' released ALM checkpoints and write it as a pedattr checkpoint.

    The converted model behaves as the authors' model did in training: ImageNet RGB
    normalisation, bilinear top-down upsampling, average-pooled box regression and border
    padding, and the align_corners=True sampling grid of their PyTorch <= 1.2. With it our model
    reproduces their logits; ``modern_sampling`` switches to today's align_corners=False instead.

    Args:
        source: the authors' ``*.pth.tar`` (a dict with ``state_dict``) or a bare state dict;
            keys may or may not carry the ``module.`` prefix.
        out: pedattr checkpoint to write (``.safetensors``).
        attribute_names: names in output order. When omitted, a 26-attribute model gets the
            PA-100K names (:data:`PA100K_ATTRIBUTES`, the only released model with 26 outputs)
            and any other model ``attr_00``, ``attr_01``, ...
        dataset: ``"peta"``, ``"rap"`` or ``"pa100k"``: the names of that dataset in the
            authors' order (:data:`AUTHORS_ATTRIBUTES`), recorded as ``extra["dataset"]``;
            not together with ``attribute_names``.
        modern_sampling: sample with align_corners=False (the PyTorch default since 1.3).
        extra: more entries for the checkpoint's ``extra`` document.

    Returns:
        The checkpoint as written.

    Raises:
        ValueError: the file would need arbitrary unpickling, is not a checkpoint, misses keys,
            has tensors of the wrong shape, or the number of names does not match; the message
            names the file.
        FileNotFoundError: ``source`` does not exist.
    """
    if dataset is not None:
        if attribute_names is not None:
            raise ValueError("give the attribute names or the dataset, not both")
        if dataset not in AUTHORS_ATTRIBUTES:
            raise ValueError(
                f"dataset must be one of {', '.join(AUTHORS_ATTRIBUTES)}, got {dataset!r}"
            )
        attribute_names = AUTHORS_ATTRIBUTES[dataset]
    loaded = _load_authors_file(source)
    state_dict, info = _split_checkpoint(loaded, os.fspath(source))
    try:
        converted = authors_state_dict_to_pedattr(state_dict)
    except ValueError as err:
        raise ValueError(f"{os.fspath(source)}: {err}") from err
    num_attrs = converted["global_fc.weight"].shape[0]
    names = _attribute_names(attribute_names, num_attrs, source, dataset)
    config = ModelConfig(
        arch="alm",
        backbone="bninception",
        attribute_names=tuple(names),
        normalization="imagenet",
        upsample="bilinear",
        box_pooling="avg",
        padding_mode="border",
        align_corners=not modern_sampling,
    )
    # Only the file's name: a full path would leak the converting machine's layout.
    recorded = {"converted_from": Path(source).name, "source_format": "authors-alm", **info}
    if dataset is not None:
        recorded["dataset"] = dataset
    recorded.update(extra or {})
    checkpoint = Checkpoint(state_dict=converted, config=config, extra=recorded)
    write_checkpoint(out, checkpoint)
    return checkpoint


def authors_state_dict_to_pedattr(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename and reshape the authors' ALM weights into an :class:`~pedattr.models.ALMNet` state.

    Per-attribute tensors are stacked in attribute index order; 1x1 conv weights lose their
    trailing [1, 1]. The number of attributes M is read from ``finalfc.weight``. BatchNorm
    ``num_batches_tracked`` counters are kept, or created as zeros, so that the result loads
    strictly. A ``main_branch.last_linear`` (ImageNet classifier) is dropped, as the attribute
    model has none.

    Args:
        state_dict: the authors' state dict, with or without the ``module.`` prefix.

    Returns:
        A state dict with exactly the keys and shapes of a BN-Inception ALMNet with M attributes.

    Raises:
        ValueError: keys are missing, unexpected or of the wrong shape; the message lists the
            first offending keys under the authors' names.
    """
    source = {_strip_module(key): value for key, value in state_dict.items()}
    if "finalfc.weight" not in source:
        raise ValueError("no 'finalfc.weight': not an ALM state dict from the authors' code")
    final = source["finalfc.weight"]
    if final.dim() != 2 or final.shape[0] < 1:  # M is read from it, so check it first
        raise ValueError(
            f"'finalfc.weight' has shape {list(final.shape)}, expected a matrix "
            "[attributes, channels]"
        )
    num_attrs = final.shape[0]
    expected = _expected_state(num_attrs)
    converted: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    wrong_shape: list[str] = []

    def take(key: str, shape: tuple[int, ...]) -> Tensor | None:
        """The source tensor at ``key`` if present with ``shape``; records problems otherwise."""
        if key not in source:
            missing.append(key)
            return None
        used.add(key)
        if tuple(source[key].shape) != shape:
            wrong_shape.append(f"{key} {tuple(source[key].shape)}, expected {shape}")
            return None
        return source[key]

    for target, reference in expected.items():
        level, param = _alm_target(target)
        if level is not None:
            stacked = _stack_attributes(take, level, param, tuple(reference.shape))
            if stacked is not None:
                converted[target] = stacked.to(reference.dtype)
        elif target.endswith("num_batches_tracked") and _source_key(target) not in source:
            # Their BN counters only matter for momentum=None; zeros keep strict loading happy.
            converted[target] = torch.zeros((), dtype=torch.long)
        else:
            tensor = take(_source_key(target), tuple(reference.shape))
            if tensor is not None:
                converted[target] = tensor.detach().to(reference.dtype).clone()

    unexpected = sorted(
        key for key in source if key not in used and not key.startswith("main_branch.last_linear.")
    )
    _raise_on_problems(missing, wrong_shape, unexpected, num_attrs)
    return converted


def _load_authors_file(path: str | os.PathLike) -> object:
    """``torch.load`` with weights only, allowing the numpy scalar globals and nothing else."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{os.fspath(path)}: no such file")
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        if "Weights only load failed" not in message:
            raise ValueError(f"{os.fspath(path)}: not a readable PyTorch file ({err})") from err
        found = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", message)
        what = next((g for g in found.groups() if g), "an object") if found else "an object"
        raise ValueError(
            f"{os.fspath(path)}: the file contains {what}, which is not a tensor, a plain "
            "container or a numpy scalar; it will not be unpickled, because unpickling "
            "arbitrary objects can run code. Re-save only its state_dict if you trust it."
        ) from None  # torch's own text suggests weights_only=False, which is what we refuse
    except Exception as err:
        # A damaged or foreign file can fail anywhere in torch's parsers (RuntimeError, EOFError,
        # KeyError from a bad memo, ...); all of them mean the same thing to the user.
        detail = f"{type(err).__name__}: {err}"
        raise ValueError(f"{os.fspath(path)}: not a readable PyTorch file ({detail})") from err


def _split_checkpoint(loaded: object, label: str) -> tuple[Mapping[str, Tensor], dict]:
    """The state dict and the recordable training info (epoch, best_accu) of a loaded file."""
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{label}: expected a dict, found {type(loaded).__name__}")
    if "state_dict" in loaded:
        state_dict = loaded["state_dict"]
        info = {k: _json_number(loaded[k]) for k in ("epoch", "best_accu") if k in loaded}
        info = {k: v for k, v in info.items() if v is not None}
    else:
        state_dict, info = loaded, {}
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, Tensor) for v in state_dict.values()
    ):
        raise ValueError(f"{label}: 'state_dict' is not a mapping of names to tensors")
    return state_dict, info


def _json_number(value: object) -> int | float | None:
    """A plain JSON number from a Python, numpy or 0-d tensor number; None for anything else."""
    if isinstance(value, Tensor | np.generic) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN / inf are not JSON
    return value


def _attribute_names(
    names: Sequence[str] | None, num_attrs: int, source: str | os.PathLike, dataset: str | None
) -> list[str]:
    if names is None:
        if num_attrs == len(PA100K_ATTRIBUTES):
            return list(PA100K_ATTRIBUTES)
        return [f"attr_{i:02d}" for i in range(num_attrs)]
    if len(names) != num_attrs and dataset is not None:
        raise ValueError(
            f"{os.fspath(source)} has {num_attrs} attributes but {DATASET_TITLES[dataset]} has "
            f"{len(names)}: not the authors' {DATASET_TITLES[dataset]} model"
        )
    if len(names) != num_attrs:
        raise ValueError(
            f"{os.fspath(source)} has {num_attrs} attributes but {len(names)} attribute names "
            "were given"
        )
    return list(names)


def _strip_module(key: str) -> str:
    # nn.DataParallel prefixes every key with "module."; bare models do not.
    return key[len("module.") :] if key.startswith("module.") else key


def _expected_state(num_attrs: int) -> dict[str, Tensor]:
    """Keys, shapes and dtypes of the target model, built on the meta device (no memory)."""
    config = ModelConfig(attribute_names=tuple(f"attr_{i:02d}" for i in range(num_attrs)))
    with torch.device("meta"):
        return build_from_config(config).state_dict()


def _alm_target(target: str) -> tuple[int | None, str]:
    """(level index, parameter name) for ``alms.<k>.<param>``; (None, "") for other keys."""
    match = re.fullmatch(r"alms\.(\d+)\.(\w+)", target)
    return (int(match.group(1)), match.group(2)) if match else (None, "")


def _source_key(target: str) -> str:
    """The authors' name of a non-ALM target key."""
    if target.startswith("backbone."):
        return "main_branch." + target[len("backbone.") :]
    if target.startswith("global_fc."):
        return "finalfc." + target[len("global_fc.") :]
    match = re.fullmatch(r"pyramid\.laterals\.(\d+)\.(\w+)", target)
    if match:
        return f"latlayer_{LEVELS[int(match.group(1))]}.{match.group(2)}"
    raise ValueError(f"no authors' counterpart for {target}")  # our model grew a new part


def _stack_attributes(
    take: Callable[[str, tuple[int, ...]], Tensor | None],
    level: int,
    param: str,
    stacked_shape: tuple[int, ...],
) -> Tensor | None:
    """Stack attribute 0..M-1's tensors of one ALM parameter; None if any is missing or wrong."""
    pattern, source_shape = _ALM_PARAMS[param]
    num_attrs, slice_shape = stacked_shape[0], stacked_shape[1:]
    prefix = f"st_{LEVELS[level]}."
    parts = [
        take(prefix + pattern.format(i=i), source_shape(slice_shape)) for i in range(num_attrs)
    ]
    if any(part is None for part in parts):
        return None
    return torch.stack([part.detach().reshape(slice_shape) for part in parts])


def _raise_on_problems(
    missing: list[str], wrong_shape: list[str], unexpected: list[str], num_attrs: int
) -> None:
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:_MAX_LISTED])}"
        + (", ..." if len(keys) > _MAX_LISTED else "")
        for label, keys in (
            ("missing keys", missing),
            ("wrong shapes", wrong_shape),
            ("unexpected keys", unexpected),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"not the authors' BN-Inception ALM with {num_attrs} attributes (from finalfc): "
            + "; ".join(problems)
        )
