"""The ``pedattr`` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _summary(args: argparse.Namespace) -> int:
    from pedattr.models.complexity import format_summary, model_summary

    summary = model_summary(
        args.model,
        backbone=args.backbone,
        num_attrs=args.num_attrs,
        input_size=(args.height, args.width),
    )
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from pedattr.engine.convert import convert_authors_checkpoint, read_attribute_names

    names = read_attribute_names(args.attribute_names) if args.attribute_names else None
    checkpoint = convert_authors_checkpoint(
        args.source, args.out, attribute_names=names, modern_sampling=args.modern_sampling
    )
    config = checkpoint.config
    print(
        f"wrote {args.out}: {config.arch} on {config.backbone}, {config.num_attrs} attributes, "
        f"align_corners={config.align_corners}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pedattr.engine.quick_demo import run_quick_demo

    run_quick_demo(
        args.out,
        num_train=args.num_train,
        num_test=args.num_test,
        epochs=args.epochs,
        backbone=args.backbone,
        seed=args.seed,
    )
    return 0


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train and evaluate ALM on generated pedestrians (a few minutes on a CPU)",
        description="Generate a seeded synthetic pedestrian-attribute set, train an ALM model on "
        "it from scratch on the CPU, evaluate it on held-out images with the paper's metrics and "
        "write OUT/model.safetensors and OUT/report.json.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--num-train", type=int, default=1600, help="training images (default 1600)")
    p.add_argument("--num-test", type=int, default=400, help="test images (default 400)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    p.add_argument("--backbone", default="bninception", help="backbone (default bninception)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_demo)


def _add_summary(subparsers) -> None:
    p = subparsers.add_parser(
        "summary",
        help="parameter count and FLOPs of a model",
        description="Print a model's parameter count and FLOPs at the given input size. FLOPs "
        "are counted by torch.utils.flop_counter, where one multiply-add is 2 FLOPs; the "
        "multiply-add count (GMACs) is printed too.",
    )
    p.add_argument("--model", choices=("alm", "baseline"), default="alm", help="architecture")
    p.add_argument(
        "--backbone", default="bninception", help="bninception, timm:NAME, torchvision:NAME"
    )
    p.add_argument(
        "--num-attrs", type=int, default=51, help="number of attributes (default 51, RAP)"
    )
    p.add_argument("--height", type=int, default=256, help="input height (default 256)")
    p.add_argument("--width", type=int, default=128, help="input width (default 128)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_summary)


def _add_convert(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert an ALM checkpoint released by the paper's authors",
        description="Convert the authors' released ALM checkpoint (*.pth.tar, BN-Inception) into "
        "a pedattr checkpoint. The file is read with torch.load(weights_only=True), so no pickled "
        "code runs. The converted model samples as the authors' PyTorch <= 1.2 did "
        "(align_corners=True) unless --modern-sampling is given.",
    )
    p.add_argument("source", help="the authors' checkpoint, e.g. rap_epoch_8.pth.tar")
    p.add_argument("--out", required=True, help="output pedattr checkpoint (.safetensors)")
    p.add_argument(
        "--attribute-names",
        metavar="FILE",
        help="text file with one attribute name per line, in the model's output order",
    )
    p.add_argument(
        "--modern-sampling",
        action="store_true",
        help="sample with align_corners=False (today's PyTorch default) instead",
    )
    p.set_defaults(func=_convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pedattr",
        description="Pedestrian attribute recognition with weakly-supervised multi-scale "
        "attribute-specific localization (ALM).",
    )
    from pedattr import __version__

    parser.add_argument("--version", action="version", version=f"pedattr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_demo, _add_summary, _add_convert):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"pedattr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
