"""The training loop: epochs of steps with hooks around them, and one optimisation step.

The loop is detectron2's ``TrainerBase``: :class:`TrainerBase` runs the epochs and steps and
calls each hook (:class:`HookBase`) at fixed points; what a run does besides stepping (the
learning-rate schedule, validation, checkpoints, the run log, state saves, interrupts, the final
test) is a hook (:mod:`pedattr.engine.hooks`). :class:`pedattr.engine.training.Trainer` sets up
what the loop reads and runs one step (:func:`train_step`).
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pedattr.data.dataset import Batch, FailureTracker
from pedattr.engine.distributed import DistributedContext
from pedattr.engine.loss import deep_supervision_loss
from pedattr.engine.state import Progress, TrainingError


class HookBase:
    """A part of the run called at the loop's points; each does nothing unless overridden.

    ``finish`` is called last, whether the run ended (``error`` None) or failed.
    """

    trainer: TrainerBase

    def before_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_step(self) -> None: ...

    def after_epoch(self) -> None: ...

    def after_train(self) -> None: ...

    def finish(self, error: BaseException | None) -> None: ...


class TrainerBase:
    """Epochs of steps, with hooks around them.

    A subclass sets up what the loop reads (the attributes without a value below) and runs one
    step (:meth:`run_step`). The loop keeps the others up to date for the hooks.
    """

    context: DistributedContext
    network: nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: torch.utils.data.DataLoader
    tracker: FailureTracker
    progress: Progress
    max_epochs: int
    hooks: list[HookBase]
    epoch: int = 0  # 0-based epoch in progress
    learning_rate: float = math.nan  # the epoch's base rate (the schedule hook sets it)
    loss: float = math.nan  # the step's loss, averaged over the processes
    stop: bool = False  # whether any process was asked to stop after the step
    stop_requested: list[int]  # the signals that asked this process to stop
    epoch_stats: dict  # the epoch's loss, rate and speed
    phase: str = ""  # the hook point reached last: where an error stopped the run
    report: dict | None = None  # the run's result (the final test hook sets it)

    def register_hooks(self, hooks: list[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
        self.hooks = hooks

    def call_hooks(self, point: str) -> None:
        self.phase = point
        for hook in self.hooks:
            getattr(hook, point)()

    def fit(self) -> dict | None:
        """Train the remaining epochs, then run the ``after_train`` hooks; returns the report."""
        error: BaseException | None = None
        try:
            self.call_hooks("before_train")
            for epoch in range(self.progress.epoch, self.max_epochs):
                self.epoch = epoch
                self.call_hooks("before_epoch")
                self.epoch_stats = self._train_epoch(epoch)
                self.call_hooks("after_epoch")
            self.call_hooks("after_train")
            return self.report
        except BaseException as caught:
            error = caught
            raise
        finally:  # every hook finishes, in order, even if one fails; ``phase`` stays
            with ExitStack() as finishing:
                for hook in reversed(self.hooks):
                    finishing.callback(hook.finish, error)

    def _train_epoch(self, epoch: int) -> dict:
        """The epoch's steps from ``progress.step`` on; returns the epoch's statistics."""
        progress, context = self.progress, self.context
        self.train_loader.batch_sampler.set_epoch(epoch, progress.step)
        self.network.train()
        total, seen, started = 0.0, 0, time.perf_counter()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.max_epochs}",
            disable=not context.is_main,
            leave=False,
            dynamic_ncols=True,
        )
        for batch in bar:
            self.tracker.update(batch)
            if not len(batch.images):
                if context.distributed:
                    raise TrainingError("a batch had no readable image on one process")
                progress.step += 1  # still a batch of the epoch: resume must skip it too
                continue
            self.loss, self.stop = self.agree(self.run_step(batch))
            progress.step += 1
            progress.global_step += 1
            batch_images = len(batch.images) * context.world_size
            total += self.loss * batch_images
            seen += batch_images
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{self.loss:.4f}", img_s=f"{rate:.1f}")
            self.call_hooks("after_step")
        self.tracker.finish()
        elapsed = time.perf_counter() - started
        return {
            "train_loss": total / max(seen, 1),
            "lr": self.learning_rate,
            "images_per_s": seen / elapsed if elapsed > 0 else None,
            "seconds": elapsed,
        }

    def run_step(self, batch: Batch) -> Tensor:
        """One optimisation step on ``batch``; returns its loss (on the CPU)."""
        raise NotImplementedError

    def agree(self, loss: Tensor) -> tuple[float, bool]:
        """The loss averaged over processes and whether any process was asked to stop.

        One all-reduce gives every process the same loss (so the NaN check agrees) and the
        same decision to stop after this step.
        """
        packed = torch.stack([loss.float(), torch.tensor(float(bool(self.stop_requested)))])
        if self.context.distributed:
            packed = packed.to(self.context.device)
            torch.distributed.all_reduce(packed)
            packed[0] /= self.context.world_size
        value, stop = packed.tolist()
        return value, stop > 0

    def say(self, message: str) -> None:
        """Print ``message`` from the main process only (above the progress bar)."""
        if self.context.is_main:
            tqdm.write(message)


def train_step(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    deep_supervision: bool = True,
    part_boxes: Tensor | None = None,
) -> Tensor:
    """One optimisation step with deep supervision; returns the (detached) loss.

    Every branch of the model is supervised by the same labels and the branch losses are
    summed (paper Sec. 3.3). With ``deep_supervision=False`` only the fused logits are
    supervised (Table 1's rows before deep supervision). With ``autocast_dtype`` the forward
    runs in mixed precision while the loss is computed in float32 (in float64 for a float64
    model); ``scaler`` (fp16) scales the loss against underflow. ``part_boxes`` go to a
    rigid-parts model (per-image body parts).
    """
    inputs = {} if part_boxes is None else {"part_boxes": part_boxes}
    with torch.autocast(
        images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
    ):
        output = model(images, **inputs)
    if deep_supervision:
        branch_logits = [_at_least_float32(logits) for logits in output.branch_logits]
        loss = deep_supervision_loss(branch_logits, labels, criterion)
    else:
        loss = criterion(_at_least_float32(output.logits), labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def _at_least_float32(logits: Tensor) -> Tensor:
    """Logits in float32 for the loss, also under autocast; float64 stays float64."""
    return logits if logits.dtype == torch.float64 else logits.float()
