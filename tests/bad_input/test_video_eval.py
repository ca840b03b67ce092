"""``pedattr track --eval`` and ``pedattr generate-video``: bad ground truth, labels or options
are one line naming the file (and line) or option, exit 2, before any frame is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedattr.cli import main
from tests.bad_input import test_video
from tests.bad_input.test_video import _refused, _track, _without

files = test_video.files  # the same fixture: a tiny checkpoint, a clip and its detections

pytest.importorskip("trackeval")

GOOD_GT = "1,1,10,10,20,40,1,1,1.0\n2,1,12,10,20,40,1,1,1.0\n"


def _gt(folder: Path, name: str, gt: str, labels: str | None = None) -> Path:
    clip = folder / name
    (clip / "gt").mkdir(parents=True, exist_ok=True)
    (clip / "gt" / "gt.txt").write_text(gt)
    if labels is not None:
        (clip / "gt" / "labels.csv").write_text(labels)
    return clip


@pytest.mark.parametrize(
    ("case", "gt", "labels", "expected"),
    [
        ("no ground truth", None, None, "no ground truth there (a gt.txt, or a folder holding"),
        ("text in gt", "1,1,10,10,20,40\n2,one,10,10,20,40\n", None, "gt.txt: line 2: expected"),
        ("zero width", "1,1,10,10,0,40\n", None, "gt.txt: line 1: needs whole frame >= 1 and id"),
        ("frame 0", "0,1,10,10,20,40\n", None, "gt.txt: line 1: needs whole frame >= 1"),
        ("twice", "1,1,10,10,20,40\n1,1,30,10,20,40\n", None, "line 2: id 1 twice in frame 1"),
        ("empty", "\n", None, "gt.txt: no pedestrian box (class 1, conf not 0)"),
        ("labels header", GOOD_GT, "name,A,B\n1,0,1\n", "labels.csv: line 1: expected the header"),
        ("labels row", GOOD_GT, "id,A,B\n1,0,yes\n", "labels.csv: line 2: expected an id and 2"),
        ("labels column", GOOD_GT, "id,A,C\n1,0,1\n", "no column for the model's attributes ['B']"),
    ],
)
def test_bad_ground_truth_is_refused_before_any_frame(
    case,
    gt,
    labels,
    expected,
    files,
    capsys,
):
    folder = files["folder"] / "gt_cases"
    clip = folder / "nowhere" if gt is None else _gt(folder, case.replace(" ", "_"), gt, labels)
    message = _refused([*_track(files), "--eval", str(clip)], capsys)
    assert message.startswith("pedattr track: error: ") and expected in message
    assert not (files["folder"] / "never").exists()


def test_one_ground_truth_per_source(files, capsys):
    clip = _gt(files["folder"] / "gt_cases", "good", GOOD_GT)
    message = _refused([*_track(files), "--eval", str(clip), str(clip)], capsys)
    assert "--eval: 2 ground truths for 1 sources; give one per source" in message


def test_missing_trackeval_is_named(files, capsys, monkeypatch):
    clip = _gt(files["folder"] / "gt_cases", "good", GOOD_GT)
    _without(monkeypatch, "trackeval")
    message = _refused([*_track(files), "--eval", str(clip)], capsys)
    assert "--eval needs TrackEval; install it with `pip install 'pedattr[video-eval]'`" in message


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--miss", "1.5"], "argument --miss: must be between 0 and 1, got 1.5"),
        (["--clips", "0"], "argument --clips"),
        (["--jitter", "2"], "--jitter 2: must be between 0 and 1"),
        (["--frames", "1"], "argument --frames"),
    ],
)
def test_generate_video_bad_options(option, expected, tmp_path, capsys):
    assert main(["generate-video", str(tmp_path / "clips"), *option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert not (tmp_path / "clips" / "clip_000").exists()


def test_generate_video_without_opencv_is_named(tmp_path, capsys, monkeypatch):
    _without(monkeypatch, "cv2")
    assert main(["generate-video", str(tmp_path / "clips")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "generating video needs OpenCV; install it with `pip install 'pedattr[video]'`" in err
    assert not (tmp_path / "clips").exists()
