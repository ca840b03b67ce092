"""The benchmark scripts' command lines, as the docs give them (the scripts are not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def inference(monkeypatch) -> ModuleType:
    # Run as a script, it finds its helpers (benchmarks/common.py) beside it.
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])
    return _script("inference")


def test_inference_without_arguments_times_the_float_engines(inference):
    args = inference.parse_args([])
    assert args.engines == ["eager", "compile", "onnxruntime"]
    assert args.batches == [1, 32]


def test_inference_adds_int8_for_a_checkpoint_and_needs_its_data(inference, capsys):
    args = inference.parse_args(["--int8-checkpoint", "m.safetensors", "--calibration", "data"])
    assert args.engines == ["eager", "compile", "onnxruntime", "int8"]
    with pytest.raises(SystemExit):
        inference.parse_args(["--engines", "int8"])
    assert "the int8 engine needs --int8-checkpoint CKPT and --calibration" in (
        capsys.readouterr().err
    )
