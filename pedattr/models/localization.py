"""ALM boxes in image pixels: level names and sizes, activation peaks, the max vote.

Paper Sec. 4.3 maps a feature-map cell to the centre of its receptive field on the input image,
"like SPPNet". pedattr uses that mapping to turn every attribute's box at every level into
image pixels and scores it against ground-truth boxes (the generated benchmark has them).

The mapping, for one axis of one level (feature map of ``w`` cells, network input ``W`` pixels,
stride ``S = W / w``):

1. The ALM box of eq. 3 is centred at ``t`` with half-extent ``s`` in the sampler's normalised
   coordinates: it spans ``u`` in [t - s, t + s] (``s`` in (0, 1) by a sigmoid, ``t`` in
   (-1, 1) by a tanh, see :func:`pedattr.models.alm.boxes_from_theta`; with evidence centres
   ``t`` is a soft-argmax of cell coordinates, also in [-1, 1]).
2. A normalised coordinate ``u`` is a fractional cell index ``j`` by the grid convention the
   sampler used (``F.grid_sample``): with ``align_corners=True`` (the authors' code) -1 and 1 are
   the centres of the first and last cells, ``j = (u + 1) / 2 * (w - 1)``; with
   ``align_corners=False`` they are the outer edges of the map, ``j = ((u + 1) * w - 1) / 2``.
   On an axis of one cell, where ``align_corners=True`` samples that cell for every ``u``, the
   second rule is used (as :func:`pedattr.models.alm.normalize_coords` does).
3. Cell ``j`` maps to the centre of its receptive field, taken as the middle of the S pixels it
   covers: ``x = (j + 0.5) * S``.

Pixel coordinates are continuous throughout pedattr's boxes: the image spans [0, W] and pixel
``i`` covers [i, i + 1) with its centre at i + 0.5 (the generator's ground truth uses the same
convention). In pixel-index coordinates (pixel ``i`` centred at ``i``) step 3 reads
``x = (j + 0.5) * S - 0.5 = S * j + (S - 1) / 2``. SPPNet's appendix, for networks padded by
half the kernel at every layer, puts the receptive field's centre at ``S * j`` instead, (S - 1)
/ 2 pixels up and to the left; on the demo's evidence-centred boxes, points moved there missed
the ground truth more often, so pedattr keeps the middle of the cell. With
``align_corners=True`` the identity box (s = 1, t = 0) spans from the first cell's centre
``S / 2`` to the last one's ``W - S / 2``, and with ``align_corners=False`` it spans the
whole input [0, W]. When the image was resized to the network input, x is scaled by
``W_image / W``; boxes are then clipped to the image.

How well the boxes find the attributes is scored in :mod:`pedattr.evaluation.localization`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pedattr.models.alm import AttributeLocalization
from pedattr.models.bninception import TAPS
from pedattr.models.onnx_runtime import OnnxModel
from pedattr.models.pyramid import level_maps
from pedattr.utils.arrays import to_numpy

#: The ALM levels (BN-Inception's tapped blocks), lowest (largest map) first, as
#: ModelOutput.boxes orders them.
LEVEL_NAMES = TAPS


def level_names(config: Any) -> tuple[str, ...]:
    """Names of a model's pyramid levels (a ModelConfig): BN-Inception's blocks for that
    backbone, else ``level1`` .. ``level3``; only the top one for ``levels="top"``, none for the
    baseline."""
    if config.arch != "alm":
        return ()
    if config.backbone == "bninception":
        names = LEVEL_NAMES
    else:
        names = tuple(f"level{k}" for k in range(1, len(LEVEL_NAMES) + 1))
    return names[-1:] if config.levels == "top" else names


def level_sizes(model: nn.Module, input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The (h, w) of every pyramid level's feature map for inputs of ``input_size`` (H, W).

    Runs one zero image through the model in eval mode without gradients (so batch-norm
    statistics are not touched) and records the map each level's head (ALM group, attention
    masks, rigid parts) receives.

    Raises:
        ValueError: the model has no pyramid levels (e.g. the baseline).
    """
    if isinstance(model, OnnxModel):  # the export recorded them (at its fixed input size)
        return model.level_sizes()
    heads = getattr(model, "level_heads", None)
    if not heads:
        raise ValueError("the model has no ALM pyramid levels (the baseline has no boxes)")
    sizes: list[tuple[int, int]] = []

    def record(module: nn.Module, args: tuple) -> None:
        sizes.append(level_maps(args[0])[0].size)  # a level's maps all share its size

    handles = [head.register_forward_pre_hook(record) for head in heads]
    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, dtype=parameter.dtype, device=parameter.device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sizes


@contextmanager
def recording_activation_peaks(model: nn.Module, *, enabled: bool = True) -> Iterator[list[Tensor]]:
    """While active, each forward of ``model`` appends the peaks of its ALMs' activation maps.

    For every image, level and attribute, the cell where
    :meth:`~pedattr.models.alm.AttributeLocalization.activation_map` is largest, as the centre of
    its receptive field in network-input pixels (x, y) (step 3 of the mapping above): one
    [B, L, M, 2] tensor per forward. The maps are computed in float32 without gradients, also
    under autocast. Models whose levels have no ALM (other heads, the baseline) record nothing,
    and so does every model with ``enabled=False`` (no hook is installed).
    """
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    heads = [
        head
        for head in (getattr(model, "level_heads", ()) if enabled else ())
        if isinstance(head, AttributeLocalization)
    ]
    input_height, input_width = model.config.input_size
    recorded: list[Tensor] = []
    current: list[Tensor] = []

    def record(head: AttributeLocalization, args: tuple) -> None:
        if head is heads[0]:
            current.clear()  # a forward that failed half-way left its levels behind
        device_type = head.cls_weight.device.type
        with torch.no_grad(), torch.autocast(device_type, enabled=False):
            maps = head.activation_map(args[0])  # [B, M, h, w], float32
        height, width = maps.shape[-2:]
        cell = maps.flatten(2).argmax(dim=-1)  # [B, M]
        x = cell_centre(cell % width, width, input_width)
        y = cell_centre(torch.div(cell, width, rounding_mode="floor"), height, input_height)
        current.append(torch.stack([x, y], dim=-1))
        if len(current) == len(heads):
            recorded.append(torch.stack(current, dim=1).cpu())  # [B, L, M, 2]
            current.clear()

    handles = [head.register_forward_pre_hook(record) for head in heads]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def cell_centre(cell: Any, cells: Any, pixels: float) -> Any:
    """Step 3 of the mapping: (fractional) cell index -> centre of its receptive field, in
    network-input pixels, on an axis of ``cells`` cells spanning ``pixels`` pixels."""
    return (cell + 0.5) * (pixels / cells)


def _normalised_to_pixels(
    u: np.ndarray, cells: np.ndarray, pixels: float, align_corners: bool
) -> np.ndarray:
    """Normalised sampler coordinate -> fractional cell -> its receptive-field centre."""
    # grid_sample's unnormalisation: -1/1 are the end cells' centres (True) or the map's edges.
    # On a one-cell axis with align_corners every coordinate samples that cell, so there the
    # edges' rule is used, as models.alm.normalize_coords does: a box then spans its share of
    # the cell instead of shrinking to the cell's centre.
    edges = ((u + 1) * cells - 1) / 2
    cell = np.where(cells > 1, (u + 1) / 2 * (cells - 1), edges) if align_corners else edges
    return cell_centre(cell, cells, pixels)


def _per_image_size(image_size: Any, n: int, default: tuple[int, int]) -> np.ndarray:
    """[N, 2] (H, W) from None, one (H, W) for all, or one per image."""
    if image_size is None:
        image_size = default
    sizes = np.asarray(image_size, dtype=np.float64)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (n, 2))
    if sizes.shape != (n, 2):
        raise ValueError(f"image_size must be (H, W) or [N, 2] for N={n}, got {sizes.shape}")
    return sizes


def _input_to_image(image: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Per-axis scale (x, y) from the network input to images of (H, W) ``image`` [..., 2]."""
    height, width = input_size
    return np.stack([image[..., 1] / width, image[..., 0] / height], axis=-1)


def points_to_pixels(
    points: Any, *, input_size: tuple[int, int], image_size: Any = None
) -> np.ndarray:
    """Points in network-input pixels, [N, L, M, 2] (x, y), -> pixels of the original images.

    ``image_size`` is as for :func:`boxes_to_pixels`: the images' (H, W), one for all or [N, 2];
    None keeps the input size.
    """
    p = to_numpy(points)
    image = _per_image_size(image_size, len(p), tuple(input_size))[:, None, None, :]
    return p * _input_to_image(image, input_size)


def boxes_to_pixels(
    boxes: Any,
    *,
    level_sizes: Sequence[tuple[int, int]],
    input_size: tuple[int, int],
    image_size: Any = None,
    align_corners: bool = True,
    clip: bool = True,
) -> np.ndarray:
    """ALM boxes in normalised feature-map coordinates -> image pixel boxes.

    Args:
        boxes: [N, L, M, 4] as (s_x, s_y, t_x, t_y) (``ModelOutput.boxes``), array or tensor.
        level_sizes: the (h, w) of each level's feature map (:func:`level_sizes`).
        input_size: the network input (H, W) in pixels.
        image_size: the original images' (H, W), one for all or [N, 2]; boxes are scaled from
            the input to the image (a resize without keeping the aspect ratio). None: the
            input size.
        align_corners: the sampler's grid convention (the model's ``align_corners`` option).
        clip: clip the boxes to the image.

    Returns:
        [N, L, M, 4] float64 boxes (x0, y0, x1, y1) in continuous pixel coordinates (the image
        spans [0, W] x [0, H]); see the module docstring for the mapping.
    """
    b = to_numpy(boxes)
    if b.ndim != 4 or b.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, L, M, 4], got shape {b.shape}")
    sizes = np.asarray(level_sizes, dtype=np.float64).reshape(-1, 2)
    if len(sizes) != b.shape[1]:
        raise ValueError(f"{len(sizes)} level sizes for {b.shape[1]} levels")
    rows, cols = sizes[None, :, 0, None], sizes[None, :, 1, None]  # [1, L, 1]
    height, width = input_size
    s_x, s_y, t_x, t_y = (b[..., k] for k in range(4))
    x0 = _normalised_to_pixels(t_x - s_x, cols, width, align_corners)
    x1 = _normalised_to_pixels(t_x + s_x, cols, width, align_corners)
    y0 = _normalised_to_pixels(t_y - s_y, rows, height, align_corners)
    y1 = _normalised_to_pixels(t_y + s_y, rows, height, align_corners)
    image = _per_image_size(image_size, len(b), (height, width))[:, None, None, :]  # [N,1,1,2]
    scale = _input_to_image(image, input_size)  # [N, 1, 1, 2] (x, y)
    pixels = np.stack([x0, y0, x1, y1], axis=-1) * np.concatenate([scale, scale], axis=-1)
    if clip:
        limit = np.stack([image[..., 1], image[..., 0]] * 2, axis=-1)  # W, H, W, H
        pixels = np.clip(pixels, 0.0, limit)
    return pixels


def max_vote_branch(branch_logits: Sequence[Any]) -> np.ndarray:
    """Which branch gives the fused (max-voted) logit, per image and attribute: [N, M] ints.

    ``branch_logits`` are ModelOutput.branch_logits: the levels in order, then the global
    branch, each [N, M]. Index L (the number of levels) means the global branch won. Ties go to
    the lower level.
    """
    stacked = np.stack([to_numpy(logits) for logits in branch_logits])  # [branches, N, M]
    return stacked.argmax(axis=0)
