"""A few crops of each track spread over its time, for the page's "thumbnails over time".

:class:`TrackGallery` holds at most 2 x ``limit`` of the crops the attribute model saw, in
bounded memory whatever the track's length: crops closer than ``spacing`` frames share a slot
(the one of higher quality stays); when the slots overflow, neighbouring slots merge (again the
better stays) and the spacing doubles. :meth:`TrackGallery.chosen` then gives ``limit`` of them
evenly spread. The track's best crop (highest quality) always stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pedattr.utils.io import atomic_write

#: Crops kept per track.
GALLERY_SIZE = 8


@dataclass
class GalleryCrop:
    frame: int  # from 0
    time: float
    quality: float
    region: tuple[int, int, int, int]
    image: Image.Image = field(repr=False)
    boxes: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # in crop pixels


class TrackGallery:
    def __init__(self, limit: int = GALLERY_SIZE, spacing: int = 1) -> None:
        if limit < 2:
            raise ValueError("a gallery keeps at least 2 crops")
        self.limit, self.spacing = limit, spacing
        self.crops: list[GalleryCrop] = []

    def offer(
        self,
        frame: int,
        time: float,
        quality: float,
        region: tuple[int, int, int, int],
        image: Callable[[], Image.Image],
        boxes: dict[str, dict[str, Any]],
    ) -> None:
        """A crop the model saw (frames in increasing order); ``image`` is called only when
        the crop is kept."""
        last = self.crops[-1] if self.crops else None
        if last is not None and frame - last.frame < self.spacing:
            if quality > last.quality:
                self.crops[-1] = GalleryCrop(frame, time, quality, region, image(), boxes)
            return
        self.crops.append(GalleryCrop(frame, time, quality, region, image(), boxes))
        if len(self.crops) > 2 * self.limit:
            pairs = [self.crops[k : k + 2] for k in range(0, len(self.crops), 2)]
            self.crops = [max(pair, key=lambda c: c.quality) for pair in pairs]
            self.spacing *= 2

    def chosen(self) -> list[GalleryCrop]:
        """At most ``limit`` crops evenly spread over those held, the best among them."""
        count = len(self.crops)
        if count <= self.limit:
            return list(self.crops)
        picks = {round(k * (count - 1) / (self.limit - 1)) for k in range(self.limit)}
        best = max(range(count), key=lambda k: self.crops[k].quality)
        if best not in picks:  # the nearest pick gives way (never the first or the last)
            inner = (picks - {0, count - 1}) or picks
            nearest = min(inner, key=lambda k: abs(k - best))
            picks = (picks - {nearest}) | {best}
        return [self.crops[k] for k in sorted(picks)]


def write_gallery(
    crops: list[GalleryCrop], folder: Path, track_id: int, attributes: list[str]
) -> list[dict[str, Any]]:
    """Write the crops as JPEGs under ``folder/track_NNNNNN/``; their ``tracks.jsonl`` entries
    (frames from 1, paths relative to the output folder, the ALM boxes of the track's
    ``attributes`` in pixels of the frame)."""
    entries = []
    for crop in crops:
        path = folder / f"track_{track_id:06d}" / f"frame_{crop.frame + 1:06d}.jpg"
        atomic_write(path, lambda tmp, image=crop.image: image.save(tmp, format="JPEG", quality=90))
        x, y = crop.region[:2]
        entries.append(
            {
                "frame": crop.frame + 1,
                "time": round(crop.time, 3),
                "quality": round(crop.quality, 4),
                "region": list(crop.region),
                "image": f"{folder.name}/{path.parent.name}/{path.name}",
                "boxes": {
                    name: {
                        level: [round(v + o, 1) for v, o in zip(box, (x, y, x, y), strict=True)]
                        for level, box in crop.boxes[name].items()
                    }
                    for name in attributes
                    if name in crop.boxes
                },
            }
        )
    return entries
