"""Helpers shared by the benchmarks: saved-activation accounting, timing and the command line.

Activation memory is measured as the bytes of the distinct tensor storages that autograd saves
for backward (``torch.autograd.graph.saved_tensors_hooks``), leaving out the model's own state
(parameters, buffers) and the input, which exist whether or not a backward follows. Several
saved tensors that share one storage (views, in-place results) count once, with the full size of
that storage.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

MB = 2**20


def add_model_arguments(parser: argparse.ArgumentParser, *, backbone: bool = True) -> None:
    """The options every model benchmark shares: backbone, attributes and input size."""
    if backbone:
        parser.add_argument(
            "--backbone", default="bninception", help="backbone (default bninception)"
        )
    parser.add_argument("--num-attrs", type=int, default=51, help="attributes M (default 51)")
    parser.add_argument("--height", type=int, default=256, help="image height (default 256)")
    parser.add_argument("--width", type=int, default=128, help="image width (default 128)")


def command_line() -> str:
    """The command that is running, as one shell-quoted string."""
    return shlex.join([sys.executable, *sys.argv])


def module_state(module: nn.Module) -> list[Tensor]:
    """Parameters and buffers of ``module``: tensors that are not activations."""
    return [*module.parameters(), *module.buffers()]


def _storage_key(tensor: Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class SavedTensors:
    """Context manager that records the storages autograd saves for backward inside it.

    Example:
        >>> with SavedTensors(exclude=[*module_state(model), x]) as saved:
        ...     loss = model(x).sum()
        >>> loss.backward()
        >>> saved.nbytes  # activation bytes kept for the backward

    Args:
        exclude: tensors whose storages are not counted (parameters, buffers, the input).
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self.excluded = {_storage_key(t) for t in exclude}
        self.storages: dict[int, int] = {}  # storage data_ptr -> nbytes
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.excluded:
            self.storages[key] = storage.nbytes()
        return tensor

    @staticmethod
    def _unpack(tensor: Tensor) -> Tensor:
        return tensor

    def __enter__(self) -> SavedTensors:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc_info)
        self._hooks = None

    @property
    def nbytes(self) -> int:
        """Bytes of the distinct saved storages recorded so far."""
        return sum(self.storages.values())


@dataclass(frozen=True)
class SavedRecord:
    """One distinct saved storage, attributed to the first backward node found to hold it."""

    nbytes: int
    node: str  # grad_fn class name of the op that saved it, e.g. "ConvolutionBackward0"
    attribute: str  # the node's attribute holding it, e.g. "_saved_input"
    shape: tuple[int, ...]
    dtype: str
    holders: int  # how many (node, attribute) pairs keep this storage


def _saved_attributes(node: object) -> Iterable[tuple[str, Tensor]]:
    names = [n for n in dir(node) if n.startswith("_saved_")]
    if hasattr(node, "saved_tensors"):  # custom autograd.Function nodes
        names.append("saved_tensors")
    for name in names:
        try:
            value = getattr(node, name)
        except RuntimeError:  # already freed by a backward
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        for i, item in enumerate(values):
            if isinstance(item, Tensor):
                yield (name if len(values) == 1 else f"{name}[{i}]"), item


def saved_tensor_breakdown(root: Tensor, exclude: Iterable[Tensor] = ()) -> list[SavedRecord]:
    """The distinct storages the graph behind ``root`` keeps for backward, largest first.

    Walks ``root.grad_fn`` and every node reachable from it, reading the tensors each node saved,
    so that every storage is named by the op (grad_fn) that saved it. Call it after the forward
    and before the backward; storages of ``exclude`` are left out, as in :class:`SavedTensors`.
    """
    excluded = {_storage_key(t) for t in exclude}
    found: dict[int, SavedRecord] = {}
    seen: set[int] = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(next_node for next_node, _ in node.next_functions)
        for attribute, tensor in _saved_attributes(node):
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in excluded:
                continue
            if key in found:
                record = found[key]
                found[key] = SavedRecord(
                    record.nbytes,
                    record.node,
                    record.attribute,
                    record.shape,
                    record.dtype,
                    record.holders + 1,
                )
            else:
                found[key] = SavedRecord(
                    storage.nbytes(),
                    type(node).__name__,
                    attribute,
                    tuple(tensor.shape),
                    str(tensor.dtype).removeprefix("torch."),
                    1,
                )
    return sorted(found.values(), key=lambda r: r.nbytes, reverse=True)


def summarize_by_node(records: Iterable[SavedRecord]) -> list[tuple[str, int, int]]:
    """(grad_fn name, storages, bytes) per saving op, largest total first."""
    totals: dict[str, list[int]] = {}
    for record in records:
        entry = totals.setdefault(record.node, [0, 0])
        entry[0] += 1
        entry[1] += record.nbytes
    return sorted(((k, n, b) for k, (n, b) in totals.items()), key=lambda t: t[2], reverse=True)


def time_call(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``."""
    return statistics.median(time_call(fn) for _ in range(repeats))


def interleaved_seconds(
    fns: Mapping[str, Callable[[], object]], repeats: Mapping[str, int]
) -> dict[str, list[float]]:
    """Seconds of every call of each function, timing them round-robin, not one after another.

    Round r calls, in order, every function that has not had its ``repeats[name]`` calls yet, so
    a slow phase of a busy machine falls on all of them alike instead of on one.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(max(repeats[name] for name in fns)):
        for name, fn in fns.items():
            if round_index < repeats[name]:
                times[name].append(time_call(fn))
    return times


def interleaved_median_seconds(
    fns: Mapping[str, Callable[[], object]], repeats: Mapping[str, int]
) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (:func:`interleaved_seconds`)."""
    times = interleaved_seconds(fns, repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def load_average() -> float | None:
    """The one-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
