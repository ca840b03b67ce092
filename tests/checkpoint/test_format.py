"""The checkpoint format: round trip, refusals, permissions, NaN as null."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import pedattr
from pedattr.checkpoint.format import CheckpointError, load_checkpoint
from pedattr.models.model import ModelConfig

TINY = dict(backbone="timm:resnet18", input_size=(64, 32), pyramid_dim=32)


@pytest.mark.slow
def test_checkpoint_round_trip(tmp_path):
    model = pedattr.build_model(
        "alm",
        attribute_names=["Hat", "Backpack"],
        normalization="caffe",
        fusion="mean",
        box_centre="evidence",
        **TINY,
    ).eval()
    path = tmp_path / "model.safetensors"
    pedattr.save_checkpoint(path, model, thresholds=[0.4, 0.6], metrics={"mA": 0.9})
    loaded = pedattr.load_model(path)
    assert loaded.config == model.config
    assert loaded.thresholds == [0.4, 0.6]
    assert not loaded.training
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
        torch.testing.assert_close(loaded(x).boxes, model(x).boxes)
    assert load_checkpoint(path).metrics == {"mA": 0.9}
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_checkpoint_refuses_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    pickled = tmp_path / "model.pth.tar"
    torch.save({"state_dict": {}}, pickled)
    with pytest.raises(CheckpointError, match="pedattr convert"):
        load_checkpoint(pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="without pedattr metadata"):
        load_checkpoint(plain)


def test_checkpoint_from_a_newer_format_is_refused(tmp_path):
    config = ModelConfig(attribute_names=("a",))
    meta = {"format": "pedattr-checkpoint", "format_version": 99, "model": config.to_dict()}
    path = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(1)}, path, metadata={"pedattr": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


@pytest.mark.slow
def test_checkpoint_with_mismatched_weights_is_refused(tmp_path):
    model = pedattr.build_model("baseline", num_attrs=2, **TINY)
    path = tmp_path / "m.safetensors"
    pedattr.save_checkpoint(path, model)
    other = pedattr.build_model("alm", num_attrs=2, **TINY)
    from pedattr.checkpoint.format import Checkpoint, write_checkpoint

    write_checkpoint(path, Checkpoint(state_dict=model.state_dict(), config=other.config))
    with pytest.raises(CheckpointError, match="do not match"):
        pedattr.load_model(path)


def test_checkpoint_is_readable_by_others_and_stores_nan_as_null(tmp_path):
    import os

    model = pedattr.build_model("baseline", num_attrs=2, **TINY)
    path = tmp_path / "m.safetensors"
    pedattr.save_checkpoint(path, model, metrics={"mA": float("nan"), "f1": 0.5})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert load_checkpoint(path).metrics == {"mA": None, "f1": 0.5}
