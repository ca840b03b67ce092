"""Generated clips: reproducible from the seed, ground truth consistent with the frames, and
detections whose noise has the documented levels."""

from __future__ import annotations

import numpy as np
import pytest

from pedattr.data.synthetic import ATTRIBUTES
from pedattr.data.synthetic.clips import (
    MIN_FRAMES,
    ClipSettings,
    DetectionNoise,
    generate_clip,
    noisy_detections,
    write_clips,
)

SMALL = ClipSettings(size=(180, 320), frames=30, people=5, scale=(80.0, 120.0), speed=(3.0, 6.0))


@pytest.fixture(scope="module")
def clip():
    return generate_clip(3, 0, SMALL)


def test_the_same_seed_gives_the_same_clip_and_another_seed_another():
    tiny = ClipSettings(size=(100, 160), frames=12, people=3, scale=(50.0, 70.0))
    clip = generate_clip(3, 0, tiny)
    again = generate_clip(3, 0, tiny)
    assert len(clip.gt) > 0
    assert np.array_equal(again.gt, clip.gt)
    assert again.labels.keys() == clip.labels.keys()
    assert all(np.array_equal(again.labels[k], clip.labels[k]) for k in clip.labels)
    assert all(np.array_equal(a, b) for a, b in zip(again.frames, clip.frames, strict=True))
    other = generate_clip(4, 0, tiny)
    assert other.gt.shape != clip.gt.shape or not np.array_equal(other.gt, clip.gt)
    assert not np.array_equal(generate_clip(3, 1, tiny).frames[0], clip.frames[0])


def test_ground_truth_boxes_lie_in_the_frame_with_visibility_and_numbered_ids(clip):
    height, width = SMALL.size
    frame, ids, x, y, w, h, conf, cls, visibility = clip.gt.T
    assert len(clip.frames) == SMALL.frames
    assert clip.frames[0].shape == (height, width, 3) and clip.frames[0].dtype == np.uint8
    assert ((frame >= 1) & (frame <= SMALL.frames)).all()
    assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (x + w <= width).all() and (y + h <= height).all()
    assert ((visibility >= 0) & (visibility <= 1)).all()
    assert (conf == 1).all() and (cls == 1).all()
    # ids 1..n, each at most once per frame, each seen long enough, each with labels
    unique = np.unique(ids)
    assert unique.tolist() == list(range(1, len(unique) + 1))
    assert len({(f, i) for f, i in zip(frame, ids, strict=True)}) == len(frame)
    assert all((ids == i).sum() >= MIN_FRAMES for i in unique)
    assert sorted(clip.labels) == unique.tolist()
    for labels in clip.labels.values():
        assert labels.shape == (len(ATTRIBUTES),) and set(labels.tolist()) <= {0, 1}
        orientation = [labels[ATTRIBUTES.index(o)] for o in ("Front", "Side", "Back")]
        assert sum(orientation) == 1


def test_visibility_is_one_when_alone_inside_and_less_when_cut_or_covered(clip):
    height, width = SMALL.size
    rows = clip.gt
    alone, cut = [], []
    for row in rows:
        frame, identity, x, y, w, h = row[:6]
        others = rows[(rows[:, 0] == frame) & (rows[:, 1] != identity)]
        overlaps = (
            (others[:, 2] < x + w)
            & (others[:, 2] + others[:, 4] > x)
            & (others[:, 3] < y + h)
            & (others[:, 3] + others[:, 5] > y)
        )
        inside = x > 0 and y > 0 and x + w < width and y + h < height
        if not overlaps.any() and inside:
            alone.append(row[8])
        widest = rows[rows[:, 1] == identity, 4].max()
        if (x == 0 or x + w == width) and w < 0.7 * widest:  # half out of the frame
            cut.append(row[8])
    assert alone and cut
    assert np.allclose(alone, 1.0)
    assert max(cut) < 1.0
    assert rows[:, 8].min() < 0.9  # someone is covered or cut somewhere


def test_people_enter_and_leave(clip):
    first = {i: clip.gt[clip.gt[:, 1] == i, 0].min() for i in clip.labels}
    last = {i: clip.gt[clip.gt[:, 1] == i, 0].max() for i in clip.labels}
    assert any(f > 1 for f in first.values()) or any(v < SMALL.frames for v in last.values())


def _one_box_per_frame(frames: int, visibility: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    h = rng.uniform(80, 160, frames)
    w = h / 2
    return np.stack(
        [
            np.arange(1, frames + 1),
            np.ones(frames),
            rng.uniform(0, 400, frames),
            rng.uniform(0, 150, frames),
            w,
            h,
            np.ones(frames),
            np.ones(frames),
            np.full(frames, visibility),
        ],
        axis=1,
    )


def test_detection_noise_has_the_documented_levels():
    frames = 4000
    gt = _one_box_per_frame(frames)
    noise = DetectionNoise(jitter=0.05, miss=0.10, false_positives=0.1)
    dets = noisy_detections(gt, frames, (360, 640), noise, np.random.default_rng(1))
    box = gt[dets[:, 0].astype(int) - 1]  # the frame's one true box, for each detection
    x, y, w, h = box[:, 2], box[:, 3], box[:, 4], box[:, 5]
    # a true detection's edges are within 5 sigma of the box's; a false one's hardly ever
    close = np.abs(dets[:, 2] - x) < 0.25 * w
    close &= np.abs(dets[:, 3] - y) < 0.25 * h
    close &= np.abs(dets[:, 2] + dets[:, 4] - (x + w)) < 0.25 * w
    true, false = int(close.sum()), int((~close).sum())
    errors = np.concatenate(
        [
            ((dets[:, 2] - x) / w)[close],
            ((dets[:, 3] + dets[:, 5] - (y + h)) / h)[close],
        ]
    )
    assert abs(1 - true / frames - 0.10) < 0.015
    assert abs(false / frames - 0.1) < 0.02
    assert abs(np.std(errors) - 0.05) < 0.004 and abs(np.mean(errors)) < 0.004
    assert set(np.unique(dets[:, 1])) == {-1}
    assert ((dets[:, 4] > 0) & (dets[:, 5] > 0)).all()


def test_hidden_people_are_never_detected():
    gt = _one_box_per_frame(200, visibility=0.05)
    noise = DetectionNoise(miss=0.0, false_positives=0.0, hidden=0.1)
    assert len(noisy_detections(gt, 200, (360, 640), noise, np.random.default_rng(0))) == 0


def test_noise_out_of_range_is_refused():
    with pytest.raises(ValueError, match="--miss 1.5: must be between 0 and 1"):
        DetectionNoise(miss=1.5)


@pytest.mark.slow
def test_written_clips_are_the_same_from_the_same_seed(tmp_path):
    pytest.importorskip("cv2")
    small = ClipSettings(size=(120, 200), frames=12, people=3, scale=(60.0, 90.0))
    for name in ("a", "b"):
        write_clips(tmp_path / name, clips=2, seed=5, settings=small, progress=False)
    for clip in ("clip_000", "clip_001"):
        for file in ("gt/gt.txt", "gt/labels.csv", "det/det.txt", "seqinfo.ini"):
            a = (tmp_path / "a" / clip / file).read_bytes()
            assert a == (tmp_path / "b" / clip / file).read_bytes(), file
        assert (tmp_path / "a" / clip / "video.mp4").stat().st_size > 0
    header = (tmp_path / "a" / "clip_000" / "gt" / "labels.csv").read_text().splitlines()[0]
    assert header.split(",") == ["id", *ATTRIBUTES]
    import cv2

    video = cv2.VideoCapture(str(tmp_path / "a" / "clip_000" / "video.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (200, 120)
