"""Which torch device a command runs on, from its ``--device`` option."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (this process's GPU when CUDA is available, else the CPU), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: an unknown device name, or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but there are {torch.cuda.device_count()} GPU(s)"
            )
    return device
