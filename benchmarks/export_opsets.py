"""Which ONNX opsets export and match PyTorch, in onnxruntime and (when installed) OpenCV DNN.

For the baseline and ALM (BN-Inception by default, ``--num-attrs`` attributes, 256 x 128, random
weights), every opset in ``--opsets`` is exported with :func:`pedattr.inference.export.export_onnx`
(which runs ``onnx.checker`` and an onnxruntime parity check at batch 3) and then compared with
PyTorch on fresh images:

* onnxruntime, CPU: the dynamic-batch graph at batch 1 and 4;
* OpenCV DNN (``cv2.dnn.readNetFromONNX``), when ``cv2`` imports: the dynamic-batch graph at
  batch 1, and a graph exported with a fixed batch of 3 (``fixed_batch=3``) at batch 3, each
  loaded afresh (OpenCV fixes a dynamic graph's shapes when it loads it).

Each cell is the largest absolute difference over all outputs, or why it failed. A cell passes
when the difference is at most 1e-4.

Usage:
    python benchmarks/export_opsets.py                    # opsets 7 to 20, table
    python benchmarks/export_opsets.py --opsets 9 17      # some opsets
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_arguments, command_line  # noqa: E402

from pedattr.inference.export import (  # noqa: E402
    PARITY_TOLERANCE,
    SUPPORTED_OPSETS,
    ExportModule,
    example_images,
    export_onnx,
    max_abs_difference,
    onnxruntime_outputs,
)
from pedattr.models.model import AttributeModel, build_model  # noqa: E402

OUTPUT_NAMES = ("probabilities", "boxes", "branch_probabilities")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument(
        "--opsets",
        type=int,
        nargs="+",
        default=list(SUPPORTED_OPSETS),
        help="opsets to try (default: all supported)",
    )
    return parser.parse_args(argv)


def _difference_text(outputs: list, expected: tuple[torch.Tensor, ...]) -> str:
    try:
        difference = max_abs_difference(outputs, expected)
    except Exception as err:  # a shape mismatch is a result here
        return f"FAIL {str(err).splitlines()[0][:60]}"
    verdict = "ok" if difference <= PARITY_TOLERANCE else "MISMATCH"
    return f"{verdict} {difference:.1e}"


def onnxruntime_cell(path: Path, module: ExportModule) -> str:
    cells = []
    for batch in (1, 4):
        images = example_images(module.model, batch, seed=10 + batch)
        with torch.inference_mode():
            expected = module(images)
        cells.append(_difference_text(onnxruntime_outputs(path, images), expected))
    return " / ".join(cells)


def opencv_cell(paths: dict[int, Path], module: ExportModule) -> str:
    import cv2

    cells = []
    for batch, path in paths.items():
        images = example_images(module.model, batch, seed=20 + batch)
        with torch.inference_mode():
            expected = module(images)
        try:
            net = cv2.dnn.readNetFromONNX(str(path))
            net.setInput(images.numpy())
            outputs = list(net.forward(list(OUTPUT_NAMES[: len(expected)])))
        except cv2.error as err:
            cells.append(f"FAIL {str(err).strip().splitlines()[-1][:60]}")
            continue
        cells.append(_difference_text(outputs, expected))
    return " / ".join(cells)


def check_opset(model: AttributeModel, opset: int, folder: Path, with_opencv: bool) -> list[str]:
    module = ExportModule(model).eval()
    try:
        dynamic = export_onnx(model, folder / f"{opset}.onnx", opset=opset)
        fixed = export_onnx(model, folder / f"{opset}_b3.onnx", opset=opset, fixed_batch=3)
    except Exception as err:  # the exporter's or the parity check's failure is the result
        return [f"FAIL {str(err).splitlines()[0][:70]}"] * (2 if with_opencv else 1)
    cells = [onnxruntime_cell(dynamic, module)]
    if with_opencv:
        cells.append(opencv_cell({1: dynamic, 3: fixed}, module))
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import cv2

        opencv = f"OpenCV DNN {cv2.__version__}"
    except ImportError:
        opencv = None
    import onnxruntime

    print(
        f"ONNX export, {args.backbone}, M={args.num_attrs}, {args.height}x{args.width}: largest "
        f"absolute difference to PyTorch over all outputs (pass: <= {PARITY_TOLERANCE:g}); "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
        + (f", {opencv}" if opencv else "; OpenCV not installed")
    )
    header = f"{'model':<10}{'opset':>6}  {'onnxruntime: batch 1 / 4':<30}"
    if opencv:
        header += "OpenCV: dynamic at batch 1 / fixed batch 3"
    print(header)
    with tempfile.TemporaryDirectory() as folder:
        for arch in ("baseline", "alm"):
            torch.manual_seed(0)
            model = build_model(
                arch,
                backbone=args.backbone,
                num_attrs=args.num_attrs,
                input_size=(args.height, args.width),
            ).eval()
            for opset in args.opsets:
                cells = check_opset(model, opset, Path(folder), opencv is not None)
                print(f"{arch:<10}{opset:>6}  " + "".join(f"{c:<30}" for c in cells), flush=True)
    print(f"command: {command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
