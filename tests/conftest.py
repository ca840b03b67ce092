"""Fixtures shared by test modules in every folder (the helpers they build on: tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_prepared_dataset


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
