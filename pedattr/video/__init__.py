"""People in video: detect, track, and recognise attributes per person (``pedattr track``).

:class:`~pedattr.video.pipeline.VideoPipeline` is the entry point; see docs/video.md.
"""

from pedattr.video.pipeline import FrameResult, Person, TrackResult, VideoPipeline

__all__ = ["FrameResult", "Person", "TrackResult", "VideoPipeline"]
