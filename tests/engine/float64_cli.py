"""``python -m tests.engine.float64_cli ARGS``: the ``pedattr`` command line with float64 as torch's
default dtype, so that the model is built (and trained) in float64.

Tests start it under torchrun to compare a multi-process run with a single-process one beyond
float32's rounding (see tests/test_distributed_training.py).
"""

from __future__ import annotations

import sys

import torch

from pedattr.cli import main

if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    sys.exit(main(sys.argv[1:]))
