"""VideoPipeline on generated clips with file: detections: ids, combination, every output."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import pedattr
from pedattr.cli import main
from pedattr.video.combine import TrackEvidence
from tests.helpers import TINY_MODEL
from tests.video.clips import (
    FRAME_SIZE,
    person_boxes,
    write_clip,
    write_detections,
    write_frames_folder,
)

cv2 = pytest.importorskip("cv2")
FRAMES = 20


def rising_scores(path: Path, frames: int = FRAMES) -> Path:
    """det.txt whose scores rise with the frame (0.6 .. 0.98), so that quality differs."""
    lines = []
    for f, boxes in enumerate(person_boxes(frames), 1):
        for x, y, w, h in boxes:
            lines.append(f"{f},-1,{x},{y},{w},{h},{0.6 + 0.02 * (f - 1):.2f},-1,-1,-1")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clip")
    return write_clip(folder / "clip.avi", FRAMES), rising_scores(folder / "det.txt")


def read_tracks(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]


def count_video_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_track_ids_stay_with_their_person(clip, checkpoint):
    video, dets = clip
    pipeline = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}")
    ids_by_side: dict[str, set[int]] = {"walks right": set(), "walks left": set()}
    for result in pipeline.frames(video):
        truth = person_boxes(FRAMES)[result.index]
        for person in result.people:
            side = "walks right" if person.box[1] == truth[0][1] else "walks left"
            ids_by_side[side].add(person.track_id)
    assert len(ids_by_side["walks right"]) == 1 and len(ids_by_side["walks left"]) == 1
    assert ids_by_side["walks right"] != ids_by_side["walks left"]


def test_ocsort_keeps_ids_too(clip, checkpoint):
    video, dets = clip
    pipeline = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}", tracker="ocsort")
    ids = {p.track_id for r in pipeline.frames(video) for p in r.people}
    assert len(ids) == 2


def independent_answer(video: Path, track: dict, pipeline) -> np.ndarray:
    """The track's probabilities computed directly: crop each attributed frame's box padded by
    5 % and set to the model's aspect, weight by score x min(1, h / input h) x inside share."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    boxes = {row[0]: row[1:] for row in track["boxes"]}
    input_size = TINY_MODEL["input_size"]
    weighted, total = 0.0, 0.0
    for number in track["attributed_frames"]:
        x0, y0, x1, y1, score = boxes[number]
        w, h = (x1 - x0) * 1.1, (y1 - y0) * 1.1
        aspect = input_size[0] / input_size[1]
        w, h = (w, w * aspect) if h / w < aspect else (h / aspect, h)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        region = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        assert region[0] >= 0 and region[2] <= FRAME_SIZE[1]  # the clip keeps people inside
        left, top = math.floor(region[0]), math.floor(region[1])
        right, bottom = math.ceil(region[2]), math.ceil(region[3])
        [prediction] = pipeline.predictor.predict(frames[number - 1][top:bottom, left:right])
        p = np.clip([prediction.probabilities[n] for n in pipeline.names], 1e-6, 1 - 1e-6)
        quality = score * min(1.0, (y1 - y0) / input_size[0])
        weighted = weighted + quality * np.log(p / (1 - p))
        total += quality
    return 1 / (1 + np.exp(-weighted / total))


def test_a_track_answer_is_the_quality_weighted_mean_of_logits(clip, checkpoint, tmp_path):
    video, dets = clip
    pipeline = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}")
    pipeline.run(video, tmp_path / "out", video=False)
    tracks = read_tracks(tmp_path / "out")
    assert len(tracks) == 2
    for track in tracks:
        assert track["attributed_frames"] == list(range(2, FRAMES + 1))  # ids from frame 2 on
        expected = independent_answer(video, track, pipeline)
        got = [track["probabilities"][n] for n in pipeline.names]
        np.testing.assert_allclose(got, expected, atol=2e-5)
        thresholds = track["thresholds"]
        assert track["attributes"] == [
            n for n, p in zip(pipeline.names, got, strict=True) if p > thresholds[n]
        ]


def test_attribute_every_takes_the_best_crops_of_each_window(clip, checkpoint, tmp_path):
    video, dets = clip
    pipeline = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}", attribute_every=4)
    pipeline.run(video, tmp_path / "out", video=False)
    for track in read_tracks(tmp_path / "out"):
        # windows of 8 frames: the track is in 7, 8 and 4 of them -> 2, 2, 1 crops, the best
        # (latest: scores rise) of each window
        assert track["attributed_frames"] == [7, 8, 15, 16, 20]
        assert track["frames_used"] == 5
        assert track["best_frame"] == 20


def test_track_evidence_weights_logits():
    evidence = TrackEvidence()
    probabilities = [np.array([0.9, 0.2]), np.array([0.6, 0.7])]
    for p, q, frame in zip(probabilities, [0.25, 0.75], [0, 1], strict=True):
        evidence.add(p, q, frame)
    z = (0.25 * np.log(np.array([9.0, 0.25])) + 0.75 * np.log(np.array([1.5, 7 / 3]))) / 1.0
    np.testing.assert_allclose(evidence.combined(), 1 / (1 + np.exp(-z)))
    zero = TrackEvidence()
    zero.add(np.array([0.9]), 0.0, 0)
    zero.add(np.array([0.5]), 0.0, 1)
    np.testing.assert_allclose(zero.combined(), [1 / (1 + np.exp(-np.log(9) / 2))])


def test_every_output_file(clip, checkpoint, tmp_path):
    video, dets = clip
    out = tmp_path / "out"
    summary = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}").run(video, out)
    tracks = read_tracks(out)
    assert sorted(t["id"] for t in tracks) == [1, 2]
    for track in tracks:
        assert track["first_frame"] == 2 and track["last_frame"] == FRAMES
        assert track["first_time"] == pytest.approx(0.1) and track["last_time"] == pytest.approx(
            1.9
        )
        assert len(track["boxes"]) == FRAMES - 1
        thumbnail = out / track["thumbnail"]
        assert thumbnail.is_file() and thumbnail.suffix == ".png"
        x0, y0, x1, y1 = track["best_region"]
        assert set(track["best_boxes"]) == set(track["attributes"])
        for levels in track["best_boxes"].values():
            for bx0, by0, bx1, by1 in levels.values():  # the crop's boxes, in frame pixels
                assert x0 - 0.1 <= bx0 <= bx1 <= x1 + 0.1 and y0 - 0.1 <= by0 <= by1 <= y1 + 0.1
    with open(out / "frames.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * (FRAMES - 1)
    first = rows[0]
    assert (first["frame"], first["id"], first["x3d"], first["attributed"]) == ("2", "1", "-1", "1")
    assert [float(first[k]) for k in ("x", "y", "w", "h")] == [7.0, 20.0, 32.0, 64.0]
    assert count_video_frames(out / "annotated.mp4") == FRAMES
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    assert saved["frames"] == FRAMES and saved["tracks"] == 2 and saved["complete"]
    assert set(saved["seconds"]) == {"decode", "detect", "track", "attributes", "write"}
    assert saved["frames_per_second"] > 0 and saved["video_frames"] == FRAMES


def test_no_video_and_frame_range(clip, checkpoint, tmp_path):
    video, dets = clip
    pipeline = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}")
    summary = pipeline.run(video, tmp_path, video=False, every=2, start=0.4, end=1.2)
    assert not (tmp_path / "annotated.mp4").exists()
    text = (tmp_path / "frames.csv").read_text().splitlines()
    frames = {int(row["frame"]) for row in csv.DictReader(text)}
    assert summary["frames"] == 5 and frames <= {5, 7, 9, 11, 13}


def test_a_frame_that_does_not_decode_is_skipped_and_counted(checkpoint, tmp_path):
    folder = write_frames_folder(tmp_path / "frames", 10)
    (folder / "000004.png").write_bytes(b"not a png")
    dets = write_detections(tmp_path / "det.txt", 10)
    summary = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}").run(
        folder, tmp_path / "out", fps=10
    )
    assert summary["frames"] == 10 and summary["failed_frames"] == 1
    assert count_video_frames(tmp_path / "out" / "annotated.mp4") == 9


class StopAt:
    """A file: detector that raises KeyboardInterrupt (Ctrl-C) on a given frame."""

    def __init__(self, dets: Path, frame: int) -> None:
        from pedattr.video.detectors import FileDetector

        self.inner, self.frame, self.name = FileDetector(dets), frame, "stop"

    def __call__(self, pixels, index):
        if index == self.frame:
            raise KeyboardInterrupt
        return self.inner(pixels, index)


def test_ctrl_c_leaves_valid_files(clip, checkpoint, tmp_path):
    video, dets = clip
    pipeline = pedattr.VideoPipeline(checkpoint, detector=StopAt(dets, 12))
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(video, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["complete"] and summary["stopped"] == "interrupted after frame 8"
    tracks = read_tracks(tmp_path)  # every line complete JSON
    assert len(tracks) == 2 and all(t["last_frame"] >= 8 for t in tracks)
    assert count_video_frames(tmp_path / "annotated.mp4") == 8  # finalised: it decodes


def test_no_person_found(clip, checkpoint, tmp_path, capsys):
    video, _ = clip
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "out"
    code = main(["track", str(video), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--detector", f"file:{empty}", "--quiet"])  # fmt: skip
    assert code == 0
    assert (out / "tracks.jsonl").read_text() == ""
    assert f"{video}: no person found" in capsys.readouterr().out


def test_cli_writes_one_folder_per_source(clip, checkpoint, tmp_path, capsys):
    video, dets = clip
    other = tmp_path / "other.avi"
    other.write_bytes(video.read_bytes())
    code = main(["track", str(video), str(other), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "out"), "--detector", f"file:{dets}", "--quiet",
                 "--no-video"])  # fmt: skip
    assert code == 0
    for stem in ("clip", "other"):
        assert len(read_tracks(tmp_path / "out" / stem)) == 2
    assert "20 frames (0 failed to decode), 2 tracks" in capsys.readouterr().out


def test_hog_finds_boxes_in_a_frame():
    from pedattr.video.detectors import HogDetector

    frame = np.zeros((200, 120, 3), np.uint8)
    found = HogDetector()(frame, 0)
    assert found.boxes.shape == (len(found), 4) and found.scores.shape == (len(found),)


def test_torchvision_detector_from_a_local_file(tmp_path):
    import torch
    import torchvision

    from pedattr.video.detectors import build_detector

    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=91
    )
    torch.save(model.state_dict(), tmp_path / "ssd.pt")
    detector = build_detector(
        "torchvision:ssdlite320_mobilenet_v3_large", weights=tmp_path / "ssd.pt", min_score=0.0
    )
    found = detector(np.zeros((120, 160, 3), np.uint8), 0)
    assert found.boxes.shape == (len(found), 4) and (found.scores >= 0).all()


class FlakyCapture:
    """A stream that gives 3 frames, then nothing, and cannot be reopened."""

    opened = 0

    def __init__(self, target) -> None:
        FlakyCapture.opened += 1
        self.left = 3 if FlakyCapture.opened == 1 else 0

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return FlakyCapture.opened <= 2

    def get(self, prop) -> float:
        return 0.0

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        return True, np.zeros((*FRAME_SIZE, 3), np.uint8)

    def grab(self) -> bool:
        return self.read()[0]

    def release(self) -> None:
        pass


def test_a_dropped_stream_is_reopened_then_stops_clearly(checkpoint, tmp_path, monkeypatch):
    import pedattr.video.sources as sources

    monkeypatch.setattr(cv2, "VideoCapture", FlakyCapture)
    sleeps: list[float] = []
    monkeypatch.setattr(sources.time, "sleep", sleeps.append)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    pipeline = pedattr.VideoPipeline(checkpoint, detector=f"file:{empty}")
    summary = pipeline.run("rtsp://camera/stream", tmp_path / "out", video=False)
    assert summary["frames"] == 3 and not summary["complete"]
    assert summary["stopped"] == "the stream stopped (2 reconnection attempts)"
    assert sleeps == [1.0, 2.0]  # backoff; the second reopening fails


def test_a_track_lost_for_longer_than_lost_after_is_written_before_the_end(
    clip, checkpoint, tmp_path
):
    video, dets = clip
    lines = dets.read_text().splitlines()
    # the second person (every other line) is seen on frames 1 to 5 only
    kept = [line for k, line in enumerate(lines) if k % 2 == 0 or int(line.split(",")[0]) <= 5]
    short = tmp_path / "short.txt"
    short.write_text("\n".join(kept) + "\n")
    pipeline = pedattr.VideoPipeline(checkpoint, detector=f"file:{short}", lost_after=0.5)
    ended = {t.track_id: r.number for r in pipeline.frames(video) for t in r.finished}
    # 0.5 s at 10 frames/s: finished once unseen for 6 frames, known at the end of frames 9-16
    assert ended == {2: 16, 1: FRAMES}


def test_a_model_in_memory_instead_of_a_checkpoint(clip, checkpoint, tmp_path):
    video, dets = clip
    model = pedattr.load_model(checkpoint)
    pipeline = pedattr.VideoPipeline(model, detector=f"file:{dets}", thresholds="default")
    summary = pipeline.run(video, tmp_path, video=False)
    assert summary["checkpoint"] is None and summary["tracks"] == 2
    from_file = pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}")
    from_file.run(video, tmp_path / "file", video=False)
    assert read_tracks(tmp_path) == read_tracks(tmp_path / "file")


def test_ctrl_c_in_the_command_exits_130(clip, checkpoint, tmp_path, capsys, monkeypatch):
    from pedattr.video.detectors import FileDetector

    video, dets = clip
    real_call = FileDetector.__call__

    def stop_at_frame_12(self, pixels, index):
        if index == 12:
            raise KeyboardInterrupt
        return real_call(self, pixels, index)

    monkeypatch.setattr(FileDetector, "__call__", stop_at_frame_12)
    code = main(["track", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path),
                 "--detector", f"file:{dets}"])  # fmt: skip
    assert code == 130
    assert "pedattr track: interrupted; the files in --out are valid" in capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text())["stopped"] == (
        "interrupted after frame 8"
    )
