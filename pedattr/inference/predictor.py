"""Predict attributes and their boxes on any image: :class:`Predictor`.

Every input goes through the evaluation pipeline's steps (:mod:`pedattr.data.dataset`), so a
file gives exactly the probabilities ``pedattr eval`` computes for it:

* a path is decoded by :func:`~pedattr.data.dataset.load_rgb` (EXIF orientation, any mode to
  8-bit RGB: 16-bit scaled, transparency composited on black);
* a Pillow image gets the same treatment (:func:`~pedattr.data.dataset.upright_rgb`), so an
  image opened with ``PIL.Image.open`` equals its path;
* a numpy array (H x W, H x W x 1/3/4; uint8, uint16, or float in [0, 1]) or a tensor (C x H x W
  or B x C x H x W, C = 1, 3 or 4; uint8 or float in [0, 1]) becomes the Pillow image of the
  same mode (grey, RGB, RGBA) and is converted by the same rules; float values are rounded to
  the nearest of the 256 levels first, so ``uint8_image / 255`` predicts like ``uint8_image``;
* then the image is resized to the model's input size exactly as in evaluation
  (:class:`~pedattr.data.dataset.ImageTransform`) and fed as uint8.

Boxes: ALM's box of every attribute at every level (eq. 3) is mapped to pixels of the original
image by :func:`pedattr.models.localization.boxes_to_pixels` (paper Sec. 4.3: a feature-map
cell maps to the centre of its receptive field), as (x0, y0, x1, y1) in continuous pixel
coordinates (the image spans [0, width] x [0, height]), clipped to the image. Levels are named after
BN-Inception's blocks ("3b", "4d", "5b") for that backbone and "level1", "level2", "level3"
(strides 8, 16, 32) for any other.

Thresholds: 0.5 for every attribute by default, as ``pedattr eval`` and every published number;
``thresholds="calibrated"`` uses those ``pedattr calibrate`` stored in the checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pedattr.checkpoint.format import load_runner
from pedattr.checkpoint.thresholds import resolve_thresholds
from pedattr.data.dataset import (
    ImageTransform,
    build_transform,
    load_rgb,
    sixteen_bit_to_uint8,
    to_rgb,
    upright_rgb,
)
from pedattr.evaluation.forward import forward_batch
from pedattr.models.localization import (
    boxes_to_pixels,
    level_names,
    level_sizes,
    points_to_pixels,
)
from pedattr.models.model import AttributeModel
from pedattr.models.onnx_runtime import OnnxModel, import_onnx_package, is_onnx_path
from pedattr.utils.device import resolve_device
from pedattr.utils.json import json_safe

#: Anything :meth:`Predictor.predict` takes as one image.
ImageLike = str | os.PathLike | Image.Image | np.ndarray | Tensor
#: Name of the branch that is not a pyramid level, in :attr:`Prediction.winning_level`.
GLOBAL_BRANCH = "global"
#: Longest side of :attr:`Prediction.preview`: enough for an overlay, small enough to keep.
PREVIEW_MAX_SIDE = 1024
Box = tuple[float, float, float, float]


class ImageReadError(ValueError):
    """An input that cannot be turned into an image; the message names it and says why."""


def display_name(source: str, frame: int | None = None, crop: Box | None = None) -> str:
    """How an input is named in messages and tables: ``video.avi [frame 30, crop 4,8,60,160]``."""
    details = []
    if frame is not None:
        details.append(f"frame {frame}")
    if crop is not None:
        details.append("crop " + ",".join(str(int(v)) for v in crop))
    return f"{source} [{', '.join(details)}]" if details else source


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInput:
    """One image with where it came from, as the command line's input expansion yields them.

    Attributes:
        image: a path, Pillow image, array or 3-D tensor (see :data:`ImageLike`).
        source: the file (or a label for an in-memory image).
        frame: the video frame number, for frames of a video.
        crop: (x0, y0, x1, y1) of the frame this image was cut from, for video crops.
    """

    image: ImageLike
    source: str
    frame: int | None = None
    crop: tuple[int, int, int, int] | None = None

    @property
    def name(self) -> str:
        return display_name(self.source, self.frame, self.crop)


@dataclass(frozen=True)
class PredictionFailure:
    """An input that could not be predicted, and why (one line: ``str(failure)``)."""

    source: str
    reason: str
    frame: int | None = None
    crop: tuple[int, int, int, int] | None = None

    @property
    def name(self) -> str:
        return display_name(self.source, self.frame, self.crop)

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def _array_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 scaled as 16-bit image files are; float in [0, 1] rounded."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return sixteen_bit_to_uint8(pixels)
    if np.issubdtype(pixels.dtype, np.floating):
        values = pixels.astype(np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError("a float image must hold values in [0, 1]")
        return np.rint(values * 255).astype(np.uint8)
    raise ValueError(
        f"an image array of dtype {pixels.dtype} is not supported; "
        "give uint8, uint16, or float in [0, 1]"
    )


def array_to_rgb(pixels: np.ndarray) -> Image.Image:
    """An H x W or H x W x 1/3/4 array (uint8, uint16, float in [0, 1]) as an RGB Pillow image.

    Grey, RGB and RGBA arrays become the Pillow image of that mode and go through
    :func:`~pedattr.data.dataset.to_rgb` (alpha composited on black), like files of those modes.

    Raises:
        ValueError: another shape or dtype, an empty image, or float values outside [0, 1].
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(
            f"an image array must be H x W or H x W x 1, 3 or 4; got shape {pixels.shape}"
        )
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"an image array of shape {pixels.shape} has no pixels")
    return to_rgb(Image.fromarray(np.ascontiguousarray(_array_to_uint8(pixels))))


def tensor_to_rgb(image: Tensor) -> Image.Image:
    """A C x H x W (C = 1, 3, 4) or H x W tensor, uint8 or float in [0, 1], as an RGB image."""
    image = image.detach().cpu()
    if image.is_floating_point():
        image = image.float()  # numpy has no bfloat16
    if image.ndim == 3:
        if image.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"an image tensor must be C x H x W with C = 1, 3 or 4; got shape "
                f"{tuple(image.shape)}"
            )
        return array_to_rgb(image.permute(1, 2, 0).numpy())
    if image.ndim == 2:
        return array_to_rgb(image.numpy())
    raise ValueError(f"an image tensor must be C x H x W; got shape {tuple(image.shape)}")


def to_rgb_image(image: ImageLike) -> Image.Image:
    """Any single image :meth:`Predictor.predict` takes, as the pipeline's upright RGB image.

    Raises:
        OSError, ValueError: the file cannot be read or the array is not an image.
        TypeError: not an image type at all.
    """
    if isinstance(image, str | os.PathLike):
        return load_rgb(image)
    if isinstance(image, Image.Image):
        return upright_rgb(image)
    if isinstance(image, np.ndarray):
        return array_to_rgb(image)
    if isinstance(image, Tensor):
        return tensor_to_rgb(image)
    raise TypeError(
        f"cannot predict on a {type(image).__name__}; give a path, a PIL image, a numpy array "
        "or a tensor"
    )


def _split_batch(image: Any) -> list[Any] | None:
    """The images of a 4-D array or tensor (a batch), or None for anything else."""
    if isinstance(image, Tensor | np.ndarray) and image.ndim == 4:
        return list(image)
    return None


def _is_single(images: Any) -> bool:
    if isinstance(images, np.ndarray | Tensor):
        return images.ndim != 4
    return isinstance(images, str | os.PathLike | Image.Image | ImageInput | PredictionFailure) or (
        not isinstance(images, Iterable)
    )


def as_inputs(images: Any) -> Iterator[ImageInput | PredictionFailure]:
    """One :class:`ImageInput` per image in ``images``, lazily.

    ``images`` is a single image, a 4-D batch (array N x H x W x C, tensor B x C x H x W) or an
    iterable of images, batches, :class:`ImageInput` s and :class:`PredictionFailure` s (passed
    through). Paths are their own source; in-memory images are named ``<image K>`` by their
    position K in the output.
    """
    if _is_single(images):
        items: Iterable[Any] = [images]
    else:
        batch = _split_batch(images)
        items = images if batch is None else batch
    position = 0
    for item in items:
        batch = _split_batch(item)
        for image in [item] if batch is None else batch:
            if isinstance(image, ImageInput | PredictionFailure):
                yield image
            elif isinstance(image, str | os.PathLike):
                yield ImageInput(image, os.fspath(image))
            else:
                yield ImageInput(image, f"<image {position}>")
            position += 1


def describe_error(err: BaseException) -> str:
    """A short one-line reason for a failed input, without the path messages often repeat."""
    return " ".join(_reason(err).split())  # one line per failure, whatever the message holds


def _reason(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, IsADirectoryError):
        return "a folder, not an image"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, Image.DecompressionBombError):
        return (
            f"{err} Pillow refuses images this large; raise PIL.Image.MAX_IMAGE_PIXELS if the "
            "file is trusted"
        )
    if isinstance(err, OSError):  # UnidentifiedImageError, truncated files, decoder errors
        return f"cannot read the image: {err}"
    return str(err) or type(err).__name__


# --- predictions ------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What the model says about one image.

    Attributes:
        source: the file, or ``<image K>`` for an in-memory image.
        image_size: the original image's (height, width); boxes are in its pixels.
        probabilities: attribute name -> probability, in the model's attribute order.
        attributes: the attributes whose probability is above their threshold, in that order.
        boxes: attribute name -> level name -> (x0, y0, x1, y1) in pixels of the image; empty
            for a model without ALM (the baseline).
        winning_level: attribute name -> the branch whose logit won the max vote: a level name
            or "global" (ties go to the lower level).
        frame: the frame number, for a video frame.
        crop: (x0, y0, x1, y1) of the frame this image was cut from, for a video crop.
        preview: the RGB image (at most :data:`PREVIEW_MAX_SIDE` pixels on its longer side),
            kept only when asked for (``keep_images=True``), for drawing boxes.
        peaks: attribute name -> level name -> (x, y) in pixels of the image: where the level's
            activation map for the attribute peaks (each ALM's classifier applied at every
            cell; :func:`pedattr.models.localization.recording_activation_peaks`); empty for a model
            without ALM levels, or when the predictor was asked not to record them.
    """

    source: str
    image_size: tuple[int, int]
    probabilities: dict[str, float]
    attributes: list[str]
    boxes: dict[str, dict[str, Box]]
    winning_level: dict[str, str]
    frame: int | None = None
    crop: tuple[int, int, int, int] | None = None
    preview: Image.Image | None = field(default=None, repr=False, compare=False)
    peaks: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The source with its frame and crop, as tables and messages show it."""
        return display_name(self.source, self.frame, self.crop)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (no preview): boxes as [x0, y0, x1, y1] lists, image size as
        ``{"height", "width"}``."""
        height, width = self.image_size
        return json_safe(
            {
                "source": self.source,
                "frame": self.frame,
                "crop": None if self.crop is None else list(self.crop),
                "image_size": {"height": height, "width": width},
                "attributes": list(self.attributes),
                "probabilities": dict(self.probabilities),
                "boxes": {
                    name: {level: list(box) for level, box in levels.items()}
                    for name, levels in self.boxes.items()
                },
                "winning_level": dict(self.winning_level),
                "peaks": {
                    name: {level: list(point) for level, point in levels.items()}
                    for name, levels in self.peaks.items()
                },
            }
        )


@dataclass
class PreparedImage:
    """One input decoded and resized to the model's input size: what
    :meth:`Predictor.predict_prepared` takes. ``pedattr serve`` prepares images where requests
    arrive and predicts them in its inference worker.

    Attributes:
        source: the file, or a label for an in-memory image (the record's ``source``).
        pixels: uint8 [3, H, W] at the model's input size.
        image_size: the original image's (height, width); boxes are mapped back to it.
        preview: the RGB image, kept only when asked for (:data:`PREVIEW_MAX_SIDE`).
        frame: the video frame number, for frames of a video.
        crop: (x0, y0, x1, y1) of the frame this image was cut from, for video crops.
    """

    source: str
    pixels: Tensor
    image_size: tuple[int, int]
    preview: Image.Image | None = None
    frame: int | None = None
    crop: tuple[int, int, int, int] | None = None


@dataclass
class ImageOutputs:
    """What the model says about one prepared image, as arrays (:meth:`Predictor.forward_prepared`):
    small, and cheap to send to another process.

    Attributes:
        probs: [M] the attributes' probabilities.
        winners: [M] the index of the branch whose logit won the max vote (the levels, then
            the global branch).
        boxes: [L, M, 4] (x0, y0, x1, y1) in pixels of the image; None without ALM levels.
        peaks: [L, M, 2] (x, y) in pixels of the image; None when peaks are not recorded.
    """

    probs: np.ndarray
    winners: np.ndarray
    boxes: np.ndarray | None
    peaks: np.ndarray | None


def prepare_image(
    item: ImageInput, transform: ImageTransform, *, keep: bool = False
) -> PreparedImage | PredictionFailure:
    """Decode and resize one input with the evaluation transform; any error becomes a failure
    naming it (one bad input must not stop the others)."""
    try:
        image = to_rgb_image(item.image)
        pixels = transform(image)
    except Exception as err:
        return PredictionFailure(item.source, describe_error(err), item.frame, item.crop)
    preview = _preview(image) if keep else None
    size = (image.height, image.width)
    return PreparedImage(item.source, pixels, size, preview, item.frame, item.crop)


def _preview(image: Image.Image) -> Image.Image:
    scale = PREVIEW_MAX_SIDE / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _parameter_device(model: AttributeModel) -> torch.device:
    return next(model.parameters()).device


def model_device(path: str | os.PathLike, device: str) -> torch.device:
    """The device the model file ``path`` runs on: for an exported ``.onnx`` model, run by
    onnxruntime, "auto" is CUDA only when this onnxruntime has CUDA."""
    if device != "auto" or not is_onnx_path(path):
        return resolve_device(device)
    ort = import_onnx_package("onnxruntime")  # or one line saying how to install it
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return resolve_device("auto") if cuda else torch.device("cpu")


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Predictor:
    """Batched attribute prediction with boxes for paths, Pillow images, arrays and tensors.

    Examples:
        >>> predictor = Predictor.from_checkpoint("runs/demo/run/best.safetensors")
        >>> [p] = predictor.predict("person.jpg")
        >>> p.attributes, p.probabilities["Hat"], p.boxes["Hat"]["4d"]

    Args:
        model: an :class:`~pedattr.models.model.AttributeModel`; it is put in eval mode.
        device: where to run it: "auto" (CUDA when available), "cpu", "cuda", "cuda:N" or a
            torch.device; None keeps the model where it is.
        thresholds: "default" (0.5 for every attribute), "calibrated" (the thresholds stored in
            the checkpoint, ``model.thresholds``), one float for all, or one per attribute.
        batch_size: images per forward pass.
        workers: threads decoding and resizing images while the model runs (default: up to 4,
            one per CPU core).
        source: the checkpoint the model came from, named in messages (None: a model built
            in this process).
        peaks: record where each level's activation map peaks for every attribute
            (:attr:`Prediction.peaks`); False skips that work (a small share of a forward,
            docs/performance.md) and leaves ``peaks`` empty.

    Raises:
        ValueError: calibrated thresholds asked for but none stored; thresholds of the wrong
            length; a bad batch size or device.
    """

    def __init__(
        self,
        model: AttributeModel | OnnxModel,
        *,
        device: str | torch.device | None = None,
        thresholds: str | float | Sequence[float] = "default",
        batch_size: int = 32,
        workers: int | None = None,
        source: str | None = None,
        peaks: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if isinstance(device, str):
            device = resolve_device(device)
        self.model = (model if device is None else model.to(device)).eval()
        self.device = model.device if isinstance(model, OnnxModel) else _parameter_device(model)
        self.source = source
        self.attribute_names = list(model.attribute_names)
        self.thresholds = self._resolve_thresholds(thresholds)
        self.batch_size = int(batch_size)
        # An exported graph has no activation maps: its predictions carry no peaks.
        self.peaks = bool(peaks) and not isinstance(model, OnnxModel)
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self.input_size: tuple[int, int] = tuple(model.config.input_size)
        self.transform = build_transform(self.input_size, train=False)
        # Branch names: the pyramid levels (none for the baseline), then the global branch.
        self.level_names = level_names(model.config)
        has_boxes = model.config.has_boxes
        self._level_sizes = level_sizes(model, self.input_size) if has_boxes else []

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "auto",
        thresholds: str | float | Sequence[float] = "default",
        batch_size: int = 32,
        workers: int | None = None,
        peaks: bool = True,
    ) -> Predictor:
        """A predictor for a pedattr checkpoint (``.safetensors``) or an exported ``.onnx``
        model (run by onnxruntime: :class:`~pedattr.models.onnx_runtime.OnnxModel`; its
        predictions carry no activation peaks).

        Raises:
            CheckpointError: the file is not a usable checkpoint (e.g. a newer format version).
            OnnxModelError: the ``.onnx`` file is not a usable pedattr export.
        """
        if isinstance(device, str):
            device = model_device(path, device)
        model = load_runner(path, device=device)
        return cls(
            model,
            thresholds=thresholds,
            batch_size=batch_size,
            workers=workers,
            source=os.fspath(path),
            peaks=peaks,
        )

    def _resolve_thresholds(self, thresholds: str | float | Sequence[float]) -> np.ndarray:
        stored = getattr(self.model, "thresholds", None)  # load_model attaches it
        if thresholds == "calibrated" and self.source is None and stored is None:
            raise ValueError(
                "the model carries no calibrated thresholds (model.thresholds); load a checkpoint "
                "that `pedattr calibrate` calibrated, or pass the thresholds"
            )
        if isinstance(thresholds, str):
            thresholds = resolve_thresholds(self.model, self.source, thresholds)
        values = np.asarray(thresholds, dtype=np.float64)
        if values.ndim == 0:
            values = np.full(len(self.attribute_names), float(values))
        if values.shape != (len(self.attribute_names),):
            raise ValueError(f"{values.size} thresholds for {len(self.attribute_names)} attributes")
        return values

    # --- public API ---------------------------------------------------------------------------

    def predict(self, images: ImageLike | ImageInput | Iterable[Any]) -> list[Prediction]:
        """Predict every image; always a list, one :class:`Prediction` per image, in order.

        Args:
            images: one image (path, Pillow image, array, 3-D tensor), a 4-D batch, or an
                iterable of any of these.

        Raises:
            ImageReadError: an input cannot be read (the message names it); nothing is returned.
        """
        predictions = []
        for result in self.predict_iter(images):
            if isinstance(result, PredictionFailure):
                raise ImageReadError(str(result))
            predictions.append(result)
        return predictions

    def predict_iter(
        self, images: ImageLike | ImageInput | Iterable[Any], *, keep_images: bool = False
    ) -> Iterator[Prediction | PredictionFailure]:
        """Predict lazily, ``batch_size`` images at a time, in input order.

        Unreadable inputs are yielded as :class:`PredictionFailure` where they occur, and the
        rest goes on. Images of the next batch are decoded in threads while the model runs.

        Args:
            images: as for :meth:`predict`; failures already in the stream are passed through.
            keep_images: attach the RGB image to each prediction (``preview``) for drawing.
        """
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            pending: list[Future] | None = None
            for chunk in _batched(as_inputs(images), self.batch_size):
                submitted = [self._submit(pool, item, keep_images) for item in chunk]
                if pending is not None:
                    yield from self._finish(pending)
                pending = submitted
            if pending is not None:
                yield from self._finish(pending)

    # --- internals ----------------------------------------------------------------------------

    def _submit(
        self, pool: ThreadPoolExecutor, item: ImageInput | PredictionFailure, keep: bool
    ) -> Future:
        if isinstance(item, PredictionFailure):
            done: Future = Future()
            done.set_result(item)
            return done
        return pool.submit(prepare_image, item, self.transform, keep=keep)

    def _finish(self, futures: list[Future]) -> Iterator[Prediction | PredictionFailure]:
        results = [future.result() for future in futures]
        prepared = [r for r in results if isinstance(r, PreparedImage)]
        predictions = iter(self.predict_prepared(prepared) if prepared else [])
        for result in results:
            yield next(predictions) if isinstance(result, PreparedImage) else result

    def predict_prepared(self, prepared: Sequence[PreparedImage]) -> list[Prediction]:
        """One forward pass over images already prepared (:func:`prepare_image` with this
        predictor's ``transform``), and their records."""
        outputs = self.forward_prepared(prepared)
        return [self.prediction(p, out) for p, out in zip(prepared, outputs, strict=True)]

    def forward_prepared(self, prepared: Sequence[PreparedImage]) -> list[ImageOutputs]:
        """The arrays of :meth:`predict_prepared` without the records, one per image: the
        evaluation's forward pass (:func:`~pedattr.evaluation.forward.forward_batch`), boxes
        and peaks mapped back to each image's pixels. ``pedattr serve`` runs this in its
        worker and :meth:`prediction` where the answer is written."""
        images = torch.stack([p.pixels for p in prepared])
        output = forward_batch(self.model, images, device=self.device, peaks=self.peaks)
        sizes = [p.image_size for p in prepared]
        peaks = None
        if output.peaks is not None:
            peaks = points_to_pixels(output.peaks, input_size=self.input_size, image_size=sizes)
        probs = output.probs.astype(np.float64)
        pixel_boxes = None
        if output.boxes is not None:
            pixel_boxes = boxes_to_pixels(
                output.boxes,
                level_sizes=self._level_sizes,
                input_size=self.input_size,
                image_size=sizes,
                align_corners=self.model.config.align_corners,
            )
        return [
            ImageOutputs(
                probs[k],
                np.asarray(output.winners[k]),
                None if pixel_boxes is None else pixel_boxes[k],
                None if peaks is None else peaks[k],
            )
            for k in range(len(prepared))
        ]

    def prediction(self, prepared: PreparedImage, outputs: ImageOutputs) -> Prediction:
        """The record of one prepared image from its :meth:`forward_prepared` arrays (its
        pixels are not read)."""
        names = self.attribute_names
        # ALM's branches are the levels then the global one; the baseline has only the latter.
        branch_names = (*self.level_names, GLOBAL_BRANCH)
        probs = outputs.probs
        return Prediction(
            source=prepared.source,
            image_size=prepared.image_size,
            probabilities={name: float(p) for name, p in zip(names, probs, strict=True)},
            attributes=[n for n, p, t in zip(names, probs, self.thresholds, strict=True) if p > t],
            boxes=self._per_level(outputs.boxes),
            winning_level={
                name: branch_names[int(w)] for name, w in zip(names, outputs.winners, strict=True)
            },
            frame=prepared.frame,
            crop=prepared.crop,
            preview=prepared.preview,
            peaks=self._per_level(outputs.peaks),
        )

    def _per_level(self, values: np.ndarray | None) -> dict[str, dict[str, tuple]]:
        """An image's [L, M, D] values as attribute -> level -> tuple; empty when None."""
        if values is None:
            return {}
        return {
            name: {
                level: tuple(float(v) for v in values[j, m])
                for j, level in enumerate(self.level_names)
            }
            for m, name in enumerate(self.attribute_names)
        }
