from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pedattr
from tests.helpers import TINY_MODEL

pytest.importorskip("cv2")
pytest.importorskip("trackers")

NAMES = ["Hat", "Backpack", "Skirt", "Reddish"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = pedattr.build_model("alm", attribute_names=NAMES, **TINY_MODEL).eval()
    path = tmp_path_factory.mktemp("video_ckpt") / "model.safetensors"
    pedattr.save_checkpoint(path, model)
    return path
