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
    from pedattr.data.annotations import read_names_file
    from pedattr.engine.convert import convert_authors_checkpoint

    names = read_names_file(args.attribute_names) if args.attribute_names else None
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


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--backbone", default="bninception", help="backbone (default bninception)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_demo)


def _add_summary(subparsers: argparse._SubParsersAction) -> None:
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


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
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


def _prepare(args: argparse.Namespace) -> int:
    from pedattr.data.prepare import parse_attribute_selection, prepare_dataset

    options = dict(args.option)
    for key in ("annotation", "partition", "image_root"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    attributes = parse_attribute_selection(args.attributes) if args.attributes else None
    prepare_dataset(
        args.format,
        args.root,
        args.out,
        allow_missing=args.allow_missing,
        attributes=attributes,
        **options,
    )
    return 0


def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
    import textwrap

    from pedattr.data.prepare import FORMAT_LAYOUTS

    def key_value(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
        return key.strip().replace("-", "_"), value

    formats = "\n".join(
        textwrap.fill(layout, 79, initial_indent=f"  {name:<15} ", subsequent_indent=" " * 18)
        for name, layout in FORMAT_LAYOUTS.items()
    )
    description = textwrap.fill(
        "Read a dataset's official annotation files and write DATA_DIR/dataset.json and "
        "DATA_DIR/samples.csv: attribute names, image paths relative to an image root, labels "
        "(0, 1, 2 = unknown), splits, the training split's positive ratios (the loss weights) "
        "and where it all came from. Training, evaluation and the demo read this folder. Every "
        "referenced image must exist unless --allow-missing is given.",
        79,
    )
    p = subparsers.add_parser(
        "prepare",
        help="turn a dataset's official annotation files into a prepared dataset description",
        description=description,
        epilog=f"formats and where their files are expected (ROOT is --root):\n{formats}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("format", metavar="FORMAT", help=f"one of: {', '.join(FORMAT_LAYOUTS)}")
    p.add_argument("--root", required=True, metavar="RAW_DIR", help="the dataset as downloaded")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="folder to write")
    p.add_argument(
        "--annotation", metavar="FILE", help="annotation file, when not at its usual place"
    )
    p.add_argument(
        "--partition", type=int, metavar="N", help="official partition, 0-based (default 0)"
    )
    p.add_argument("--image-root", metavar="DIR", help="image folder, when not the default")
    p.add_argument(
        "--attributes",
        metavar="NAMES",
        help="keep only these attributes, in this order: NAME,NAME,... or @FILE with one name "
        "per line (default: all, in the official file order)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="leave out samples whose image is missing (listed in dataset.json) instead of "
        "refusing",
    )
    p.add_argument(
        "--option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other option of the format's reader, e.g. names_file=attributes.txt",
    )
    p.set_defaults(func=_prepare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pedattr",
        description="Pedestrian attribute recognition with weakly-supervised multi-scale "
        "attribute-specific localization (ALM).",
    )
    from pedattr import __version__

    parser.add_argument("--version", action="version", version=f"pedattr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_demo, _add_summary, _add_convert, _add_prepare):
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
