"""Evaluation, threshold calibration, the per-attribute bar chart and their commands.

Oracles: an independent forward pass over images read with Pillow and scored with
``compute_metrics``, and a brute-force threshold search in plain Python with exact fractions.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pedattr
from pedattr.checkpoint.format import CheckpointError, load_checkpoint, save_checkpoint
from pedattr.cli import main
from pedattr.data.dataset import FailureTracker, build_loader
from pedattr.engine.loss import WeightedBCELoss, deep_supervision_loss
from pedattr.evaluation.calibration import calibrate_checkpoint, calibrate_thresholds
from pedattr.evaluation.evaluate import (
    AttributeMismatchError,
    Predictions,
    check_attributes,
    evaluate_checkpoint,
    format_report,
    predict_loader,
)
from pedattr.evaluation.metrics import compute_metrics
from pedattr.evaluation.plots import plot_attribute_accuracy, short_labels
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, make_prepared_dataset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- fixtures ---------------------------------------------------------------------------------


def read_split(data: Path, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 images [N, 3, H, W] and labels [N, M] of a split, read without pedattr's loader."""
    meta = json.loads((data / "dataset.json").read_text())
    with open(data / "samples.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    pixels = [
        np.asarray(Image.open(Path(meta["image_root"]) / row["image"]).convert("RGB"))
        for row in rows
    ]
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    labels = np.array([[int(row[name]) for name in meta["attributes"]] for row in rows])
    return images, labels


def forward_probs(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Fused probabilities of a plain forward pass."""
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(images).logits).numpy()


def trained_model(arch: str, data: Path, *, seed: int, steps: int = 15) -> torch.nn.Module:
    """A tiny model trained a few steps, so that its probabilities vary from image to image."""
    torch.manual_seed(seed)
    model = pedattr.build_model(arch, attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    images, labels = read_split(data, "train")
    labels = torch.from_numpy(labels).float()
    criterion = WeightedBCELoss(labels.mean(dim=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = torch.randperm(len(images))[:16]
        output = model(images[batch])
        loss = deep_supervision_loss(output.branch_logits, labels[batch], criterion)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluation")
    data = make_prepared_dataset(root)
    alm = trained_model("alm", data, seed=0)
    baseline = trained_model("baseline", data, seed=1)
    save_checkpoint(root / "alm.safetensors", alm)
    save_checkpoint(root / "baseline.safetensors", baseline)
    return {
        "root": root,
        "data": data,
        "alm": alm,
        "baseline": baseline,
        "alm_path": root / "alm.safetensors",
        "baseline_path": root / "baseline.safetensors",
    }


def copy_checkpoint(setup: dict, tmp_path: Path, name: str = "alm") -> Path:
    path = tmp_path / f"{name}.safetensors"
    shutil.copy(setup[f"{name}_path"], path)
    return path


def eval_argv(checkpoints: list[Path], data: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--checkpoint",
        *map(str, checkpoints),
        "--data",
        str(data),
        "--workers",
        "0",
        "--device",
        "cpu",
        *extra,
    ]


def assert_metrics_close(actual: dict, expected: dict) -> None:
    for key in ("mA", "accuracy", "precision", "recall", "f1"):
        assert actual[key] == pytest.approx(expected[key], abs=1e-9), key
    assert actual["per_attribute_mA"] == pytest.approx(expected["per_attribute_mA"], abs=1e-9)


# --- evaluation -------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_checkpoint_equals_independent_forward_and_metrics(setup: dict) -> None:
    images, labels = read_split(setup["data"], "test")
    assert tuple(images.shape[2:]) == TINY_MODEL["input_size"]  # no resize in the oracle
    probs = forward_probs(setup["alm"], images)
    assert (probs > 0.5).any() and (probs <= 0.5).any()  # the comparison means something

    report = evaluate_checkpoint(setup["alm_path"], setup["data"], split="test", batch_size=8)

    assert_metrics_close(report["metrics"], compute_metrics(labels, probs))
    assert report["num_images"] == len(labels) == 16
    assert report["split"] == "test" and report["threshold_mode"] == "default"
    assert report["thresholds"] == 0.5
    assert report["attributes"] == list(LEARNABLE_ATTRIBUTES)
    assert list(report["metrics"]["per_attribute"]) == list(LEARNABLE_ATTRIBUTES)
    json.dumps(report, allow_nan=False)  # JSON-safe
    assert "TopPatch" in format_report(report)


@pytest.mark.slow
def test_predict_loader_skips_unreadable_images_and_autocasts(tmp_path: Path, setup: dict) -> None:
    data = make_prepared_dataset(tmp_path, {"train": 4, "test": 8}, seed=3)
    images, labels = read_split(data, "test")
    (tmp_path / "images" / "00005.png").write_bytes(b"not an image")  # test row 1
    loader = build_loader(data, "test", batch_size=3, train=False, input_size=(64, 32))
    tracker = FailureTracker(max_fraction=0.5)

    predictions = predict_loader(setup["alm"], loader, device="cpu", tracker=tracker)

    assert tracker.failed == 1 and tracker.seen == 8
    assert predictions.indices.tolist() == [4, 6, 7, 8, 9, 10, 11]
    keep = [0, 2, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(
        predictions.probs, forward_probs(setup["alm"], images[keep]), atol=1e-5
    )
    np.testing.assert_array_equal(predictions.labels, labels[keep])
    assert predictions.probs.dtype == np.float32
    assert predictions.boxes.shape == (7, 3, len(LEARNABLE_ATTRIBUTES), 4)

    half = predict_loader(setup["alm"], loader, device="cpu", autocast_dtype=torch.bfloat16)
    assert half.probs.dtype == np.float32
    np.testing.assert_allclose(half.probs, predictions.probs, atol=0.05)


def test_predictions_concatenate_and_sorted_by_index() -> None:
    def part(indices: list[int], boxes: bool = True) -> Predictions:
        n = len(indices)
        values = np.asarray(indices, dtype=np.float32)[:, None].repeat(2, axis=1)
        return Predictions(
            indices=np.asarray(indices, dtype=np.int64),
            labels=(values % 2).astype(np.float32),
            probs=values / 10,
            boxes=np.broadcast_to(values[:, None, :, None], (n, 3, 2, 4)).copy() if boxes else None,
            winners=values.astype(np.int64) if boxes else None,
        )

    # Two padded shards of a distributed run: rank 0 read 0, 2, 4; rank 1 read 1, 3, 0 (padding).
    merged = Predictions.concatenate([part([0, 2, 4]), part([1, 3, 0])])
    assert len(merged) == 6
    result = merged.sorted_by_index()
    assert result.indices.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(result.probs[:, 0], np.float32([0, 1, 2, 3, 4]) / 10)
    np.testing.assert_array_equal(result.boxes[:, 0, 0, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(result.winners[:, 0], [0, 1, 2, 3, 4])
    assert result.probs is not merged.probs and len(merged) == 6  # a copy

    no_boxes = Predictions.concatenate([part([5, 1], boxes=False)]).sorted_by_index()
    assert no_boxes.boxes is None and no_boxes.indices.tolist() == [1, 5]
    with pytest.raises(ValueError, match="with and without boxes"):
        Predictions.concatenate([part([0]), part([1], boxes=False)])
    with pytest.raises(ValueError):
        Predictions.concatenate([])


def test_format_report_shows_undefined_attributes() -> None:
    report = {
        "checkpoint": "a.safetensors",
        "data": "data/x",
        "split": "test",
        "num_images": 4,
        "threshold_mode": "default",
        "attributes": ["Hat", "Boots"],
        "metrics": {
            "mA": 0.75,
            "accuracy": 0.5,
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "per_attribute_mA": [0.75, None],
            "num_positives": [2, 0],
        },
    }
    text = format_report(report)
    assert "Boots" in text and "undefined (no positives)" in text and "75.00" in text


# --- attribute checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_names", "data_names", "expected"),
    [
        (
            ["a", "b", "c"],
            ["a", "b", "d"],
            ["3 attributes", "has 3", "only in the model: ['c']", "only in the dataset: ['d']"],
        ),
        (["a", "b", "c"], ["a", "b"], ["has 3 attributes", "has 2", "only in the model: ['c']"]),
        (["a", "b"], ["a", "x", "b"], ["only in the dataset: ['x']", "--attributes"]),
        (
            ["a", "b", "c"],
            ["a", "c", "b"],
            ["different order", "position 1", "'b' in the model", "'c' in the dataset"],
        ),
    ],
    ids=["name", "count", "dataset-superset", "order"],
)
def test_check_attributes_says_what_differs(model_names, data_names, expected) -> None:
    with pytest.raises(AttributeMismatchError) as info:
        check_attributes(model_names, data_names, model_source="m.safetensors", data_source="d/x")
    message = str(info.value)
    assert "m.safetensors" in message and "d/x" in message
    for part in expected:
        assert part in message
    if not any("order" in part for part in expected):
        assert "order" not in message
    assert isinstance(info.value, ValueError)


def test_check_attributes_accepts_equal_lists() -> None:
    check_attributes(("a", "b"), ["a", "b"], model_source="m", data_source="d")


def test_cli_eval_refuses_other_attributes(tmp_path: Path, setup: dict, capsys) -> None:
    names = ["TopPatch", "Hat", "Reddish"]
    model = pedattr.build_model("baseline", attribute_names=names, **TINY_MODEL)
    path = tmp_path / "other.safetensors"
    save_checkpoint(path, model)

    assert main(eval_argv([path], setup["data"])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("pedattr eval: error:")
    assert "only in the model: ['Hat']" in err and "only in the dataset: ['BottomPatch']" in err


def test_cli_eval_missing_data(tmp_path: Path, setup: dict, capsys) -> None:
    missing = tmp_path / "nowhere"
    assert main(eval_argv([setup["alm_path"]], missing)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "pedattr prepare" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(eval_argv([setup["alm_path"]], empty)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(empty) in err and "dataset.json" in err and "pedattr prepare" in err


def test_cli_eval_missing_checkpoint(tmp_path: Path, setup: dict, capsys) -> None:
    missing = tmp_path / "missing.safetensors"
    assert main(eval_argv([missing], setup["data"])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err
    with pytest.raises(CheckpointError):
        evaluate_checkpoint(missing, setup["data"])


# --- calibration: the search ------------------------------------------------------------------


def brute_force(labels: np.ndarray, probs: np.ndarray, objective: str) -> list[tuple]:
    """Per attribute (best threshold, best score as a Fraction), or (0.5, None) when the known
    labels hold one class only: every candidate tried, scores in exact arithmetic, ties to the
    candidate closest to 0.5 (the lower one of two equally close)."""
    results = []
    for m in range(labels.shape[1]):
        known = [
            (float(p), int(y)) for p, y in zip(probs[:, m], labels[:, m], strict=True) if y != 2
        ]
        positives = sum(y for _, y in known)
        negatives = len(known) - positives
        if positives == 0 or negatives == 0:
            results.append((0.5, None))
            continue
        values = sorted({p for p, _ in known})
        candidates = [values[0] - 1e-6]
        candidates += [(a + b) / 2 for a, b in itertools.pairwise(values)]
        candidates += [values[-1] + 1e-6]
        scored = []
        for t in candidates:
            tp = sum(1 for p, y in known if y == 1 and p > t)
            tn = sum(1 for p, y in known if y == 0 and p <= t)
            fp, fn = negatives - tn, positives - tp
            if objective == "mA":
                score = (Fraction(tp, positives) + Fraction(tn, negatives)) / 2
            else:
                score = Fraction(2 * tp, 2 * tp + fp + fn)
            scored.append((score, t))
        best = max(score for score, _ in scored)
        threshold = min((abs(t - 0.5), t) for score, t in scored if score == best)[1]
        results.append((threshold, best))
    return results


def random_case(seed: int, n: int = 40, m: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities rounded to 0.05 (many ties, some at exactly 0.5), labels with unknowns."""
    rng = np.random.default_rng(seed)
    probs = (np.round(rng.random((n, m)) * 20) / 20).astype(np.float32)
    labels = (rng.random((n, m)) < 0.4).astype(np.float32)
    labels[rng.random((n, m)) < 0.15] = 2
    return labels, probs


@pytest.mark.parametrize("objective", ["mA", "f1"])
@pytest.mark.parametrize("seed", range(4))
def test_calibration_matches_brute_force(objective: str, seed: int) -> None:
    labels, probs = random_case(seed)
    result = calibrate_thresholds(labels, probs, objective=objective)
    for m, (threshold, best) in enumerate(brute_force(labels, probs, objective)):
        assert result.thresholds[m] == pytest.approx(threshold, abs=1e-12), m
        if best is None:
            assert m in result.uncalibrated
        else:
            assert result.scores_after[m] == pytest.approx(float(best), abs=1e-12)
            assert result.scores_after[m] >= result.scores_before[m]


def test_single_class_attributes_keep_half() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((12, 4)).astype(np.float32)
    labels = (np.arange(12)[:, None] % 2 == 0).repeat(4, axis=1).astype(np.float32)
    labels[:, 0] = 1  # positives only
    labels[:, 1] = np.where(np.arange(12) < 6, 0, 2)  # negatives and unknowns only
    labels[:, 2] = 2  # nothing known

    result = calibrate_thresholds(labels, probs)

    assert result.uncalibrated == [0, 1, 2]
    assert result.thresholds[:3].tolist() == [0.5, 0.5, 0.5]
    assert np.isnan(result.scores_before[:3]).all() and np.isnan(result.scores_after[:3]).all()
    assert result.thresholds[3] != 0.5 or result.scores_after[3] == result.scores_before[3]
    assert result.num_positives.tolist()[:3] == [12, 0, 0]
    assert result.num_negatives.tolist()[:3] == [0, 6, 0]


def test_calibration_separates_adjacent_floats() -> None:
    # No float64 lies between these two: the threshold must still put them on either side.
    low, high = 0.3, float(np.nextafter(0.3, 1.0))
    probs = np.array([[low], [high]])
    result = calibrate_thresholds(np.array([[0], [1]]), probs)
    assert result.scores_after[0] == 1.0
    assert (probs[:, 0] > result.thresholds[0]).tolist() == [False, True]


@pytest.mark.parametrize("seed", range(5))
def test_calibration_never_lowers_balanced_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random((60, 8)) < rng.random(8) * 0.5 + 0.05).astype(np.float32)
    labels[0], labels[1] = 1, 0
    probs = np.clip(labels * 0.2 + rng.random((60, 8)) * 0.8, 0, 1).astype(np.float32)

    result = calibrate_thresholds(labels, probs)

    before = compute_metrics(labels, probs)["per_attribute_mA"]
    after = compute_metrics(labels, probs, result.thresholds)["per_attribute_mA"]
    np.testing.assert_allclose(after, result.scores_after, atol=1e-12)  # same prediction rule
    assert all(a >= b - 1e-12 for a, b in zip(after, before, strict=True))


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="objective"):
        calibrate_thresholds(np.zeros((2, 1)), np.zeros((2, 1)), objective="auc")
    with pytest.raises(ValueError, match="labels"):
        calibrate_thresholds(np.full((2, 1), 3), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="shape"):
        calibrate_thresholds(np.zeros((2, 1)), np.zeros((3, 1)))


# --- calibration: checkpoints and commands ----------------------------------------------------


def test_calibrated_thresholds_are_stored_and_used_by_eval(
    tmp_path: Path, setup: dict, capsys
) -> None:
    source = copy_checkpoint(setup, tmp_path)
    out = tmp_path / "calibrated.safetensors"

    report = calibrate_checkpoint(source, setup["data"], out=out, batch_size=8)

    # The search on an independent forward over the validation images gives the same thresholds.
    val_images, val_labels = read_split(setup["data"], "val")
    expected = calibrate_thresholds(val_labels, forward_probs(setup["alm"], val_images))
    stored = load_checkpoint(out)
    np.testing.assert_allclose(stored.thresholds, expected.thresholds, atol=1e-5)
    assert report["thresholds"] == stored.thresholds
    calibration = stored.extra["calibration"]
    assert calibration["split"] == "val" and calibration["objective"] == "mA"
    assert calibration["num_images"] == 16
    np.testing.assert_allclose(calibration["scores_after"], expected.scores_after, atol=1e-9)
    # Same weights and configuration; the source file is left alone.
    original = load_checkpoint(source)
    assert original.thresholds is None and stored.config == original.config
    for key, tensor in original.state_dict.items():
        assert torch.equal(stored.state_dict[key], tensor), key

    # `eval --thresholds calibrated` scores the test split with exactly the stored thresholds.
    report_path = tmp_path / "calibrated.json"
    argv = eval_argv([out], setup["data"], "--thresholds", "calibrated", "--json", str(report_path))
    assert main(argv) == 0
    assert "calibrated per-attribute thresholds" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    images, labels = read_split(setup["data"], "test")
    probs = forward_probs(setup["alm"], images)
    assert report["threshold_mode"] == "calibrated" and report["thresholds"] == stored.thresholds
    assert_metrics_close(report["metrics"], compute_metrics(labels, probs, stored.thresholds))


def test_eval_metrics_follow_the_stored_thresholds(tmp_path: Path, setup: dict) -> None:
    images, labels = read_split(setup["data"], "test")
    probs = forward_probs(setup["alm"], images)
    # Stored thresholds that certainly change some test predictions.
    thresholds = np.quantile(probs, 0.25, axis=0)
    assert ((probs > thresholds) != (probs > 0.5)).any()
    path = tmp_path / "thresholds.safetensors"
    save_checkpoint(path, setup["alm"], thresholds=thresholds.tolist())

    default = evaluate_checkpoint(path, setup["data"])
    calibrated = evaluate_checkpoint(path, setup["data"], thresholds="calibrated")

    assert default["thresholds"] == 0.5  # stored thresholds are used only when asked for
    assert_metrics_close(default["metrics"], compute_metrics(labels, probs))
    assert_metrics_close(calibrated["metrics"], compute_metrics(labels, probs, thresholds))
    assert calibrated["metrics"]["mA"] != pytest.approx(default["metrics"]["mA"])


def test_cli_calibrate_writes_in_place_and_prints(tmp_path: Path, setup: dict, capsys) -> None:
    path = copy_checkpoint(setup, tmp_path)
    argv = [
        "calibrate",
        "--checkpoint",
        str(path),
        "--data",
        str(setup["data"]),
        "--workers",
        "0",
        "--objective",
        "f1",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in LEARNABLE_ATTRIBUTES:
        assert name in out
    assert f"wrote the thresholds to {path}" in out and "objective f1" in out
    stored = load_checkpoint(path)
    assert stored.thresholds is not None and stored.extra["calibration"]["objective"] == "f1"


def test_calibrated_eval_without_thresholds_says_to_calibrate(setup: dict, capsys) -> None:
    with pytest.raises(ValueError, match="pedattr calibrate"):
        evaluate_checkpoint(setup["alm_path"], setup["data"], thresholds="calibrated")
    assert main(eval_argv([setup["alm_path"]], setup["data"], "--thresholds", "calibrated")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no calibrated thresholds" in err


def test_calibrating_on_test_is_refused(tmp_path: Path, setup: dict, capsys) -> None:
    path = copy_checkpoint(setup, tmp_path)
    with pytest.raises(ValueError, match="test split"):
        calibrate_checkpoint(path, setup["data"], split="test")
    argv = ["calibrate", "--checkpoint", str(path), "--data", str(setup["data"]), "--split", "test"]
    assert main(argv) == 2
    assert "refusing to calibrate" in capsys.readouterr().err
    assert load_checkpoint(path).thresholds is None


# --- reports and plots ------------------------------------------------------------------------


def assert_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()
        assert image.width > 0 and image.height > 0
        return image.size


def test_cli_eval_json_and_plot_compare_two_checkpoints(
    tmp_path: Path, setup: dict, capsys
) -> None:
    report_path, plot_path = tmp_path / "out" / "report.json", tmp_path / "out" / "mA.png"
    checkpoints = [setup["alm_path"], setup["baseline_path"]]
    argv = eval_argv(
        checkpoints, setup["data"], "--json", str(report_path), "--plot", str(plot_path)
    )

    assert main(argv) == 0

    out = capsys.readouterr().out
    assert out.count("   mA     Acc    Prec     Rec      F1") == 2
    reports = json.loads(report_path.read_text())
    assert [r["checkpoint"] for r in reports] == [str(p) for p in checkpoints]
    for report in reports:
        assert set(report["metrics"]["per_attribute"]) == set(LEARNABLE_ATTRIBUTES)
        assert 0 <= report["metrics"]["mA"] <= 1
    assert_png(plot_path)


def test_cli_eval_bad_plot_extension_fails_before_evaluating(setup: dict, tmp_path, capsys) -> None:
    argv = eval_argv([setup["alm_path"]], setup["data"], "--plot", str(tmp_path / "chart.xyz"))
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "chart.xyz" in captured.err and "mA" not in captured.out


@pytest.mark.slow
def test_plot_handles_51_attributes_and_undefined_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"attribute-{i:02d}" for i in range(51)]
    first = dict(zip(names, rng.uniform(0.5, 1.0, 51).tolist(), strict=True))
    second = dict(zip(names, rng.uniform(0.3, 1.0, 51).tolist(), strict=True))
    first["attribute-03"] = math.nan
    second["attribute-07"] = None
    del second["attribute-50"]  # missing from one series: a gap too

    wide = plot_attribute_accuracy(
        {"a/best.safetensors": first, "b/best.safetensors": second},
        tmp_path / "wide.png",
        title="51 attributes",
    )
    small = plot_attribute_accuracy(
        {"one": {"Hat": 0.9, "Boots": math.nan}}, tmp_path / "small.png"
    )

    wide_size, small_size = assert_png(wide), assert_png(small)
    assert wide_size[0] > 2 * small_size[0]  # the figure grows with the attributes
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_plot_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fraction"):
        plot_attribute_accuracy({"a": {"Hat": 83.0}}, tmp_path / "p.png")
    with pytest.raises(ValueError, match="no series"):
        plot_attribute_accuracy({}, tmp_path / "p.png")
    with pytest.raises(ValueError, match="extension"):
        plot_attribute_accuracy({"a": {"Hat": 0.8}}, tmp_path / "p")


def test_short_labels() -> None:
    assert short_labels(["runs/a/best.safetensors", "runs/b/last.safetensors"]) == [
        "best.safetensors",
        "last.safetensors",
    ]
    assert short_labels(["runs/a/best.safetensors", "runs/b/best.safetensors"]) == [
        "a/best.safetensors",
        "b/best.safetensors",
    ]
    assert short_labels(["x.safetensors", "x.safetensors"]) == [
        "x.safetensors (1)",
        "x.safetensors (2)",
    ]
