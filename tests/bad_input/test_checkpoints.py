"""Malformed checkpoints, non-finite weights, training states and weight files: one line each.

Every case ends in a pedattr error naming the file (CheckpointError, or ValueError for
backbone weight files), and on the command line in exit status 2 with one line on stderr.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import pedattr
from pedattr.checkpoint.format import MAX_METADATA_DEPTH, CheckpointError
from pedattr.cli import main
from pedattr.engine.config import TrainConfig
from pedattr.engine.training import TrainingSetupError, load_state, save_state
from pedattr.models.backbones import build_backbone
from tests.helpers import TINY_MODEL, make_prepared_dataset

NAMES = ["TopPatch", "BottomPatch"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """A tiny checkpoint with thresholds: its path, decoded metadata and tensors."""
    path = tmp_path_factory.mktemp("valid") / "model.safetensors"
    torch.manual_seed(0)
    model = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    pedattr.save_checkpoint(path, model, thresholds=[0.4, 0.6], metrics={"mA": 0.5})
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["pedattr"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return path, meta, tensors


def write(path: Path, meta: dict | str, tensors: dict[str, torch.Tensor]) -> Path:
    raw = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, str(path), metadata={"pedattr": raw})
    return path


def assert_refused(path: Path) -> str:
    """load_model raises CheckpointError with one line naming the file; returns it."""
    with pytest.raises(CheckpointError) as caught:
        pedattr.load_model(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message, message
    return message


# --- metadata mutations ---------------------------------------------------------------------

#: One value of each JSON type (and a few shapes) to put where it does not belong.
WRONG = [None, True, 0, -3, 1.5, "x", [], [1, 2], {}, {"a": 1}]
#: Keys whose value may be null.
NULLABLE = {"thresholds", "metrics", "extra", "pedattr_version", "torch_version", "created"}
#: Model entries that are strings with a fixed set of values ("x" is none of them).
CHOICES = {
    "arch",
    "backbone",
    "normalization",
    "upsample",
    "box_pooling",
    "padding_mode",
    "fusion",
    "levels",
    "top_down",
    "head",
    "box_init",
    "box_centre",
}


def _json_kind(value) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "list"}.get(
        type(value), "null" if value is None else "object"
    )


def _wrong_values(key: str, valid_value) -> list:
    """WRONG values of another JSON type than ``valid_value``, plus bad values of its type."""
    values = [v for v in WRONG if _json_kind(v) != _json_kind(valid_value)]
    if key in NULLABLE:
        values = [v for v in values if v is not None]
    if key in CHOICES:
        values.append("x")
    if key == "pyramid_dim":
        values += [0, -16, 10**9]
    return values


def mutations(meta: dict) -> list[tuple[str, dict | str]]:
    """(label, metadata) pairs, each one malformed in one way."""
    cases: list[tuple[str, dict | str]] = []
    for key in ("format_version", "model", "thresholds", "metrics", "extra", "created"):
        for value in _wrong_values(key, meta[key]):
            cases.append((f"{key}={value!r}", {**meta, key: value}))
    for key, valid_value in meta["model"].items():
        for value in _wrong_values(key, valid_value):
            cases.append(
                (f"model.{key}={value!r}", {**meta, "model": {**meta["model"], key: value}})
            )
    model_values = {
        "input_size": [[0, 32], [-64, 32], [64], [64, 32, 3], [64.0, 32], ["64", 32], [10**6, 32]],
        "attribute_names": [[], "TopPatchX", [1, 2], ["a", ""], ["a", "a"], ["a", None]],
    }
    for key, values in model_values.items():
        for value in values:
            cases.append(
                (f"model.{key}={value!r}", {**meta, "model": {**meta["model"], key: value}})
            )
    for thresholds in ([0.5] * 3, [0.5], [None, 0.5], [0.5, 2.0], [0.5, -0.1], [True, 0.5]):
        cases.append((f"thresholds={thresholds!r}", {**meta, "thresholds": thresholds}))
    missing = copy.deepcopy(meta)
    del missing["model"]["attribute_names"]
    cases.append(("no attribute_names", missing))
    cases.append(("extra.run=[]", {**meta, "extra": {"run": []}}))
    cases.append(("extra.run.data=1", {**meta, "extra": {"run": {"data": 1}}}))
    nested: list = []
    for _ in range(MAX_METADATA_DEPTH + 5):
        nested = [nested]
    cases.append(("nested deeper than allowed", {**meta, "extra": {"deep": nested}}))
    text = json.dumps(meta)
    deep = "[" * 100_000 + "]" * 100_000  # RecursionError in the JSON decoder
    cases.append(("nested 100000 deep", text.replace('"extra": {}', f'"extra": {deep}')))
    for top in ("[]", "5", '"x"', "null"):
        cases.append((f"metadata {top}", top))
    return cases


@pytest.mark.slow
def test_every_metadata_mutation_is_a_one_line_checkpoint_error(valid, tmp_path):
    path, meta, tensors = valid
    meta = {**meta, "extra": {}}
    cases = mutations(meta)
    assert len(cases) > 150
    messages = {}
    for label, mutated in cases:
        bad = write(tmp_path / "bad.safetensors", mutated, tensors)
        messages[label] = assert_refused(bad)
    # the message says what is wrong, not just that something is
    assert "3 thresholds for 2 attributes" in messages["thresholds=[0.5, 0.5, 0.5]"]
    assert "nested too deeply" in messages["nested 100000 deep"]
    assert "model.pyramid_dim" in messages["model.pyramid_dim=-16"]
    assert "input_size" in messages["model.input_size=[0, 32]"]
    assert "threshold 0 is null" in messages["thresholds=[None, 0.5]"]


def test_the_unmutated_metadata_loads(valid, tmp_path):
    path, meta, tensors = valid
    model = pedattr.load_model(write(tmp_path / "same.safetensors", meta, tensors))
    assert model.thresholds == [0.4, 0.6]


@pytest.mark.parametrize(
    "change, expected",
    [
        ("drop", "tensor global_fc.bias is missing"),
        ("add", "tensor surplus is not part of the model"),
        ("reshape", "tensor global_fc.weight has shape [3, "),
    ],
)
def test_tensors_that_do_not_match_the_metadata_are_named(valid, tmp_path, change, expected):
    path, meta, tensors = valid
    tensors = dict(tensors)
    if change == "drop":
        del tensors["global_fc.bias"]
    elif change == "add":
        tensors["surplus"] = torch.zeros(2)
    else:
        weight = tensors["global_fc.weight"]
        tensors["global_fc.weight"] = torch.zeros(3, weight.shape[1])
    message = assert_refused(write(tmp_path / "mismatch.safetensors", meta, tensors))
    assert expected in message
    if change == "reshape":
        assert f"expected [2, {tensors['global_fc.weight'].shape[1]}]" in message
    assert "Error(s) in loading" not in message


def _cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert "\n" not in error and "Traceback" not in error, error
    return error


@pytest.mark.parametrize(
    "label, mutate",
    [
        ("3 thresholds for 2 attributes", lambda meta: {**meta, "thresholds": [0.5] * 3}),
        ("model.input_size", lambda meta: {**meta, "model": {**meta["model"], "input_size": 5}}),
        ("not an object", lambda meta: {**meta, "model": []}),
    ],
)
def test_cli_refuses_malformed_metadata_in_one_line(valid, tmp_path, capsys, label, mutate):
    path, meta, tensors = valid
    bad = write(tmp_path / "bad.safetensors", mutate(meta), tensors)
    error = _cli_error(
        ["export", "--checkpoint", str(bad), "--onnx", str(tmp_path / "o.onnx")], capsys
    )
    assert error.startswith("pedattr export: error:") and str(bad) in error and label in error
    error = _cli_error(["summary", "--checkpoint", str(bad)], capsys)
    assert label in error
    assert not (tmp_path / "o.onnx").exists()


# --- non-finite weights ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def diverged(valid, tmp_path_factory) -> Path:
    """The valid checkpoint with a NaN in one weight and infinity in another."""
    path, meta, tensors = valid
    tensors = {key: value.clone() for key, value in tensors.items()}
    tensors["global_fc.weight"][0, 0] = float("nan")
    tensors["global_fc.bias"][1] = float("inf")
    return write(tmp_path_factory.mktemp("diverged") / "nan.safetensors", meta, tensors)


def test_load_model_names_the_non_finite_tensor(diverged):
    message = assert_refused(diverged)
    assert "NaN or infinity in tensor global_fc" in message and "1 more" in message


def test_cli_export_eval_and_calibrate_refuse_non_finite_weights(diverged, tmp_path, capsys):
    data = make_prepared_dataset(tmp_path, {"train": 4, "val": 4, "test": 4})
    out = tmp_path / "m.onnx"
    commands = {
        "export": ["export", "--checkpoint", str(diverged), "--onnx", str(out)],
        "eval": ["eval", "--checkpoint", str(diverged), "--data", str(data)],
        "calibrate": [
            "calibrate",
            "--checkpoint",
            str(diverged),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "c.safetensors"),
        ],
    }
    commands["predict"] = ["predict", "--checkpoint", str(diverged), str(tmp_path / "a.png")]
    commands["summary"] = ["summary", "--checkpoint", str(diverged)]
    for command, argv in commands.items():
        error = _cli_error(argv, capsys)
        assert error.startswith(f"pedattr {command}: error: {diverged}"), error
        assert "NaN or infinity in tensor global_fc" in error
    assert not out.exists() and not (tmp_path / "c.safetensors").exists()


def test_export_of_a_model_with_non_finite_weights_is_refused(tmp_path):
    from pedattr.inference.export import export_onnx

    model = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    with torch.no_grad():
        model.global_fc.bias[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity in tensor global_fc.bias"):
        export_onnx(model, tmp_path / "m.onnx", check=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("side", ["export", "pytorch"])
def test_parity_difference_fails_on_non_finite_outputs(bad, side):
    from pedattr.inference.export import ExportError, max_abs_difference

    want = (torch.zeros(2, 3), torch.zeros(2, 4))
    got = [torch.zeros(2, 3).numpy(), torch.zeros(2, 4).numpy()]
    if side == "export":
        got[1][1, 2] = bad
    else:
        want[1][1, 2] = bad
    with pytest.raises(ExportError, match="boxes from .* holds NaN or infinity"):
        max_abs_difference(got, want, ("probabilities", "boxes"))


def test_onnx_parity_check_fails_when_the_runtime_returns_nan(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from pedattr.inference import export as export_module

    real = export_module.onnxruntime_outputs

    def nan_outputs(model_bytes, images):
        return [output * float("nan") for output in real(model_bytes, images)]

    monkeypatch.setattr(export_module, "onnxruntime_outputs", nan_outputs)
    model = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    with pytest.raises(export_module.ExportError, match="probabilities from the export holds NaN"):
        export_module.export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_thresholds_of_the_wrong_count(tmp_path):
    from pedattr.inference.export import metadata_document

    model = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    model.thresholds = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="3 thresholds for 2 attributes"):
        metadata_document(model)


# --- training states ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """A training state after one Adam step: its path, JSON part and tensors."""
    torch.manual_seed(0)
    model = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, *TINY_MODEL["input_size"])).logits.sum().backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("state") / "state.safetensors"
    from pedattr.engine.training import Progress

    save_state(path, model, optimizer, None, Progress(epoch=1), TrainConfig())
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["pedattr-state"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return path, meta, tensors


def _resume(path: Path):
    model = pedattr.build_model("baseline", attribute_names=NAMES, **TINY_MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return load_state(path, model, optimizer, None)


def _state_cases(meta: dict, tensors: dict[str, torch.Tensor]) -> dict[str, tuple[dict, dict]]:
    optimizer_key = next(k for k in tensors if k.startswith("optimizer.") and k.endswith("exp_avg"))
    cases = {}
    for part in ("progress", "optimizer", "attribute_names", "scaler"):
        cases[f"part {part} is missing"] = ({k: v for k, v in meta.items() if k != part}, tensors)
    cases["part progress lacks ['epoch']"] = (
        {**meta, "progress": {k: v for k, v in meta["progress"].items() if k != "epoch"}},
        tensors,
    )
    cases["has extra ['surplus']"] = (
        {**meta, "progress": {**meta["progress"], "surplus": 1}},
        tensors,
    )
    cases["part optimizer.scalars"] = ({**meta, "optimizer": {"param_groups": []}}, tensors)
    cases["tensor rng.cpu is missing"] = (
        meta,
        {k: v for k, v in tensors.items() if k != "rng.cpu"},
    )
    cases["model tensor global_fc.bias is missing"] = (
        meta,
        {k: v for k, v in tensors.items() if k != "model.global_fc.bias"},
    )
    cases["tensor surplus is not part of a training state"] = (
        meta,
        {**tensors, "surplus": torch.zeros(1)},
    )
    cases["tensor optimizer.999.exp_avg is not part"] = (
        meta,
        {**tensors, "optimizer.999.exp_avg": torch.zeros(1)},
    )
    cases["model tensor global_fc.weight has shape [5, 1]"] = (
        meta,
        {**tensors, "model.global_fc.weight": torch.zeros(5, 1)},
    )
    cases[f"tensor {optimizer_key} has shape [7]"] = (
        meta,
        {**tensors, optimizer_key: torch.zeros(7)},
    )
    cases['part progress.epoch is "one"'] = (
        {**meta, "progress": {**meta["progress"], "epoch": "one"}},
        tensors,
    )
    return cases


@pytest.mark.slow
def test_every_broken_training_state_is_one_line_naming_file_and_part(state, tmp_path):
    path, meta, tensors = state
    assert _resume(path).epoch == 1  # the unbroken state resumes
    for expected, (broken_meta, broken_tensors) in _state_cases(meta, tensors).items():
        broken = tmp_path / "state.safetensors"
        header = {"pedattr-state": json.dumps(broken_meta)}
        save_file({k: v.contiguous() for k, v in broken_tensors.items()}, str(broken), header)
        with pytest.raises(TrainingSetupError) as caught:
            _resume(broken)
        message = str(caught.value)
        assert message.startswith(f"{broken}: "), message
        assert expected in message, (expected, message)
        assert "\n" not in message, message


@pytest.mark.slow
def test_cli_resume_with_a_broken_state_exits_2_naming_the_part(tmp_path, capsys):
    from tests.helpers import tiny_config

    data = make_prepared_dataset(tmp_path, {"train": 8, "val": 4, "test": 4})
    config = tiny_config(tmp_path, data, optim={"epochs": 1, "batch_size": 4})
    assert main(["train", "--config", str(config)]) == 0
    run = tmp_path / "run"
    (run / "report.json").unlink()  # as if the run had been interrupted
    state = run / "state.safetensors"
    with safe_open(str(state), framework="pt") as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k != "rng.cpu"}  # noqa: SIM118
    save_file(tensors, str(state), header)
    capsys.readouterr()
    error = _cli_error(["train", "--resume", str(run)], capsys)
    assert error.startswith(f"pedattr train: error: {state}: ") and "rng.cpu is missing" in error


# --- backbone weight files and convert ------------------------------------------------------


class _Code:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    "backbone", ["bninception", "torchvision:resnet18", "timm:test_efficientnet"]
)
@pytest.mark.parametrize("kind", ["text", "empty", "code", "list"])
def test_pretrained_file_that_is_not_weights_is_one_line(tmp_path, capsys, backbone, kind):
    import pickle

    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "code":
        path.write_bytes(pickle.dumps({"weight": _Code()}))
    else:
        torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError) as caught:
        build_backbone(backbone, pretrained=path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    assert "this must never run" not in capsys.readouterr().out


def test_convert_refuses_a_0d_tensor_where_a_matrix_belongs(tmp_path, capsys):
    source = tmp_path / "authors.pth.tar"
    torch.save({"state_dict": {"module.finalfc.weight": torch.tensor(1.0)}}, source)
    error = _cli_error(["convert", str(source), "--out", str(tmp_path / "c.safetensors")], capsys)
    assert error.startswith(f"pedattr convert: error: {source}")
    assert "'finalfc.weight' has shape [], expected a matrix" in error
