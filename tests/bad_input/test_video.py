"""``pedattr track``: a bad source, detector, tracker or checkpoint is one line naming it, exit 2,
before any frame is read (the output folder is not even created)."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

import pedattr
from pedattr.cli import main
from tests.helpers import TINY_MODEL

pytest.importorskip("cv2")
pytest.importorskip("trackers")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from tests.video.clips import write_clip, write_detections

    folder = tmp_path_factory.mktemp("bad_video")
    torch.manual_seed(0)
    model = pedattr.build_model("alm", attribute_names=["A", "B"], **TINY_MODEL).eval()
    pedattr.save_checkpoint(folder / "model.safetensors", model)
    (folder / "notes.txt").write_text("hello\n")
    (folder / "broken.avi").write_bytes(b"\x00" * 256)
    (folder / "empty_folder").mkdir()
    bad_dets = folder / "bad_det.txt"
    bad_dets.write_text("1,-1,10,10,20,40,0.9\n2,-1,ten,10,20,40,0.9\n")
    return {
        "ckpt": folder / "model.safetensors",
        "video": write_clip(folder / "clip.avi", 4),
        "dets": write_detections(folder / "det.txt", 4),
        "bad_dets": bad_dets,
        "folder": folder,
    }


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    return captured.err.rstrip("\n")


def _track(files, *extra: str, source: str | None = None, ckpt: str | None = None) -> list[str]:
    out = files["folder"] / "never"
    return [
        "track", source or str(files["video"]), "--checkpoint", ckpt or str(files["ckpt"]),
        "--out", str(out), "--detector", f"file:{files['dets']}", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing source", "missing.avi: no such file or folder"),
        ("text source", "notes.txt: not a video (extension .txt)"),
        ("broken video", "broken.avi: OpenCV cannot open it as a video, webcam or stream"),
        ("empty folder", "empty_folder: a folder without frame images"),
        ("missing checkpoint", "nope.safetensors: no such checkpoint file"),
        ("checkpoint not one", "notes.txt: not a readable safetensors file"),
        ("uncalibrated checkpoint", "model.safetensors: the checkpoint stores no calibrated"),
        ("unknown detector", "--detector yolo: unknown detector; use hog, file:DETS"),
        ("missing det file", "missing_det.txt: no such detections file"),
        ("bad det line", "bad_det.txt: line 2: expected frame,id,x,y,w,h,score"),
        ("torchvision without weights", "needs --detector-weights FILE"),
        ("unknown torchvision model", "torchvision:resnet50: unknown model"),
        ("torchvision bad weights", "notes.txt: not ssdlite320_mobilenet_v3_large weights"),
    ],
)
def test_refused_before_any_frame(case, expected, files, capsys):
    folder = files["folder"]
    argv = {
        "missing source": _track(files, source=str(folder / "missing.avi")),
        "text source": _track(files, source=str(folder / "notes.txt")),
        "broken video": _track(files, source=str(folder / "broken.avi")),
        "empty folder": _track(files, source=str(folder / "empty_folder")),
        "missing checkpoint": _track(files, ckpt=str(folder / "nope.safetensors")),
        "checkpoint not one": _track(files, ckpt=str(folder / "notes.txt")),
        "uncalibrated checkpoint": _track(files, "--thresholds", "calibrated"),
        "unknown detector": _track(files, "--detector", "yolo"),
        "missing det file": _track(files, "--detector", f"file:{folder / 'missing_det.txt'}"),
        "bad det line": _track(files, "--detector", f"file:{files['bad_dets']}"),
        "torchvision without weights": _track(
            files, "--detector", "torchvision:ssdlite320_mobilenet_v3_large"
        ),
        "unknown torchvision model": _track(
            files, "--detector", "torchvision:resnet50", "--detector-weights", "x.pt"
        ),
        "torchvision bad weights": _track(
            files,
            "--detector",
            "torchvision:ssdlite320_mobilenet_v3_large",
            "--detector-weights",
            str(folder / "notes.txt"),
        ),
    }[case]
    message = _refused(argv, capsys)
    assert message.startswith("pedattr track: error: ") and expected in message
    assert not (folder / "never").exists()


def test_unknown_tracker_is_an_option_error(files, capsys):
    message = _refused(_track(files, "--tracker", "sort"), capsys)
    assert "argument --tracker: invalid choice: 'sort'" in message


def _without(monkeypatch, *modules: str) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in modules:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize(
    ("module", "argv_extra", "expected"),
    [
        ("ultralytics", ["--detector", "ultralytics:yolo11n.pt"], "needs the ultralytics package"),
        ("trackers", [], "tracking needs the trackers package; install it with `pip install"),
        ("cv2", [], "reading videos needs OpenCV below 5; install it with `pip install"),
    ],
)
def test_a_missing_package_is_named(module, argv_extra, expected, files, capsys, monkeypatch):
    _without(monkeypatch, module)
    message = _refused(_track(files, *argv_extra), capsys)
    assert expected in message


def test_opencv_5_without_hog_is_named(files, capsys, monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "HOGDescriptor")
    message = _refused(_track(files, "--detector", "hog"), capsys)
    assert "has no HOG people detector (OpenCV 5 removed it)" in message
