"""`pedattr train`: configs, a short run whose loss falls, exact resume, DDP, clear failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import pedattr
from pedattr.checkpoint.format import load_checkpoint, save_checkpoint
from pedattr.data.description import carve_validation
from pedattr.engine import training
from pedattr.engine.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    expand_stages,
    read_config_file,
)
from pedattr.engine.distributed import CPUSyncBatchNorm
from pedattr.engine.training import TrainingDiverged, TrainingError, train
from pedattr.evaluation.calibration import calibrate_checkpoint
from pedattr.evaluation.evaluate import AttributeMismatchError
from tests.helpers import (
    LEARNABLE_ATTRIBUTES,
    TINY_MODEL,
    log_records,
    make_prepared_dataset,
    tiny_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "epochs", "lr_step", "root"),
    [
        ("pa100k", 30, 10, "data/pa100k"),
        ("peta", 60, 20, "data/peta"),
        ("rap1", 30, 10, "data/rap1"),
        ("rap2", 30, 10, "data/rap2"),
    ],
)
def test_shipped_configs_hold_the_papers_recipe(
    name: str, epochs: int, lr_step: int, root: str
) -> None:
    config, stages = read_config_file(CONFIGS / f"{name}.yaml")
    assert stages == []
    assert (config.model.arch, config.model.backbone) == ("alm", "bninception")
    assert config.model.input_size == (256, 128)
    assert (config.optim.lr, config.optim.weight_decay, config.optim.batch_size) == (
        1e-4,
        5e-4,
        32,
    )
    assert (config.optim.epochs, config.optim.lr_step, config.optim.lr_gamma) == (
        epochs,
        lr_step,
        0.1,
    )
    assert config.data.root == root


@pytest.mark.parametrize("name", ["pa100k", "peta", "rap1", "rap2"])
def test_two_stage_recipes_start_alm_from_the_baseline(name: str) -> None:
    path = CONFIGS / f"{name}_two_stage.yaml"
    config, raw = read_config_file(path)
    baseline, alm = expand_stages(config, raw, str(path))
    assert (baseline.name, baseline.config.model.arch) == ("baseline", "baseline")
    assert (alm.name, alm.config.model.arch) == ("alm", "alm")
    root = Path(config.run.out)
    assert Path(alm.config.run.init_from) == root / "baseline" / "best.safetensors"
    assert Path(baseline.config.run.out) == root / "baseline"


def test_overrides_are_typed_and_unknown_keys_named(tmp_path: Path) -> None:
    config = TrainConfig()
    apply_overrides(config, ["optim.lr=3e-4", "model.input_size=[128, 64]", "run.amp=bf16"])
    assert (config.optim.lr, config.model.input_size, config.run.amp) == (3e-4, (128, 64), "bf16")
    cases = {
        "optim.lrr=1": "optim.lrr: unknown key",
        "optim.epochs=1.5": "optim.epochs: expected int",
        "model.arch=vit": "model.arch: expected one of 'alm', 'baseline'",
        "run.sync_bn=1": "run.sync_bn: expected bool",
        "optim.lr=fast": "optim.lr: expected float",
        "nosection=1": "expected section.key=value",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            apply_overrides(TrainConfig(), [override])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.batch_size: expected int"):
        read_config_file(bad)
    bad.write_text("optimiser:\n  lr: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown section 'optimiser'"):
        read_config_file(bad)


def test_base_files_chain_and_loops_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\noptim: {epochs: 3}\n")
    (tmp_path / "b.yaml").write_text("optim: {epochs: 9, lr: 0.5}\n")
    config, _ = read_config_file(tmp_path / "a.yaml")
    assert (config.optim.epochs, config.optim.lr) == (3, 0.5)
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        read_config_file(tmp_path / "a.yaml")


# --- a short run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_writes_the_run(tmp_path: Path, data: Path) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 4, "lr_step": 10})
    (report,) = train(config)
    run = tmp_path / "run"
    records = log_records(run)
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["train_loss"] < 0.9 * epochs[0]["train_loss"]
    assert all(set(r["val"]) >= {"mA", "accuracy", "precision", "recall", "f1"} for r in epochs)
    (test_record,) = [r for r in records if r["event"] == "test"]

    # The selected epoch is the one with the best validation mA, and only it met the test set.
    val_scores = [r["val"]["mA"] for r in epochs]
    assert report["selected_epoch"] == 1 + int(np.argmax(val_scores))
    assert test_record["epoch"] == report["selected_epoch"]
    best = load_checkpoint(run / "best.safetensors")
    assert best.metrics["epoch"] == report["selected_epoch"]
    assert best.metrics["test"]["mA"] == pytest.approx(report["test"]["mA"])
    assert best.config.attribute_names == LEARNABLE_ATTRIBUTES
    assert load_checkpoint(run / "last.safetensors").metrics["epoch"] == 4
    assert json.loads((run / "report.json").read_text())["test"] == report["test"]
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"] == 4

    # The test metrics are those of the selected checkpoint on the test split.
    model = pedattr.load_model(run / "best.safetensors")
    from pedattr.evaluation.evaluate import predict_split
    from pedattr.evaluation.metrics import compute_metrics

    predictions = predict_split(model, data, "test")
    expected = compute_metrics(predictions.labels, predictions.probs)
    assert report["test"]["mA"] == pytest.approx(expected["mA"])


@pytest.mark.slow
def test_a_second_start_in_the_same_folder_is_refused(tmp_path: Path, data: Path) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    train(config)
    with pytest.raises(TrainingError, match="already holds a run.*--resume"):
        train(config)


# --- resume -----------------------------------------------------------------------------------


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Send this process SIGINT (Ctrl-C) during the ``step``-th training step (1-based)."""
    real_step = training.train_step
    calls = {"n": 0}

    def step_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step_then_interrupt)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = tiny_config(tmp_path / "whole", data)
    train(whole)

    parts = tiny_config(tmp_path / "parts", data)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 8)  # the second step of epoch 2
        with pytest.raises(KeyboardInterrupt):
            train(parts)
    run = tmp_path / "parts" / "run"
    with safe_open(str(run / "state.safetensors"), framework="pt") as handle:
        progress = json.loads(handle.metadata()["pedattr-state"])["progress"]
    assert (progress["epoch"], progress["step"], progress["global_step"]) == (1, 2, 8)
    train(resume=run)

    expected = load_file(tmp_path / "whole" / "run" / "last.safetensors")
    resumed = load_file(run / "last.safetensors")
    assert expected.keys() == resumed.keys()
    for key, tensor in expected.items():
        assert torch.equal(tensor, resumed[key]), key
    report = json.loads((run / "report.json").read_text())
    assert report["test"] == json.loads((tmp_path / "whole/run/report.json").read_text())["test"]
    # resuming a finished run does nothing and says so
    assert train(resume=run)[0]["test"] == report["test"]


def read_global_step(state: Path) -> int:
    try:
        with safe_open(str(state), framework="pt") as handle:
            return json.loads(handle.metadata()["pedattr-state"])["progress"]["global_step"]
    except Exception:  # noqa: BLE001 - not written yet
        return 0


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_weights(tmp_path: Path, data: Path) -> None:
    """SIGKILL gives no chance to save: the periodic state must be enough."""
    whole = tiny_config(tmp_path / "whole", data, optim={"epochs": 3})
    train(whole)
    parts = tiny_config(tmp_path / "parts", data, optim={"epochs": 3}, run={"checkpoint_every": 2})
    run = tmp_path / "parts" / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "pedattr.cli", "train", "--config", str(parts)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while read_global_step(run / "state.safetensors") < 4 and process.poll() is None:
        assert time.monotonic() < deadline, "the run never saved its state"
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert not (run / "report.json").exists(), "the run finished before it could be killed"
    train(resume=run)
    expected = load_file(tmp_path / "whole" / "run" / "last.safetensors")
    resumed = load_file(run / "last.safetensors")
    for key, tensor in expected.items():
        assert torch.equal(tensor, resumed[key]), key


# --- two-stage warm-up ------------------------------------------------------------------------


def test_init_from_copies_the_baseline_backbone(tmp_path: Path) -> None:
    baseline = pedattr.build_model("baseline", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    with torch.no_grad():
        for parameter in baseline.parameters():
            parameter.add_(1.0)  # unlike any fresh initialisation
    save_checkpoint(tmp_path / "baseline.safetensors", baseline)
    alm = pedattr.build_model("alm", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    copied = training.initialize_from_checkpoint(alm, tmp_path / "baseline.safetensors")
    source = baseline.state_dict()
    target = alm.state_dict()
    backbone_keys = [k for k in target if k.startswith("backbone.")]
    assert set(copied) == set(backbone_keys) | {"global_fc.weight", "global_fc.bias"}
    assert all(torch.equal(target[k], source[k]) for k in copied)

    other = pedattr.build_model(
        "baseline", attribute_names=LEARNABLE_ATTRIBUTES, backbone="timm:test_resnet"
    )
    save_checkpoint(tmp_path / "other.safetensors", other)
    with pytest.raises(TrainingError, match="backbone is 'timm:test_resnet'"):
        training.initialize_from_checkpoint(alm, tmp_path / "other.safetensors")


@pytest.mark.slow
def test_recipe_runs_both_stages_and_resume_skips_finished_ones(tmp_path: Path, data: Path) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    recipe = yaml.safe_load(config.read_text())
    recipe["stages"] = [
        {"name": "baseline", "model": {"arch": "baseline"}},
        {"name": "alm", "run": {"init_from": "baseline"}},
    ]
    config.write_text(yaml.safe_dump(recipe))
    first, second = train(config)
    run = tmp_path / "run"
    assert load_checkpoint(run / "baseline" / "best.safetensors").config.arch == "baseline"
    assert load_checkpoint(run / "alm" / "best.safetensors").config.arch == "alm"
    assert (run / "recipe.yaml").is_file()
    assert train(resume=run) == [first, second]


# --- validation split -------------------------------------------------------------------------


@pytest.mark.slow
def test_dataset_without_val_gets_a_seeded_held_out_subset(tmp_path: Path) -> None:
    data = make_prepared_dataset(tmp_path, {"train": 40, "test": 8}, seed=3)
    description = training.load_description(data)
    carved, names = carve_validation(description, 0.25, seed=0)
    again, same = carve_validation(description, 0.25, seed=0)
    _, other = carve_validation(description, 0.25, seed=1)
    assert len(names) == 10 and names == same and names != other
    assert (carved.splits == "val").sum() == 10 and (carved.splits == "train").sum() == 30
    assert set(names) == {carved.image_names[i] for i in np.flatnonzero(carved.splits == "val")}
    # loss weights come from the 30 remaining training images only
    train_labels = carved.labels[carved.splits == "train"]
    expected = (train_labels == 1).mean(axis=0)
    assert np.allclose(training.training_weights(carved, "train").numpy(), expected)

    config = tiny_config(tmp_path, data, optim={"epochs": 1}, data={"val_fraction": 0.25})
    train(config)
    listed = (tmp_path / "run" / "val_split.txt").read_text().split()
    assert listed == names

    # calibration finds the same held-out images through the checkpoint's run configuration
    report = calibrate_checkpoint(tmp_path / "run" / "best.safetensors", data)
    assert (report["split"], report["num_images"]) == ("val", 10)


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 3})
    real_step = training.train_step
    calls = {"n": 0}

    def diverging_step(*args, **kwargs):
        calls["n"] += 1
        loss = real_step(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 9 else loss

    monkeypatch.setattr(training, "train_step", diverging_step)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 3.*intact"):
        train(config)
    run = tmp_path / "run"
    last = load_checkpoint(run / "last.safetensors")
    assert last.metrics["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last.state_dict.values())


@pytest.mark.slow
def test_resume_refuses_a_dataset_with_other_attributes(tmp_path: Path, data: Path) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    train(config)
    run = tmp_path / "run"
    (run / "report.json").unlink()  # pretend the run was interrupted
    other = tmp_path / "other"
    other_data = make_prepared_dataset(other)
    described = json.loads((other_data / "dataset.json").read_text())
    described["attributes"][2] = "Bluish"
    (other_data / "dataset.json").write_text(json.dumps(described))
    samples = (other_data / "samples.csv").read_text().replace("Reddish", "Bluish", 1)
    (other_data / "samples.csv").write_text(samples)
    settings = yaml.safe_load((run / "config.yaml").read_text())
    settings["data"]["root"] = str(other_data)
    (run / "config.yaml").write_text(yaml.safe_dump(settings))
    with pytest.raises(AttributeMismatchError, match="Bluish"):
        train(resume=run)


def test_missing_data_folder_is_one_clear_error(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere: no such dataset folder.*pedattr prepare"):
        train(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_train_on_the_cpu(tmp_path: Path, data: Path) -> None:
    config = tiny_config(
        tmp_path, data, optim={"epochs": 1}, run={"amp": "bf16", "channels_last": True}
    )
    (report,) = train(config)
    assert np.isfinite(report["test"]["mA"])
    with pytest.raises(TrainingError, match="fp16 needs CUDA"):
        train(tiny_config(tmp_path / "fp16", data, run={"amp": "fp16"}))


# --- distributed ------------------------------------------------------------------------------


def test_cpu_sync_batchnorm_is_batchnorm_when_alone() -> None:
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(4)
    synced = CPUSyncBatchNorm(4)
    synced.load_state_dict(plain.state_dict())
    x = torch.randn(6, 4, 3, 2)
    assert torch.allclose(plain(x), synced(x))
    assert torch.allclose(plain.running_var, synced.running_var)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_global_batch(
    tmp_path: Path, data: Path
) -> None:
    """DDP over 2 CPU processes (4 images each) computes what 1 process with 8 does."""
    model = {"backbone": "timm:test_resnet"}  # plain BatchNorm2d layers, synchronised on CPU
    single = tiny_config(tmp_path / "single", data, model=model)
    train(single)
    double = tiny_config(tmp_path / "double", data, model=model)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pedattr.cli",
        "train",
        "--config",
        str(double),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one = load_file(tmp_path / "single" / "run" / "last.safetensors")
    two = load_file(tmp_path / "double" / "run" / "last.safetensors")
    for key, tensor in one.items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, two[key], atol=2e-5, rtol=1e-4), key
        else:
            assert torch.equal(tensor, two[key]), key
    report_one = json.loads((tmp_path / "single" / "run" / "report.json").read_text())
    report_two = json.loads((tmp_path / "double" / "run" / "report.json").read_text())
    assert report_two["test"]["num_samples"] == report_one["test"]["num_samples"] == 16
    assert report_two["test"]["mA"] == pytest.approx(report_one["test"]["mA"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("box_centre", ["regressed", "evidence"])
def test_cuda_amp_channels_last_run(tmp_path: Path, data: Path, box_centre: str) -> None:
    config = tiny_config(
        tmp_path,
        data,
        model={"box_centre": box_centre},
        optim={"epochs": 1},
        run={"device": "cuda", "amp": "fp16", "channels_last": True},
    )
    (report,) = train(config)
    assert np.isfinite(report["test"]["mA"])


@pytest.mark.slow
def test_resume_from_another_directory_continues_in_the_given_folder(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    config = tiny_config(start, data, run={"out": "relative/run"})
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    moved = tmp_path / "moved"
    (start / "relative" / "run").rename(moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (report,) = train(resume=moved)
    assert report["run"] == str(moved.resolve())
    assert (moved / "report.json").is_file() and not any(elsewhere.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((moved / "config.yaml").read_text())
    with pytest.raises(TrainingError, match="no state.safetensors"):
        train(resume=empty)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr_step=0", "optim.lr_step: must be at least 1"),
        ("optim.batch_size=0", "optim.batch_size: must be at least 1"),
        ("optim.lr=nan", "optim.lr: must be a positive number"),
        ("data.val_fraction=1.5", "data.val_fraction: must be in"),
        ("optim.box_lr_scale=0", "optim.box_lr_scale: must be positive"),
    ],
)
def test_values_out_of_range_are_named(
    tmp_path: Path, data: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        train(tiny_config(tmp_path, data), [override])


@pytest.mark.slow
def test_evidence_centred_boxes_train_and_every_parameter_gets_a_gradient(
    tmp_path: Path, data: Path
) -> None:
    """model.box_centre=evidence trains end to end and leaves no parameter without a gradient
    (DistributedDataParallel would stop on one)."""
    config = tiny_config(tmp_path, data, model={"box_centre": "evidence", "box_init": "zero"})
    train(config)
    model = pedattr.load_model(tmp_path / "run" / "best.safetensors")
    assert model.config.box_centre == "evidence"
    assert all(alm.box_weight.shape[1] == 2 for alm in model.alms)
    output = model.train()(torch.rand(4, 3, *TINY_MODEL["input_size"]))
    sum(logits.sum() for logits in output.branch_logits).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.slow
def test_box_regressors_learn_at_the_scaled_rate(tmp_path: Path, data: Path) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1, "lr": 1e-3, "box_lr_scale": 0.1})
    train(config)
    with safe_open(str(tmp_path / "run" / "state.safetensors"), framework="pt") as handle:
        groups = json.loads(handle.metadata()["pedattr-state"])["optimizer"]["param_groups"]
    assert [group["lr"] for group in groups] == pytest.approx([1e-3, 1e-4])

    # The second group is exactly the ALM box regressors; Adam's first step moves every
    # parameter with a gradient by its group's rate, so the box weights move ten times less.
    model = pedattr.build_model("alm", num_attrs=2, **TINY_MODEL)
    groups = training.parameter_groups(model, box_lr_scale=0.1)
    box_names = {
        name
        for name, _ in model.named_parameters()
        if name.split(".")[-1] in ("box_weight", "box_bias")
    }
    by_id = {id(param): name for name, param in model.named_parameters()}
    assert {by_id[id(param)] for param in groups[1]["params"]} == box_names
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = torch.optim.Adam(
        [{**group, "lr": 1e-3 * group["lr_scale"]} for group in groups], lr=1e-3
    )
    output = model(torch.rand(4, 3, *TINY_MODEL["input_size"]))
    sum(logits.sum() for logits in output.branch_logits).backward()
    optimizer.step()
    checked = set()
    for name, param in model.named_parameters():
        moved = (param.detach() - before[name]).abs()
        moved = moved[param.grad.abs() > 1e-6]
        if moved.numel():
            rate = 1e-4 if name in box_names else 1e-3
            assert moved.max().item() == pytest.approx(rate, rel=1e-2), name
            checked.add(name)
    assert len(checked & box_names) >= len(box_names) - 1  # the box weights of every level
    # one group, as before the option, when the scale is 1
    assert len(training.parameter_groups(model)) == 1


def set_in_run_config(run: Path, section: str, key: str, value) -> None:
    path = run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config[section][key] = value
    path.write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_resume_takes_the_box_rate_from_the_config_and_reads_older_states(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        interrupt_at(patch, 8)  # the second step of epoch 2
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(tmp_path, data))
    run = tmp_path / "run"
    state = run / "state.safetensors"
    # A state written before optim.box_lr_scale existed: its group has no "lr_scale".
    with safe_open(str(state), framework="pt") as handle:
        meta = json.loads(handle.metadata()["pedattr-state"])
    tensors = load_file(state)
    for group in meta["optimizer"]["param_groups"]:
        del group["lr_scale"]
    save_file(tensors, state, metadata={"pedattr-state": json.dumps(meta)})

    # Switching between one group and two cannot resume: one message naming the key.
    set_in_run_config(run, "optim", "box_lr_scale", 0.5)
    with pytest.raises(
        TrainingError, match=r"1 optimizer parameter group\(s\), this run has 2; optim.box_lr_scale"
    ):
        train(resume=run)
    set_in_run_config(run, "optim", "box_lr_scale", 1.0)
    train(resume=run)  # the older state resumes
    assert [r["epoch"] for r in log_records(run) if r["event"] == "epoch"] == [1, 2]


def test_cpu_sync_batchnorm_in_a_process_group_matches_batchnorm() -> None:
    """One gloo process: the synchronised path equals BatchNorm2d, also for large means and
    under bf16 autocast (statistics in float32)."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{Path(tempfile.mkdtemp()) / 'group'}", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        x = torch.randn(6, 4, 3, 2, dtype=torch.float64).float() * 0.5 + 100.0
        plain, synced = torch.nn.BatchNorm2d(4), CPUSyncBatchNorm(4)
        synced.load_state_dict(plain.state_dict())
        x_plain, x_synced = x.clone().requires_grad_(), x.clone().requires_grad_()
        expected, got = plain(x_plain), synced(x_synced)
        assert torch.allclose(got, expected, atol=1e-4)
        (expected * torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
        (got * torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
        assert torch.allclose(x_synced.grad, x_plain.grad, atol=1e-3)
        assert torch.allclose(synced.running_mean, plain.running_mean)
        assert torch.allclose(synced.running_var, plain.running_var, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = synced(x.bfloat16())
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_eval_on_val_of_a_carved_run_uses_the_held_out_images(tmp_path: Path) -> None:
    from pedattr.evaluation.evaluate import evaluate_checkpoint

    data = make_prepared_dataset(tmp_path, {"train": 40, "test": 8}, seed=3)
    train(tiny_config(tmp_path, data, optim={"epochs": 1}, data={"val_fraction": 0.25}))
    report = evaluate_checkpoint(tmp_path / "run" / "best.safetensors", data, split="val")
    assert report["num_images"] == 10
    trained = evaluate_checkpoint(tmp_path / "run" / "best.safetensors", data, split="train")
    assert trained["num_images"] == 30
