"""keep_freed_memory: freed buffers stay with the process instead of going back to the system."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocate 64 MB, touch it, free it, and print how much of it the process still holds.
PROBE = """
import sys
import numpy as np
import psutil
from pedattr.utils.allocator import keep_freed_memory

kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = psutil.Process().memory_info().rss
buffer = np.ones(8 * 2**20)  # 64 MB, every page written
del buffer
print(kept, (psutil.Process().memory_info().rss - before) / 2**20)
"""


def _held_after_free(mode: str) -> tuple[str, float]:
    answer = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    kept, megabytes = answer.stdout.split()
    return kept, float(megabytes)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_buffers_stay_with_the_process_only_when_asked():
    kept, held = _held_after_free("keep")
    assert kept == "True"
    assert held > 48, f"{held:.1f} MB of the freed 64 MB held"
    _, held_by_default = _held_after_free("default")
    assert held_by_default < 16, f"{held_by_default:.1f} MB held by default"
