"""``pedattr generate-video`` then ``pedattr track ... --eval``, end to end with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pedattr
from pedattr.cli import main
from pedattr.data.synthetic import ATTRIBUTES
from tests.helpers import TINY_MODEL

pytest.importorskip("trackeval")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval_clips")
    argv = ["generate-video", str(folder / "clips"), "--clips", "2", "--frames", "30"]
    assert main([*argv, "--people", "6", "--seed", "2"]) == 0
    return folder / "clips"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = pedattr.build_model("alm", attribute_names=list(ATTRIBUTES), **TINY_MODEL).eval()
    path = tmp_path_factory.mktemp("eval_ckpt") / "model.safetensors"
    pedattr.save_checkpoint(path, model)
    return path


def _track(clip: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        "track", str(clip / "video.mp4"), "--checkpoint", str(ckpt), "--out", str(out),
        "--detector", f"file:{clip / 'det' / 'det.txt'}", "--no-video", "--quiet", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_generated_clips_have_their_files(clips):
    manifest = json.loads((clips / "clips.json").read_text())
    assert manifest["clips"] == ["clip_000", "clip_001"] and manifest["seed"] == 2
    assert manifest["detection_noise"] == {
        "jitter": 0.05,
        "miss": 0.1,
        "false_positives": 0.1,
        "hidden": 0.1,
    }
    for name in manifest["clips"]:
        for file in ("video.mp4", "gt/gt.txt", "gt/labels.csv", "det/det.txt", "seqinfo.ini"):
            assert (clips / name / file).is_file()


@pytest.mark.slow
def test_track_eval_writes_and_prints_the_metrics(clips, tiny_checkpoint, tmp_path, capsys):
    clip = clips / "clip_000"
    assert main([*_track(clip, tiny_checkpoint, tmp_path / "out"), "--eval", str(clip)]) == 0
    printed = capsys.readouterr().out
    assert "HOTA" in printed and "per track" in printed and "per frame" in printed
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    for name in ("HOTA", "MOTA", "IDF1", "DetA", "AssA", "IDSW"):
        assert name in result["tracking"]
    assert 0 < result["tracking"]["IDF1"] <= 1  # file: detections from the ground truth
    attributes = result["attributes"]
    gt_ids = {int(line.split(",")[1]) for line in (clip / "gt" / "gt.txt").read_text().split()}
    assert attributes["identities"] == len(gt_ids)
    tracked = len(gt_ids) - attributes["identities_without_track"]
    assert attributes["track"]["num_samples"] == tracked
    assert attributes["single_frame"]["num_samples"] > attributes["track"]["num_samples"]
    assert list(attributes["track"]["per_attribute"]) == list(ATTRIBUTES)


@pytest.mark.slow
def test_several_sources_each_with_its_ground_truth_are_also_pooled(
    clips, tiny_checkpoint, tmp_path
):
    sources = [clips / "clip_000", clips / "clip_001"]
    # One --detector for both (clip_000's boxes): only how the two evaluations pool is checked.
    argv = [
        "track", *(str(c / "video.mp4") for c in sources), "--checkpoint", str(tiny_checkpoint),
        "--out", str(tmp_path / "out"), "--detector", f"file:{sources[0] / 'det' / 'det.txt'}",
        "--no-video", "--quiet", "--eval", *map(str, sources),
    ]  # fmt: skip
    assert main(argv) == 0
    each = [json.loads((tmp_path / "out" / c.name / "eval.json").read_text()) for c in sources]
    pooled = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert pooled["clips"] == ["clip_000", "clip_001"]
    samples = sum(e["attributes"]["single_frame"]["num_samples"] for e in each)
    assert pooled["attributes"]["single_frame"]["num_samples"] == samples
    fn = sum(e["tracking"]["CLR_FN"] for e in each)
    assert pooled["tracking"]["CLR_FN"] == fn
