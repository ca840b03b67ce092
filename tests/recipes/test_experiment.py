"""The paper's Tables 1 and 2: every row's model, the comparison heads, body-part regions and
``pedattr experiment`` end to end at a tiny size."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import pedattr
from pedattr.checkpoint.convert import PA100K_ATTRIBUTES
from pedattr.checkpoint.format import load_checkpoint
from pedattr.cli import main
from pedattr.data import part_regions
from pedattr.data.dataset import AttributeDataset, build_loader
from pedattr.data.synthetic.generator import ATTRIBUTES as GENERATED_ATTRIBUTES
from pedattr.data.synthetic.generator import write_synthetic_dataset
from pedattr.engine.config import ConfigError
from pedattr.engine.distributed import DistributedContext
from pedattr.engine.loss import WeightedBCELoss
from pedattr.engine.trainer import train_step
from pedattr.engine.training import Trainer, TrainingError, model_config
from pedattr.models.alm import AttributeLocalization
from pedattr.models.complexity import count_parameters
from pedattr.models.heads import (
    AttentionMaskHead,
    RigidPartHead,
    fractions_to_theta,
    mask_boxes,
)
from pedattr.models.localization import boxes_to_pixels, level_names, level_sizes
from pedattr.models.model import ModelConfig, build_from_config, fuse_logits
from pedattr.models.pyramid import FeaturePyramid, dense_level
from pedattr.recipes import experiment
from pedattr.recipes.experiment import TABLES, ExperimentError, build_config, run_state
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, make_prepared_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = [
    f"model.backbone={TINY_MODEL['backbone']}",
    "model.input_size=[64, 32]",
    f"model.pyramid_dim={TINY_MODEL['pyramid_dim']}",
    "optim.batch_size=8",
    "optim.lr=1e-3",
    "data.workers=0",
    "run.device=cpu",
    "run.tensorboard=false",
]
ROWS = [(table, row.name) for table, rows in TABLES.items() for row in rows]
#: What each row must set (paper Sec. 4.2-4.4 as docs/experiments.md reads it).
ROW_SETTINGS = {
    "01_baseline": dict(arch="baseline"),
    "02_alm_single_level": dict(levels="top", channel_attention=False, fusion="mean", ds=False),
    "03_alm_multi_level": dict(top_down="none", channel_attention=False, fusion="mean", ds=False),
    "04_top_down_add": dict(top_down="add", channel_attention=False, fusion="mean", ds=False),
    "05_top_down_concat": dict(top_down="concat", channel_attention=False, fusion="mean", ds=False),
    "06_channel_attention": dict(channel_attention=True, fusion="mean", ds=False),
    "07_deep_supervision_mean": dict(fusion="mean", ds=True),
    "08_deep_supervision_max": dict(fusion="max", ds=True, head="alm", top_down="concat"),
    "09_final_without_alm": dict(head="gap", fusion="max", ds=True),
    "01_rigid_parts": dict(head="parts", fusion="max", ds=True),
    "02_attention_masks": dict(head="attention", fusion="max", ds=True),
    "03_alm": dict(head="alm", fusion="max", ds=True, channel_attention=True),
}


def row_config(table: str, name: str, tmp_path: Path = Path("unused")):
    path = CONFIGS / table / f"{name}.yaml"
    return build_config(path, TINY, data=tmp_path / "data", out=tmp_path / "run", seed=0)


# --- the rows' models -------------------------------------------------------------------------


def test_every_row_has_one_config_file() -> None:
    for table, rows in TABLES.items():
        files = sorted(path.stem for path in (CONFIGS / table).glob("*.yaml"))
        assert files == [row.name for row in rows]


@pytest.mark.parametrize(("table", "name"), ROWS)
def test_row_configs_hold_the_rows_settings(table: str, name: str) -> None:
    config = row_config(table, name)
    expected = dict(ROW_SETTINGS[name])
    assert config.loss.deep_supervision == expected.pop("ds", True)
    for key, value in expected.items():
        assert getattr(config.model, key) == value, key
    # Everything else is the shared recipe, with the overrides given to every row.
    assert (config.optim.epochs, config.optim.lr_step, config.loss.weighting) == (30, 10, "authors")


@pytest.mark.slow
@pytest.mark.parametrize(("table", "name"), ROWS)
def test_every_row_trains_a_step_with_every_parameter(table: str, name: str) -> None:
    config = row_config(table, name)
    torch.manual_seed(0)
    model = build_from_config(model_config(config, list(LEARNABLE_ATTRIBUTES)))
    images, labels = torch.rand(4, 3, 64, 32), (torch.rand(4, 3) < 0.5).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = WeightedBCELoss([0.5, 0.4, 0.3])
    loss = train_step(
        model, images, labels, optimizer, criterion, deep_supervision=config.loss.deep_supervision
    )
    assert torch.isfinite(loss)
    # No parameter is left out of the graph (a distributed run would stop on one).
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    output = model.eval()(images)
    branches = 1 if config.model.arch == "baseline" else 2 if config.model.levels == "top" else 4
    assert len(output.branch_logits) == branches
    assert (output.boxes is None) == (not model.config.has_boxes)
    if output.boxes is not None:
        assert output.boxes.shape == (4, branches - 1, 3, 4)


@pytest.mark.slow
def test_fused_supervision_is_the_loss_of_the_fused_logits() -> None:
    model = pedattr.build_model("alm", num_attrs=3, fusion="mean", **TINY_MODEL).eval()
    images, labels = torch.rand(2, 3, 64, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    criterion = WeightedBCELoss([0.5, 0.5, 0.5])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay as they are
    with torch.no_grad():
        output = model(images)
    fused = train_step(model, images, labels, optimizer, criterion, deep_supervision=False)
    deep = train_step(model, images, labels, optimizer, criterion)
    expected = criterion(fuse_logits(output.branch_logits, "mean"), labels)
    torch.testing.assert_close(fused, expected)
    branch_sum = sum(criterion(logits, labels) for logits in output.branch_logits)
    torch.testing.assert_close(deep, branch_sum)


@pytest.mark.slow
def test_default_config_is_the_paper_model_and_reads_old_configs() -> None:
    old = {k: v for k, v in ModelConfig(attribute_names=("a",)).to_dict().items()}
    for key in ("levels", "top_down", "channel_attention", "head"):
        old.pop(key)  # a configuration saved before the Table 1 options
    config = ModelConfig.from_dict(old)
    assert (config.levels, config.top_down, config.channel_attention, config.head) == (
        "all",
        "concat",
        True,
        "alm",
    )
    torch.manual_seed(0)
    model = pedattr.build_model("alm", num_attrs=3, **TINY_MODEL).eval()
    keys = {k for k in model.state_dict() if not k.startswith("backbone.")}
    alm_keys = ("se_reduce", "se_expand", "box", "cls")
    assert keys == {
        *(f"pyramid.laterals.{i}.{p}" for i in range(3) for p in ("weight", "bias")),
        *(f"alms.{i}.{n}_{p}" for i in range(3) for n in alm_keys for p in ("weight", "bias")),
        "global_fc.weight",
        "global_fc.bias",
    }
    # The forward is the paper's composition of the modules: pyramid, ALMs, global branch, max.
    images = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        output = model(images)
        taps = model.backbone(model.normalize(images))
        levels = model.pyramid(taps)
        branches = [alm(x)[0] for alm, x in zip(model.alms, levels, strict=True)]
        branches.append(model.global_fc(taps[-1].mean(dim=(2, 3))))
    torch.testing.assert_close(output.logits, torch.stack(branches).amax(dim=0), rtol=0, atol=0)


def test_head_parameter_counts_match_the_formulas() -> None:
    m = 5
    for head, per_level in (
        ("gap", lambda c: c * m + m),  # Linear(C, M)
        (
            "attention",
            lambda c: 9 * m + 2 * m + c * m + m,
        ),  # conv 3x3 1->M, BN(M), M x Linear(C, 1)
        ("parts", lambda c: c * m + m),  # M x Linear(C, 1)
    ):
        model = pedattr.build_model("alm", num_attrs=m, head=head, **TINY_MODEL)
        channels = model.pyramid.out_channels
        assert channels == [48, 32, 16]
        heads = sum(count_parameters(h) for h in model.heads)
        assert heads == sum(per_level(c) for c in channels), head
    for c in (48, 32, 16):
        assert count_parameters(AttributeLocalization(c, m, channel_attention=False)) == m * (
            5 * c + 5
        )


@pytest.mark.slow
def test_single_level_and_top_down_variants_have_the_expected_levels() -> None:
    single = pedattr.build_model("alm", num_attrs=2, levels="top", **TINY_MODEL)
    assert len(single.pyramid.laterals) == 1 and single.pyramid.out_channels == [16]
    assert level_names(single.config) == ("level3",)
    assert level_sizes(single, (64, 32)) == [(2, 1)]
    for mode in ("add", "none"):
        model = pedattr.build_model("alm", num_attrs=2, top_down=mode, **TINY_MODEL)
        assert model.pyramid.out_channels == [16, 16, 16]


def test_pyramid_addition_and_laterals_only() -> None:
    taps = [torch.randn(1, 4, 8, 4), torch.randn(1, 6, 4, 2), torch.randn(1, 8, 2, 1)]
    torch.manual_seed(0)
    added = FeaturePyramid([4, 6, 8], dim=2, upsample="nearest", top_down="add")
    lat = added.laterals
    x1, x2, x3 = (dense_level(level) for level in added(taps))

    def up(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    torch.testing.assert_close(x3, lat[2](taps[2]))
    torch.testing.assert_close(x2, up(x3) + lat[1](taps[1]))
    torch.testing.assert_close(x1, up(x2) + lat[0](taps[0]))
    lateral_only = FeaturePyramid([4, 6, 8], dim=2, top_down="none")
    lateral_only.load_state_dict(added.state_dict())
    for level, tap, conv in zip(lateral_only(taps), taps, lat, strict=True):
        torch.testing.assert_close(dense_level(level), conv(tap))


# --- attention masks -------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [True, False])
def test_mask_box_of_a_uniform_rectangle_is_that_rectangle(align_corners: bool) -> None:
    masks = torch.zeros(1, 2, 8, 4, dtype=torch.float64)
    masks[0, 0, 2:5, 1:3] = 3.0  # cells rows 2-4, columns 1-2
    boxes = mask_boxes(masks, align_corners)  # the second mask is all zero: the whole map
    pixels = boxes_to_pixels(
        boxes[:, None], level_sizes=[(8, 4)], input_size=(64, 32), align_corners=align_corners
    )
    np.testing.assert_allclose(pixels[0, 0, 0], [8, 16, 24, 40], atol=1e-9)  # stride 8
    np.testing.assert_allclose(pixels[0, 0, 1], [0, 0, 32, 64], atol=1e-9)


def test_attention_head_on_a_factorised_level_equals_the_dense_level() -> None:
    torch.manual_seed(0)
    pyramid = FeaturePyramid([5, 6, 7], dim=4).double()
    head = AttentionMaskHead(12, 3).double().eval()
    taps = [
        torch.randn(2, c, 4 * s, 2 * s, dtype=torch.float64) for c, s in ((5, 4), (6, 2), (7, 1))
    ]
    level = pyramid(taps)[0]
    logits, boxes = head(level)
    dense = dense_level(level)
    dense_logits, dense_boxes = head(dense)
    torch.testing.assert_close(logits, dense_logits)
    torch.testing.assert_close(boxes, dense_boxes)
    # Literally: masks from the channel mean, GAP of mask * X, one Linear(C, 1) per attribute.
    masks = torch.relu(head.mask_bn(head.mask_conv(dense.mean(dim=1, keepdim=True))))
    pooled = (masks[:, :, None] * dense[:, None]).mean(dim=(-2, -1))  # [B, M, C]
    expected = (pooled * head.classifier.weight).sum(-1) + head.classifier.bias
    torch.testing.assert_close(logits, expected)


# --- rigid parts -----------------------------------------------------------------------------


def test_rigid_parts_pool_their_regions_and_report_them_as_boxes() -> None:
    names = ["Hat", "ShortSleeve", "boots", "Female"]  # head, torso, legs, whole
    head = RigidPartHead(2, names)
    assert head.attribute_regions.tolist() == [0, 1, 2, 3]
    rows = torch.arange(8.0)[:, None].expand(8, 4)
    cols = torch.arange(4.0)[None, :].expand(8, 4)
    x = torch.stack([rows, cols])[None]  # [1, 2, 8, 4]: each cell holds its (row, column)
    pooled = head.region_features(x, None)[0]  # [4 regions, 2]
    # The mean of a linear map over a region is its value at the region's centre (in cells).
    for k, (y0, y1) in enumerate([(0, 0.25), (0.15, 0.6), (0.5, 1.0), (0, 1)]):
        assert pooled[k, 0].item() == pytest.approx((y0 + y1) / 2 * 8 - 0.5, abs=1e-5)
        assert pooled[k, 1].item() == pytest.approx(1.5, abs=1e-5)
    given = torch.tensor([[[0.25, 0.0, 0.75, 0.5], [0.0, 0.25, 1.0, 0.75], [0.0, 0.5, 0.5, 1.0]]])
    pooled = head.region_features(x, given)[0]
    assert pooled[2].tolist() == pytest.approx([5.5, 0.5], abs=1e-5)
    for align_corners in (True, False):
        head.align_corners = align_corners
        _, boxes = head(x, given)
        pixels = boxes_to_pixels(
            boxes[:, None], level_sizes=[(8, 4)], input_size=(256, 128), align_corners=align_corners
        )
        expected = torch.cat([given[0], torch.tensor([[0.0, 0, 1, 1]])]) * torch.tensor(
            [128, 256, 128, 256]
        )
        np.testing.assert_allclose(pixels[0, 0], expected.numpy(), atol=1e-4)


def test_fraction_boxes_round_trip_through_the_localization_mapping() -> None:
    fractions = torch.tensor([[0.1, 0.2, 0.6, 0.9]], dtype=torch.float64)
    for size in ((32, 16), (1, 1), (3, 2)):
        for align_corners in (True, False):
            theta = fractions_to_theta(fractions, size, align_corners)
            pixels = boxes_to_pixels(
                theta[None, None],
                level_sizes=[size],
                input_size=(100, 50),
                align_corners=align_corners,
                clip=False,
            )
            np.testing.assert_allclose(pixels[0, 0, 0], [5, 20, 30, 90], atol=1e-9)


def test_region_tables_cover_every_evaluated_attribute() -> None:
    for table, names, count in (
        ("rap", part_regions.RAP_ATTRIBUTES, 51),
        ("rap", part_regions.RAP_PAPER_NAMES, 51),
        ("rap2", part_regions.RAP2_ATTRIBUTES, 54),
        ("peta", part_regions.PETA_ATTRIBUTES, 35),
        ("pa100k", PA100K_ATTRIBUTES, 26),
        ("generated", GENERATED_ATTRIBUTES, 23),
    ):
        assert len(set(names)) == count
        assert part_regions.best_table(names) == table
        assert set(names) <= set(part_regions.PART_TABLES[table]), table
        assert set(part_regions.attribute_regions(names)) <= set(part_regions.REGIONS)
    # Table S1 as printed: 7 head, 17 torso, 5 legs, 22 whole-image attributes of RAP.
    s1 = part_regions.RAP_TABLE_S1
    assert [len(s1[r]) for r in part_regions.REGIONS] == [7, 17, 5, 22]
    assert set().union(*s1.values()) == set(part_regions.RAP_PAPER_NAMES)
    file_regions = part_regions.attribute_regions(part_regions.RAP_ATTRIBUTES)
    paper_regions = part_regions.attribute_regions(part_regions.RAP_PAPER_NAMES)
    assert file_regions == paper_regions
    assert dict(zip(part_regions.RAP_ATTRIBUTES, file_regions, strict=True))["hs-Muffler"] == "head"


def test_unknown_attributes_read_the_whole_image_with_one_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        regions = part_regions.attribute_regions(["hat", "Suit-Up", "Umbrella", "Scarf"])
    assert regions == ["head", "torso", "whole", "whole"]
    (record,) = caplog.records
    assert "Umbrella, Scarf" in record.getMessage()


def test_a_rigid_parts_model_warns_once_for_all_its_levels(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        model = pedattr.build_model(
            "alm", attribute_names=["hat", "Umbrella"], head="parts", **TINY_MODEL
        )
    assert len(model.heads) == 3 and len(caplog.records) == 1
    for head in model.heads:
        assert head.attribute_regions.tolist() == part_regions.region_indices(["hat", "Umbrella"])


def skeleton() -> list[list[float]]:
    """14 keypoints (LSP order) of a 100 x 50 pedestrian standing upright."""
    points = {
        "right_ankle": (20, 95), "right_knee": (21, 75), "right_hip": (20, 52),
        "left_hip": (30, 52), "left_knee": (29, 75), "left_ankle": (30, 95),
        "right_wrist": (12, 50), "right_elbow": (13, 35), "right_shoulder": (15, 22),
        "left_shoulder": (35, 22), "left_elbow": (37, 35), "left_wrist": (38, 50),
        "neck": (25, 20), "head_top": (25, 4),
    }  # fmt: skip
    return [list(points[name]) for name in part_regions.KEYPOINTS]


def test_keypoints_make_head_torso_and_legs_boxes() -> None:
    boxes = part_regions.regions_from_keypoints(skeleton(), (100, 50))
    margin = part_regions.PART_MARGIN
    head_h = 16
    np.testing.assert_allclose(
        boxes[0], [17 - margin * head_h, 4 - margin * head_h, 33 + margin * head_h, 20 + 2.4]
    )
    torso_h = 32
    np.testing.assert_allclose(
        boxes[1], np.array([15, 20, 35, 52]) + np.array([-1, -1, 1, 1]) * margin * torso_h
    )
    legs_h = 43
    np.testing.assert_allclose(
        boxes[2], np.array([20, 52, 30, 95]) + np.array([-1, -1, 1, 1]) * margin * legs_h
    )
    missing = skeleton()
    missing[12], missing[13] = None, [-1, -1]  # neck and head top not visible
    fallback = part_regions.regions_from_keypoints(missing, (100, 50))
    np.testing.assert_allclose(fallback[0], [0, 0, 50, 25])  # the default head band


def test_part_file_entries_become_fractions_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "parts.json"
    boxes = {"head": [0, 0, 50, 20], "torso": [0, 20, 50, 60], "legs": [0, 50, 50, 100]}
    path.write_text(json.dumps({"a.png": {"keypoints": skeleton()}, "b.png": boxes}))
    entries = part_regions.read_part_file(path)
    fractions = part_regions.entry_to_fractions(entries["b.png"], (100, 50))
    np.testing.assert_allclose(fractions, [[0, 0, 1, 0.2], [0, 0.2, 1, 0.6], [0, 0.5, 1, 1]])
    assert part_regions.entry_to_fractions(entries["a.png"], (100, 50)).shape == (3, 4)
    path.write_text(json.dumps({"c.png": {"keypoints": [[1, 2]]}}))
    with pytest.raises(ValueError, match="c.png: 'keypoints' must list 14"):
        part_regions.read_part_file(path)
    path.write_text(json.dumps({"d.png": {"head": [0, 0, 1, 1]}}))
    with pytest.raises(ValueError, match="d.png: 'torso'"):
        part_regions.read_part_file(path)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared_dataset(
        tmp_path_factory.mktemp("parts"), {"train": 16, "val": 8, "test": 8}
    )


def test_dataset_flips_part_boxes_with_the_image(learnable: Path) -> None:
    from pedattr.data.description import DatasetDescription

    description = DatasetDescription.load(learnable)
    name = description.image_names[0]
    entry = {"head": [4, 0, 12, 16], "torso": [0, 14, 32, 40], "legs": [16, 36, 32, 64]}
    kept = AttributeDataset(description, "train", input_size=(64, 32), part_regions={name: entry})
    flipped = AttributeDataset(
        description,
        "train",
        input_size=(64, 32),
        train=True,
        flip_prob=1.0,
        part_regions={name: entry},
    )
    image, _, _, boxes = kept[0]
    flipped_image, _, _, flipped_boxes = flipped[0]
    torch.testing.assert_close(flipped_image, image.flip(-1))
    torch.testing.assert_close(boxes[:, 0], torch.tensor([0.125, 0.0, 0.5]))
    torch.testing.assert_close(flipped_boxes[:, [1, 3]], boxes[:, [1, 3]])
    torch.testing.assert_close(flipped_boxes[:, 0], 1 - boxes[:, 2])
    default = kept[1][3]  # an image the file does not list: the default proportions
    torch.testing.assert_close(
        default, torch.tensor([[0, 0, 1, 0.25], [0, 0.15, 1, 0.6], [0, 0.5, 1, 1]])
    )
    batch = next(
        iter(build_loader(description, "train", batch_size=4, train=False, part_regions={}))
    )
    assert batch.part_boxes.shape == (4, 3, 4)


@pytest.mark.slow
def test_rigid_parts_train_with_a_keypoint_file(
    tmp_path: Path, learnable: Path, monkeypatch
) -> None:
    path = tmp_path / "parts.json"
    path.write_text(json.dumps({"00000.png": {"keypoints": skeleton()}}))
    config = build_config(
        CONFIGS / "table2" / "01_rigid_parts.yaml",
        [*TINY, "optim.epochs=1", f"data.part_regions={json.dumps(str(path))}"],
        data=learnable,
        out=tmp_path / "run",
        seed=0,
    )
    seen = []
    forward = RigidPartHead.forward

    def spy(self, x, part_boxes=None):
        seen.append(part_boxes is not None)
        return forward(self, x, part_boxes)

    monkeypatch.setattr(RigidPartHead, "forward", spy)
    report = Trainer(config, DistributedContext()).fit()
    assert report["test"]["mA"] is not None
    assert seen and all(seen)  # training, validation and test all placed the parts per image
    alm = build_config(
        CONFIGS / "table2" / "03_alm.yaml",
        [*TINY, f"data.part_regions={path}"],
        data=learnable,
        out=tmp_path / "alm",
        seed=0,
    )
    with pytest.raises(TrainingError, match="rigid-parts head"):
        Trainer(alm, DistributedContext())


# --- pedattr experiment ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    return write_synthetic_dataset(
        root / "data", num_train=60, num_val=4, num_test=8, size=(64, 32), progress=False
    )


@pytest.mark.slow
def test_experiment_trains_rows_writes_the_table_and_skips_finished_runs(
    tmp_path: Path, generated: Path, capsys
) -> None:
    out = tmp_path / "table1"
    argv = ["experiment", "table1", "--data", str(generated), "--out", str(out), "--epochs", "1"]
    argv += ["--seeds", "1", "--rows", "baseline,02_alm_single_level", *TINY, "optim.batch_size=16"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    markdown = (out / "table1.md").read_text()
    assert markdown in first  # printed at the end
    assert "`pedattr experiment table1 --data" in markdown
    assert '| Baseline | `model.arch="baseline"` |' in markdown
    (single_line,) = [line for line in markdown.splitlines() if "ALM at Single Level" in line]
    assert '`model.levels="top"`' in single_line and "`loss.deep_supervision=false`" in single_line
    assert "75.76 / 78.20" in markdown and "Wall time of this command" in markdown
    result = json.loads((out / "table1.json").read_text())
    baseline, single = result["rows"]
    assert [r["name"] for r in result["rows"]] == ["01_baseline", "02_alm_single_level"]
    assert baseline["runs"][0]["localization"] is None  # the baseline has no boxes
    local = single["runs"][0]["localization"]
    assert local["attributes"] == "location_varying" and 0 <= local["best_level_hit_rate"] <= 1
    assert single["complexity"]["params"] > baseline["complexity"]["params"]
    saved = yaml.safe_load((out / "02_alm_single_level" / "seed0" / "config.yaml").read_text())
    assert saved["optim"]["epochs"] == 1 and saved["loss"]["deep_supervision"] is False
    assert single["summary"]["mA"]["mean"] == pytest.approx(single["runs"][0]["test"]["mA"])
    best = out / "01_baseline" / "seed0" / "best.safetensors"
    stamp = best.stat().st_mtime_ns

    assert main(argv) == 0  # everything finished: read back, nothing trained again
    assert "finished earlier, read" in capsys.readouterr().out
    assert best.stat().st_mtime_ns == stamp
    again = json.loads((out / "table1.json").read_text())
    assert again["rows"][0]["summary"] == result["rows"][0]["summary"]
    assert load_checkpoint(best).config.arch == "baseline"

    with pytest.raises(ExperimentError, match="other settings.*optim.lr"):
        experiment.run_experiment(
            "table1", generated, out, epochs=1, rows=["baseline"], overrides=[*TINY, "optim.lr=0.5"]
        )


@pytest.mark.slow
def test_an_interrupted_experiment_resumes_where_it_stopped(
    tmp_path: Path, generated: Path, monkeypatch, capsys
) -> None:
    train_epoch = Trainer._train_epoch

    def stop_in_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # as Ctrl-C does, after the first epoch's state was saved
        return train_epoch(self, epoch)

    options = dict(epochs=2, rows=["baseline"], overrides=[*TINY, "optim.batch_size=16"])
    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment("table1", generated, tmp_path, **options)
    run = tmp_path / "01_baseline" / "seed0"
    assert (run / "state.safetensors").is_file() and not (run / "report.json").exists()
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    result = experiment.run_experiment("table1", generated, tmp_path, **options)
    assert "01_baseline seed 0: resuming" in capsys.readouterr().out
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]
    assert result["rows"][0]["runs"][0]["test"]["mA"] is not None


def test_run_state_resumes_an_interrupted_run(tmp_path: Path) -> None:
    config = row_config("table1", "01_baseline", tmp_path)
    assert run_state(config) == "new"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config.to_yaml())
    (run / "state.safetensors").write_bytes(b"")
    assert run_state(config) == "resume"
    (run / "report.json").write_text("{}")
    assert run_state(config) == "done"


def test_an_out_of_range_override_is_named_before_any_row_trains(tmp_path: Path) -> None:
    path = CONFIGS / "table1" / "01_baseline.yaml"
    message = "override 'optim.lr=-1': optim.lr: must be a positive"
    with pytest.raises(ConfigError, match=message):
        build_config(path, ["optim.lr=-1"], data=tmp_path, out=tmp_path / "run", seed=0)


def test_rows_are_chosen_by_name_and_unknown_ones_are_named() -> None:
    rows = experiment.select_rows("table2", ["alm", "01_rigid_parts"])
    assert [row.name for row in rows] == ["01_rigid_parts", "03_alm"]
    with pytest.raises(ExperimentError, match="no row nope; its rows are 01_baseline"):
        experiment.select_rows("table1", ["nope"])
    assert experiment.epoch_overrides(6) == ["optim.epochs=6", "optim.lr_step=2"]
    stats = experiment.mean_and_spread([0.5, 0.7, None])
    assert stats["mean"] == pytest.approx(0.6) and stats["std"] == pytest.approx(0.1414, abs=1e-4)
