"""index.html and the crops it shows: the page holds the tracks' data intact and nothing from
elsewhere; ``pedattr track`` writes it with up to 8 crops per track spread over time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pedattr
from pedattr.video.gallery import TrackGallery
from pedattr.video.page import PAGE_KEYS, write_index
from tests.video.clips import write_clip, write_detections
from tests.video.records import make_records, write_folder

DATA = re.compile(r'<script type="application/json" id="pedattr-data">(.*?)</script>', re.S)


def page_data(path: Path) -> dict:
    (found,) = DATA.findall(path.read_text(encoding="utf-8"))
    return json.loads(found)


def test_page_holds_the_records_and_nothing_from_elsewhere(tmp_path):
    records = make_records(20)
    records[3]["probabilities"]["</script><!--x"] = 0.5  # would end the data early, unescaped
    folder = write_folder(tmp_path / "out", records)
    text = write_index(folder).read_text(encoding="utf-8")
    data = page_data(folder / "index.html")
    assert data["tracks"] == [{k: r.get(k) for k in PAGE_KEYS} for r in records]
    assert data["names"][:6] == ["Female", "Backpack", "Hat", "Glasses", "Skirt&Dress", "Long hair"]
    # Self-contained: inline scripts and style, no file fetched from a server or another folder.
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=", text)
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text
    assert text.count("<script") == 3  # the data, query.js, page.js


def test_gallery_keeps_the_best_crop_and_spreads_over_time():
    rng = np.random.default_rng(0)
    qualities = rng.random(200)
    gallery = TrackGallery(limit=8)
    made = []

    def image(frame):
        made.append(frame)
        return Image.new("RGB", (2, 4))

    for frame, quality in enumerate(qualities):
        gallery.offer(frame, frame / 10, float(quality), (0, 0, 2, 4), lambda f=frame: image(f), {})
    assert len(gallery.crops) <= 16  # held while the track goes on
    frames = [c.frame for c in gallery.chosen()]
    assert len(frames) == 8 and frames == sorted(frames)
    assert int(np.argmax(qualities)) in frames
    assert frames[0] < 50 and frames[-1] >= 150  # the first and last quarters are there
    assert max(np.diff(frames)) <= 75  # and no gap is 3 times the even one (200 / 8)
    assert len(made) < len(qualities)  # crops that could not be kept were never cut


@pytest.mark.slow
def test_track_writes_the_page_and_each_tracks_crops(tmp_path, checkpoint):
    import cv2

    frames = 30
    video = write_clip(tmp_path / "clip.avi", frames)
    dets = write_detections(tmp_path / "det.txt", frames)
    out = tmp_path / "out"
    pedattr.VideoPipeline(checkpoint, detector=f"file:{dets}").run(video, out, video=False)
    records = [json.loads(x) for x in (out / "tracks.jsonl").read_text().splitlines()]
    assert page_data(out / "index.html")["tracks"] == [
        {k: r.get(k) for k in PAGE_KEYS} for r in records
    ]
    capture = cv2.VideoCapture(str(video))
    pixels = []
    while (read := capture.read())[0]:
        pixels.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    for record in records:
        gallery = record["gallery"]
        assert 1 <= len(gallery) <= 8
        assert record["best_frame"] in [g["frame"] for g in gallery]
        for entry in gallery:
            assert entry["frame"] in record["attributed_frames"]
            x0, y0, x1, y1 = entry["region"]
            saved = np.asarray(Image.open(out / entry["image"]), np.float64)
            assert saved.shape == pixels[0][y0:y1, x0:x1].shape
            # JPEG blurs the clip's noise background: the crop is the region of its frame in
            # that it is nearer to it than to the same region of any other frame.
            distance = [np.abs(saved - frame[y0:y1, x0:x1]).mean() for frame in pixels]
            assert int(np.argmin(distance)) == entry["frame"] - 1
            assert set(entry["boxes"]) == set(record["attributes"]) & set(entry["boxes"])
            if entry["frame"] == record["best_frame"]:
                assert entry["boxes"] == record["best_boxes"]


@pytest.mark.slow
def test_ctrl_c_still_writes_the_page(tmp_path, checkpoint):
    from tests.video.test_pipeline import StopAt

    video = write_clip(tmp_path / "clip.avi", 20)
    dets = write_detections(tmp_path / "det.txt", 20)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        pedattr.VideoPipeline(checkpoint, detector=StopAt(dets, 12)).run(video, out, video=False)
    records = [json.loads(x) for x in (out / "tracks.jsonl").read_text().splitlines()]
    data = page_data(out / "index.html")
    assert len(records) == 2 and data["tracks"] == [
        {k: r.get(k) for k in PAGE_KEYS} for r in records
    ]
    assert data["summary"]["stopped"] == "interrupted after frame 8"
