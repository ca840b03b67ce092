"""The generated pedestrian benchmark: determinism, label statistics, boxes and the dataset."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from pedattr.data.description import DatasetDescription
from pedattr.data.synthetic import generator as synthetic
from pedattr.data.synthetic._shapes import paint
from pedattr.data.synthetic.generator import (
    ATTRIBUTES,
    EXCLUSIVE_GROUPS,
    GLOBAL_ATTRIBUTES,
    LOCAL_ATTRIBUTES,
    LOCATION_VARYING_ATTRIBUTES,
    LOWER_GARMENTS,
    ORIENTATIONS,
    PA100K_TEST_POSITIVE_RATIO,
    SLEEVES,
    UPPER_PATTERNS,
    generate_arrays,
    generate_sample,
    render_scene,
    sample_scene,
    write_synthetic_dataset,
)

#: Attributes the sampler raises to about 5 % (rarer in PA-100K).
RAISED = {"AgeLess18", "Hat", "HoldObjectsInFront", "LowerStripe", "boots"}


def column(name: str) -> int:
    return ATTRIBUTES.index(name)


@pytest.fixture(scope="module")
def many_labels() -> np.ndarray:
    """Labels of 1,500 samples at the demo's size, without painting the images."""
    scenes = (sample_scene(0, 128, 64, index=k) for k in range(1500))
    return np.array([[s.attributes[name] for name in ATTRIBUTES] for s in scenes], np.uint8)


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_identical_images_and_labels_and_other_seeds_differ():
    images_a, labels_a = generate_arrays(6, seed=3, height=64, width=32)
    images_b, labels_b = generate_arrays(6, seed=3, height=64, width=32)
    images_c, labels_c = generate_arrays(6, seed=4, height=64, width=32)
    assert images_a.shape == (6, 64, 32, 3) and images_a.dtype == np.uint8
    assert labels_a.shape == (6, len(ATTRIBUTES)) and labels_a.dtype == np.uint8
    assert images_a.tobytes() == images_b.tobytes()
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(images_a, images_c)
    assert not np.array_equal(labels_a, labels_c)


def test_a_sample_is_the_same_alone_in_a_batch_or_out_of_order():
    images, labels = generate_arrays(4, seed=7, height=64, width=32, start=10)
    for k in (13, 11, 10):  # out of order, alone
        sample = generate_sample(7, 64, 32, index=k)
        assert np.asarray(sample.image).tobytes() == images[k - 10].tobytes()
        np.testing.assert_array_equal(sample.labels, labels[k - 10])


def test_a_shared_generator_draws_successive_samples():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    first, second = generate_sample(rng_a, 64, 32), generate_sample(rng_a, 64, 32)
    assert (
        np.asarray(first.image).tobytes()
        == np.asarray(generate_sample(rng_b, 64, 32).image).tobytes()
    )
    assert np.asarray(first.image).tobytes() != np.asarray(second.image).tobytes()


# --- attributes and their statistics ---------------------------------------------------------


def test_attribute_sets_are_consistent():
    assert len(ATTRIBUTES) >= 20 and len(set(ATTRIBUTES)) == len(ATTRIBUTES)
    assert set(ATTRIBUTES) == GLOBAL_ATTRIBUTES | LOCAL_ATTRIBUTES
    assert not GLOBAL_ATTRIBUTES & LOCAL_ATTRIBUTES
    assert LOCATION_VARYING_ATTRIBUTES < LOCAL_ATTRIBUTES
    assert set(PA100K_TEST_POSITIVE_RATIO) <= set(ATTRIBUTES)


@pytest.mark.slow
def test_priors_follow_pa100k_with_several_rare_attributes(many_labels):
    ratio = dict(zip(ATTRIBUTES, many_labels.mean(axis=0), strict=True))
    assert all(value > 0 for value in ratio.values())
    assert sum(value < 0.10 for value in ratio.values()) >= 5
    # Within 0.05: glasses are not drawn on back views (PA-100K labels some), and items hidden
    # by others or outside the frame are labelled negative.
    for name, real in PA100K_TEST_POSITIVE_RATIO.items():
        expected = 0.05 if name in RAISED else real
        assert abs(ratio[name] - expected) < 0.05, (name, ratio[name], expected)


@pytest.mark.slow
def test_mutual_exclusions_and_co_occurrence_hold(many_labels):
    def count(names) -> np.ndarray:
        return many_labels[:, [column(n) for n in names]].sum(axis=1)

    assert (count(ORIENTATIONS) == 1).all()
    assert (count(LOWER_GARMENTS) <= 1).all() and (count(LOWER_GARMENTS) == 1).mean() > 0.99
    assert (count(SLEEVES) <= 1).all() and (count(SLEEVES) == 1).mean() > 0.99
    assert all((count(group) <= 1).all() for group in EXCLUSIVE_GROUPS)
    assert (count(UPPER_PATTERNS) == 1).any()
    has = {name: many_labels[:, column(name)] == 1 for name in ATTRIBUTES}
    assert not (has["Glasses"] & has["Back"]).any()  # not seen from behind
    assert not (has["UpperLogo"] & has["Back"]).any()
    assert not (has["LongCoat"] & ~has["LongSleeve"]).any()
    female, male = has["Female"], ~has["Female"]
    assert has["LongHair"][female].mean() > 0.5 > 0.1 > has["LongHair"][male].mean()
    assert has["Skirt&Dress"][female].mean() > 0.1 > has["Skirt&Dress"][male].mean()


# --- boxes ------------------------------------------------------------------------------------


def test_boxes_exist_exactly_for_positive_local_attributes_and_lie_in_the_image():
    for k in range(40):
        sample = generate_sample(2, 128, 64, index=k)
        positives = {name for name, y in zip(ATTRIBUTES, sample.labels, strict=True) if y}
        assert set(sample.boxes) == positives & LOCAL_ATTRIBUTES
        for x0, y0, x1, y1 in sample.boxes.values():
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 128


def _switch(attributes: dict, name: str) -> tuple[dict, dict, str | None]:
    """The attributes with ``name`` on and off; for an exclusive pair, the other one swaps in.

    Lower garments are compared with bare legs and without a coat (which would cover them).
    """
    on, off = dict(attributes), dict(attributes)
    if name in SLEEVES:
        (other,) = set(SLEEVES) - {name}
        on |= {name: True, other: False}
        off |= {name: False, other: True}
        return on, off, other
    if name in LOWER_GARMENTS:
        on |= {g: g == name for g in LOWER_GARMENTS} | {"LongCoat": False}
        off |= dict.fromkeys(LOWER_GARMENTS, False) | {"LongCoat": False}
        return on, off, None
    return on | {name: True}, off | {name: False}, None


def _inside(xs: np.ndarray, ys: np.ndarray, box) -> np.ndarray:
    """Pixels (column xs, row ys) whose centre lies in the box, edges included."""
    x0, y0, x1, y1 = box
    return (xs + 0.5 >= x0) & (xs + 0.5 <= x1) & (ys + 0.5 >= y0) & (ys + 0.5 <= y1)


def _extent_iou(xs: np.ndarray, ys: np.ndarray, box) -> float:
    """IoU of the box with the bounding box of the given pixels."""
    extent = (xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0)
    inter_w = max(0.0, min(box[2], extent[2]) - max(box[0], extent[0]))
    inter_h = max(0.0, min(box[3], extent[3]) - max(box[1], extent[1]))
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1]) + (extent[2] - extent[0]) * (extent[3] - extent[1])
    return inter / (area - inter)


@pytest.mark.slow
def test_an_attributes_evidence_lies_inside_its_box_and_fills_it():
    """Render each scene with one attribute on and off: the pixels that change are the
    attribute's evidence, so they must lie in its box; for compact items they also span it."""
    compact = {"Backpack", "Glasses", "HandBag", "Hat", "HoldObjectsInFront", "boots", "LongCoat"}
    for k in range(12):
        scene = replace(sample_scene(0, 128, 64, index=k), occluder=None, blur_radius=0.0)
        for name in sorted(LOCAL_ATTRIBUTES):
            on, off, other = _switch(scene.attributes, name)
            with_it = render_scene(replace(scene, attributes=on))
            without = render_scene(replace(scene, attributes=off))
            changed = (np.asarray(with_it.image) != np.asarray(without.image)).any(axis=-1)
            ys, xs = np.nonzero(changed)
            assert xs.size > 0, (k, name)
            inside = _inside(xs, ys, with_it.boxes[name])
            if other is not None:  # the swapped-in sleeve length is evidence of the other label
                inside |= _inside(xs, ys, without.boxes[other])
            assert inside.all(), (k, name, int((~inside).sum()))
            if name in compact:
                assert _extent_iou(xs, ys, with_it.boxes[name]) > 0.5, (k, name)


def test_a_shifted_box_would_be_caught():
    """The containment check above is not vacuous: moving a hat box by a few pixels fails it."""
    scene = replace(sample_scene(0, 128, 64, index=0), occluder=None, blur_radius=0.0)
    on, off, _ = _switch(scene.attributes, "Hat")
    with_it = render_scene(replace(scene, attributes=on))
    without = render_scene(replace(scene, attributes=off))
    ys, xs = np.nonzero((np.asarray(with_it.image) != np.asarray(without.image)).any(axis=-1))
    x0, y0, x1, y1 = with_it.boxes["Hat"]
    assert _inside(xs, ys, (x0, y0, x1, y1)).all()
    assert not _inside(xs, ys, (x0, y0 + 3, x1, y1 + 3)).all()


@pytest.mark.slow
def test_occluders_leave_most_of_every_attribute_visible():
    occluded = 0
    for k in range(300):
        scene = sample_scene(1, 128, 64, index=k)
        if scene.occluder is None:
            continue
        occluded += 1
        seen = synthetic._visibility(scene)
        covered = np.zeros((128, 64), dtype=bool)
        paint(covered, scene.occluder, True)
        for name in seen.boxes:
            visible = seen.visible(name)
            assert (visible & covered).sum() <= synthetic.MAX_OCCLUDED * visible.sum()
    assert occluded > 20  # about one image in five has an occluder


# --- the prepared dataset ---------------------------------------------------------------------

SMALL = dict(num_train=150, num_val=10, num_test=40, seed=0, size=(64, 32), progress=False)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data", **SMALL)


@pytest.mark.slow
def test_dataset_loads_with_splits_labels_boxes_and_images(small_dataset):
    data = DatasetDescription.load(small_dataset)
    assert data.attribute_names == list(ATTRIBUTES)
    assert data.meta["has_boxes"] and data.boxes is not None
    assert data.meta["splits"] == {"train": 150, "val": 10, "test": 40}
    assert data.meta["source"]["generator_version"] == synthetic.GENERATOR_VERSION
    assert (data.positive_ratio > 0).all()
    assert len(data.split_indices("test")) == 40
    for index in (0, 155, 199):  # one per split: the images are samples 0..199 of the seed
        sample = generate_sample(0, 64, 32, index=index)
        with Image.open(data.image_path(index)) as image:
            assert np.asarray(image).tobytes() == np.asarray(sample.image).tobytes()
        np.testing.assert_array_equal(data.labels[index], sample.labels)
        boxes = data.boxes[data.image_names[index]]
        assert set(boxes) == set(sample.boxes)
        for name, box in boxes.items():
            np.testing.assert_allclose(box, sample.boxes[name], atol=1e-3)


@pytest.mark.slow
def test_second_call_reuses_the_dataset(small_dataset, monkeypatch):
    files = [small_dataset / "dataset.json", small_dataset / "images" / "000000.png"]
    before = [path.stat().st_mtime_ns for path in files]

    def fail(job):
        raise AssertionError("an image was rendered again")

    monkeypatch.setattr(synthetic, "_render_job", fail)
    assert write_synthetic_dataset(small_dataset, **SMALL) == small_dataset
    assert [path.stat().st_mtime_ns for path in files] == before


@pytest.mark.slow
def test_changed_parameters_regenerate(tmp_path):
    out = tmp_path / "data"
    first = dict(SMALL, num_val=0, num_test=10)
    write_synthetic_dataset(out, **first)
    labels = DatasetDescription.load(out).labels
    write_synthetic_dataset(out, **dict(first, seed=1))
    data = DatasetDescription.load(out)
    assert data.meta["source"]["seed"] == 1
    assert not np.array_equal(data.labels, labels)


@pytest.mark.slow
def test_interrupted_regeneration_never_looks_finished(tmp_path, monkeypatch):
    out = tmp_path / "data"
    write_synthetic_dataset(out, **dict(SMALL, num_val=0, num_test=0))
    render = synthetic._render_job
    calls = []

    def interrupted(job):
        calls.append(job)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return render(job)

    monkeypatch.setattr(synthetic, "_render_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_dataset(out, **dict(SMALL, num_val=0, num_test=0, seed=2))
    assert not (out / "dataset.json").exists()


@pytest.mark.slow
def test_parallel_workers_write_the_same_files(tmp_path):
    params = dict(SMALL, num_train=120, num_val=0, num_test=0)
    serial = write_synthetic_dataset(tmp_path / "serial", **params)
    parallel = write_synthetic_dataset(tmp_path / "parallel", **dict(params, workers=2))
    for name in ("samples.csv", "boxes.json", "images/000000.png", "images/000119.png"):
        assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name


def test_too_few_training_images_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no positive for"):
        write_synthetic_dataset(tmp_path / "d", **dict(SMALL, num_train=5))
    assert not (tmp_path / "d" / "dataset.json").exists()
    with pytest.raises(ValueError, match="counts"):
        write_synthetic_dataset(tmp_path / "d", **dict(SMALL, num_train=0, num_val=0, num_test=0))


def test_boxes_json_is_the_ground_truth_format(small_dataset):
    boxes = json.loads((small_dataset / "boxes.json").read_text())
    assert len(boxes) == 200
    for per_image in boxes.values():
        for name, box in per_image.items():
            assert name in LOCAL_ATTRIBUTES and len(box) == 4
