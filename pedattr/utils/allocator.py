"""How the C allocator treats memory that inference frees, for long-running inference processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Above any buffer an inference batch allocates on the CPU, below what glibc accepts.
_KEEP_BELOW = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a forward pass frees, for the next one to reuse.

    By default glibc hands large buffers (activations, outputs) back to the system as soon as
    they are freed and takes fresh pages for the next forward pass; each fresh page costs a
    fault and zeroing, a large share of a small model's CPU time on the CPU, and more so when
    batch sizes vary, as in ``pedattr serve`` (docs/performance.md measures it). With this,
    large allocations come from the heap and the heap is not trimmed: the process keeps its
    peak memory, which an inference process reaches on its first batches anyway.

    Returns:
        True where it took effect (glibc), False elsewhere (musl, macOS, Windows), where it
        does nothing. Called again, it does nothing more.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) and mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW))
