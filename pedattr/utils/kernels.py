"""How many compiled CPU kernels an inference process keeps, for batch sizes that vary."""

from __future__ import annotations

import os

#: oneDNN reads its kernel cache's capacity from this variable once, when the process compiles
#: its first kernel (the first convolution on the CPU, which loading a checkpoint may run).
CAPACITY_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
#: The older name oneDNN still reads when the first is not set.
OLD_CAPACITY_VARIABLE = "DNNL_PRIMITIVE_CACHE_CAPACITY"
#: oneDNN's capacity when the variable is not set.
ONEDNN_DEFAULT_CAPACITY = 1024
#: Kernels kept per batch size: well above what BN-Inception's ALM compiles for a new batch
#: size (docs/serve.md counts them).
KERNELS_PER_BATCH_SIZE = 128


def keep_kernels_for_batch_sizes(max_batch_size: int) -> str:
    """Let oneDNN keep the kernels of every batch size from 1 to ``max_batch_size``.

    PyTorch runs convolutions on the CPU through oneDNN, which compiles a kernel for each
    layer and input shape and keeps at most 1,024 of them. A service whose batches take many
    sizes needs more: with fewer, each batch evicts kernels that the next one compiles again,
    a large share of the forward pass's time (docs/serve.md). Call it before the process runs
    its first convolution; a capacity the user set in the environment (under either of
    oneDNN's names) is kept.

    Returns:
        The setting oneDNN will read, as the environment holds it. A user's value is passed on
        unread: oneDNN and PyTorch run with one that is not a number, and so must the caller.
    """
    for name in (CAPACITY_VARIABLE, OLD_CAPACITY_VARIABLE):
        if name in os.environ:
            return os.environ[name]
    wanted = max(ONEDNN_DEFAULT_CAPACITY, KERNELS_PER_BATCH_SIZE * max_batch_size)
    os.environ[CAPACITY_VARIABLE] = str(wanted)
    return os.environ[CAPACITY_VARIABLE]
