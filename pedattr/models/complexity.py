"""Model complexity: parameter counts and FLOPs, as reported by ``pedattr summary``.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts at the ATen
level and only for the operators in its registry: convolutions (``aten.convolution`` and its
backends), matrix products (``aten.mm``, ``addmm``, ``bmm``, ``baddbmm``; ``nn.Linear`` and
``torch.einsum`` lower to these) and attention kernels. One multiply-add counts as 2 FLOPs.
Everything else counts 0: bias additions (``addmm`` is counted as its product only), element-wise
ops, pooling, BatchNorm, activations, ``F.interpolate``, ``F.grid_sample`` / ``F.affine_grid``
and matrix-vector products (``aten.dot`` / ``aten.mv``).

The paper's Table 3 (1.95 / 1.78 GFLOPs for ALM / baseline at 256x128) does not say how it
counted; by this count BN-Inception alone is about 2.65 GFLOPs (1.33 G multiply-adds).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "FLOP_CONVENTION",
    "count_flops",
    "count_parameters",
    "format_summary",
    "model_summary",
    "summarize_model",
]

#: The model settings that change the baseline (the others describe the pyramid and the heads).
BASELINE_OPTIONS = ("normalization",)

FLOP_CONVENTION = (
    "FLOPs from torch.utils.flop_counter; 1 multiply-add = 2 FLOPs; convolutions, matmuls and "
    "linear layers only: element-wise ops, pooling and normalisation are not counted "
    "(nor bias additions, interpolation, grid_sample, or matrix-vector products aten.dot/mv; "
    "einsum counts through the bmm/mm it lowers to)"
)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements, trainable or not (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def _flop_counts(model: nn.Module, input_size: tuple[int, int], batch_size: int) -> FlopCounterMode:
    """Run one eval-mode, no-grad forward on a random image batch under a FLOP counter."""
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    images = torch.rand(batch_size, 3, *input_size, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()  # BN in eval mode: the inference graph, and running stats stay untouched.
    try:
        with torch.no_grad(), counter:
            model(images)
    finally:
        model.train(was_training)
    return counter


def count_flops(
    model: nn.Module, input_size: tuple[int, int] = (256, 128), batch_size: int = 1
) -> int:
    """FLOPs of one inference forward pass (see the module docstring for what is counted).

    Args:
        model: a module taking images [batch_size, 3, height, width].
        input_size: (height, width) of the input.
        batch_size: images per forward; FLOPs scale linearly with it.

    Returns:
        Total FLOPs, one multiply-add counted as 2.
    """
    return _flop_counts(model, input_size, batch_size).get_total_flops()


def flops_by_operator(
    model: nn.Module, input_size: tuple[int, int] = (256, 128), batch_size: int = 1
) -> dict[str, int]:
    """Like :func:`count_flops`, split by ATen operator (e.g. ``aten.convolution``)."""
    counts = _flop_counts(model, input_size, batch_size).get_flop_counts()["Global"]
    return {str(op): int(n) for op, n in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def model_summary(
    arch: str = "alm",
    *,
    backbone: str = "bninception",
    num_attrs: int = 51,
    input_size: tuple[int, int] = (256, 128),
    **options,
) -> dict:
    """Build a freshly initialised model and measure its size and cost for one image.

    Args:
        arch: "alm" or "baseline".
        backbone: backbone name as accepted by :func:`pedattr.models.model.build_model`.
        num_attrs: M, the number of attributes.
        input_size: (height, width) of the input image.
        **options: any other model option (``head="parts"``, ``box_centre="evidence"``, ...).

    Returns:
        What :func:`summarize_model` returns.
    """
    # Imported here so that counting helpers work without building the model zoo.
    from pedattr.models.model import build_model

    model = build_model(
        arch, backbone=backbone, num_attrs=num_attrs, input_size=input_size, **options
    )
    return summarize_model(model)


def summarize_model(model: nn.Module) -> dict:
    """Size and cost of one image through a pedattr model, at its configured input size.

    Returns:
        A JSON-serialisable dict with keys ``model`` (the architecture), ``backbone``,
        ``num_attrs``, ``input_size`` ([height, width]), ``options`` (the model options that
        differ from the defaults and apply to the architecture), ``params``, ``flops`` (int),
        ``gflops``, ``gmacs`` (gflops / 2), ``flops_by_operator`` and ``flop_convention``.
    """
    config = model.config
    height, width = config.input_size  # ints: ModelConfig converts them
    by_op = flops_by_operator(model, (height, width))
    flops = sum(by_op.values())
    described = ("arch", "backbone", "attribute_names", "input_size")
    options = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name not in described
        and getattr(config, field.name) != field.default
        # The baseline is the backbone and one classifier: the other settings do not reach it.
        and (config.arch != "baseline" or field.name in BASELINE_OPTIONS)
    }
    return {
        "model": config.arch,
        "backbone": config.backbone,
        "num_attrs": config.num_attrs,
        "input_size": [height, width],
        "options": options,
        "params": count_parameters(model),
        "flops": flops,
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "flops_by_operator": by_op,
        "flop_convention": FLOP_CONVENTION,
    }


def format_summary(summary: dict) -> str:
    """A few human-readable lines from :func:`model_summary` output."""
    height, width = summary["input_size"]
    return "\n".join(
        [
            f"model:      {summary['model']} on {summary['backbone']}, "
            f"{summary['num_attrs']} attributes, input {height}x{width}",
            *(
                ["options:    " + ", ".join(f"{k}={v}" for k, v in summary["options"].items())]
                if summary.get("options")
                else []
            ),
            f"parameters: {summary['params']:,} ({summary['params'] / 1e6:.2f} M)",
            f"compute:    {summary['gflops']:.3f} GFLOPs = {summary['gmacs']:.3f} GMACs per image",
            f"convention: {summary['flop_convention']}",
        ]
    )
