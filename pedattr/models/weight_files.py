"""Reading a local ImageNet weight file for a backbone (``model.pretrained``), safely."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor


def read_weight_file(path: str | os.PathLike, *, wrapped: bool = False) -> dict[str, Tensor]:
    """The state dict in ``path``: a PyTorch file (read with ``weights_only=True``, so no
    pickled code runs) or a ``.safetensors`` file, holding a mapping of names to tensors.

    ``wrapped`` also accepts a training checkpoint that holds the state dict under
    ``state_dict`` or ``model`` (as timm reads them).

    Raises:
        ValueError: one line naming the file: empty, not a weight file (text, damaged, a pickle
            with code), or not a mapping of names to tensors.
    """
    name = os.fspath(path)
    if Path(path).stat().st_size == 0:
        raise ValueError(f"{name}: empty file, not a weight file")
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(name, device="cpu")
        else:
            state = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch's parsers fail in many ways on foreign files
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights_only" in detail or "Weights only" in detail:
            detail = "it holds objects other than tensors, which are not unpickled"
        else:
            detail = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
        raise ValueError(f"{name}: not a readable weight file ({detail[:200]})") from None
    if wrapped and isinstance(state, Mapping):
        state = next((state[k] for k in ("state_dict", "model") if k in state), state)
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise ValueError(
            f"{name}: expected a state dict (names to tensors), got {type(state).__name__}"
        )
    return dict(state)


def state_dict_mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> str | None:
    """One phrase for the first difference in names or shapes between two state dicts (None
    when they agree): a missing tensor, an unexpected one, or a shape."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    more = lambda keys: f" and {len(keys) - 1} more" if len(keys) > 1 else ""  # noqa: E731
    if missing:
        return f"tensor {missing[0]} is missing{more(missing)}"
    if unexpected:
        return f"tensor {unexpected[0]} is not part of the model{more(unexpected)}"
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            return f"tensor {key} has shape {list(found[key].shape)}, expected {list(tensor.shape)}"
    return None
