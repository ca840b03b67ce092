"""Models by name: from_pretrained, the hub layout, the Hub's cache, built-in names and push."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import pedattr
from pedattr.checkpoint import hub, pretrained
from pedattr.checkpoint.convert import AUTHORS_ATTRIBUTES, PA100K_ATTRIBUTES
from pedattr.checkpoint.format import CheckpointError, load_checkpoint
from pedattr.cli import main
from tests.authors_model import AuthorsALM, save_authors_file
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, hub_snapshot

LAYOUT = {"model.safetensors", "config.json", "README.md"}
METRICS = {
    "epoch": 3,
    "val": {"mA": 0.8123, "accuracy": 0.7, "precision": 0.75, "recall": 0.8, "f1": 0.774,
            "num_samples": 16},
    "test": {"mA": 0.7912, "accuracy": 0.65, "precision": 0.7, "recall": 0.77, "f1": 0.733,
             "num_samples": 16},
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as `pedattr train` writes it: metrics per split, the run's settings."""
    torch.manual_seed(0)
    model = pedattr.build_model("alm", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    run = {
        "data": {"root": "/home/someone/private/data/pa100k", "train_split": "train"},
        "optim": {"lr": 0.0001, "weight_decay": 0.0005, "batch_size": 32, "epochs": 30,
                  "lr_step": 10, "lr_gamma": 0.1},
        "loss": {"weighting": "authors", "deep_supervision": True},
        "model": {"pretrained": "/home/someone/weights/bn_inception-52deb4733.pth"},
        "run": {"seed": 0, "select_metric": "mA"},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("trained") / "best.safetensors"
    pedattr.save_checkpoint(
        path, model, thresholds=[0.4, 0.5, 0.6], metrics=METRICS, extra={"run": run}
    )
    return path


def outputs(model: torch.nn.Module) -> torch.Tensor:
    images = torch.rand(2, 3, 64, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(images)
    return torch.cat([out.logits, out.boxes.flatten(1)], 1)


def card_header(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_save_pretrained_then_from_pretrained_gives_identical_outputs(trained, tmp_path):
    folder = pedattr.save_pretrained(trained, tmp_path / "model")
    assert {p.name for p in folder.iterdir()} == LAYOUT

    loaded = pedattr.from_pretrained(folder)
    original = pedattr.load_model(trained)
    assert torch.equal(outputs(loaded), outputs(original))
    assert loaded.thresholds == [0.4, 0.5, 0.6]
    assert loaded.config == original.config
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "pedattr" and config["checkpoint"] == "model.safetensors"
    assert pedattr.ModelConfig.from_dict(config["model"]) == original.config
    # The checkpoint in the folder keeps the training record the card was written from.
    assert load_checkpoint(folder / "model.safetensors").metrics == METRICS


def test_save_pretrained_of_a_model_object(tmp_path):
    torch.manual_seed(1)
    model = pedattr.build_model("baseline", num_attrs=2, **TINY_MODEL).eval()
    folder = pedattr.save_pretrained(model, tmp_path / "plain")
    assert torch.equal(
        pedattr.from_pretrained(folder)(torch.ones(1, 3, 64, 32)).logits,
        model(torch.ones(1, 3, 64, 32)).logits,
    )
    header, body = card_header(folder)
    assert "model-index" not in header  # no metrics, so none claimed
    assert "carries no metrics" in body and "no record of its training" in body


def test_model_card_reports_the_checkpoint(trained, tmp_path):
    folder = pedattr.save_pretrained(trained, tmp_path / "card", repo_id="someone/alm-tiny")
    header, body = card_header(folder)
    assert header["license"] == "apache-2.0"
    assert header["library_name"] == "pedattr"
    assert {"pedattr", "pedestrian-attribute-recognition", "alm"} <= set(header["tags"])
    [index] = header["model-index"]
    assert index["name"] == "someone/alm-tiny"
    by_split = {
        r["dataset"]["split"]: {m["type"]: m["value"] for m in r["metrics"]}
        for r in index["results"]
    }
    expected = {
        split: {key: round(100 * METRICS[split][key], 2) for key in
                ("mA", "accuracy", "precision", "recall", "f1")}
        for split in ("val", "test")
    }  # fmt: skip
    assert by_split == expected
    assert {r["dataset"]["name"] for r in index["results"]} == {"pa100k"}
    for i, name in enumerate(LEARNABLE_ATTRIBUTES, 1):
        assert re.search(rf"^{i}\. {name} \(", body, re.M), name
    assert "| learning rate | 0.0001 |" in body and "| epochs | 30 |" in body
    assert "bn_inception-52deb4733.pth" in body
    assert "/home/someone" not in body  # only the last part of a path is published
    assert "surveillance" in body
    assert "@inproceedings{tang2019improving," in body
    assert 'pedattr.from_pretrained("someone/alm-tiny")' in body


def test_the_card_is_valid_hub_metadata(trained, tmp_path):
    card = pytest.importorskip("huggingface_hub").ModelCard
    folder = pedattr.save_pretrained(trained, tmp_path / "card")
    data = card.load(folder / "README.md").data
    assert data.library_name == "pedattr"
    assert [r.dataset_split for r in data.eval_results if r.metric_type == "mA"] == [
        "val",
        "test",
    ]


@pytest.mark.slow
def test_hub_id_read_from_the_cache_in_offline_mode(trained, offline_hub):
    pedattr.save_pretrained(trained, hub_snapshot(offline_hub, "someone/alm-tiny"))
    pedattr.save_pretrained(
        pedattr.build_model("alm", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL),
        hub_snapshot(offline_hub, "someone/alm-tiny", ref="v2"),
    )
    expected = outputs(pedattr.load_model(trained))

    for name in ("someone/alm-tiny", "hf://someone/alm-tiny", "someone/alm-tiny@main"):
        assert torch.equal(outputs(pedattr.from_pretrained(name)), expected), name
    other = outputs(pedattr.from_pretrained("someone/alm-tiny@v2"))
    assert not torch.equal(other, expected)  # the revision chose the other snapshot


def test_hub_id_fetches_the_config_first_then_the_checkpoint(trained, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    repo = pedattr.save_pretrained(trained, tmp_path / "remote")
    calls = []

    def fake_download(repo_id, filename, **options):
        calls.append((repo_id, filename, options["revision"]))
        local = tmp_path / "downloaded" / filename
        local.parent.mkdir(exist_ok=True)
        shutil.copy(repo / filename, local)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = pedattr.from_pretrained("someone/alm-tiny@v1")
    assert calls == [
        ("someone/alm-tiny", "config.json", "v1"),
        ("someone/alm-tiny", "model.safetensors", "v1"),
    ]
    assert torch.equal(outputs(model), outputs(pedattr.load_model(trained)))


@pytest.mark.slow
def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(trained, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.chdir(tmp_path)
    pedattr.save_pretrained(trained, Path("someone/alm-tiny"))

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked for a folder that is on disk")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    assert torch.equal(
        outputs(pedattr.from_pretrained("someone/alm-tiny")), outputs(pedattr.load_model(trained))
    )
    with pytest.raises(CheckpointError, match="Hugging Face Hub"):  # hf:// forces the Hub
        pedattr.from_pretrained("hf://someone/alm-tiny")


@pytest.mark.slow
def test_checkpoint_names_through_predict_and_eval(trained, data, offline_hub, tmp_path, capsys):
    pedattr.save_pretrained(trained, hub_snapshot(offline_hub, "someone/alm-tiny"))
    image = next((data.parent / "images").iterdir())
    jsonl = tmp_path / "out.jsonl"
    argv = ["predict", "--checkpoint", "someone/alm-tiny", str(image), "--json", str(jsonl)]
    assert main([*argv, "--device", "cpu"]) == 0
    [record] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert set(record["probabilities"]) == set(LEARNABLE_ATTRIBUTES)

    report = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", "someone/alm-tiny", str(trained), "--data", str(data)]
    assert main([*argv, "--workers", "0", "--device", "cpu", "--json", str(report)]) == 0
    by_name, by_path = json.loads(report.read_text())
    assert by_name["checkpoint"] == "someone/alm-tiny"
    assert by_name["metrics"] == by_path["metrics"]  # the same model, by name and by path


@pytest.mark.slow
def test_convert_with_dataset_names_the_attributes(monkeypatch, tmp_path, capsys):
    torch.manual_seed(2)
    source = tmp_path / "pa100k_epoch_8.pth.tar"
    save_authors_file(source, AuthorsALM(26).state_dict(), legacy=False)
    out = tmp_path / "pa100k.safetensors"
    assert main(["convert", str(source), "--out", str(out), "--dataset", "pa100k"]) == 0
    stored = load_checkpoint(out)
    assert stored.config.attribute_names == PA100K_ATTRIBUTES
    assert stored.extra["dataset"] == "pa100k"


def test_authors_attribute_lists_have_the_papers_counts():
    counts = {name: len(names) for name, names in AUTHORS_ATTRIBUTES.items()}
    assert counts == {"peta": 35, "rap": 51, "pa100k": 26}
    assert all(len(set(names)) == len(names) for names in AUTHORS_ATTRIBUTES.values())
    assert {m.dataset for m in pretrained.BUILTIN_MODELS.values()} == set(AUTHORS_ATTRIBUTES)


@pytest.fixture(scope="module")
def pa100k_authors_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file in the authors' format with PA-100K's 26 outputs."""
    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("authors") / "download.pth.tar"
    save_authors_file(path, AuthorsALM(26).eval().state_dict(), legacy=True)
    return path


@pytest.mark.slow
def test_builtin_name_is_converted_once_from_where_the_message_says(
    pa100k_authors_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PEDATTR_HOME", str(tmp_path / "home"))
    image = tmp_path / "person.png"
    from PIL import Image

    Image.fromarray(np.full((64, 32, 3), 90, np.uint8)).save(image)

    assert main(["predict", "--checkpoint", "alm-pa100k", str(image), "--device", "cpu"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert pretrained.BUILTIN_MODELS["alm-pa100k"].url in line
    where = Path(re.search(r"put it at (\S+)", line)[1])
    assert where == tmp_path / "home" / "authors" / "pa100k_epoch_8.pth.tar"

    where.parent.mkdir(parents=True)
    shutil.copy(pa100k_authors_file, where)
    model = pedattr.from_pretrained("alm-pa100k")
    assert model.config.attribute_names == PA100K_ATTRIBUTES
    assert model.config.align_corners is True  # the authors' sampling
    cached = tmp_path / "home" / "models" / "alm-pa100k.safetensors"
    stored = load_checkpoint(cached)
    assert stored.extra["pretrained"]["reported"]["mA"] == 80.45
    assert stored.extra["converted_from"] == "pa100k_epoch_8.pth.tar"

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(pretrained, "convert_authors_checkpoint", no_conversion)
    again = pedattr.from_pretrained("alm-pa100k")
    assert torch.equal(
        again(torch.ones(1, 3, 256, 128)).logits, model(torch.ones(1, 3, 256, 128)).logits
    )
    assert main(["predict", "--checkpoint", "alm-pa100k", str(image), "--device", "cpu"]) == 0

    folder = pedattr.save_pretrained("alm-pa100k", tmp_path / "card")
    header, body = card_header(folder)
    assert header["license"] == "unknown"  # the authors' weights: theirs to license
    [result] = header["model-index"][0]["results"]
    assert result["dataset"] == {"name": "PA-100K", "type": "PA-100K", "split": "test"}
    assert result["metrics"] == [{"type": "mA", "name": "mA", "value": 80.45}]
    assert "pa100k_epoch_8.pth.tar" in body and "authors" in body


class FakeApi:
    """Records what push asks of the Hub and keeps a copy of the uploaded folder."""

    calls: list = []
    uploaded: Path | None = None

    def create_repo(self, repo_id, **options):
        FakeApi.calls.append(("create_repo", repo_id, options))

    def create_branch(self, repo_id, **options):
        FakeApi.calls.append(("create_branch", repo_id, options))

    def upload_folder(self, *, repo_id, folder_path, **options):
        FakeApi.calls.append(("upload_folder", repo_id, options))
        shutil.copytree(folder_path, FakeApi.uploaded)
        return type("Commit", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()


@pytest.mark.slow
def test_push_uploads_the_save_pretrained_layout(trained, tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    FakeApi.calls, FakeApi.uploaded = [], tmp_path / "uploaded"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)

    argv = ["push", str(trained), "someone/alm-tiny", "--private", "--revision", "dev"]
    assert main(argv) == 0
    assert "https://hub.example/someone/alm-tiny/commit/1" in capsys.readouterr().out
    names = [(name, repo) for name, repo, _ in FakeApi.calls]
    assert names == [
        ("create_repo", "someone/alm-tiny"),
        ("create_branch", "someone/alm-tiny"),
        ("upload_folder", "someone/alm-tiny"),
    ]
    assert FakeApi.calls[0][2] == {"private": True, "exist_ok": True}
    assert FakeApi.calls[1][2] == {"branch": "dev", "exist_ok": True}
    assert FakeApi.calls[2][2]["revision"] == "dev"

    uploaded = FakeApi.uploaded
    assert {p.name for p in uploaded.iterdir()} == LAYOUT
    local = pedattr.save_pretrained(trained, tmp_path / "local", repo_id="someone/alm-tiny")
    assert (uploaded / "config.json").read_text() == (local / "config.json").read_text()
    assert (uploaded / "README.md").read_text() == (local / "README.md").read_text()
    assert torch.equal(
        outputs(pedattr.from_pretrained(uploaded)), outputs(pedattr.load_model(trained))
    )


def test_push_without_private_leaves_visibility_to_the_hub(trained, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    FakeApi.calls, FakeApi.uploaded = [], tmp_path / "uploaded"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    hub.push_to_hub(trained, "someone/alm-tiny")
    assert [c[0] for c in FakeApi.calls] == ["create_repo", "upload_folder"]
    assert FakeApi.calls[0][2] == {"private": None, "exist_ok": True}
    assert FakeApi.calls[1][2]["revision"] is None
