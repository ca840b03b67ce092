"""Generated ``tracks.jsonl`` folders for the search and page tests: records of the format
``pedattr track`` writes, with chosen attribute names (odd ones included) and thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Names as a checkpoint may have them: one with '&' (the demo's) and one with a space.
NAMES = ["Female", "Backpack", "Hat", "Glasses", "Skirt&Dress", "Long hair"]
#: Thresholds not all 0.5, so that the yes/no answers are not P > 0.5.
THRESHOLDS = {"Female": 0.5, "Backpack": 0.3, "Hat": 0.6, "Glasses": 0.5, "Skirt&Dress": 0.5,
              "Long hair": 0.4}  # fmt: skip


def make_records(count: int, seed: int = 0, fps: float = 10.0) -> list[dict]:
    """``count`` track records; the last has no prediction (empty probabilities)."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(count):
        first = int(rng.integers(1, 2000))
        last = first + int(rng.integers(0, 200))
        # Probabilities near 0, near 1 and in between, rounded as pedattr track rounds them.
        raw = rng.choice([0.02, 0.97, 0.5], len(NAMES)) + rng.normal(0, 0.15, len(NAMES))
        clipped = np.clip(raw, 1e-6, 1 - 1e-6)
        probs = {n: round(float(p), 6) for n, p in zip(NAMES, clipped, strict=True)}
        if k == count - 1:
            probs = {}
        region = [10 * k, 20, 10 * k + 40, 100]
        boxes = {n: {"level1": [10 * k + 2.0, 22.0, 10 * k + 20.0, 60.0]} for n in NAMES[:2]}
        records.append(
            {
                "id": k + 1,
                "first_frame": first,
                "last_frame": last,
                "first_time": round((first - 1) / fps, 3),
                "last_time": round((last - 1) / fps, 3),
                "boxes": [[first, 0.0, 0.0, 10.0, 20.0, 0.9]],
                "probabilities": probs,
                "attributes": [n for n in NAMES if n in probs and probs[n] > THRESHOLDS[n]],
                "thresholds": dict(THRESHOLDS),
                "frames_used": 2,
                "attributed_frames": [first, last],
                "best_frame": first if probs else None,
                "best_region": region if probs else None,
                "best_boxes": boxes if probs else {},
                "thumbnail": None,
                "gallery": [
                    {
                        "frame": f,
                        "time": round((f - 1) / fps, 3),
                        "quality": 0.5,
                        "region": region,
                        "image": f"thumbnails/track_{k + 1:06d}/frame_{f:06d}.jpg",
                        "boxes": boxes,
                    }  # fmt: skip
                    for f in ((first, last) if probs else ())
                ],
            }
        )
    return records


def write_folder(folder: Path, records: list[dict]) -> Path:
    """An output folder holding ``tracks.jsonl`` with ``records``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    (folder / "tracks.jsonl").write_text(lines, encoding="utf-8")
    return folder
