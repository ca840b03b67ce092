"""Person detectors behind one small interface: an RGB frame in, person boxes and scores out.

* ``file:DETS``: precomputed detections in MOTChallenge ``det.txt`` format
  (``frame,id,x,y,w,h,score,...``, frames counted from 1), for detectors that run elsewhere.
* ``hog``: OpenCV's HOG people detector (Dalal and Triggs), no weights to download. OpenCV 5
  dropped it, hence the ``video`` extra's pin below 5. Its SVM margins are mapped to (0, 1)
  scores by a logistic function.
* ``torchvision:NAME`` with a local weight file: a torchvision detection model, COCO's person
  class only.
* ``ultralytics:WEIGHTS``: an Ultralytics YOLO model, when the user installed ``ultralytics``
  (AGPL-3.0, never a dependency of pedattr), COCO's person class only.

:func:`build_detector` loads any of them, so that a detector that cannot load is refused
before the first frame is read.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pedattr.video.sources import opencv

#: torchvision's detection models pedattr knows (all trained on COCO; person is label 1).
TORCHVISION_MODELS = (
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "retinanet_resnet50_fpn_v2",
    "ssdlite320_mobilenet_v3_large",
)
_COCO_PERSON = 1  # torchvision's COCO labels count background as 0


@dataclass
class Detections:
    """Person boxes of one frame: ``boxes`` [N, 4] as (x0, y0, x1, y1) pixels, ``scores`` [N]."""

    boxes: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float64), np.zeros(0, np.float64))

    def __len__(self) -> int:
        return len(self.scores)


class Detector(Protocol):
    """Finds people in a frame: ``detector(rgb_frame, frame_index) -> Detections``."""

    name: str

    def __call__(self, frame: np.ndarray, index: int) -> Detections: ...


# --- file: MOTChallenge det.txt ---------------------------------------------------------------


class FileDetector:
    """Detections read from a MOTChallenge ``det.txt``; frame ``index`` (0-based) is line
    frame ``index + 1``."""

    def __init__(self, path: str | os.PathLike, min_score: float = -math.inf) -> None:
        self.name = f"file:{os.fspath(path)}"
        self.by_frame = read_mot_detections(path, min_score)

    def __call__(self, frame: np.ndarray, index: int) -> Detections:
        return self.by_frame.get(index + 1, Detections.empty())


def read_mot_detections(
    path: str | os.PathLike, min_score: float = -math.inf
) -> dict[int, Detections]:
    """frame (1-based) -> its detections, from a MOTChallenge text file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not ``frame,id,x,y,w,h,score,...`` numbers (the message
            names the file and line).
    """
    path = Path(path)
    rows: dict[int, list[list[float]]] = defaultdict(list)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a MOTChallenge text file (not UTF-8 text)") from None
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"{path}: no such detections file") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.replace(" ", "").split(",")
        try:
            frame, _, x, y, w, h, score = (float(v) for v in fields[:7])
        except ValueError:
            raise ValueError(
                f"{path}: line {number}: expected frame,id,x,y,w,h,score,... numbers"
            ) from None
        if frame < 1 or w <= 0 or h <= 0:
            raise ValueError(f"{path}: line {number}: needs frame >= 1, w > 0 and h > 0")
        if score >= min_score:
            rows[int(frame)].append([x, y, x + w, y + h, score])
    return {frame: Detections(np.array(r)[:, :4], np.array(r)[:, 4]) for frame, r in rows.items()}


# --- hog --------------------------------------------------------------------------------------


class HogDetector:
    """OpenCV's default HOG + linear SVM people detector.

    Frames taller than ``max_height`` are scaled down first (HOG's cost grows with the area) and
    boxes scaled back; HOG's 64 x 128 window then sees people from 128 pixels high (of the
    scaled frame) up, at scales ``scale`` apart. On vtest.avi (768 x 576) the full frame with
    ``scale`` 1.1 finds 2 people per frame in 0.10 s; 480 pixels with 1.05 finds 1.5 in 0.16 s.
    """

    name = "hog"

    def __init__(
        self, max_height: int = 720, scale: float = 1.1, hit_threshold: float = 0.0
    ) -> None:
        cv2 = opencv()
        if not hasattr(cv2, "HOGDescriptor") or not hasattr(
            cv2, "HOGDescriptor_getDefaultPeopleDetector"
        ):
            raise ImportError(
                f"OpenCV {cv2.__version__} has no HOG people detector (OpenCV 5 removed it); "
                "install OpenCV below 5: `pip install 'opencv-python<5'`"
            )
        self.cv2 = cv2
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.max_height, self.scale = max_height, scale
        self.hit_threshold = hit_threshold

    def __call__(self, frame: np.ndarray, index: int) -> Detections:
        scale = min(1.0, self.max_height / frame.shape[0])
        image = frame
        if scale < 1.0:
            size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
            image = self.cv2.resize(frame, size, interpolation=self.cv2.INTER_AREA)
        grey = self.cv2.cvtColor(image, self.cv2.COLOR_RGB2GRAY)
        rects, weights = self.hog.detectMultiScale(
            grey,
            hitThreshold=self.hit_threshold,
            winStride=(8, 8),
            padding=(8, 8),
            scale=self.scale,
        )
        if len(rects) == 0:
            return Detections.empty()
        rects = np.asarray(rects, np.float64) / scale
        boxes = np.column_stack([rects[:, :2], rects[:, :2] + rects[:, 2:]])
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float64).reshape(-1)))
        return Detections(boxes, scores)


# --- torchvision ------------------------------------------------------------------------------


class TorchvisionDetector:
    """A torchvision COCO detector from a local weight file (a state dict), persons only."""

    def __init__(
        self, model_name: str, weights: str | os.PathLike | None, min_score: float = 0.5
    ) -> None:
        import torch
        import torchvision

        if model_name not in TORCHVISION_MODELS:
            raise ValueError(
                f"--detector torchvision:{model_name}: unknown model; use one of "
                + ", ".join(TORCHVISION_MODELS)
            )
        if weights is None:
            raise ValueError(
                f"--detector torchvision:{model_name} needs --detector-weights FILE (a local "
                "state dict; nothing is downloaded)"
            )
        builder = getattr(torchvision.models.detection, model_name)
        model = builder(weights=None, weights_backbone=None, num_classes=91)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except FileNotFoundError:
            raise FileNotFoundError(f"{weights}: no such file") from None
        except Exception as err:  # a file that is not this model's state dict
            raise ValueError(f"{weights}: not {model_name} weights ({err})") from None
        self.name = f"torchvision:{model_name}"
        self.model = model.eval()
        self.min_score = min_score

    def __call__(self, frame: np.ndarray, index: int) -> Detections:
        import torch

        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255
        with torch.inference_mode():
            [out] = self.model([image])
        keep = (out["labels"] == _COCO_PERSON) & (out["scores"] >= self.min_score)
        return Detections(out["boxes"][keep].double().numpy(), out["scores"][keep].double().numpy())


# --- ultralytics ------------------------------------------------------------------------------


class UltralyticsDetector:
    """An Ultralytics YOLO model the user installed themselves (persons: COCO class 0)."""

    def __init__(self, weights: str, min_score: float = 0.25) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise ImportError(
                "--detector ultralytics: needs the ultralytics package, which pedattr does not "
                "install (AGPL-3.0); install it yourself with `pip install ultralytics`"
            ) from None
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: no such file")
        self.name = f"ultralytics:{weights}"
        self.model = YOLO(weights)
        self.min_score = min_score

    def __call__(self, frame: np.ndarray, index: int) -> Detections:
        [result] = self.model.predict(frame[..., ::-1], classes=[0], verbose=False)
        boxes = result.boxes
        keep = boxes.conf.cpu().numpy() >= self.min_score
        return Detections(
            boxes.xyxy.cpu().numpy().astype(np.float64)[keep],
            boxes.conf.cpu().numpy().astype(np.float64)[keep],
        )


def build_detector(
    spec: str, *, weights: str | os.PathLike | None = None, min_score: float | None = None
) -> Detector:
    """The detector ``spec`` names: ``hog``, ``file:DETS``, ``torchvision:NAME`` (with
    ``weights``) or ``ultralytics:WEIGHTS``.

    Raises:
        ValueError, FileNotFoundError: an unknown spec, a file that cannot be read.
        ImportError: the package the detector needs is missing (the message says what to install).
    """
    kind, _, argument = spec.partition(":")
    if kind == "hog" and not argument:
        return HogDetector()
    if kind == "file" and argument:
        return FileDetector(argument, -math.inf if min_score is None else min_score)
    if kind == "torchvision" and argument:
        return TorchvisionDetector(argument, weights, 0.5 if min_score is None else min_score)
    if kind == "ultralytics" and argument:
        return UltralyticsDetector(argument, 0.25 if min_score is None else min_score)
    raise ValueError(
        f"--detector {spec}: unknown detector; use hog, file:DETS, torchvision:NAME or "
        "ultralytics:WEIGHTS"
    )
