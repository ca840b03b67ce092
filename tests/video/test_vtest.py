"""Real footage: the first seconds of OpenCV's vtest.avi through ``pedattr track`` with HOG.

Skipped when vtest.avi is absent: set ``PEDATTR_VTEST``, put it in ``data/vtest.avi``, or
install Debian's opencv-doc (``apt-get download opencv-doc``, then ``dpkg-deb --fsys-tarfile``
to extract ``usr/share/doc/opencv-doc/examples/data/vtest.avi``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pedattr.cli import main
from tests.video.test_pipeline import count_video_frames

PLACES = (
    os.environ.get("PEDATTR_VTEST", ""),
    str(Path(__file__).resolve().parents[2] / "data" / "vtest.avi"),
    "/usr/share/doc/opencv-doc/examples/data/vtest.avi",
)
VTEST = next((Path(p) for p in PLACES if p and Path(p).is_file()), None)


@pytest.mark.slow
@pytest.mark.skipif(VTEST is None, reason="vtest.avi (Debian's opencv-doc) not found")
def test_vtest_with_hog(checkpoint, tmp_path):
    out = tmp_path / "out"
    argv = ["track", str(VTEST), "--checkpoint", str(checkpoint), "--out", str(out),
            "--end", "1.5", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 16 and summary["failed_frames"] == 0 and summary["complete"]
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert tracks and len(tracks) == summary["tracks"]  # HOG finds the walkers
    assert all((out / t["thumbnail"]).is_file() for t in tracks)
    assert count_video_frames(out / "annotated.mp4") == summary["frames"]
