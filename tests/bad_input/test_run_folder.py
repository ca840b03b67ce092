"""A run folder has one writer, stays consistent across kills, and signals end commands cleanly.

Training here is the tiny CPU run of tests/engine/test_training.py (1-2 epochs of 6 steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

from pedattr.cli import main
from pedattr.engine import training
from pedattr.engine.runfolder import LOCK_NAME, RunFolderInUse, locked_run_folder
from pedattr.engine.training import TrainingDiverged, TrainingError, train
from pedattr.errors import Interrupted
from tests.helpers import log_records, tiny_config

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX locks, signals and FIFOs")
ROOT = Path(__file__).resolve().parents[2]


def saved_epoch(run: Path) -> int:
    with safe_open(str(run / "state.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["pedattr-state"])["progress"]["epoch"]


def run_program(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python whose last line runs the ``pedattr`` program."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


# --- one writer -------------------------------------------------------------------------------


@posix_only
def test_a_folder_held_by_another_process_is_refused_and_freed_when_it_is_killed(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pedattr.engine.runfolder import locked_run_folder\n"
            f"with locked_run_folder({str(run)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunFolderInUse) as refused, locked_run_folder(run):
            pass
        message = str(refused.value)
        assert "\n" not in message
        assert f"{run} is in use by another pedattr process (pid {holder.pid} " in message
    finally:
        holder.kill()  # SIGKILL: no chance to let go, the kernel does
        holder.wait()
    with locked_run_folder(run):
        assert f"pid {os.getpid()} " in (run / LOCK_NAME).read_text()


@pytest.mark.slow
def test_train_resume_and_experiment_refuse_a_held_folder(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    run = tmp_path / "run"
    with locked_run_folder(run):
        assert main(["train", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"pedattr train: error: {run} is in use by another pedattr process")
        assert err.count("\n") == 1 and f"pid {os.getpid()}" in err
        assert not (run / "config.yaml").exists()  # the refused run wrote nothing

    train(config)  # the folder is free again, and the run's own lock was let go at its end
    (run / "report.json").unlink()  # (a finished run is only read on resume, never locked)
    with locked_run_folder(run):
        assert main(["train", "--resume", str(run)]) == 2
        assert "is in use by another pedattr process" in capsys.readouterr().err

    out = tmp_path / "table"
    with locked_run_folder(out):
        argv = ["experiment", "table1", "--data", str(data), "--out", str(out)]
        assert main([*argv, "--rows", "baseline", "--configs", str(ROOT / "configs")]) == 2
        assert f"{out} is in use by another pedattr process" in capsys.readouterr().err


def test_a_recipe_folder_is_held_while_its_stages_run(tmp_path: Path, data: Path) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    recipe = yaml.safe_load(config.read_text())
    recipe["stages"] = [{"name": "only"}]
    config.write_text(yaml.safe_dump(recipe))
    root = tmp_path / "run"
    with locked_run_folder(root), pytest.raises(RunFolderInUse):
        train(config)
    assert not (root / "recipe.yaml").exists()


def test_a_demo_folder_in_use_is_refused_before_anything_is_drawn(tmp_path: Path) -> None:
    from pedattr.recipes.demo import run_demo

    out = tmp_path / "demo"
    with locked_run_folder(out), pytest.raises(RunFolderInUse):
        run_demo(out, pretrained=None)
    assert not (out / "data").exists()


def test_processes_other_than_the_main_one_take_no_lock(tmp_path: Path) -> None:
    """Under torchrun only rank 0 writes: the other ranks must not be refused by its lock."""
    with locked_run_folder(tmp_path), locked_run_folder(tmp_path, enabled=False):
        pass


# --- a consistent folder after a kill ---------------------------------------------------------


@pytest.mark.slow
def test_a_kill_between_an_epochs_log_line_and_its_state_leaves_each_epoch_logged_once(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(tmp_path, data)
    run = tmp_path / "run"
    real_save = training.save_state

    def killed_before_epoch_2s_state(path, model, optimizer, scaler, progress, config):
        if progress.epoch == 2:  # epoch 2's line and checkpoints are written, its state is not
            raise KeyboardInterrupt
        real_save(path, model, optimizer, scaler, progress, config)

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_state", killed_before_epoch_2s_state)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    assert [r["epoch"] for r in log_records(run)] == [1, 2] and saved_epoch(run) == 1
    with open(run / "log.jsonl", "a") as log:
        log.write('{"event": "epoch", "ep')  # a line cut short by the kill
    # What a save killed mid-write leaves: removed at the next start, nothing else is.
    leftovers = [run / ".state.safetensors.k2j4.tmp", run / ".log.jsonl.x8q1.tmp"]
    for path in [*leftovers, run / ".notes.tmp"]:
        path.write_text("partial")

    train(resume=run)
    records = log_records(run)
    assert [(r["event"], r.get("epoch")) for r in records[:2]] == [("epoch", 1), ("epoch", 2)]
    assert [r["event"] for r in records[2:]] == ["test"]
    assert not any(path.exists() for path in leftovers)
    assert (run / ".notes.tmp").exists()


@pytest.mark.slow
def test_a_log_whose_epochs_no_state_kept_is_started_afresh(tmp_path: Path, data: Path) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text('{"event": "epoch", "epoch": 1}\n')
    train(config)
    assert [r["event"] for r in log_records(run)] == ["epoch", "test"]


def test_truncate_log_keeps_the_saved_epochs_only(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    lines = [{"event": "epoch", "epoch": e} for e in (1, 2, 3)] + [{"event": "test", "epoch": 2}]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert training.truncate_log(log, 2) == 2
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]
    assert training.truncate_log(log, 2) == 0
    assert training.truncate_log(tmp_path / "none.jsonl", 1) == 0


# --- signals during the last validation and the final test -------------------------------------


def signal_during(monkeypatch: pytest.MonkeyPatch, split: str, signum: int) -> None:
    """Send this process ``signum`` while the trainer evaluates ``split``."""
    real = training.Trainer.evaluate

    def evaluate(self, which):
        if which == split:
            os.kill(os.getpid(), signum)
        return real(self, which)

    monkeypatch.setattr(training.Trainer, "evaluate", evaluate)


@pytest.mark.slow
def test_sigterm_during_the_last_validation_stops_with_the_epoch_saved(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_during(patch, "val", signal.SIGTERM)
        with pytest.raises(Interrupted) as stopped:
            train(config)
    assert stopped.value.signum == signal.SIGTERM
    assert f"interrupted after epoch 1; continue with `pedattr train --resume {run}`" in (
        capsys.readouterr().out
    )
    assert saved_epoch(run) == 1 and not (run / "report.json").exists()
    (report,) = train(resume=run)  # only the test is left
    assert report["selected_epoch"] == 1
    assert [r["event"] for r in log_records(run)] == ["epoch", "test"]


@pytest.mark.slow
def test_sigterm_during_the_final_test_stops_it_and_resume_runs_it_again(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_during(patch, "test", signal.SIGTERM)
        with pytest.raises(Interrupted) as stopped:
            train(config)
    assert stopped.value.signum == signal.SIGTERM
    assert "interrupted during the final test; every epoch is saved" in capsys.readouterr().out
    assert not (run / "report.json").exists()
    (report,) = train(resume=run)
    assert report["test"]["num_samples"] == 16


@pytest.mark.slow
@posix_only
def test_the_program_ends_by_sigterm_when_sigterm_stops_it() -> None:
    """SIGTERM stops any command as Ctrl-C does, and the program then ends by SIGTERM."""
    result = run_program(
        """
        import os, signal, sys, time
        import pedattr.engine.training as t
        def terminated(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        t.train = terminated
        sys.argv = ["pedattr", "train", "--config", "c.yaml"]
        from pedattr.cli import console_main
        console_main()
        """
    )
    assert result.returncode == -signal.SIGTERM
    assert result.stderr == "pedattr train: interrupted\n"


def test_sigterm_status_is_143(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def terminated(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(training, "train", terminated)
    assert main(["train", "--config", "c.yaml"]) == 143
    assert capsys.readouterr().err == "pedattr train: interrupted\n"


@pytest.mark.slow
@posix_only
def test_predict_stopped_by_sigterm_keeps_the_json_lines_written(tmp_path: Path) -> None:
    import pedattr
    from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, learnable_image

    checkpoint = tmp_path / "model.safetensors"
    pedattr.save_checkpoint(
        checkpoint, pedattr.build_model("alm", attribute_names=LEARNABLE_ATTRIBUTES, **TINY_MODEL)
    )
    rng = np.random.default_rng(0)
    images = []
    for k in range(4):
        images.append(tmp_path / f"img{k}.png")
        learnable_image(np.array([1, 0, 1]), rng).save(images[-1])
    out = tmp_path / "out.jsonl"
    result = run_program(
        f"""
        import os, signal, sys
        from pedattr.inference import command
        report = command._Run._report
        seen = []
        def report_then_terminate(self, prediction, stream):
            if len(seen) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            seen.append(prediction.source)
            report(self, prediction, stream)
        command._Run._report = report_then_terminate
        sys.argv = ["pedattr", "predict", "--checkpoint", {str(checkpoint)!r}, "--device", "cpu",
                    "--batch-size", "1", "--json", {str(out)!r}, *{list(map(str, images))!r}]
        from pedattr.cli import console_main
        console_main()
        """
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stderr.endswith("pedattr predict: interrupted\n")
    sources = [json.loads(line)["source"] for line in out.read_text().splitlines()]
    assert sources == list(map(str, images[:2]))
    assert "interrupted after 2 images" in result.stdout


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_early_divergence_and_a_resume_without_state_say_to_rerun_the_command(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(training, "train_step", lambda *args, **kwargs: torch.tensor(float("nan")))
        with pytest.raises(TrainingDiverged) as diverged:
            train(config)
    message = str(diverged.value)
    assert "before any state was saved, so there is nothing to resume" in message
    assert "run the original command again" in message and "intact" not in message
    assert not (run / "state.safetensors").exists()

    with pytest.raises(TrainingError, match=r"no state.safetensors.*original command again"):
        train(resume=run)
    (report,) = train(config)  # which starts it, as both messages say
    assert report["selected_epoch"] == 1


@pytest.mark.slow
def test_an_early_divergence_in_a_recipe_stage_says_resume_starts_it(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(tmp_path, data, optim={"epochs": 1})
    recipe = yaml.safe_load(config.read_text())
    recipe["stages"] = [{"name": "only"}]
    config.write_text(yaml.safe_dump(recipe))
    root = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(training, "train_step", lambda *args, **kwargs: torch.tensor(float("nan")))
        with pytest.raises(TrainingDiverged) as diverged:
            train(config)
    assert f"in {root / 'recipe.yaml'}, then `pedattr train --resume {root}`" in str(diverged.value)
    (report,) = train(resume=root)  # which starts the stage, as the message says
    assert report["selected_epoch"] == 1
