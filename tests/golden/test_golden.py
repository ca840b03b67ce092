"""train's report.json, eval --json and predict --json as they were before the reorganisation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.golden.produce import FILES, GOLDEN, load_lines, produce


def assert_same(found: Any, expected: Any, where: str = "") -> None:
    """Equal structure and values; floats within 1e-4 relative or absolute: the thread count
    reorders float32 sums, which moves a box coordinate by some 1e-5 pixels, while a change of
    behaviour moves it by far more."""
    if isinstance(expected, float) and isinstance(found, float):
        assert math.isclose(found, expected, rel_tol=1e-4, abs_tol=1e-4), where
        return
    assert type(found) is type(expected), f"{where}: {type(found)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(found) == list(expected), where
        for key in expected:
            assert_same(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(found) == len(expected), where
        for index, (a, b) in enumerate(zip(found, expected, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    else:
        assert found == expected, where


@pytest.mark.slow
def test_outputs_match_the_files_written_before(tmp_path: Path) -> None:
    produced = produce(tmp_path)
    for name in FILES:
        expected = load_lines((GOLDEN / name).read_text())
        assert_same(load_lines(produced[name]), expected, name)
