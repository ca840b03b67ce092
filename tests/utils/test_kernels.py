"""keep_kernels_for_batch_sizes: oneDNN keeps the compiled kernels of every batch size."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pedattr.utils.kernels import (
    CAPACITY_VARIABLE,
    OLD_CAPACITY_VARIABLE,
    keep_kernels_for_batch_sizes,
)

# Thirty convolutions of different widths (oneDNN shares a kernel between layers of one shape)
# run at 40 batch sizes, twice: more kernels than oneDNN keeps by default.
# Prints, for the second pass, how many kernels oneDNN found in its cache and how many it had
# to compile again (its verbose log, level 2, reports both).
PROBE = """
import sys
import torch
from pedattr.utils.kernels import keep_kernels_for_batch_sizes

SIZES = range(2, 42)
if sys.argv[1] == "keep":
    keep_kernels_for_batch_sizes(max(SIZES))
torch.set_num_threads(1)
widths = range(8, 39)
layers = torch.nn.Sequential(
    *[torch.nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:])]
).eval()
with torch.inference_mode():
    for second in (False, True):
        if second:
            print("SECOND PASS", flush=True)
        for size in SIZES:
            layers(torch.zeros(size, 8, 6, 6))
"""


def _second_pass(mode: str) -> tuple[int, int]:
    """(kernels found in the cache, kernels compiled again) in the probe's second pass."""
    env = {**os.environ, "ONEDNN_VERBOSE": "2"}
    env.pop(CAPACITY_VARIABLE, None)
    env.pop(OLD_CAPACITY_VARIABLE, None)
    answer = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    )
    second = answer.stdout.split("SECOND PASS", 1)[1]
    return second.count("create:cache_hit"), second.count("create:cache_miss")


def test_the_kernels_of_every_batch_size_stay_compiled_only_when_asked():
    hits, misses = _second_pass("keep")
    if hits + misses == 0:
        pytest.skip("PyTorch does not run these convolutions through oneDNN on this CPU")
    assert misses == 0, f"{misses} kernels compiled again, {hits} found"
    _, misses_by_default = _second_pass("default")
    assert misses_by_default > 0  # the probe needs more kernels than oneDNN keeps by default


def test_the_capacity_grows_with_the_batch_size_and_a_users_setting_stays(monkeypatch):
    monkeypatch.delenv(CAPACITY_VARIABLE, raising=False)
    monkeypatch.delenv(OLD_CAPACITY_VARIABLE, raising=False)
    assert keep_kernels_for_batch_sizes(32) == "4096"
    assert os.environ[CAPACITY_VARIABLE] == "4096"
    monkeypatch.delenv(CAPACITY_VARIABLE)
    assert keep_kernels_for_batch_sizes(1) == "1024"  # never below oneDNN's own default
    monkeypatch.setenv(CAPACITY_VARIABLE, "300")
    assert keep_kernels_for_batch_sizes(32) == "300"
    # Not a number: PyTorch runs with it, so the service must start with it too.
    monkeypatch.setenv(CAPACITY_VARIABLE, "lots")
    assert keep_kernels_for_batch_sizes(32) == "lots"
    assert os.environ[CAPACITY_VARIABLE] == "lots"
    monkeypatch.delenv(CAPACITY_VARIABLE)
    monkeypatch.setenv(OLD_CAPACITY_VARIABLE, "0")  # the older name, read when the new is unset
    assert keep_kernels_for_batch_sizes(32) == "0"
    assert CAPACITY_VARIABLE not in os.environ
