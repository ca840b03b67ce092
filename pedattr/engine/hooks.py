"""What a training run does besides its steps, as hooks of the loop (:mod:`pedattr.engine.trainer`).

:func:`build_hooks` builds them from the configuration, in the order they are called at each
point of the loop:

- :class:`LearningRateSchedule` (``optim``): before each epoch, the step-decayed rate;
- :class:`DivergenceStop` (``run.out``): after each step, stops the run on a NaN or infinite loss;
- :class:`Validation` (``data``, ``run.select_metric``): after each epoch, evaluates the
  validation split and keeps the best epoch;
- :class:`RunLog` (``run.tensorboard``): an epoch's line in ``log.jsonl`` (and TensorBoard);
- :class:`Checkpoints` (``run.out``): ``last.safetensors``, and ``best.safetensors`` when the
  epoch is the best so far;
- :class:`StateSaves` (``run.checkpoint_every``): ``state.safetensors`` every so many steps, when
  the run is asked to stop, and at each epoch's end;
- :class:`InterruptHandling`: Ctrl-C and SIGTERM stop the run between steps (every process at
  the same step), with its state saved;
- :class:`FinalTest`: after the last epoch, the selected checkpoint on the test split, then
  ``report.json``.

Hooks read and write the trainer's parts (:class:`pedattr.engine.training.Trainer`); only the
main process of a distributed job writes files.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from pedattr.checkpoint.format import load_checkpoint, save_checkpoint, write_checkpoint
from pedattr.engine.config import OptimSection, TrainConfig
from pedattr.engine.distributed import barrier, broadcast_object
from pedattr.engine.state import RECIPE_FILE, RunPaths, TrainingDiverged
from pedattr.engine.trainer import HookBase
from pedattr.errors import Interrupted
from pedattr.evaluation.metrics import format_metrics_table
from pedattr.utils.io import append_text, atomic_write_text
from pedattr.utils.json import json_safe


def build_hooks(
    config: TrainConfig,
    *,
    val_split: str | None,
    has_test: bool,
    attribute_names: list[str],
) -> list[HookBase]:
    """The run's hooks, each from its part of ``config``, in the order they are called."""
    paths = RunPaths(Path(config.run.out))
    validation = Validation(val_split, config.run.select_metric)
    log = RunLog(paths, tensorboard=config.run.tensorboard, validation=validation)
    return [
        LearningRateSchedule(config.optim),
        DivergenceStop(paths),
        validation,
        log,
        Checkpoints(paths, config, validation),
        StateSaves(config.run.checkpoint_every),
        InterruptHandling(paths.root),
        FinalTest(
            paths,
            log,
            has_test=has_test,
            val_split=val_split,
            select_metric=config.run.select_metric,
            attribute_names=attribute_names,
        ),
    ]


class LearningRateSchedule(HookBase):
    """Step decay: ``optim.lr`` times ``optim.lr_gamma`` every ``optim.lr_step`` epochs, times
    each parameter group's ``lr_scale``."""

    def __init__(self, optim: OptimSection) -> None:
        self.optim = optim

    def rate(self, epoch: int) -> float:
        return self.optim.lr * self.optim.lr_gamma ** (epoch // self.optim.lr_step)

    def before_epoch(self) -> None:
        trainer = self.trainer
        trainer.learning_rate = self.rate(trainer.epoch)
        for group in trainer.optimizer.param_groups:
            group["lr"] = trainer.learning_rate * group["lr_scale"]


class DivergenceStop(HookBase):
    """A NaN or infinite loss stops the run (on every process: the loss is agreed on), before
    the step's state could be saved; the message says what is left to continue from."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths

    def after_step(self) -> None:
        if not math.isfinite(self.trainer.loss):
            raise TrainingDiverged(self.message(self.trainer.loss))

    def message(self, value: float) -> str:
        """What went wrong and what is on disk to continue from (nothing, early in a run)."""
        paths, trainer = self.paths, self.trainer
        where = (
            f"the loss became {value} at epoch {trainer.epoch + 1}, step "
            f"{trainer.progress.step}; training stopped"
        )
        remedy = "lower optim.lr or set run.amp=none"
        if not paths.state.is_file():
            recipe = paths.root.parent / RECIPE_FILE
            if recipe.is_file():  # a recipe's stage: its --resume starts the stage afresh
                return (
                    f"{where} before any state was saved: {remedy} in {recipe}, then "
                    f"`pedattr train --resume {recipe.parent}` starts this stage afresh."
                )
            return (
                f"{where} before any state was saved, so there is nothing to resume: {remedy} "
                f"and run the original command again (it starts {paths.root} afresh)."
            )
        kept = [path.name for path in (paths.best, paths.last) if path.is_file()]
        also = f" (and {' and '.join(kept)})" if kept else ""
        return (
            f"{where}. The last good state ({paths.state}){also} is intact: {remedy} in "
            f"{paths.config}, then `pedattr train --resume {paths.root}`."
        )


class Validation(HookBase):
    """Evaluates the validation split after each epoch and keeps the best epoch by
    ``select_metric``; without a validation split the last epoch is the selected one."""

    def __init__(self, split: str | None, select_metric: str) -> None:
        self.split = split
        self.select_metric = select_metric
        self.metrics: dict | None = None  # the epoch's validation summary (main process)
        self.improved = True  # whether the epoch is the best so far

    def after_epoch(self) -> None:
        trainer, progress, epoch = self.trainer, self.trainer.progress, self.trainer.epoch
        val = trainer.evaluate(self.split) if self.split else None
        self.metrics, self.improved = None, True
        if not trainer.context.is_main:
            return
        loss = f"epoch {epoch + 1}: loss {trainer.epoch_stats['train_loss']:.4f}"
        if val is None:
            progress.best_epoch = epoch + 1
            trainer.say(loss)
            return
        raw = val.pop("_raw")
        score = val[self.select_metric]
        self.metrics = val
        self.improved = progress.best_score is None or score > progress.best_score
        if self.improved:
            progress.best_score, progress.best_epoch = score, epoch + 1
        trainer.say(
            f"{loss}, val {format_metrics_table(raw).splitlines()[1].strip()} "
            f"(mA Acc Prec Rec F1){' *best' if self.improved else ''}"
        )


class RunLog(HookBase):
    """Each epoch's line in ``log.jsonl`` (and TensorBoard scalars when it is installed)."""

    def __init__(self, paths: RunPaths, *, tensorboard: bool, validation: Validation) -> None:
        self.paths = paths
        self.tensorboard = tensorboard
        self.validation = validation
        self.writer = None

    def before_train(self) -> None:
        if self.tensorboard and self.trainer.context.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.writer = SummaryWriter(str(self.paths.root / "tensorboard"))

    def after_epoch(self) -> None:
        trainer = self.trainer
        if trainer.context.is_main:
            record = {"event": "epoch", "epoch": trainer.epoch + 1, **trainer.epoch_stats}
            if self.validation.metrics is not None:
                record["val"] = self.validation.metrics
            self.write(record, trainer.progress.global_step)

    def write(self, record: dict, step: int) -> None:
        append_text(self.paths.log, json.dumps(json_safe(record)) + "\n")
        if self.writer is not None:
            for key, value in _scalars(record):
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def finish(self, error: BaseException | None) -> None:
        if self.writer is not None:
            self.writer.close()


def _scalars(record: dict, prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            yield f"{prefix}{key}", float(value)


class Checkpoints(HookBase):
    """``last.safetensors`` after each epoch, ``best.safetensors`` when it is the best so far;
    each carries the epoch, its validation metrics and the run's configuration."""

    def __init__(self, paths: RunPaths, config: TrainConfig, validation: Validation) -> None:
        self.paths = paths
        self.config = config
        self.validation = validation

    def after_epoch(self) -> None:
        trainer = self.trainer
        if not trainer.context.is_main:
            return
        metrics = {"epoch": trainer.epoch + 1, "val": self.validation.metrics}
        self.save(self.paths.last, metrics)
        if self.validation.improved:
            self.save(self.paths.best, metrics)

    def save(self, path: Path, metrics: dict) -> None:
        extra = {"run": self.config.to_dict()}
        save_checkpoint(path, self.trainer.model, metrics=metrics, extra=extra)


class StateSaves(HookBase):
    """``state.safetensors``: every ``every`` steps (0: never), after the step at which the run
    is asked to stop, and at each epoch's end (after its log line and checkpoints)."""

    def __init__(self, every: int) -> None:
        self.every = every

    def after_step(self) -> None:
        trainer = self.trainer
        if trainer.stop or (self.every and trainer.progress.global_step % self.every == 0):
            trainer.save_state()

    def after_epoch(self) -> None:
        trainer = self.trainer
        trainer.progress.epoch, trainer.progress.step = trainer.epoch + 1, 0
        trainer.save_state()
        barrier(trainer.context)


class InterruptHandling(HookBase):
    """Ctrl-C and SIGTERM stop the run after the current step, with its state saved, so that
    ``pedattr train --resume`` continues exactly where it stopped.

    Every process stops at the same step: the loop's all-reduce carries each process's
    request (:meth:`pedattr.engine.trainer.TrainerBase.agree`). During the final test, which
    is not resumable part-way, a signal stops the run at once.
    """

    def __init__(self, root: Path) -> None:
        self.resume = f"`pedattr train --resume {root}`"
        self.handlers = ExitStack()

    def before_train(self) -> None:
        self.trainer.stop_requested = self.handlers.enter_context(deferred_interrupts())

    def after_step(self) -> None:
        if self.trainer.stop:  # StateSaves saved the step
            barrier(self.trainer.context)  # nobody leaves before the main process has saved
            raise Interrupted(self.stop_signal())

    def after_epoch(self) -> None:
        # A signal during the validation: the epoch's state is saved, stop here.
        trainer = self.trainer
        if trainer.agree(torch.zeros(()))[1]:
            trainer.say(f"interrupted after epoch {trainer.epoch + 1}; continue with {self.resume}")
            raise Interrupted(self.stop_signal())

    def after_train(self) -> None:
        self.handlers.close()
        self.handlers.enter_context(immediate_interrupts())

    def finish(self, error: BaseException | None) -> None:
        trainer = self.trainer
        if isinstance(error, KeyboardInterrupt) and trainer.phase in ("before_epoch", "after_step"):
            trainer.say(
                f"interrupted at epoch {trainer.epoch + 1}, step {trainer.progress.step}; "
                f"continue with {self.resume}"
            )
        elif isinstance(error, KeyboardInterrupt) and trainer.phase == "after_train":
            trainer.say(
                f"interrupted during the final test; every epoch is saved, {self.resume} "
                "runs the test again"
            )
        self.handlers.close()

    def stop_signal(self) -> int:
        """The signal that asked this process to stop (another process's: SIGINT)."""
        requested = self.trainer.stop_requested
        return requested[0] if requested else signal.SIGINT


class FinalTest(HookBase):
    """Evaluates the selected checkpoint once on the test split (when the dataset has one),
    adds its metrics to the log and to ``best.safetensors``, and writes ``report.json`` last."""

    def __init__(
        self,
        paths: RunPaths,
        log: RunLog,
        *,
        has_test: bool,
        val_split: str | None,
        select_metric: str,
        attribute_names: list[str],
    ) -> None:
        self.paths = paths
        self.log = log
        self.has_test = has_test
        self.val_split = val_split
        self.select_metric = select_metric
        self.attribute_names = attribute_names

    def after_train(self) -> None:
        trainer, paths = self.trainer, self.paths
        best = load_checkpoint(paths.best) if trainer.context.is_main else None
        state = broadcast_object(None if best is None else best.state_dict, trainer.context)
        trainer.model.load_state_dict(state)
        test = trainer.evaluate("test") if self.has_test else None
        if not trainer.context.is_main:
            return
        selected = trainer.progress.best_epoch
        if test is not None:
            raw = test.pop("_raw")
            trainer.say(
                f"test, epoch {selected} selected on "
                f"{'validation' if self.val_split else 'the last epoch'}:\n"
                + format_metrics_table(raw, self.attribute_names)
            )
            self.log.write({"event": "test", "epoch": selected, "test": test}, 0)
        report = {
            "run": str(paths.root),
            "selected_epoch": selected,
            "selected_by": f"val {self.select_metric}" if self.val_split else "last",
            "val": best.metrics.get("val"),
            "test": test,
            "best_checkpoint": str(paths.best),
            "last_checkpoint": str(paths.last),
        }
        best.metrics = {**best.metrics, "test": test}
        write_checkpoint(paths.best, best)
        atomic_write_text(paths.report, json.dumps(json_safe(report), indent=2))
        trainer.report = report


# --- signals ------------------------------------------------------------------------------------

#: A second signal within this many seconds of the first is the same request, delivered twice
#: (a terminal's Ctrl-C reaches every process and torchrun forwards it again).
REPEAT_SIGNAL_SECONDS = 2.0


@contextmanager
def deferred_interrupts() -> Iterator[list[int]]:
    """Catch Ctrl-C and SIGTERM so that the run stops between steps, not inside one.

    The first signal is recorded in the yielded list, which the training loop checks after
    every step; a repeat within :data:`REPEAT_SIGNAL_SECONDS` is ignored, a later one
    interrupts at once (the state saved last stays on disk).
    """
    requested: list[int] = []
    first_at: list[float] = []

    def handler(signum, frame):  # noqa: ARG001
        now = time.monotonic()
        if not requested:
            requested.append(signum)
            first_at.append(now)
            tqdm.write("stopping after this step and saving the state (signal again to quit now)")
        elif now - first_at[0] > REPEAT_SIGNAL_SECONDS:
            raise Interrupted(signum)

    with _handling_signals(handler):
        yield requested


@contextmanager
def immediate_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise :class:`Interrupted` at once (where nothing needs saving)."""

    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted(signum)

    with _handling_signals(handler):
        yield


@contextmanager
def _handling_signals(handler) -> Iterator[None]:
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(number, handler) for number in signals]
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for number, old in zip(signals, previous, strict=True):
            signal.signal(number, old)
