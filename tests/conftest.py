"""Fixtures shared by test modules in every folder (the helpers they build on: tests/helpers.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import make_prepared_dataset, save_tiny_checkpoint, start_server, stop_server


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset of learnable images (48 train, 16 val, 16 test), one per module,
    since some modules' tests write beside it."""
    return make_prepared_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub in offline mode (as with HF_HUB_OFFLINE=1) with an empty cache folder,
    returned; nothing can be fetched."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@dataclass
class Served:
    """A running ``pedattr serve`` of a tiny checkpoint, shared by the serving tests."""

    url: str
    process: subprocess.Popen
    checkpoint: Path
    #: The limits it was started with (small, so that refusals are cheap to provoke).
    max_request_size: int
    max_images: int
    max_pixels: int


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for every serving test: starting one takes seconds (processes importing
    torch)."""
    pytest.importorskip("litserve")
    checkpoint = save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "model.safetensors")
    limits = {"max_request_size": 2**20, "max_images": 8, "max_pixels": 1_000_000}
    options = ["--max-batch-size", "8", "--batch-timeout", "0.05"]
    for key, value in limits.items():
        options += [f"--{key.replace('_', '-')}", str(value)]
    process, url = start_server(checkpoint, *options)
    try:
        yield Served(url, process, checkpoint, **limits)
    finally:
        status = stop_server(process)
    # SIGTERM is how a service is stopped: gracefully, every process with it, no traceback.
    assert status == 0
    assert "Traceback" not in checkpoint.with_name(f"serve-{url.rsplit(':', 1)[1]}.log").read_text()
