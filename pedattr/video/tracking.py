"""Multi-object tracking with Roboflow's ``trackers`` (Apache-2.0): ByteTrack or OC-SORT.

pedattr keeps no tracker of its own. :class:`Tracker` hands each frame's detections to the
library as ``supervision.Detections`` and returns the boxes it assigned to tracks, with track
ids counted from 1 (MOTChallenge's convention) that stay the same in every output file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedattr.video.detectors import Detections

TRACKERS = ("bytetrack", "ocsort")
MISSING_TRACKERS = (
    "tracking needs the trackers package; install it with `pip install 'pedattr[video]'`"
)


@dataclass
class TrackedBox:
    """One person in one frame: its track id (from 1), box (x0, y0, x1, y1) and score."""

    track_id: int
    box: tuple[float, float, float, float]
    score: float


class Tracker:
    """``tracker(detections) -> [TrackedBox]`` for one frame after another.

    Args:
        name: "bytetrack" or "ocsort".
        fps: the frames per second the tracker sees (after ``--every``).
        lost_after: seconds a track may go unseen before it ends (the library counts its
            ``lost_track_buffer`` in frames at 30 frames/s and scales it to ``fps``).
        min_frames: detections a new track needs in a row before it gets an id.
    """

    def __init__(
        self,
        name: str = "bytetrack",
        *,
        fps: float = 25.0,
        lost_after: float = 1.0,
        min_frames: int = 2,
    ) -> None:
        if name not in TRACKERS:
            raise ValueError(f"--tracker {name}: unknown tracker; use one of {', '.join(TRACKERS)}")
        try:
            import supervision
            import trackers
        except ImportError:
            raise ImportError(MISSING_TRACKERS) from None
        self.name = name
        self.lost_after = lost_after
        self._supervision = supervision
        common = dict(
            lost_track_buffer=max(1, round(30 * lost_after)),
            frame_rate=fps,
            minimum_consecutive_frames=min_frames,
        )
        if name == "bytetrack":
            # Detector scores are not calibrated alike (HOG margins, det.txt files): a person seen
            # with a middling score still starts a track.
            self._tracker = trackers.ByteTrackTracker(
                **common, track_activation_threshold=0.5, high_conf_det_threshold=0.5
            )
        else:
            self._tracker = trackers.OCSORTTracker(**common, high_conf_det_threshold=0.5)

    def __call__(self, detections: Detections) -> list[TrackedBox]:
        scores = np.clip(detections.scores, 0.0, 1.0)
        given = self._supervision.Detections(
            xyxy=detections.boxes.reshape(-1, 4).astype(np.float32),
            confidence=scores.astype(np.float32),
        )
        out = self._tracker.update(given)
        if out.tracker_id is None:
            return []
        confidence = out.confidence if out.confidence is not None else np.ones(len(out))
        return [
            TrackedBox(int(tid) + 1, tuple(float(v) for v in box), float(score))
            for box, tid, score in zip(out.xyxy, out.tracker_id, confidence, strict=True)
            if tid >= 0
        ]
