"""train's report.json, eval --json and predict --json as they were before the reorganisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden.produce import FILES, GOLDEN, load_lines, produce
from tests.helpers import assert_json_close


@pytest.mark.slow
def test_outputs_match_the_files_written_before(tmp_path: Path) -> None:
    produced = produce(tmp_path)
    for name in FILES:
        expected = load_lines((GOLDEN / name).read_text())
        # The thread count and the CPU's float kernels (AVX2 or AVX-512) reorder float32 sums,
        # which moves a box coordinate by up to some 2e-4 pixels; a change of behaviour moves it
        # by far more.
        assert_json_close(load_lines(produced[name]), expected, rel=1e-4, abs_=1e-3, where=name)
