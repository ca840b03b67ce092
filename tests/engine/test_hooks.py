"""The training loop's hook points, the hooks built from a configuration, the interrupt message."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pedattr.engine import training
from pedattr.engine.config import TrainConfig
from pedattr.engine.distributed import DistributedContext
from pedattr.engine.hooks import LearningRateSchedule, build_hooks
from pedattr.engine.state import Progress
from pedattr.engine.trainer import HookBase, TrainerBase
from tests.helpers import make_prepared_dataset, tiny_config


class Loader(list):
    """Batches of two images each, with the sampler the loop tells where to start."""

    def __init__(self, batches: int) -> None:
        super().__init__(SimpleNamespace(images=torch.zeros(2, 1)) for _ in range(batches))
        self.batch_sampler = SimpleNamespace(set_epoch=lambda epoch, step: None)


class FakeTrainer(TrainerBase):
    def __init__(self, hooks: list[HookBase], *, epochs: int = 2, steps: int = 3) -> None:
        self.context = DistributedContext()
        self.network = nn.Identity()
        self.train_loader = Loader(steps)
        self.tracker = SimpleNamespace(update=lambda batch: None, finish=lambda: None)
        self.progress = Progress()
        self.max_epochs = epochs
        self.stop_requested = []
        self.register_hooks(hooks)

    def run_step(self, batch) -> torch.Tensor:
        return torch.tensor(0.5)


class Recorder(HookBase):
    def __init__(self, name: str, calls: list[str], fail_at: tuple[str, int] | None = None):
        self.name, self.calls, self.fail_at = name, calls, fail_at

    def record(self, point: str) -> None:
        trainer = self.trainer
        self.calls.append(f"{self.name}.{point}@{trainer.epoch}.{trainer.progress.step}")
        if (point, trainer.progress.global_step) == self.fail_at:
            raise RuntimeError("failed")

    def before_train(self) -> None:
        self.record("before_train")

    def before_epoch(self) -> None:
        self.record("before_epoch")

    def after_step(self) -> None:
        self.record("after_step")

    def after_epoch(self) -> None:
        self.record("after_epoch")

    def after_train(self) -> None:
        self.record("after_train")

    def finish(self, error: BaseException | None) -> None:
        self.calls.append(f"{self.name}.finish:{error}")


def test_the_loop_calls_each_hook_at_its_points_in_order() -> None:
    calls: list[str] = []
    trainer = FakeTrainer([Recorder("a", calls), Recorder("b", calls)], epochs=2, steps=2)
    trainer.fit()
    points = [
        "before_train@0.0",
        "before_epoch@0.0",
        "after_step@0.1",
        "after_step@0.2",
        "after_epoch@0.2",
        "before_epoch@1.2",  # the loop does not move the step on: StateSaves does
        "after_step@1.3",
        "after_step@1.4",
        "after_epoch@1.4",
        "after_train@1.4",
    ]
    expected = [f"{name}.{point}" for point in points for name in "ab"]
    assert calls == [*expected, "a.finish:None", "b.finish:None"]
    assert trainer.epoch_stats["train_loss"] == pytest.approx(0.5)
    assert trainer.progress.global_step == 4


def test_every_hook_finishes_with_the_error_and_the_phase_says_where() -> None:
    calls: list[str] = []
    trainer = FakeTrainer([Recorder("a", calls, fail_at=("after_step", 2)), Recorder("b", calls)])
    with pytest.raises(RuntimeError, match="failed"):
        trainer.fit()
    assert calls[-3:] == ["a.after_step@0.2", "a.finish:failed", "b.finish:failed"]
    assert trainer.phase == "after_step"


def test_a_hook_that_fails_to_finish_does_not_keep_the_others_from_finishing() -> None:
    class Failing(HookBase):
        def finish(self, error: BaseException | None) -> None:
            raise OSError("disk full")

    calls: list[str] = []
    trainer = FakeTrainer([Failing(), Recorder("b", calls)])
    with pytest.raises(OSError, match="disk full"):
        trainer.fit()
    assert calls[-1] == "b.finish:None"


def test_build_hooks_gives_each_part_of_the_run_in_calling_order(tmp_path: Path) -> None:
    config = TrainConfig()
    config.run.out = str(tmp_path / "run")
    config.optim.lr, config.optim.lr_gamma, config.optim.lr_step = 1e-3, 0.1, 2
    hooks = build_hooks(config, val_split="val", has_test=True, attribute_names=["a"])
    assert [type(hook).__name__ for hook in hooks] == [
        "LearningRateSchedule",
        "DivergenceStop",
        "Validation",
        "RunLog",
        "Checkpoints",
        "StateSaves",
        "InterruptHandling",
        "FinalTest",
    ]
    schedule = hooks[0]
    assert isinstance(schedule, LearningRateSchedule)
    assert [schedule.rate(epoch) for epoch in range(5)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5]
    )


@pytest.mark.slow
def test_an_interrupted_step_says_where_the_run_stopped_and_how_to_continue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(tmp_path, make_prepared_dataset(tmp_path))
    real_step = training.train_step
    calls = {"n": 0}

    def step_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # the second step of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        training.train(config)
    run = tmp_path / "run"
    assert (
        f"interrupted at epoch 2, step 2; continue with `pedattr train --resume {run}`"
        in capsys.readouterr().out
    )
