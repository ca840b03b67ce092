"""``pedattr serve``: an HTTP service on LitServe that batches requests dynamically.

Endpoints:

* ``POST /predict``: one or several images, as multipart file fields named ``image`` or as JSON
  ``{"images": [BASE64, ...], "names": [NAME, ...]}`` (``names`` optional). The answer is a JSON
  list with one record per image, in order: exactly the objects ``pedattr predict --json``
  writes (:meth:`~pedattr.inference.predictor.Prediction.to_dict`); ``source`` is the uploaded
  file's name, the given name, or ``<image K>`` (K counted from 0 within the request).
* ``GET /model``: attributes, thresholds, input size, levels and the model's settings.
* ``GET /health``: LitServe's own; 200 ``ok`` once every inference worker has loaded the model.

Where the work happens. LitServe runs an HTTP process (FastAPI) and inference worker processes
joined by a queue; a worker takes up to ``max_batch_size`` queued requests and runs them as one
batch (:class:`GatheringLoop` says when it stops waiting for more). Two more of LitServe's
behaviours shape this module:

* its batched loop treats a batch as a whole: an exception in ``decode_request``,
  ``predict`` or ``encode_response`` for one request answers every request of the batch with
  that error. So every check (body size, content type, fields, base64, the pixel count read
  from the image's header, then decoding) runs in the HTTP process, before the request is
  queued, and a request refused there never reaches a batch;
* its default ``POST`` route parses JSON and forms itself, answers a malformed body with 500
  and has no per-request error status. So :class:`PredictSpec`, a ``LitSpec`` (LitServe's
  extension point for custom routes, as its OpenAI spec uses), owns ``POST /predict`` and
  ``GET /model``; it queues requests with LitServe's queue and response buffer, so batching,
  workers and ``/health`` stay LitServe's.

The HTTP process also decodes and resizes each image
(:func:`~pedattr.inference.predictor.prepare_image`, in threads) and writes the records from the
model's arrays (:meth:`~pedattr.inference.predictor.Predictor.prediction`), so that the worker's
core runs the model alone, as ``pedattr predict`` decodes the next batch while the model runs. A
request may hold several images; a batch is the images of its requests together, run through
:meth:`~pedattr.inference.predictor.Predictor.forward_prepared` (the same resizing and forward
as ``pedattr predict``) in forward passes of at most ``max_batch_size`` images.

Refusals are a 4xx status with one JSON line ``{"error": "..."}`` (docs/serve.md lists them).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import pickle
import re
import signal
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from io import BytesIO
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

import litserve as ls
import numpy as np
import torch
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from litserve.loops import BatchedLoop
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError  # what ends a worker's loop
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect

from pedattr._version import __version__
from pedattr.data.dataset import ImageTransform
from pedattr.errors import Interrupted
from pedattr.inference.predictor import (
    ImageInput,
    ImageOutputs,
    PredictionFailure,
    Predictor,
    PreparedImage,
    model_device,
    prepare_image,
)
from pedattr.models.onnx_runtime import is_onnx_path
from pedattr.utils.allocator import keep_freed_memory
from pedattr.utils.kernels import keep_kernels_for_batch_sizes

_log = logging.getLogger(__name__)

#: The engines ``--engine`` names: a PyTorch checkpoint, or an exported ``.onnx`` model.
ENGINES = ("torch", "onnxruntime")
#: Multipart field that carries an image file.
IMAGE_FIELD = "image"
#: Keys of a JSON request body.
JSON_FIELDS = ("images", "names")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_USAGE = (
    "send images as multipart file fields named 'image', or as JSON "
    '{"images": [BASE64, ...], "names": [NAME, ...]}'
)


@dataclass(frozen=True)
class ServeSettings:
    """What ``pedattr serve`` serves and how; every field has its command-line option.

    Attributes:
        checkpoint: the model: a pedattr checkpoint (engine torch) or an exported ``.onnx``
            file (engine onnxruntime).
        engine: "torch" or "onnxruntime"; None (the default): the one that runs
            ``checkpoint``, onnxruntime for a ``.onnx`` file and torch otherwise.
        device: "auto", "cpu", "cuda" or "cuda:N".
        thresholds: "default" (0.5) or "calibrated" (stored in the checkpoint).
        workers: inference worker processes, each with its own copy of the model.
        max_batch_size: requests gathered into one batch, and images per forward pass.
        batch_timeout: seconds an idle worker waits, after a request arrives, for others to
            join its batch (:class:`GatheringLoop`).
        max_request_size: bytes a request body may hold.
        max_images: images one request may hold.
        max_pixels: pixels (width x height) one image may have.
        peaks: record where the activation maps peak, as ``pedattr predict`` does by default.
        timeout: seconds a request may wait in the queue before it is answered 504.
        threads: torch threads of each worker on the CPU; None: ``OMP_NUM_THREADS`` when set,
            else the cores left after one for the HTTP process, shared among the workers
            (:func:`worker_threads`). The onnxruntime engine keeps its own setting.
        gzip: compress answers for clients that accept gzip (LitServe's default). Off by
            default: an answer is a few kilobytes of JSON, and compressing it takes a share of
            the HTTP process's CPU that a small machine needs for parsing requests.
    """

    checkpoint: str
    engine: str | None = None
    device: str = "auto"
    thresholds: str = "default"
    workers: int = 1
    max_batch_size: int = 32
    batch_timeout: float = 0.01
    max_request_size: int = 16 * 2**20
    max_images: int = 64
    max_pixels: int = 25_000_000
    peaks: bool = True
    timeout: float = 30.0
    threads: int | None = None
    gzip: bool = False

    def __post_init__(self) -> None:
        if self.engine is None:
            engine = "onnxruntime" if is_onnx_path(self.checkpoint) else "torch"
            object.__setattr__(self, "engine", engine)  # frozen: set once, here


class BadRequest(Exception):
    """A request refused before it is queued: an HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(reason.split())


def error_response(status: int, reason: str) -> JSONResponse:
    """The answer to a refused request: ``{"error": reason}`` on one line."""
    return JSONResponse({"error": " ".join(reason.split())}, status_code=status)


# --- reading a request (HTTP process) ---------------------------------------------------------


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes:
    by its Content-Length before reading, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(400, f"Content-Length is not a number: {declared!r}")
        if int(declared) > limit:
            raise BadRequest(413, f"body of {int(declared)} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _one_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def multipart_images(
    headers: Any, body: bytes, max_images: int
) -> list[tuple[str | None, bytes]]:
    """(file name, bytes) of each ``image`` file field of a multipart body, in order."""
    # Text fields are parsed too (as many as images allowed), so that one is refused by name.
    parser = MultiPartParser(headers, _one_chunk(body), max_files=max_images, max_fields=max_images)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        reason = err.message
        if "Too many files" in reason:
            raise BadRequest(413, f"more than {max_images} images in one request") from None
        if "Too many fields" in reason:
            raise BadRequest(400, f"more than {max_images} fields that are not files") from None
        raise BadRequest(400, f"malformed multipart body: {reason}") from None
    try:
        images = []
        for key, value in form.multi_items():
            if key != IMAGE_FIELD:
                raise BadRequest(400, f"unknown field {key!r}; {_USAGE}")
            if not isinstance(value, UploadFile):
                raise BadRequest(400, f"field {key!r} is not a file; {_USAGE}")
            images.append((value.filename or None, await value.read()))
        return images
    finally:
        await form.close()


def _decode_base64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(400, f"{where}: expected a base64 string, got {type(text).__name__}")
    text = _DATA_URL.sub("", text, count=1)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequest(400, f"{where}: not valid base64 ({err})") from None


def json_images(body: bytes, max_images: int) -> list[tuple[str | None, bytes]]:
    """(name, bytes) of each image of a JSON body ``{"images": [...], "names": [...]}``."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, f"body is not valid JSON ({err})") from None
    if not isinstance(document, dict):
        raise BadRequest(400, f"expected a JSON object; {_USAGE}")
    unknown = sorted(set(document) - set(JSON_FIELDS))
    if unknown:
        raise BadRequest(400, f"unknown field {unknown[0]!r}; {_USAGE}")
    images = document.get("images")
    if not isinstance(images, list):
        raise BadRequest(400, f"'images' must be a list of base64 strings; {_USAGE}")
    if len(images) > max_images:
        raise BadRequest(413, f"{len(images)} images in one request; the limit is {max_images}")
    names = document.get("names")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != len(images)
        or not all(isinstance(name, str) for name in names)
    ):
        raise BadRequest(400, "'names' must be a list of strings, one per image")
    data = [_decode_base64(text, f"images[{k}]") for k, text in enumerate(images)]
    return list(zip(names or [None] * len(data), data, strict=True))


def check_image(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse what Pillow does not recognise (422) or an image over ``max_pixels`` (413),
    reading only the header: no pixel is decoded here."""
    if not data:
        raise BadRequest(400, f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        raise BadRequest(413, f"{name}: {err}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        reason = (
            "not an image format Pillow reads" if isinstance(err, UnidentifiedImageError) else err
        )
        raise BadRequest(422, f"{name}: cannot read the image: {reason}") from None
    if width * height > max_pixels:
        raise BadRequest(
            413,
            f"{name}: {width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
        )


def image_name(given: str | None, position: int) -> str:
    """The record's ``source``: the name sent, else ``<image K>`` as the Predictor names
    in-memory images."""
    return given if given else f"<image {position}>"


async def read_images(request: Request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """The (name, bytes) of every image of a ``POST /predict`` request, every check passed.

    Raises:
        BadRequest: the request is refused (its status and reason).
        ClientDisconnect: the client went away before its body arrived.
    """
    kind = _content_type(request)
    if kind not in ("multipart/form-data", "application/json"):
        shown = kind or "none"
        raise BadRequest(
            415, f"Content-Type must be multipart/form-data or application/json, got {shown}"
        )
    body = await read_body(request, settings.max_request_size)
    if not body:
        raise BadRequest(400, f"empty body; {_USAGE}")
    if kind == "application/json":
        found = json_images(body, settings.max_images)
    else:
        found = await multipart_images(request.headers, body, settings.max_images)
    if not found:
        raise BadRequest(400, f"no image in the request; {_USAGE}")
    images = [(image_name(name, k), data) for k, (name, data) in enumerate(found)]
    for name, data in images:
        check_image(data, name, settings.max_pixels)
    return images


# --- the model (inference worker) -------------------------------------------------------------


def load_predictor(settings: ServeSettings, device: str) -> Predictor:
    """The Predictor a worker (or the HTTP process, for ``GET /model``) runs, loaded through
    :meth:`Predictor.from_checkpoint` as ``pedattr predict`` loads it."""
    return Predictor.from_checkpoint(
        settings.checkpoint,
        device=device,
        thresholds=settings.thresholds,
        batch_size=settings.max_batch_size,
        peaks=settings.peaks,
    )


#: What a queued request carries per image: its name, uint8 [3, H, W] pixels at the model's
#: input size (NumPy: queued by pickling, unlike a tensor) and the original (height, width).
QueuedImage = tuple[str, np.ndarray, tuple[int, int]]


def prepare_images(
    images: Sequence[tuple[str, bytes]], transform: ImageTransform
) -> list[PreparedImage]:
    """Decode and resize a request's images as ``pedattr predict`` does.

    Raises:
        BadRequest: 422 naming every image that could not be decoded (a truncated file).
    """
    prepared = [
        prepare_image(ImageInput(Image.open(BytesIO(data)), name), transform)
        for name, data in images
    ]
    failures = [str(p) for p in prepared if isinstance(p, PredictionFailure)]
    if failures:
        raise BadRequest(422, "; ".join(failures))
    return prepared


#: An image's result: its record, or the model's arrays for it.
Result = TypeVar("Result")


def queued(images: Sequence[PreparedImage]) -> list[QueuedImage]:
    """What the request queue carries of prepared images."""
    return [(image.source, image.pixels.numpy(), image.image_size) for image in images]


def split_results(results: Sequence[Result], counts: Sequence[int]) -> list[list[Result]]:
    """The results of a batch's images, back in their requests (``counts`` images each)."""
    parts, start = [], 0
    for count in counts:
        parts.append(list(results[start : start + count]))
        start += count
    if start != len(results):
        raise ValueError(f"{len(results)} results for {start} images")
    return parts


def worker_threads(settings: ServeSettings, cpus: int | None = None) -> int | None:
    """Torch threads for each worker on the CPU, or None to keep ``OMP_NUM_THREADS``.

    By default one core is left to the HTTP process (parsing requests and writing answers take
    about a third of the model's time per image on the demo's model) and the others are shared
    among the workers: torch's threads spin while they wait, so a worker with a thread per core
    slows the HTTP process it depends on (docs/serve.md measures both).
    """
    if settings.threads is not None:
        return settings.threads
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, (cpus - 1) // settings.workers)


class GatheringLoop(BatchedLoop):
    """LitServe's batched loop, gathering each batch by blocking reads of the queue, and waiting
    for a batch to fill only when the worker was idle.

    LitServe 0.2's own gathering polls the queue (a manager process) every millisecond while
    it waits for a batch to fill, and starts a new wait as soon as one ends, so an idle worker
    keeps the worker and the manager busy; on a 2-core CPU that polling takes the cores the
    model needs. And it waits ``batch_timeout`` for every batch, also when requests queued up
    while the previous batch ran, leaving the model idle under load.

    This loop waits for a request (at most a second at a time, so that it notices the shutdown
    sentinel). If that request was already queued when the loop asked, the worker is behind:
    it takes what else is queued, up to ``max_batch_size``, and runs the batch at once. If the
    request arrived while the worker was idle, it waits up to ``batch_timeout`` for others to
    join it (a burst of clients), then runs. Under load, batches grow by themselves: requests
    queue up while the model runs.

    Each read from LitServe's queue and each answer written to it is a round trip to its
    manager process. Threads of the worker make them while the model runs (:meth:`_relays`):
    one sends the answers :meth:`put_response` leaves, so that they do not hold up the next
    batch; and with ``prefetch`` (one worker: no other worker waits for the same requests)
    one moves arrived requests into the worker, so that a finished batch finds the next
    requests at hand.
    """

    def __init__(self, prefetch: bool = True) -> None:
        super().__init__()
        self.prefetch = prefetch
        # Made in the worker on first use: the loop is pickled to the worker without them.
        self._arrived: SimpleQueue | None = None
        self._leaving: SimpleQueue | None = None
        self._sender: threading.Thread | None = None

    def _relays(self, request_queue: Any, transport: Any) -> Any:
        """The queue to gather from: the worker's own (prefetch) or LitServe's. The first call
        starts the threads."""
        if self._sender is None:
            self._leaving = SimpleQueue()
            self._sender = threading.Thread(target=self._send, args=(transport,), daemon=True)
            self._sender.start()
            if self.prefetch:
                self._arrived = SimpleQueue()
                threading.Thread(target=self._fetch, args=(request_queue,), daemon=True).start()
        return self._arrived if self._arrived is not None else request_queue

    def _fetch(self, request_queue: Any) -> None:
        """Move requests into the worker; anything that stops this thread goes there too, so
        that the loop ends (the sentinel) or fails (an error) as it would reading the queue."""
        while True:
            try:
                item = request_queue.get(timeout=1.0)
            except Empty:
                continue
            except (EOFError, OSError):  # the manager is gone: the server is stopping
                item = _SENTINEL_VALUE
            except BaseException as error:  # raised again in the loop, which then fails
                item = error
            self._arrived.put(item)  # type: ignore[union-attr]
            if item == _SENTINEL_VALUE or isinstance(item, BaseException):
                return

    def _send(self, transport: Any) -> None:
        """Send the answers :meth:`put_response` leaves, in order, until ``None``."""
        while (answer := self._leaving.get()) is not None:  # type: ignore[union-attr]
            try:
                super().put_response(transport, *answer)
            except (EOFError, OSError):  # the manager is gone: nobody to answer
                return
            except Exception:  # its client is answered 500; the other answers still leave
                _log.exception("could not send the answer to request %s", answer[1])
                self._send_failure(transport, *answer[:2], answer[4])

    def _send_failure(
        self, transport: Any, response_queue_id: int, uid: str, response_type: Any
    ) -> None:
        error = pickle.dumps(RuntimeError("the answer could not be sent; see the server's log"))
        status = LitAPIStatus.ERROR
        with contextlib.suppress(Exception):  # nothing else to tell that client
            super().put_response(transport, response_queue_id, uid, error, status, response_type)

    def _stop_sending(self) -> None:
        """Let the answers already left leave before the loop ends (at most a few seconds)."""
        if self._sender is not None:
            self._leaving.put(None)  # type: ignore[union-attr]
            self._sender.join(timeout=5.0)

    def put_response(
        self,
        transport: Any,
        response_queue_id: int,
        uid: str,
        response_data: Any,
        status: LitAPIStatus,
        response_type: LoopResponseType,
    ) -> None:
        answer = (response_queue_id, uid, response_data, status, response_type)
        if self._leaving is None:  # not gathering yet
            super().put_response(transport, *answer)
        else:
            self._leaving.put(answer)

    def get_batch_requests(
        self, lit_api: ls.LitAPI, request_queue: Any, transport: Any
    ) -> tuple[list, list]:
        request_queue = self._relays(request_queue, transport)
        payloads: list = []
        timed_out: list = []
        asked = time.monotonic()
        try:
            item = request_queue.get(timeout=1.0)
        except Empty:
            return payloads, timed_out
        # LitServe stamps requests with time.monotonic() in the HTTP process (one clock for
        # every process of the machine); a request stamped before we asked was waiting.
        waiting = isinstance(item, tuple) and item != _SENTINEL_VALUE and item[2] <= asked
        deadline = time.monotonic() + (0.0 if waiting else lit_api.batch_timeout)
        while True:
            if isinstance(item, BaseException):  # what stopped the prefetching thread
                raise item
            if item == _SENTINEL_VALUE:
                self._stop_sending()
                raise _StopLoopError()
            self._take(lit_api, item, payloads, timed_out, transport)
            if len(payloads) >= lit_api.max_batch_size:
                return payloads, timed_out
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    item = request_queue.get(timeout=remaining)
                else:
                    item = request_queue.get_nowait()
            except Empty:
                return payloads, timed_out

    def _take(
        self, lit_api: ls.LitAPI, item: tuple, payloads: list, timed_out: list, transport: Any
    ) -> None:
        """Add a request to the batch, or to the timed-out ones (answered 504), as LitServe's
        own gathering does."""
        response_queue_id, uid, queued_at, payload = item
        self.put_response(
            transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR
        )
        waited = time.monotonic() - queued_at
        if lit_api.request_timeout not in (-1, False) and waited > lit_api.request_timeout:
            timed_out.append((response_queue_id, uid))
        else:
            payloads.append((response_queue_id, uid, payload))


class AttributeAPI(ls.LitAPI):
    """The inference side: decode a batch of requests' images and predict them together."""

    def __init__(self, settings: ServeSettings, spec: LitSpec) -> None:
        with warnings.catch_warnings():  # batch() and unbatch() with max_batch_size 1 are fine
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(
                max_batch_size=settings.max_batch_size,
                batch_timeout=settings.batch_timeout,
                spec=spec,
                loop=GatheringLoop(prefetch=settings.workers == 1),
            )
        self.settings = settings

    def setup(self, device: str) -> None:
        # Ctrl-C in a terminal interrupts every process of the group; the worker leaves stopping
        # to the main process, which ends it after the HTTP process (a KeyboardInterrupt here
        # would print a traceback from the middle of a queue read).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threads = worker_threads(self.settings)
        if threads is not None and device == "cpu" and self.settings.engine == "torch":
            torch.set_num_threads(threads)
        keep_freed_memory()  # batch sizes vary under load (docs/serve.md)
        keep_kernels_for_batch_sizes(self.settings.max_batch_size)  # before the first forward
        self.predictor = load_predictor(self.settings, device)
        self._warm_up(compile_every_size=device == "cpu" and self.settings.engine == "torch")

    def _warm_up(self, compile_every_size: bool) -> None:
        """Forward passes before the first request, the largest batch first: the memory it
        takes stays with the process (:func:`keep_freed_memory`), so that a full batch under
        load finds its buffers ready instead of taking fresh pages from the system. With
        ``compile_every_size`` (PyTorch on the CPU), one pass at every smaller batch size too,
        so that oneDNN has compiled the kernels of every batch the queue can make
        (:func:`keep_kernels_for_batch_sizes`) before the service reports ready."""
        height, width = self.predictor.input_size
        blank = torch.zeros(3, height, width, dtype=torch.uint8)
        image = PreparedImage("<warm-up>", blank, (height, width))
        largest = self.settings.max_batch_size
        for size in range(largest, 0, -1) if compile_every_size else [largest]:
            self.predictor.forward_prepared([image] * size)

    def decode_request(self, request: list[QueuedImage], **kwargs: Any) -> list[PreparedImage]:
        return [
            PreparedImage(name, torch.from_numpy(pixels), size) for name, pixels, size in request
        ]

    def batch(self, inputs: list[list[Any]]) -> list[list[Any]]:
        return inputs

    def predict(self, x: list[list[PreparedImage]], **kwargs: Any) -> list[list[ImageOutputs]]:
        images = [image for request in x for image in request]
        size = self.settings.max_batch_size
        outputs = []
        for start in range(0, len(images), size):
            outputs += self.predictor.forward_prepared(images[start : start + size])
        return split_results(outputs, [len(request) for request in x])

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: Sequence[Any], **kwargs: Any) -> Any:
        # The records are made in the HTTP process (PredictSpec), which has the less work, from
        # arrays that are quicker to send through LitServe's queues than the records.
        return output


# --- the routes (HTTP process) ----------------------------------------------------------------


def model_description(predictor: Predictor, settings: ServeSettings) -> dict[str, Any]:
    """What ``GET /model`` answers."""
    height, width = predictor.input_size
    config = predictor.model.config
    limits = {
        key: value
        for key, value in asdict(settings).items()
        if key not in ("checkpoint", "engine", "thresholds")
    }
    return {
        "checkpoint": settings.checkpoint,
        "engine": settings.engine,
        "pedattr_version": __version__,
        "attributes": list(predictor.attribute_names),
        "threshold_mode": settings.thresholds,
        "thresholds": {
            name: float(t)
            for name, t in zip(predictor.attribute_names, predictor.thresholds, strict=True)
        },
        "input_size": {"height": height, "width": width},
        "levels": list(predictor.level_names),
        "model": config.to_dict(),
        # What `pedattr export --int8` recorded, for an exported model (None: float).
        "quantization": getattr(predictor.model, "quantization", None),
        "serving": limits,
    }


class PredictSpec(LitSpec):
    """``POST /predict`` and ``GET /model``, checked in the HTTP process before queueing.

    ``predictor`` (loaded on the CPU) prepares the images and writes the records; its model
    does not run here.
    """

    def __init__(
        self, settings: ServeSettings, description: dict[str, Any], predictor: Predictor
    ) -> None:
        super().__init__()
        self.api_path = "/predict"
        self.settings = settings
        self.description = description
        self.predictor: Predictor | None = predictor

    def __getstate__(self) -> dict[str, Any]:
        # LitServe sends the spec to each worker (spawned) with the API; the worker loads its own
        # model, so the HTTP side's is left behind. The HTTP processes are forked and keep it.
        return {**super().__getstate__(), "predictor": None}

    def pre_setup(self, lit_api: ls.LitAPI) -> None:
        self.add_endpoint(self.api_path, self.predict, ["POST"])
        self.add_endpoint("/model", self.model, ["GET"])

    def decode_request(self, request: Any, context_kwargs: Any = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Any = None) -> Any:
        return output

    async def model(self) -> JSONResponse:
        return JSONResponse(self.description)

    async def predict(self, request: Request) -> Response:
        try:
            images = await read_images(request, self.settings)
            # In a thread: decoding a large image must not hold up the other requests.
            loop = asyncio.get_running_loop()
            transform = self._predictor().transform
            prepared = await loop.run_in_executor(None, prepare_images, images, transform)
        except BadRequest as refused:
            return error_response(refused.status, refused.reason)
        except ClientDisconnect:  # nobody to answer; nothing was queued
            return Response(status_code=400)
        return await self._queue_and_wait(prepared)

    def _predictor(self) -> Predictor:
        if self.predictor is None:
            raise RuntimeError("PredictSpec's predictor is not sent to worker processes")
        return self.predictor

    async def _queue_and_wait(self, images: list[PreparedImage]) -> Response:
        uid = str(uuid.uuid4())
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)
        try:
            item = (self.response_queue_id, uid, time.monotonic(), queued(images))
            self.request_queue.put(item)
            await event.wait()
            output, status = self.response_buffer[uid].response
        finally:
            # Also when the client went away and the wait was cancelled: the buffer must not grow.
            self.response_buffer.pop(uid, None)
        if status != LitAPIStatus.OK:
            timed_out = getattr(output, "status_code", None) == 504
            if timed_out:
                return error_response(504, "the request waited too long in the queue")
            return error_response(500, "the model failed on this batch; see the server's log")
        predictor = self._predictor()
        records = [
            predictor.prediction(image, outputs).to_dict()
            for image, outputs in zip(images, output, strict=True)
        ]
        return JSONResponse(records)


# --- the server -------------------------------------------------------------------------------


def check_engine(settings: ServeSettings) -> None:
    """Refuse an engine that does not run this model file, naming both (an engine given
    explicitly: by default the file decides)."""
    if settings.engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {settings.engine!r}")
    onnx = is_onnx_path(settings.checkpoint)
    if settings.engine == "torch" and onnx:
        raise ValueError(
            f"{settings.checkpoint}: an exported ONNX model runs on --engine onnxruntime (the "
            "default for a .onnx file), not torch"
        )
    if settings.engine == "onnxruntime" and not onnx:
        raise ValueError(
            f"{settings.checkpoint}: --engine onnxruntime runs an exported .onnx model; export "
            f"one with `pedattr export --checkpoint {settings.checkpoint} --onnx OUT.onnx`"
        )


def _accelerator(settings: ServeSettings) -> dict[str, Any]:
    """LitServer's accelerator and devices for the settings' device; "auto" is CUDA only where
    the engine can use it (onnxruntime without its CUDA build runs on the CPU)."""
    resolved = model_device(settings.checkpoint, settings.device)  # engine checked to suit it
    if resolved.type == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    return {"accelerator": "cuda", "devices": [resolved.index or 0]}


def build_server(settings: ServeSettings) -> ls.LitServer:
    """A LitServer for ``settings``; the model is loaded here once (so that a bad checkpoint,
    device or thresholds setting is refused before any process starts) and again in each
    worker.

    Raises:
        ValueError, CheckpointError, FileNotFoundError: a bad setting or model file.
    """
    check_engine(settings)
    placement = _accelerator(settings)
    predictor = load_predictor(settings, "cpu")
    spec = PredictSpec(settings, model_description(predictor, settings), predictor)
    api = AttributeAPI(settings, spec)
    server = ls.LitServer(
        api,
        workers_per_device=settings.workers,
        timeout=settings.timeout,
        **placement,
    )
    if not settings.gzip:  # LitServer adds it to its app, built before the first request
        app = server.app
        app.user_middleware = [m for m in app.user_middleware if m.cls is not GZipMiddleware]
    return server


def _stop_quietly_in_children() -> None:
    """SIGTERM stops the server gracefully (LitServe's shutdown, on KeyboardInterrupt) in this
    process; in the HTTP processes LitServe forks from it, which inherit the handler and
    re-raise SIGTERM once uvicorn has shut down, it ends them without a traceback."""
    main_pid = os.getpid()

    def stop(signum: int, frame: object) -> None:  # noqa: ARG001
        if os.getpid() == main_pid:
            raise Interrupted(signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


class ManagerGoneFilter(logging.Filter):
    """Drop LitServe's "Monitoring worker crashed" record when what broke is the connection to
    its multiprocessing manager: the manager is shut down during a graceful stop while the
    monitoring thread may still be polling it, so that record reports the stop, not a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        manager_gone = isinstance(error, (EOFError, ConnectionError))  # BrokenPipe, reset
        return not (manager_gone and record.getMessage() == "Monitoring worker crashed")


def run_server(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop every process it started."""
    keep_freed_memory()  # here and in the HTTP process, forked from this one
    server = build_server(settings)
    logging.getLogger("litserve.server").addFilter(ManagerGoneFilter())
    _stop_quietly_in_children()
    print(
        f"serving {settings.checkpoint} on http://{host}:{port} "
        "(POST /predict, GET /model, GET /health); Ctrl-C stops",
        flush=True,
    )
    server.run(
        host=host,
        port=port,
        generate_client_file=False,
        log_level="warning",
        access_log=False,
    )
