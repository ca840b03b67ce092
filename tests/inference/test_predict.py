"""The Predictor API, ``pedattr predict``, box drawing, bad inputs and videos.

Oracles: an independent forward pass (the model on a torchvision-resized uint8 tensor, then a
sigmoid), the evaluation loader of ``pedattr eval`` for the same files, pixel conversions
written out by hand (16-bit scaling, alpha 0/255 on black), and
:func:`pedattr.models.localization.boxes_to_pixels` for the boxes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import pedattr
from pedattr.cli import main
from pedattr.data.dataset import build_loader
from pedattr.evaluation.evaluate import predict_loader
from pedattr.inference import command, sources
from pedattr.inference.predictor import (
    GLOBAL_BRANCH,
    ImageInput,
    ImageReadError,
    Prediction,
    PredictionFailure,
    Predictor,
    prepare_image,
)
from pedattr.inference.visualize import (
    _font,
    _text_size,
    _wrap,
    attribute_box_grid,
    draw_attribute_boxes,
    level_colour,
)
from pedattr.models.localization import boxes_to_pixels, level_names, level_sizes, max_vote_branch
from pedattr.models.model import ModelConfig
from tests.helpers import (
    LEARNABLE_ATTRIBUTES,
    TINY_MODEL,
    forward_with_activation_maps,
    learnable_image,
    make_prepared_dataset,
)

NAMES = list(LEARNABLE_ATTRIBUTES)
#: Stored as the checkpoint's calibrated thresholds: always, never, always positive.
CALIBRATED = [0.0, 1.0, 0.0]
ATOL = 1e-6
VTEST_PLACES = (
    "/usr/share/doc/opencv-doc/examples/data/vtest.avi",
    str(Path(__file__).resolve().parents[2] / "data" / "vtest.avi"),
)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return pedattr.build_model("alm", attribute_names=NAMES, **TINY_MODEL).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    pedattr.save_checkpoint(path, model, thresholds=CALIBRATED)
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A 50 x 24 RGB uint8 picture (not the model's 64 x 32, so every input is resized)."""
    rng = np.random.default_rng(1)
    return np.array(learnable_image(np.array([1, 1, 1]), rng, size=(50, 24)))


def forward(model, pixels: np.ndarray) -> tuple[np.ndarray, object]:
    """Independent oracle: resize the uint8 HxWx3 array, run the model, sigmoid."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    resized = TF.resize(tensor, list(model.config.input_size), antialias=True)
    with torch.no_grad():
        output = model(resized[None])
    return torch.sigmoid(output.logits)[0].numpy(), output


def probs(prediction: Prediction) -> np.ndarray:
    return np.array([prediction.probabilities[name] for name in NAMES])


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        path = folder / f"img{k}.png"
        learnable_image(rng.integers(0, 2, 3), rng).save(path)
        paths.append(path)
    return paths


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    # The CPU, as the API predictor the outputs are compared with (the default is CUDA when
    # there is one, whose convolutions differ in the last bits).
    device = [] if "--device" in args else ["--device", "cpu"]
    code = main(["predict", *map(str, args), *device])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the API on every input kind --------------------------------------------------------------


@pytest.mark.slow
def test_every_input_kind_gives_the_forward_pass_probabilities(predictor, model, picture, tmp_path):
    path = tmp_path / "person.png"
    Image.fromarray(picture).save(path)
    chw = torch.from_numpy(picture).permute(2, 0, 1)
    inputs = [
        str(path),
        path,
        Image.open(path),  # not yet loaded: decoded inside
        Image.fromarray(picture),
        picture,
        picture / 255.0,  # float64
        (picture / 255.0).astype(np.float32),
        picture.astype(np.uint16) * 257,  # 16-bit RGB, exactly the 8-bit values scaled up
        np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)]),  # opaque RGBA
        chw,
        chw.float() / 255,
        torch.stack([chw, chw]),  # a 4-D batch gives two predictions
    ]
    predictions = predictor.predict(inputs)
    assert len(predictions) == len(inputs) + 1
    expected, _ = forward(model, picture)
    for prediction in predictions:
        np.testing.assert_allclose(probs(prediction), expected, atol=ATOL)
        assert prediction.image_size == picture.shape[:2]
    assert predictions[0].source == str(path)
    assert predictions[3].source == "<image 3>"
    assert predictions[-1].source == "<image 12>"


@pytest.mark.slow
def test_single_inputs_still_return_a_list(predictor, picture):
    for image in (picture, Image.fromarray(picture), torch.from_numpy(picture).permute(2, 0, 1)):
        result = predictor.predict(image)
        assert isinstance(result, list) and len(result) == 1
    assert len(predictor.predict(iter([picture, picture]))) == 2  # any iterable


@pytest.mark.slow
def test_grey_sixteen_bit_and_transparent_inputs_follow_the_pipeline_rules(
    predictor, model, tmp_path
):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (40, 20), dtype=np.uint8)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    grey_file = tmp_path / "grey.png"
    Image.fromarray(grey).save(grey_file)
    sixteen = grey.astype(np.uint16) * 257  # 8-bit g -> 16-bit g * 257 -> back to g exactly
    sixteen_file = tmp_path / "sixteen.png"
    Image.fromarray(sixteen).save(sixteen_file)
    assert Image.open(sixteen_file).mode.startswith("I")
    expected_grey, _ = forward(model, grey_rgb)
    grey_inputs = [grey, grey[..., None], grey_file, sixteen, sixteen_file, torch.from_numpy(grey)]
    for prediction in predictor.predict(grey_inputs):
        np.testing.assert_allclose(probs(prediction), expected_grey, atol=ATOL)

    colour = rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)
    alpha = np.where(rng.random((40, 20)) < 0.5, 0, 255).astype(np.uint8)
    composited = np.where(alpha[..., None] == 255, colour, 0).astype(np.uint8)  # on black
    rgba = np.dstack([colour, alpha])
    rgba_file = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(rgba_file)
    expected_rgba, _ = forward(model, composited)
    rgba_inputs = [rgba, rgba_file, Image.fromarray(rgba), torch.from_numpy(rgba).permute(2, 0, 1)]
    for prediction in predictor.predict(rgba_inputs):
        np.testing.assert_allclose(probs(prediction), expected_rgba, atol=ATOL)


@pytest.mark.slow
def test_exif_orientation_applies_to_paths_and_opened_images(predictor, model, picture, tmp_path):
    path = tmp_path / "rotated.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(picture).save(path, exif=exif)
    upright = np.array(Image.fromarray(picture).transpose(Image.Transpose.ROTATE_270))
    expected, _ = forward(model, upright)
    for prediction in predictor.predict([path, Image.open(path)]):
        assert prediction.image_size == upright.shape[:2]
        np.testing.assert_allclose(probs(prediction), expected, atol=ATOL)


@pytest.mark.slow
def test_probabilities_equal_those_of_the_evaluation_pipeline(model, checkpoint, tmp_path):
    data = make_prepared_dataset(tmp_path, {"test": 6})
    loader = build_loader(data, "test", batch_size=3, train=False, input_size=(64, 32))
    evaluated = predict_loader(model, loader, device="cpu")
    image_root = Path(json.loads((data / "dataset.json").read_text())["image_root"])
    files = sorted(image_root.glob("*.png"))
    predictions = Predictor.from_checkpoint(checkpoint, device="cpu").predict(files)
    np.testing.assert_allclose(
        np.stack([probs(p) for p in predictions]), evaluated.probs, atol=ATOL
    )


# --- thresholds, boxes, levels ----------------------------------------------------------------


@pytest.mark.slow
def test_thresholds_default_calibrated_and_given(checkpoint, model, picture):
    default = Predictor.from_checkpoint(checkpoint, device="cpu").predict(picture)[0]
    assert default.attributes == [n for n in NAMES if default.probabilities[n] > 0.5]
    calibrated = Predictor.from_checkpoint(checkpoint, device="cpu", thresholds="calibrated")
    assert calibrated.predict(picture)[0].attributes == [NAMES[0], NAMES[2]]
    given = Predictor(model, thresholds=[1.0, 0.0, 1.0]).predict(picture)[0]
    assert given.attributes == [NAMES[1]]
    assert Predictor(model, thresholds=1.0).predict(picture)[0].attributes == []
    with pytest.raises(ValueError, match="2 thresholds for 3 attributes"):
        Predictor(model, thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match="carries no calibrated thresholds"):
        Predictor(model, thresholds="calibrated")  # a built model has no stored thresholds


@pytest.mark.slow
def test_boxes_are_image_pixels_from_boxes_to_pixels(predictor, model, picture):
    [prediction] = predictor.predict(picture)
    _, output = forward(model, picture)
    expected = boxes_to_pixels(
        output.boxes,
        level_sizes=level_sizes(model, (64, 32)),
        input_size=(64, 32),
        image_size=picture.shape[:2],
        align_corners=model.config.align_corners,
    )[0]
    assert list(prediction.boxes) == NAMES
    height, width = picture.shape[:2]
    for m, name in enumerate(NAMES):
        assert list(prediction.boxes[name]) == ["level1", "level2", "level3"]
        for j, box in enumerate(prediction.boxes[name].values()):
            np.testing.assert_allclose(box, expected[j, m], atol=1e-3)
            x0, y0, x1, y1 = box
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    winners = max_vote_branch(output.branch_logits)[0]
    branches = ["level1", "level2", "level3", GLOBAL_BRANCH]
    assert prediction.winning_level == {n: branches[w] for n, w in zip(NAMES, winners, strict=True)}


def test_peaks_are_the_activation_map_maxima_in_image_pixels(predictor, model, picture):
    [prediction] = predictor.predict(picture)
    tensor = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)
    resized = TF.resize(tensor, list(model.config.input_size), antialias=True)
    _, maps = forward_with_activation_maps(model, resized[None])
    height, width = picture.shape[:2]
    input_height, input_width = model.config.input_size
    for m, name in enumerate(NAMES):
        assert list(prediction.peaks[name]) == ["level1", "level2", "level3"]
        for j, (x, y) in enumerate(prediction.peaks[name].values()):
            cells = maps[j][0, m]
            row, col = divmod(int(cells.argmax()), cells.shape[1])
            expected_x = (col + 0.5) * input_width / cells.shape[1] * width / input_width
            expected_y = (row + 0.5) * input_height / cells.shape[0] * height / input_height
            assert (x, y) == pytest.approx((expected_x, expected_y))


def test_without_peaks_the_predictions_are_the_same_and_peaks_empty(checkpoint, predictor, picture):
    quick = Predictor.from_checkpoint(checkpoint, device="cpu", batch_size=4, peaks=False)
    [with_peaks], [without] = predictor.predict(picture), quick.predict(picture)
    assert with_peaks.peaks and without.peaks == {}
    assert without.probabilities == with_peaks.probabilities
    assert without.boxes == with_peaks.boxes
    assert without.winning_level == with_peaks.winning_level


def test_prepared_images_predict_as_the_images_do(predictor, picture, tmp_path):
    """What `pedattr serve` does in two processes: prepare where the image arrives, predict
    the prepared batch elsewhere."""
    Image.fromarray(picture).save(tmp_path / "person.png")
    items = [ImageInput(picture, "array"), ImageInput(tmp_path / "person.png", "person.png")]
    prepared = [prepare_image(item, predictor.transform) for item in items]
    assert [p.image_size for p in prepared] == [picture.shape[:2]] * 2
    assert predictor.predict_prepared(prepared) == predictor.predict(items)
    failure = prepare_image(
        ImageInput(tmp_path / "missing.png", "missing.png"), predictor.transform
    )
    assert isinstance(failure, PredictionFailure) and failure.source == "missing.png"


@pytest.mark.slow
def test_boxes_scale_with_the_image(predictor, picture):
    """The same picture at twice the size resizes to nearly the same input: boxes double."""
    big = np.repeat(np.repeat(picture, 2, axis=0), 2, axis=1)
    small, large = predictor.predict([picture, big])
    for name in NAMES:
        for level, box in small.boxes[name].items():
            np.testing.assert_allclose(
                np.array(large.boxes[name][level]), 2 * np.array(box), atol=1.0
            )


def test_level_names_and_the_baseline():
    config = ModelConfig(backbone="bninception", attribute_names=("a",))
    assert level_names(config) == ("3b", "4d", "5b")
    torch.manual_seed(0)
    baseline = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    [prediction] = Predictor(baseline).predict(np.zeros((8, 4, 3), np.uint8))
    assert prediction.boxes == {} and prediction.peaks == {}
    assert set(prediction.winning_level.values()) == {GLOBAL_BRANCH}


@pytest.mark.slow
def test_to_dict_is_json(predictor, picture):
    [prediction] = predictor.predict(picture)
    record = json.loads(json.dumps(prediction.to_dict(), allow_nan=False))
    assert record["image_size"] == {"height": 50, "width": 24}
    assert record["probabilities"] == prediction.probabilities
    assert record["boxes"]["Reddish"]["level2"] == list(prediction.boxes["Reddish"]["level2"])
    assert record["peaks"]["Reddish"]["level2"] == list(prediction.peaks["Reddish"]["level2"])
    assert "preview" not in record


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("missing.png", "missing.png: no such file"),
        (np.zeros((4, 4), np.int32), "dtype int32 is not supported"),
        (np.full((4, 4, 3), 2.0), r"values in \[0, 1\]"),
        (np.zeros((4, 4, 2), np.uint8), "H x W x 1, 3 or 4"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (torch.zeros(5, 4, 4), "C = 1, 3 or 4"),
        (42, "cannot predict on a int"),
    ],
)
def test_api_bad_input_raises_naming_it(predictor, image, message):
    with pytest.raises(ImageReadError, match=message):
        predictor.predict(image)


# --- drawing ----------------------------------------------------------------------------------


def fake_prediction(image_size=(80, 40)) -> Prediction:
    boxes = {
        "Hat": {"3b": (10.0, 5.0, 30.0, 20.0), "4d": (5.0, 2.0, 35.0, 30.0), "5b": (0, 0, 40, 80)},
        "Bag": {"3b": (20.0, 40.0, 38.0, 70.0), "4d": (15, 35, 39, 75), "5b": (0, 0, 40, 80)},
    }
    return Prediction(
        source="p.png",
        image_size=image_size,
        probabilities={"Hat": 0.9, "Bag": 0.3},
        attributes=["Hat"],
        boxes=boxes,
        winning_level={"Hat": "3b", "Bag": "global"},
    )


def test_draw_attribute_boxes_upscales_and_places_boxes():
    image = Image.new("RGB", (40, 80), (0, 0, 0))
    overlay = draw_attribute_boxes(image, fake_prediction(), levels=["3b"])
    scale = 256 / 80  # upscaled to 256 high
    assert overlay.height > 256 and overlay.width >= 128
    offset = (overlay.width - 128) // 2  # the image is centred above the legend
    # The left edge of Hat's 3b box, half-way down: red, the lowest level's colour.
    x, y = offset + round(10 * scale), round(12.5 * scale)
    assert overlay.getpixel((x, y)) == level_colour(0)
    assert overlay.getpixel((offset + round(20 * scale), y)) == (0, 0, 0)  # inside: untouched
    # Bag is not positive: not drawn unless asked for.
    assert overlay.getpixel((offset + round(20 * scale), round(55 * scale))) == (0, 0, 0)
    with pytest.raises(ValueError, match="unknown levels"):
        draw_attribute_boxes(image, fake_prediction(), levels=["6a"])


def test_activation_peaks_are_drawn_as_crosses_in_the_level_colour():
    image = Image.new("RGB", (40, 80), (0, 0, 0))
    prediction = fake_prediction()
    plain = draw_attribute_boxes(image, prediction, levels=["3b"])
    scale = 256 / 80
    offset = (plain.width - 128) // 2
    centre = (offset + round(20 * scale), round(12.5 * scale))  # inside Hat's 3b box
    assert plain.getpixel(centre) == (0, 0, 0)
    point = {"3b": (20.0, 12.5), "4d": (1.0, 1.0), "5b": (1.0, 1.0)}
    prediction.peaks = {"Hat": point, "Bag": point}
    marked = draw_attribute_boxes(image, prediction, levels=["3b"])
    assert marked.getpixel(centre) == level_colour(0)


def test_a_long_grid_title_wraps_within_the_grid(tmp_path):
    images = [Image.new("RGB", (40, 80), (90, 90, 90))]
    kwargs = dict(attributes=["Hat"], by="attribute", split_levels=False, cell_height=128)
    short = attribute_box_grid(images, [fake_prediction()], tmp_path / "s.png", title="a", **kwargs)
    title = " ".join(["each attribute's box at every level"] * 6)
    long = attribute_box_grid(
        images, [fake_prediction()], tmp_path / "l.png", title=title, **kwargs
    )
    with Image.open(short) as a, Image.open(long) as b:
        # Wrapped onto more lines (taller), not drawn past a grid as narrow as its panels.
        assert b.height > a.height and b.width < 400
    font = _font(12)
    lines = _wrap(title.split(), font, 150, " ")
    assert len(lines) > 3 and " ".join(lines) == title
    assert all(_text_size(font, line)[0] <= 150 for line in lines)


def test_attribute_box_grid_writes_a_png(tmp_path):
    images = [Image.new("RGB", (40, 80), (90, 90, 90)), np.zeros((80, 40, 3), np.uint8)]
    predictions = [fake_prediction(), fake_prediction()]
    predictions[1].attributes = []
    by_image = attribute_box_grid(images, predictions, tmp_path / "grid.png", cell_height=128)
    with Image.open(by_image) as grid:
        assert grid.format == "PNG"
        assert grid.width > 3 * 64 and grid.height > 2 * 128  # 3 level panels, 2 rows
    by_attribute = attribute_box_grid(
        images,
        predictions,
        tmp_path / "grid.jpg",
        attributes=["Hat", "Bag"],
        by="attribute",
        split_levels=False,
    )
    with Image.open(by_attribute) as grid:
        assert grid.format == "JPEG" and grid.height > 2 * 256
    with pytest.raises(ValueError, match="extension"):
        attribute_box_grid(images, predictions, tmp_path / "grid.xyz")


# --- the command ------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_keeps_the_predictions_made_so_far(capsys, checkpoint, tmp_path, monkeypatch):
    paths = write_images(tmp_path / "images", 5)
    report = command._Run._report
    calls = []

    def report_then_interrupt(self, prediction, stream):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C does, between two images
        calls.append(prediction.source)
        report(self, prediction, stream)

    monkeypatch.setattr(command._Run, "_report", report_then_interrupt)
    out_json = tmp_path / "out.jsonl"
    code, out, err = run_cli(capsys, "--checkpoint", checkpoint, *paths, "--json", out_json)
    assert code == 130 and err == "pedattr predict: interrupted\n"
    assert [r["source"] for r in read_jsonl(out_json)] == calls == list(map(str, paths[:3]))
    assert "interrupted after 3 images; wrote" in out


@pytest.mark.slow
def test_cli_files_folders_globs_json_and_overlays(capsys, checkpoint, predictor, tmp_path):
    folder = tmp_path / "crops"
    paths = write_images(folder, 3)
    write_images(folder / "deeper", 1, seed=5)
    single = write_images(tmp_path / "other", 1, seed=9)[0]
    out_json, overlays = tmp_path / "out.jsonl", tmp_path / "overlays"
    code, out, err = run_cli(
        capsys,
        "--checkpoint", checkpoint, folder, f"{folder}/*1.png", single,
        "--json", out_json, "--visualize", overlays, "--batch-size", 2,
    )  # fmt: skip
    assert code == 0, err
    assert err == ""
    records = read_jsonl(out_json)
    expected_sources = [*map(str, paths), str(paths[1]), str(single)]  # folder not recursive
    assert [r["source"] for r in records] == expected_sources
    api = predictor.predict(expected_sources)
    for record, prediction in zip(records, api, strict=True):
        assert record["attributes"] == prediction.attributes
        np.testing.assert_allclose(list(record["probabilities"].values()), probs(prediction))
        for name, levels in prediction.boxes.items():
            for level, box in levels.items():
                np.testing.assert_allclose(record["boxes"][name][level], box, atol=1e-4)
        assert record["frame"] is None and record["image_size"] == {"height": 64, "width": 32}
    assert "crops/img0.png  " in out and "predicted 5 images" in out  # long names keep their end
    written = sorted(overlays.glob("*.png"))
    # Names repeat (a glob match, another folder's img0): later ones are numbered.
    names = ["img0-2.png", "img0.png", "img1-2.png", "img1.png", "img2.png"]
    assert [p.name for p in written] == names
    for path in written:
        with Image.open(path) as overlay:
            overlay.verify()

    code, _, err = run_cli(capsys, "--checkpoint", checkpoint, folder, "--recursive")
    assert code == 0 and err == ""


@pytest.mark.slow
def test_cli_no_peaks_leaves_them_out_of_the_json(capsys, checkpoint, tmp_path):
    [path] = write_images(tmp_path / "one", 1)
    records = {}
    for flag in ([], ["--no-peaks"]):
        out_json = tmp_path / f"out{len(flag)}.jsonl"
        code, _, err = run_cli(capsys, "--checkpoint", checkpoint, path, "--json", out_json, *flag)
        assert code == 0, err
        [records[bool(flag)]] = read_jsonl(out_json)
    assert records[False]["peaks"]["Reddish"] and records[True]["peaks"] == {}
    assert records[True]["probabilities"] == records[False]["probabilities"]


@pytest.mark.slow
def test_cli_bad_inputs_one_line_each_and_the_rest_processed(capsys, checkpoint, tmp_path):
    folder = tmp_path / "mixed"
    [good] = write_images(folder, 1)
    (folder / "corrupt.png").write_bytes(good.read_bytes()[:120])
    (folder / "text.jpg").write_text("not a picture\n")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "tiny.png")
    Image.fromarray(np.full((30, 12), 40000, np.uint16)).save(folder / "sixteen.png")
    Image.new("RGBA", (12, 30), (10, 200, 10, 128)).save(folder / "alpha.png")
    Image.new("L", (6000, 4000), 128).save(folder / "large.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    out_json = tmp_path / "out.jsonl"
    code, out, err = run_cli(
        capsys,
        "--checkpoint", checkpoint, folder, empty, tmp_path / "missing.jpg",
        tmp_path / "none*.png", "--json", out_json,
    )  # fmt: skip
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 5, err
    assert lines[0].startswith(f"{folder / 'corrupt.png'}: cannot read the image")
    assert lines[1].startswith(f"{folder / 'text.jpg'}: cannot read the image")
    assert (
        lines[2] == f"{empty}: a folder without images (add --recursive to search its subfolders)"
    )
    assert lines[3] == f"{tmp_path / 'missing.jpg'}: no such file"
    assert lines[4] == f"{tmp_path / 'none*.png'}: the pattern matches nothing"
    records = {Path(r["source"]).name: r for r in read_jsonl(out_json)}
    assert sorted(records) == ["alpha.png", "img0.png", "large.png", "sixteen.png", "tiny.png"]
    assert records["large.png"]["image_size"] == {"height": 4000, "width": 6000}
    assert records["tiny.png"]["image_size"] == {"height": 1, "width": 1}
    assert "predicted 5 images; 5 inputs failed" in out


def test_cli_decompression_bomb_is_a_clear_line(capsys, checkpoint, tmp_path, monkeypatch):
    [path] = write_images(tmp_path, 1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 32 is over twice the limit
    code, _, err = run_cli(capsys, "--checkpoint", checkpoint, path)
    assert code == 1
    assert err.startswith(f"{path}: Image size (2048 pixels) exceeds limit")
    assert "MAX_IMAGE_PIXELS" in err and len(err.splitlines()) == 1


def test_cli_checkpoint_problems_exit_2(capsys, checkpoint, model, tmp_path):
    [image] = write_images(tmp_path, 1)
    with safe_open(str(checkpoint), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        metadata = handle.metadata()
    document = json.loads(metadata["pedattr"])
    document["format_version"] = 99
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={"pedattr": json.dumps(document)})
    code, out, err = run_cli(capsys, "--checkpoint", newer, image)
    assert code == 2 and out == ""
    assert err.strip() == (
        f"pedattr predict: error: {newer}: checkpoint format version 99 is newer than this "
        "pedattr understands (1); upgrade pedattr"
    )
    plain = tmp_path / "plain.safetensors"
    pedattr.save_checkpoint(plain, model)  # without calibrated thresholds
    code, _, err = run_cli(capsys, "--checkpoint", plain, image, "--thresholds", "calibrated")
    assert code == 2 and "pedattr calibrate" in err


# --- videos -----------------------------------------------------------------------------------


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (96, 64)) -> list[np.ndarray]:
    """A small MJPG AVI of ``size`` (H, W); returns its frames as OpenCV decodes them (RGB)."""
    cv2 = pytest.importorskip("cv2")
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    for k in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : 4 + 5 * k] = (30, 80, 200)  # a growing band: every frame differs
        writer.write(frame)
    writer.release()
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(np.ascontiguousarray(frame[..., ::-1]))
    capture.release()
    return decoded


@pytest.mark.slow
def test_cli_video_every_nth_frame(capsys, checkpoint, model, tmp_path):
    video = tmp_path / "walk.avi"
    frames = write_video(video)
    out_json = tmp_path / "out.jsonl"
    code, out, err = run_cli(
        capsys, "--checkpoint", checkpoint, video, "--every", 5, "--json", out_json
    )
    assert code == 0, err
    records = read_jsonl(out_json)
    assert [(r["source"], r["frame"]) for r in records] == [(str(video), k) for k in (0, 5, 10)]
    for record in records:
        expected, _ = forward(model, frames[record["frame"]])
        np.testing.assert_allclose(list(record["probabilities"].values()), expected, atol=ATOL)
    assert "walk.avi [frame 5]  " in out


@pytest.mark.slow
def test_cli_video_crops(capsys, checkpoint, model, tmp_path):
    video = tmp_path / "walk.avi"
    frames = write_video(video)
    crops = tmp_path / "crops.json"
    rows = [
        {"frame": 2, "x0": 10, "y0": 4, "x1": 40, "y1": 60},
        {"frame": 2, "x0": -5, "y0": 30, "x1": 30, "y1": 90, "video": "walk.avi"},  # clipped
        {"frame": 3, "x0": 10, "y0": 4, "x1": 40, "y1": 60},  # not a multiple of --every
        {"frame": 4, "x0": 200, "y0": 200, "x1": 220, "y1": 220},  # outside the frame
        {"frame": 50, "x0": 0, "y0": 0, "x1": 10, "y1": 10},  # past the end
        {"frame": 2, "x0": 0, "y0": 0, "x1": 10, "y1": 10, "video": "other.avi"},
    ]
    crops.write_text(json.dumps(rows))
    out_json, overlays = tmp_path / "out.jsonl", tmp_path / "overlays"
    code, _, err = run_cli(
        capsys,
        "--checkpoint", checkpoint, video, "--crops", crops, "--every", 2,
        "--json", out_json, "--visualize", overlays,
    )  # fmt: skip
    assert code == 1
    assert err.strip().splitlines() == [
        f"{video} [frame 4, crop 200,200,220,220]: the crop lies outside the 64x96 frame",
        f"{video}: crops of frame 50 lie past the video's end (12 frames)",
    ]
    records = read_jsonl(out_json)
    assert [(r["frame"], r["crop"]) for r in records] == [
        (2, [10, 4, 40, 60]),
        (2, [0, 30, 30, 90]),
    ]
    expected, _ = forward(model, frames[2][4:60, 10:40])
    np.testing.assert_allclose(list(records[0]["probabilities"].values()), expected, atol=ATOL)
    assert records[0]["image_size"] == {"height": 56, "width": 30}
    assert sorted(p.name for p in overlays.glob("*.png")) == [
        "walk_frame000002_crop0-30-30-90.png",
        "walk_frame000002_crop10-4-40-60.png",
    ]


def test_crops_file_errors_exit_2(capsys, checkpoint, tmp_path):
    bad = tmp_path / "crops.csv"
    bad.write_text("frame,x0,y0,x1\n0,1,2,3\n")
    code, _, err = run_cli(capsys, "--checkpoint", checkpoint, tmp_path, "--crops", bad)
    assert code == 2 and "missing y1" in err
    bad.write_text("frame,x0,y0,x1,y1\n0,10,2,5,8\n")
    code, _, err = run_cli(capsys, "--checkpoint", checkpoint, tmp_path, "--crops", bad)
    assert code == 2 and f"{bad}: line 2: needs frame >= 0, x1 > x0 and y1 > y0" in err


def test_video_without_opencv_names_the_extra(capsys, checkpoint, tmp_path, monkeypatch):
    def missing():
        raise ImportError(sources._MISSING_OPENCV)

    monkeypatch.setattr(sources, "_opencv", missing)
    [image] = write_images(tmp_path, 1)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    code, out, err = run_cli(capsys, "--checkpoint", checkpoint, video, image)
    assert code == 1
    assert err.strip() == (
        f"{video}: reading videos needs OpenCV; install it with `pip install 'pedattr[video]'` "
        "(opencv-python below 5)"
    )
    assert "predicted 1 image;" in out


def find_vtest() -> Path | None:
    for place in (os.environ.get("PEDATTR_VTEST"), *VTEST_PLACES):
        if place and Path(place).is_file():
            return Path(place)
    return None


@pytest.mark.skipif(find_vtest() is None, reason="vtest.avi (Debian's opencv-doc) not found")
def test_vtest_video_smoke(capsys, checkpoint, tmp_path):
    """Real pedestrians: OpenCV's vtest.avi, whole frames and three people of frame 0."""
    pytest.importorskip("cv2")
    vtest = find_vtest()
    out_json = tmp_path / "frames.jsonl"
    code, _, err = run_cli(
        capsys, "--checkpoint", checkpoint, vtest, "--every", 250, "--json", out_json
    )
    assert code == 0, err
    records = read_jsonl(out_json)
    assert [r["frame"] for r in records] == [0, 250, 500, 750]
    assert all(r["image_size"] == {"height": 576, "width": 768} for r in records)

    crops = tmp_path / "people.csv"
    crops.write_text("frame,x0,y0,x1,y1\n0,243,212,292,312\n0,493,152,537,236\n0,633,235,692,324\n")
    out_json, overlays = tmp_path / "people.jsonl", tmp_path / "overlays"
    code, _, err = run_cli(
        capsys,
        "--checkpoint", checkpoint, vtest, "--crops", crops,
        "--json", out_json, "--visualize", overlays,
    )  # fmt: skip
    assert code == 0, err
    records = read_jsonl(out_json)
    assert [r["image_size"] for r in records] == [
        {"height": 100, "width": 49},
        {"height": 84, "width": 44},
        {"height": 89, "width": 59},
    ]
    for path in overlays.glob("*.png"):
        with Image.open(path) as overlay:
            assert overlay.height > 256  # small crops are upscaled before drawing
