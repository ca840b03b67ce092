"""The generated pedestrians and the short demo training."""

from __future__ import annotations

import json

import numpy as np

import pedattr
from pedattr.cli import main
from pedattr.data.synthetic import ATTRIBUTES, LOCAL_ATTRIBUTES, generate_arrays, generate_sample


def test_generator_is_deterministic_per_seed():
    images_a, labels_a = generate_arrays(6, seed=3, height=64, width=32)
    images_b, labels_b = generate_arrays(6, seed=3, height=64, width=32)
    images_c, _ = generate_arrays(6, seed=4, height=64, width=32)
    assert images_a.shape == (6, 64, 32, 3) and images_a.dtype == np.uint8
    assert labels_a.shape == (6, len(ATTRIBUTES))
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(images_a, images_c)


def test_every_positive_local_attribute_has_a_box_inside_the_image():
    rng = np.random.default_rng(0)
    for _ in range(40):
        sample = generate_sample(rng, height=128, width=64)
        positives = {name for name, y in zip(ATTRIBUTES, sample.labels, strict=True) if y}
        assert set(sample.boxes) == positives & LOCAL_ATTRIBUTES
        for x0, y0, x1, y1 in sample.boxes.values():
            assert x0 < x1 and y0 < y1
            assert x0 >= 0 and y0 >= 0 and x1 <= 64 and y1 <= 128


def test_skirt_and_shorts_never_co_occur():
    _, labels = generate_arrays(200, seed=1, height=32, width=16)
    skirt, shorts = ATTRIBUTES.index("Skirt"), ATTRIBUTES.index("Shorts")
    assert not (labels[:, skirt] & labels[:, shorts]).any()
    assert 0 < labels[:, skirt].mean() < 0.5


def test_demo_trains_evaluates_and_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--num-train", "32", "--num-test", "16", "--epochs", "1"]
    assert main([*args, "--backbone", "timm:resnet18"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_train"] == 32 and report["epochs"] == 1
    assert 0.0 <= report["metrics"]["f1"] <= 1.0
    model = pedattr.load_model(out / "model.safetensors")
    assert model.attribute_names == ATTRIBUTES
    assert "mA" in capsys.readouterr().out
