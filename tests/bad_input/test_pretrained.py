"""Names that resolve to nothing usable: one line naming what is wrong, exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pedattr
from pedattr.checkpoint.format import CheckpointError
from pedattr.cli import main
from tests.authors_model import AuthorsALM, save_authors_file
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = pedattr.build_model("baseline", num_attrs=2, **TINY_MODEL)
    return pedattr.save_pretrained(model, tmp_path_factory.mktemp("folder") / "model")


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the command; it must exit 2 with one line on stderr, which is returned."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def summary(spec: str | Path) -> list[str]:
    return ["summary", "--checkpoint", str(spec)]


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"")
    line = refused(summary(tmp_path / "weights"), capsys)
    assert "weights: not a pedattr model folder: no config.json" in line


def test_run_folder_is_pointed_to_its_best_checkpoint(tmp_path, model_folder, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes((model_folder / "model.safetensors").read_bytes())
    line = refused(summary(run), capsys)
    assert "a training run folder" in line and str(run / "best.safetensors") in line


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "bert", "architectures": ["BertModel"]}, "another library's (model_type"),
        ({"library_name": "timm", "architecture": "resnet50"}, '(library_name "timm")'),
        ([1, 2], "config.json is not a JSON object"),
        ({"hidden_size": 3}, 'no "library_name": "pedattr"'),
    ],
)  # fmt: skip
def test_foreign_folder_is_refused(tmp_path, model_folder, config, expected, capsys):
    folder = copy_folder(model_folder, tmp_path / "foreign")
    (folder / "config.json").write_text(json.dumps(config))
    line = refused(summary(folder), capsys)
    assert "foreign: not a pedattr model folder" in line and expected in line


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(checkpoint="../model.safetensors"), "'checkpoint' must be a file name"),
        (lambda c: c.update(checkpoint="other.safetensors"), "names other.safetensors, which"),
        (lambda c: c["model"].update(attribute_names=["x", "y"]), "differs from model.safetensors"),
        (lambda c: c["model"].update(pyramid_dim=0), "model.pyramid_dim"),
        (lambda c: c.pop("model"), "'model' is a JSON null"),
    ],
)  # fmt: skip
def test_malformed_folder_is_refused(tmp_path, model_folder, change, expected, capsys):
    folder = copy_folder(model_folder, tmp_path / "edited")
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    assert expected in refused(summary(folder), capsys)


def test_config_that_is_not_json(tmp_path, model_folder, capsys):
    folder = copy_folder(model_folder, tmp_path / "broken")
    (folder / "config.json").write_text("{not json")
    assert "config.json: not valid JSON" in refused(summary(folder), capsys)


def test_checkpoint_in_folder_that_is_not_one(tmp_path, model_folder, capsys):
    folder = copy_folder(model_folder, tmp_path / "damaged")
    (folder / "model.safetensors").write_text("text")
    assert "model.safetensors: not a readable safetensors file" in refused(summary(folder), capsys)


def test_unknown_name_lists_the_built_in_ones(capsys):
    line = refused(summary("alm-market"), capsys)
    assert "alm-market: no such checkpoint file, and not a model name" in line
    assert "alm-peta, alm-rap, alm-pa100k" in line


def test_missing_path_that_looks_like_a_hub_id_is_not_looked_up(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert refused(summary("runs/demo"), capsys).endswith("runs/demo: no such checkpoint file")


def test_hub_id_absent_from_the_offline_cache(offline_hub, capsys):
    line = refused(summary("someone/missing-model"), capsys)
    assert "someone/missing-model: no such local file or folder, and the Hugging Face Hub" in line


def test_bad_hub_id_after_prefix(capsys):
    assert "not a Hugging Face Hub id" in refused(summary("hf://no-slash"), capsys)


def test_foreign_hub_repository_is_refused_before_its_weights(tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    asked = []

    def fake_download(repo_id, filename, **options):
        asked.append(filename)
        path = tmp_path / filename
        path.write_text(json.dumps({"model_type": "vit"}))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    line = refused(summary("google/vit-base"), capsys)
    assert "google/vit-base: not a pedattr model folder" in line
    assert asked == ["config.json"]


def test_builtin_name_without_its_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PEDATTR_HOME", str(tmp_path))
    line = refused(summary("alm-rap"), capsys)
    assert "download rap_epoch_9.pth.tar from https://drive.google.com/" in line
    assert f"put it at {tmp_path / 'authors' / 'rap_epoch_9.pth.tar'}" in line
    with pytest.raises(CheckpointError, match="alm-rap: the authors' ALM for RAP is not here"):
        pedattr.from_pretrained("alm-rap")


@pytest.mark.slow
def test_builtin_file_of_another_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PEDATTR_HOME", str(tmp_path))
    (tmp_path / "authors").mkdir()
    torch.manual_seed(0)
    # A PA-100K model (26 outputs) where the RAP file belongs.
    save_authors_file(tmp_path / "authors" / "rap_epoch_9.pth.tar", AuthorsALM(26).state_dict(),
                      legacy=False)  # fmt: skip
    line = refused(summary("alm-rap"), capsys)
    assert "alm-rap:" in line and "has 26 attributes but RAP has 51" in line
    assert not (tmp_path / "models" / "alm-rap.safetensors").exists()


@pytest.mark.slow
def test_convert_dataset_that_does_not_fit(tmp_path, capsys):
    torch.manual_seed(0)
    source = tmp_path / "pa100k_epoch_8.pth.tar"
    save_authors_file(source, AuthorsALM(26).state_dict(), legacy=False)
    out = tmp_path / "out.safetensors"
    line = refused(["convert", str(source), "--out", str(out), "--dataset", "peta"], capsys)
    assert line.endswith(
        "pa100k_epoch_8.pth.tar has 26 attributes but PETA has 35: not the authors' PETA model"
    )
    assert not out.exists()


def test_convert_dataset_and_names_file_together(tmp_path, capsys):
    argv = ["convert", "x.pth.tar", "--out", str(tmp_path / "o.safetensors"), "--dataset", "rap",
            "--attribute-names", "names.txt"]  # fmt: skip
    assert "not allowed with argument" in refused(argv, capsys)


def test_calibrate_a_named_model_needs_out(model_folder, capsys):
    argv = ["calibrate", "--checkpoint", str(model_folder), "--data", "data"]
    assert "give --out FILE" in refused(argv, capsys)


class RefusingApi:
    def __init__(self) -> None:
        self.response = type("Response", (), {"status_code": 401})()

    def create_repo(self, repo_id, **options):
        error = RuntimeError("401 Client Error: Unauthorized (invalid token)")
        error.response = self.response
        raise error


def test_push_refused_by_the_hub(model_folder, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", RefusingApi)
    line = refused(["push", str(model_folder), "someone/model"], capsys)
    assert line.endswith("someone/model: the Hugging Face Hub refused: 401 Client Error: "
                         "Unauthorized (invalid token)")  # fmt: skip


def test_push_of_a_bad_checkpoint_never_reaches_the_hub(tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def no_network():
        raise AssertionError("the Hub was contacted")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_network)
    line = refused(["push", str(tmp_path / "nope.safetensors"), "someone/model"], capsys)
    assert "nope.safetensors: no such checkpoint file" in line
