"""Benchmark: ``pedattr track`` end to end on OpenCV's vtest.avi (795 frames, 79.5 s at 10 fps).

Runs :class:`pedattr.VideoPipeline` with the HOG detector and ByteTrack on the clip, writing
every output (annotated.mp4 included) to a temporary folder, and prints the seconds of each stage
(decode, detect, track, attributes, write), the end-to-end frames per second and the ratio of
the clip's duration to the time taken (>= 1: real time or faster).

Model: ``--checkpoint CKPT``, or else BN-Inception ALM at ``--height`` x ``--width``
(256 x 128) with ``--num-attrs`` attributes and random weights (the time does not depend on
the weights). vtest.avi: ``--video``, else ``$PEDATTR_VTEST``, ``data/vtest.avi`` or Debian's
opencv-doc path (``apt-get download opencv-doc``, then ``dpkg-deb --fsys-tarfile`` to extract).

Usage:
    python benchmarks/video.py                              # whole clip, every frame attributed
    python benchmarks/video.py --attribute-every 5 --end 20 # the first 20 s, 1 crop in 5
    python benchmarks/video.py --checkpoint runs/demo/run/best.safetensors --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_arguments, command_line, load_average  # noqa: E402

import pedattr  # noqa: E402

CLIP_SECONDS = 79.5
VTEST_PLACES = (
    Path(__file__).resolve().parents[1] / "data" / "vtest.avi",
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
)


def find_vtest(given: str | None) -> Path:
    for place in (given, os.environ.get("PEDATTR_VTEST"), *VTEST_PLACES):
        if place and Path(place).is_file():
            return Path(place)
    raise SystemExit("vtest.avi not found: pass --video, set PEDATTR_VTEST or put it in data/")


def random_checkpoint(args: argparse.Namespace, folder: Path) -> Path:
    torch.manual_seed(0)
    model = pedattr.build_model(
        "alm",
        backbone=args.backbone,
        attribute_names=[f"attr_{k:02d}" for k in range(args.num_attrs)],
        input_size=(args.height, args.width),
    ).eval()
    path = folder / "model.safetensors"
    pedattr.save_checkpoint(path, model)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--checkpoint", help="a pedattr checkpoint (default: random weights)")
    parser.add_argument("--video", help="vtest.avi")
    parser.add_argument("--attribute-every", type=int, default=1, metavar="K")
    parser.add_argument("--every", type=int, default=1, metavar="N")
    parser.add_argument("--end", type=float, help="stop at this second of the clip")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    video = find_vtest(args.video)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = (
            Path(args.checkpoint) if args.checkpoint else random_checkpoint(args, Path(tmp))
        )
        pipeline = pedattr.VideoPipeline(
            checkpoint,
            detector="hog",
            tracker="bytetrack",
            attribute_every=args.attribute_every,
            batch_size=args.batch_size,
        )
        summary = pipeline.run(
            video, Path(tmp) / "out", video=not args.no_video, every=args.every, end=args.end
        )
    seconds_of_clip = CLIP_SECONDS if args.end is None else min(args.end, CLIP_SECONDS)
    result = {
        "command": command_line(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "clip_seconds": seconds_of_clip,
        "ratio_to_real_time": round(seconds_of_clip / summary["total_seconds"], 3),
        **summary,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['command']}")
    print(f"threads {result['torch_threads']}, load average {result['load_average']}")
    print(
        f"{summary['frames']} frames, {summary['tracks']} tracks, "
        f"{summary['crops_predicted']} crops"
    )
    for stage, value in summary["seconds"].items():
        print(f"  {stage:<11} {value:8.2f} s")
    print(
        f"  total       {summary['total_seconds']:8.2f} s  "
        f"({summary['frames_per_second']} frames/s)"
    )
    print(f"clip {seconds_of_clip} s / time taken: {result['ratio_to_real_time']}x real time")


if __name__ == "__main__":
    main()
