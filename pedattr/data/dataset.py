"""The input pipeline: a prepared dataset's images as tensors, and a loader that survives bad files.

Every image read from a prepared dataset goes through the same steps:

1. decode with Pillow and apply the EXIF orientation (a phone photo tagged "rotate 90" is shown
   upright by every viewer; labels were made looking at it that way);
2. convert any mode to 8-bit RGB (:func:`to_rgb`): 16-bit grey (``I;16``, ``I``) is scaled from
   0..65535 to 0..255, since Pillow's own conversion clips it to 255; transparent images (``RGBA``,
   ``LA``, ``PA``, ``P`` with transparency) are composited on black, so that the colour values
   hidden under fully transparent pixels, which differ from one editor to the next, never reach
   the model; ``CMYK`` and the other modes (``1``, ``YCbCr``, ``LAB``, ``F`` as 0..255, ...)
   use Pillow's conversion (no ICC colour management);
3. resize to ``input_size`` (H, W), default 256 x 128, without keeping the aspect ratio (as in
   the paper), bilinear with antialiasing, on a uint8 tensor with
   ``torchvision.transforms.v2.functional.resize``: the same pixels as Pillow's ``resize``, and
   faster (docs/performance.md);
4. training only: augmentations on the resized uint8 image, by default just a random horizontal
   flip with probability ``flip_prob`` (the paper's only augmentation);
5. stay uint8: batches cross from workers and to the GPU at a quarter of float32's size, and
   the model scales them (:mod:`pedattr.models.normalization` takes uint8 0..255 or float
   0..1 and applies the backbone's convention, including both BN-Inception ones), so a
   checkpoint carries the convention its backbone needs and the pipeline is the same for all.

An image that cannot be read (missing, corrupt, truncated, not an image) does not raise in the
dataset: the sample carries a :class:`DecodeFailure` instead of a tensor,
:func:`collate_skip_failed` drops it from the batch and lists its path in :attr:`Batch.failed`,
and a :class:`FailureTracker` in the main process logs it and stops the run once more than
``max_fraction`` of the images failed. An image that resolves (through a symlink placed after
``pedattr prepare`` checked it) outside the dataset's image root is such a failure too, and is
never opened, unless the dataset was prepared with ``--allow-external-images``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from pedattr.data.description import DatasetDescription
from pedattr.data.sampler import SeededBatchSampler, SeededKey, ShardSampler

logger = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (256, 128)
#: Modes whose transparency is composited on black (``P`` only when it has a transparent index).
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

#: An augmentation: (uint8 image [3, H, W], generator or None) -> uint8 image [3, H, W].
Augmentation = Callable[[Tensor, "torch.Generator | None"], Tensor]


# --- decoding ---------------------------------------------------------------------------------


def sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit values (0..65535; anything outside is clipped) scaled and rounded to uint8 0..255."""
    values = np.clip(np.asarray(values, dtype=np.int64), 0, 65535)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    # "I" (32-bit) is what older Pillow returns for 16-bit PNGs; treat it as 0..65535 too.
    return Image.fromarray(sixteen_bit_to_uint8(np.asarray(image)), mode="L")


def _composite_on_black(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    out = Image.new("RGB", rgba.size, (0, 0, 0))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB version of a Pillow image of any mode (see the module docstring for the rules).

    Args:
        image: a loaded Pillow image.

    Returns:
        An image of mode ``RGB`` (``image`` itself when it already is).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_l(image).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite_on_black(image)
    return image.convert("RGB")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as err:  # a broken EXIF block must not cost an otherwise good image
        logger.debug("ignoring unreadable EXIF data: %s", err)
    return image


def upright_rgb(image: Image.Image) -> Image.Image:
    """What :func:`load_rgb` makes of a decoded image: EXIF orientation applied, then
    :func:`to_rgb`; ``image`` itself is left unchanged.

    This is how an image opened elsewhere (``PIL.Image.open``) gets the same pixels as its file
    read through the pipeline.
    """
    return to_rgb(_apply_exif_orientation(image.copy()))


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class SpecialFileError(OSError):
    """A path given as an image that is a FIFO, socket or device, not a regular file."""


def special_file_reason(mode: int) -> str:
    """Why a file of this ``st_mode`` (not a regular file nor a folder) is not read."""
    kind = next((what for test, what in _SPECIAL_FILES if test(mode)), "a special file")
    return f"{kind}, not a regular file: refused, since reading it could wait forever"


def open_image_file(path: str | os.PathLike) -> BinaryIO:
    """Open an image file for reading, refusing anything but a regular file.

    Reading a FIFO or a device would wait for a writer, or forever: it is opened without
    blocking (so that the check cannot hang) and refused.

    Raises:
        OSError: the file is missing or unreadable; :class:`SpecialFileError` for a FIFO,
            socket or device; IsADirectoryError for a folder.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # as open() would say
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            raise SpecialFileError(special_file_reason(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # the flag was only for the open
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file to an upright 8-bit RGB Pillow image.

    Raises:
        OSError: and whatever else Pillow raises for a missing, truncated or corrupt file, or a
            path that is not a regular file (:func:`open_image_file`).
    """
    # Our own file handle: closing it keeps the decoded pixels, while closing the Image would not.
    with open_image_file(path) as handle:
        try:
            image = Image.open(handle)
        except UnidentifiedImageError:  # its message names the handle, not the file: replace it
            raise UnidentifiedImageError("not an image format Pillow reads") from None
        image.load()  # decode now, while the file is open; truncation raises here
        return to_rgb(_apply_exif_orientation(image))


# --- transform --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HorizontalFlip:
    """Augmentation mirroring the image left-right with ``probability``.

    A class rather than a closure so that it pickles into spawned DataLoader workers.
    """

    probability: float = 0.5

    def __call__(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.with_boxes(image, None, generator)[0]

    def with_boxes(
        self, image: Tensor, boxes: np.ndarray | None, generator: torch.Generator | None
    ) -> tuple[Tensor, np.ndarray | None]:
        """The flip of ``image`` and of ``boxes`` (x0, y0, x1, y1 as fractions of the image),
        from one draw: the same randomness as :meth:`__call__`."""
        if torch.rand((), generator=generator).item() < self.probability:
            if boxes is not None:
                boxes = boxes.copy()
                boxes[..., [0, 2]] = 1.0 - boxes[..., [2, 0]]
            return image.flip(-1), boxes
        return image, boxes


@dataclass
class ImageTransform:
    """RGB Pillow image -> uint8 tensor [3, H, W]: resize, augment.

    Augmentations work on the resized uint8 tensor, the cheapest place for them; new ones
    (crops, colour jitter, ...) are added to ``augmentations``, they draw their randomness from
    the generator they are given so that a seeded loader stays reproducible.

    Attributes:
        input_size: output (height, width).
        augmentations: applied in order, training only.
    """

    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    augmentations: list[Augmentation] = field(default_factory=list)

    def _resize(self, image: Image.Image) -> Tensor:
        pixels = TF.pil_to_tensor(image)  # uint8 [3, h, w], channels-last view: fast resize
        return TF.resize(pixels, list(self.input_size), antialias=True)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> Tensor:
        pixels = self._resize(image)
        for augment in self.augmentations:
            pixels = augment(pixels, generator)
        return pixels

    def with_boxes(
        self, image: Image.Image, boxes: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[Tensor, np.ndarray]:
        """As calling the transform, and ``boxes`` (fractions of the image) moved along.

        Resizing keeps fractions; each augmentation must move them too (``with_boxes``).
        """
        pixels = self._resize(image)
        for augment in self.augmentations:
            if not hasattr(augment, "with_boxes"):
                raise TypeError(f"{augment!r} cannot move part boxes (it has no with_boxes)")
            pixels, boxes = augment.with_boxes(pixels, boxes, generator)
        return pixels, boxes


def build_transform(
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE, *, train: bool = False, flip_prob: float = 0.5
) -> ImageTransform:
    """The transform of the training (random flip) or evaluation (none) pipeline."""
    augmentations = [HorizontalFlip(flip_prob)] if train and flip_prob > 0 else []
    return ImageTransform(tuple(input_size), augmentations)


# --- dataset ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeFailure:
    """Stands in for the image tensor of a sample whose file could not be read.

    Attributes:
        path: the image file.
        reason: the error, as "ExceptionType: message".
        shape: the [3, H, W] shape the image would have had, so that a batch of failures only
            still collates to tensors of the right shape.
    """

    path: str
    reason: str
    shape: tuple[int, int, int]


class AttributeDataset(Dataset):
    """The samples of one split of a prepared dataset.

    Each item is ``(image, labels, index)``: image uint8 [3, H, W] (RGB, 0..255), or a
    :class:`DecodeFailure` when the file cannot be read; labels float32 [M] with 0, 1 or 2
    (unknown, which the loss ignores); index the sample's row in the description.

    Args:
        description: a :class:`DatasetDescription` or the folder ``pedattr prepare`` wrote.
        split: "train", "val", "test" or "trainval".
        input_size: output (height, width).
        train: apply the training augmentations (random horizontal flip).
        flip_prob: probability of the flip when ``train``.
        seed: seeds the augmentations when the dataset is read in the main process (in a
            DataLoader worker they use the seed the loader gives that worker); None uses
            torch's global generator.
        part_regions: per-image body parts for the rigid-parts model, as read by
            :func:`pedattr.data.part_regions.read_part_file`. When given, each item has a
            fourth element: head, torso and legs boxes as fractions of the image, float32
            [3, 4], flipped with the image (images the file does not list get the default
            proportions).
    """

    def __init__(
        self,
        description: DatasetDescription | str | os.PathLike,
        split: str,
        *,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        train: bool = False,
        flip_prob: float = 0.5,
        seed: int | None = None,
        part_regions: Mapping[str, dict] | None = None,
    ) -> None:
        if not isinstance(description, DatasetDescription):
            description = DatasetDescription.load(description)
        self.description = description
        self.split = split
        self.indices = description.split_indices(split)
        self.paths = [str(description.image_path(int(i))) for i in self.indices]
        self.labels = torch.from_numpy(description.labels[self.indices].astype(np.float32))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.train = train
        self.transform = build_transform(self.input_size, train=train, flip_prob=flip_prob)
        self.seed = seed
        self.part_regions = part_regions
        self._generator: torch.Generator | None = None
        self._generator_owner: tuple[int, int | None] | None = None

    @property
    def attribute_names(self) -> list[str]:
        return self.description.attribute_names

    @property
    def positive_ratio(self) -> Tensor:
        """Positive ratio per attribute of the *training* split, whatever split this reads.

        These are the loss weights' ``a_m`` (:class:`pedattr.engine.loss.WeightedBCELoss`);
        they never come from validation or test labels.

        Raises:
            ValueError: the dataset has no training split.
        """
        if self.description.positive_ratio is None:
            raise ValueError(f"{self.description.root}: no training split, so no loss weights")
        return torch.as_tensor(self.description.positive_ratio, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def _rng(self) -> torch.Generator | None:
        """A generator private to this process: forked workers must not share one state."""
        info = get_worker_info()
        owner = (os.getpid(), info.seed if info is not None else None)
        if self._generator_owner != owner:
            seed = info.seed if info is not None else self.seed
            self._generator = None if seed is None else torch.Generator().manual_seed(seed)
            self._generator_owner = owner
        return self._generator

    def __getitem__(self, key: int | SeededKey) -> tuple:
        """The sample at a position, or at ``(position, seed)`` with its augmentations seeded.

        :class:`pedattr.data.sampler.SeededBatchSampler` gives keys of the second kind, so that
        a sample's flip depends on the run's seed and epoch only, not on which worker or
        process reads it.
        """
        position, item_seed = key if isinstance(key, tuple) else (key, None)
        path = self.paths[position]
        index = int(self.indices[position])
        labels = self.labels[position]
        try:
            self.description.check_inside(path)
            image = load_rgb(path)
        except Exception as err:  # any per-file failure is counted, not fatal; see FailureTracker
            reason = f"{type(err).__name__}: {err}"
            failure = DecodeFailure(path, reason, (3, *self.input_size))
            # Dropped by the collate function; the item keeps the length of the others.
            return (failure, labels, index) + (() if self.part_regions is None else (None,))
        generator = None
        if self.transform.augmentations:
            generator = (
                self._rng() if item_seed is None else torch.Generator().manual_seed(item_seed)
            )
        if self.part_regions is None:
            return self.transform(image, generator), labels, index
        pixels, boxes = self.transform.with_boxes(
            image, self._part_fractions(index, image), generator
        )
        return pixels, labels, index, torch.from_numpy(np.ascontiguousarray(boxes))

    def _part_fractions(self, index: int, image: Image.Image) -> np.ndarray:
        """The image's head, torso and legs boxes as fractions of it, [3, 4]."""
        # Imported here: only the rigid-parts model reads part regions.
        from pedattr.data.part_regions import entry_to_fractions

        entry = self.part_regions.get(self.description.image_names[index])
        return entry_to_fractions(entry, (image.height, image.width))


# --- batches ----------------------------------------------------------------------------------


class Batch(NamedTuple):
    """A collated batch without its unreadable samples.

    Attributes:
        images: uint8 RGB [B, 3, H, W] (B may be 0 when every sample failed); models take
            them as they are.
        labels: float32 [B, M].
        indices: int64 [B], the samples' rows in the description.
        failed: (path, reason) of each sample of this batch that could not be read.
        part_boxes: float32 [B, 3, 4] head, torso and legs boxes as fractions of each image,
            when the dataset reads part regions; None otherwise.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    failed: tuple[tuple[str, str], ...]
    part_boxes: Tensor | None = None


def collate_skip_failed(samples: Sequence[tuple]) -> Batch:
    """Collate ``AttributeDataset`` items into a :class:`Batch`, leaving the failed ones out."""
    good = [s for s in samples if not isinstance(s[0], DecodeFailure)]
    failed = tuple((s[0].path, s[0].reason) for s in samples if isinstance(s[0], DecodeFailure))
    with_parts = len(samples[0]) > 3
    part_boxes = torch.empty((0, 3, 4)) if with_parts else None
    if good:
        # default_collate writes into shared memory inside a worker: no copy on the way back.
        images = default_collate([s[0] for s in good])
        labels = default_collate([s[1] for s in good])
        if with_parts:
            part_boxes = default_collate([s[3] for s in good])
    else:
        images = torch.empty((0, *samples[0][0].shape), dtype=torch.uint8)
        labels = torch.empty((0, *samples[0][1].shape))
    indices = torch.tensor([s[2] for s in good], dtype=torch.int64)
    return Batch(images, labels, indices, failed, part_boxes)


class TooManyFailedImages(ValueError):
    """More images failed to load than the configured fraction allows."""


class FailureTracker:
    """Counts unreadable images across batches, logs each one, and stops a hopeless run.

    The run stops (:class:`TooManyFailedImages`) as soon as
    ``failed > max_fraction * max(seen, min_seen)``: before ``min_seen`` images were seen the
    fraction is taken over ``min_seen``, so two bad files among the first ten do not stop a run
    over a large dataset, while a dataset whose files are mostly unreadable stops early.
    :meth:`finish` checks the exact fraction over everything seen.

    Args:
        max_fraction: largest tolerated fraction of failed images (default 1 %).
        min_seen: smallest denominator of the running fraction.
    """

    def __init__(self, max_fraction: float = 0.01, min_seen: int = 500) -> None:
        if not 0 <= max_fraction <= 1:
            raise ValueError(f"max_fraction must lie in [0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        self.min_seen = max(int(min_seen), 1)
        self.seen = 0
        self.failed = 0
        self.failures: dict[str, str] = {}  # path -> first reason, in the order they happened

    @property
    def fraction(self) -> float:
        """Failed images over images seen so far."""
        return self.failed / self.seen if self.seen else 0.0

    def update(self, batch: Batch) -> None:
        """Count a batch's images and failures; raises once too many failed."""
        self.seen += len(batch.images) + len(batch.failed)
        for path, reason in batch.failed:
            self.failed += 1
            if path not in self.failures:
                self.failures[path] = reason
                logger.warning("skipped unreadable image %s (%s)", path, reason)
            else:  # the same file again in a later epoch: counted, but said once
                logger.debug("skipped unreadable image %s again", path)
        self.check()

    def check(self, *, final: bool = False) -> None:
        """Raise :class:`TooManyFailedImages` when the failed fraction is over the limit."""
        denominator = self.seen if final else max(self.seen, self.min_seen)
        if self.failed and self.failed > self.max_fraction * denominator:
            raise TooManyFailedImages(self._message())

    def finish(self) -> None:
        """Final check over all images seen (call at the end of an epoch or run)."""
        self.check(final=True)

    def summary(self) -> str:
        """One line: how many images failed out of how many."""
        return f"{self.failed} of {self.seen} images could not be read ({self.fraction:.2%})"

    def _message(self, shown: int = 10) -> str:
        listed = "\n".join(f"  {p}: {r}" for p, r in list(self.failures.items())[:shown])
        more = len(self.failures) - shown
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return (
            f"{self.summary()}, more than the allowed {self.max_fraction:.2%}; unreadable "
            f"files:\n{listed}{tail}\nReplace or remove them (then run `pedattr prepare` "
            f"again) or raise the allowed fraction."
        )


def tracked_batches(
    batches: Iterable[Batch], tracker: FailureTracker
) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) of each batch, feeding the tracker; batches left empty are skipped.

    This adapts a :func:`build_loader` loader to loops that take (images, labels) pairs, such
    as a hand-written training loop.
    """
    for batch in batches:
        tracker.update(batch)
        if len(batch.images):
            yield batch.images, batch.labels


def _ignore_interrupts(worker_id: int) -> None:  # noqa: ARG001
    """DataLoader workers leave Ctrl-C to the main process, which stops between steps.

    Forked workers inherit the main process's handler, but spawned ones (macOS, and Linux's
    default from Python 3.14) would die on it and break the batch being loaded.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(
    description: DatasetDescription | str | os.PathLike,
    split: str,
    *,
    batch_size: int,
    train: bool,
    workers: int = 0,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    seed: int = 0,
    flip_prob: float = 0.5,
    pin_memory: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    part_regions: Mapping[str, dict] | None = None,
) -> DataLoader:
    """A DataLoader of :class:`Batch` for one split, or for one rank's share of it.

    Training loaders draw shuffled global batches from a :class:`SeededBatchSampler`: the
    order and every sample's flip derive from ``seed`` and the epoch (``set_epoch`` on
    ``loader.batch_sampler``), whatever the number of workers or processes. Evaluation loaders
    keep the split's order; with several processes each reads every ``world_size``-th sample.

    Args:
        description: a :class:`DatasetDescription` or the folder ``pedattr prepare`` wrote.
        split: "train", "val", "test" or "trainval".
        batch_size: samples per batch (before failed ones are dropped); in training, the global
            batch over all processes.
        train: shuffle, drop the last incomplete batch and augment.
        workers: DataLoader worker processes; 0 decodes in the main process. Workers stay alive
            between epochs.
        input_size: output (height, width).
        seed: seeds the shuffling and the augmentations.
        flip_prob: horizontal flip probability in training.
        pin_memory: page-locked batches for faster copies to the GPU; default: when CUDA is
            available.
        rank: this process's rank (distributed runs).
        world_size: number of processes.
        part_regions: per-image body parts; batches then carry ``part_boxes``
            (:class:`AttributeDataset`).
    """
    dataset = AttributeDataset(
        description,
        split,
        input_size=input_size,
        train=train,
        flip_prob=flip_prob,
        seed=seed,
        part_regions=part_regions,
    )
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    common = dict(
        num_workers=workers,
        worker_init_fn=_ignore_interrupts if workers > 0 else None,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        collate_fn=collate_skip_failed,
    )
    if train:
        sampler = SeededBatchSampler(
            len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size
        )
        return DataLoader(dataset, batch_sampler=sampler, **common)
    shard = ShardSampler(len(dataset), rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, **common)
