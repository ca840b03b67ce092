"""``pedattr train``: the paper's recipe, honest model selection, safe checkpoints, exact resume.

A run folder (``run.out``) holds:

``config.yaml``
    The resolved configuration the run was started with (``--resume`` reads it back).
``log.jsonl``
    One JSON object per line: every epoch's loss, learning rate, speed and validation metrics,
    then the test metrics of the selected checkpoint.
``best.safetensors`` / ``last.safetensors``
    Model checkpoints (weights plus JSON metadata, :mod:`pedattr.checkpoint.format`): the epoch
    with the best validation ``run.select_metric``, and the latest epoch.
``state.safetensors``
    Everything needed to continue exactly: model and optimizer tensors, the random state, the
    epoch and step reached, the best score so far. Written at each epoch's end, every
    ``run.checkpoint_every`` steps, and when the run is interrupted (Ctrl-C, SIGTERM).
``val_split.txt``
    When the dataset has no validation split (RAP v1): the training images held out for it.
``report.json``
    Written last: the selected epoch, its validation metrics and the test metrics.
``.pedattr.lock``
    The folder's lock (:mod:`pedattr.engine.runfolder`), held while a process writes the folder:
    a second run started into it is refused. It names the holder.

Model selection uses the validation split only; the test split is evaluated once, at the end,
with the selected checkpoint. Every file is written atomically (temporary file, then rename),
so an interruption never leaves a half-written checkpoint behind; temporary files a kill left
are removed at the next start. An epoch's log line is written before its state, and
``--resume`` drops the lines written after the saved state, so the log lists each epoch once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from torch import Tensor, nn
from tqdm import tqdm

from pedattr.checkpoint.format import (
    load_checkpoint,
    save_checkpoint,
    write_checkpoint,
    write_safetensors,
)
from pedattr.data.annotations import positive_ratio
from pedattr.data.dataset import FailureTracker, build_loader
from pedattr.data.description import DatasetDescription, carve_validation, load_description
from pedattr.engine.config import (
    Stage,
    TrainConfig,
    apply_overrides,
    architecture,
    check_values,
    expand_stages,
    read_config_file,
)
from pedattr.engine.distributed import (
    DistributedContext,
    all_gather_objects,
    barrier,
    broadcast_object,
    convert_sync_batchnorm,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from pedattr.engine.loss import WeightedBCELoss
from pedattr.engine.runfolder import locked_run_folder
from pedattr.engine.trainer import train_step
from pedattr.errors import Interrupted, RunFailed
from pedattr.evaluation.evaluate import (
    Predictions,
    check_attributes,
    predict_loader,
    read_part_regions,
)
from pedattr.evaluation.metrics import compute_metrics, format_metrics_table
from pedattr.models.alm import AttributeLocalization
from pedattr.models.model import AttributeModel, ModelConfig, build_from_config
from pedattr.models.weight_files import state_dict_mismatch
from pedattr.utils.io import (
    append_text,
    atomic_write_text,
    make_folder,
    remove_temporaries,
)
from pedattr.utils.json import json_safe

logger = logging.getLogger(__name__)

STATE_FORMAT = "pedattr-train-state"
STATE_VERSION = 1
STATE_KEY = "pedattr-state"
SUMMARY_KEYS = ("mA", "accuracy", "precision", "recall", "f1")


class TrainingError(RunFailed):
    """A run that cannot go on; the message says why and what is left on disk."""


class TrainingSetupError(TrainingError, ValueError):
    """A run that cannot start: a setting, file or folder is not what it should be. It is a
    ValueError too, so that ``pedattr`` reports it as bad input (exit status 2)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def state(self) -> Path:
        return self.root / "state.safetensors"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def val_split(self) -> Path:
        return self.root / "val_split.txt"

    def files(self) -> list[Path]:
        """Every file the run writes (atomically, see :func:`pedattr.utils.io.atomic_write`)."""
        return [
            self.config,
            self.log,
            self.state,
            self.best,
            self.last,
            self.report,
            self.val_split,
        ]


@contextmanager
def claimed_folder(root: Path, names: list[str], *, main: bool = True) -> Iterator[None]:
    """Hold ``root``'s lock (:mod:`pedattr.engine.runfolder`) for the block, after removing the
    temporary files of ``names`` that a killed save left there. Only the main process of a
    distributed job (``main``) locks and writes."""
    with locked_run_folder(root, enabled=main):
        if main:
            for tmp in remove_temporaries(root, names):
                logger.info("removed %s, left by an interrupted save", tmp)
        yield


# --- data ---------------------------------------------------------------------------------------


def require_description(root: str | None) -> DatasetDescription:
    """The prepared dataset ``root``, or one clear error when there is none."""
    if root is None:
        raise TrainingSetupError("no dataset given: set data.root (or --data) to a prepared folder")
    return load_description(root)


def training_weights(description: DatasetDescription, split: str) -> Tensor:
    """Loss weights' positive ratios from the samples actually trained on."""
    indices = description.split_indices(split)
    ratio = positive_ratio(description.labels[indices], description.attribute_names)
    return torch.as_tensor(ratio, dtype=torch.float32)


# --- models -------------------------------------------------------------------------------------


def model_config(config: TrainConfig, attribute_names: list[str]) -> ModelConfig:
    return ModelConfig(attribute_names=tuple(attribute_names), **architecture(config.model))


def initialize_from_checkpoint(model: AttributeModel, path: str | Path) -> list[str]:
    """Copy a trained model's backbone (and global classifier) into ``model``.

    This is the two-stage warm-up the authors reported using after the paper: train the plain
    baseline first, then start ALM from its backbone. The global classifier is copied too when
    the attributes are the same, since ALM's global branch is the baseline's head. Returns the
    copied keys.
    """
    source = load_checkpoint(path)
    if source.config.backbone != model.config.backbone:
        raise TrainingSetupError(
            f"{path}: its backbone is {source.config.backbone!r}, the model's is "
            f"{model.config.backbone!r}; --init-from needs the same backbone"
        )
    prefixes = ["backbone."]
    if source.config.attribute_names == model.config.attribute_names:
        prefixes.append("global_fc.")
    target = model.state_dict()
    copied = {k: v for k, v in source.state_dict.items() if k.startswith(tuple(prefixes))}
    missing = [k for k in target if k.startswith("backbone.") and k not in copied]
    wrong = [k for k, v in copied.items() if k not in target or target[k].shape != v.shape]
    if missing or wrong:
        raise TrainingSetupError(
            f"{path}: backbone weights do not fit the model (missing: {missing[:3]}, "
            f"unexpected or misshapen: {wrong[:3]})"
        )
    model.load_state_dict(copied, strict=False)
    return sorted(copied)


# --- resumable state ----------------------------------------------------------------------------


def parameter_groups(model: nn.Module, box_lr_scale: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups, each with the ``lr_scale`` the schedule multiplies by.

    With ``box_lr_scale`` other than 1 the ALM box regressors (eq. 3's Linear(C, 4), or
    Linear(C, 2) with evidence centres) get a group of their own, as spatial-transformer
    localisation nets are often trained with a lower rate; otherwise there is one group, so
    states saved without the option resume unchanged.
    """
    box_params = [
        param
        for module in model.modules()
        if isinstance(module, AttributeLocalization)
        for param in (module.box_weight, module.box_bias)
    ]
    if box_lr_scale == 1.0 or not box_params:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    box_ids = {id(param) for param in box_params}
    others = [param for param in model.parameters() if id(param) not in box_ids]
    return [
        {"params": others, "lr_scale": 1.0},
        {"params": box_params, "lr_scale": box_lr_scale},
    ]


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state as flat tensors plus JSON (safetensors holds no pickles)."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, entries in state_dict["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param_id}.{name}"] = value
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_dict(tensors: dict[str, Tensor], meta: dict) -> dict:
    """The inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for key, value in meta["scalars"].items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


@dataclass
class Progress:
    """Where the run stands: the next step to take, and the best epoch so far."""

    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # optimizer steps done in that epoch
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None  # 1-based, as logged


def save_state(
    path: Path,
    model: AttributeModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    progress: Progress,
    config: TrainConfig,
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.cpu"] = torch.get_rng_state()
    meta = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "progress": dataclasses.asdict(progress),
        "optimizer": optim_meta,
        "scaler": None if scaler is None else scaler.state_dict(),
        "config": config.to_dict(),
        "attribute_names": list(model.attribute_names),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {STATE_KEY: json.dumps(meta)}
    write_safetensors(path, tensors, header)


def load_state(
    path: Path,
    model: AttributeModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
) -> Progress:
    """Restore what :func:`save_state` wrote; returns where to continue.

    Raises:
        TrainingSetupError: the file is unreadable, or a part is missing, extra or of the
            wrong shape; the message names the file and the part.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = json.loads((handle.metadata() or {})[STATE_KEY])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise TrainingSetupError(f"{path}: not a readable training state ({err})") from err
    if (
        not isinstance(meta, dict)
        or meta.get("format") != STATE_FORMAT
        or not isinstance(meta.get("format_version", 0), int)
        or meta.get("format_version", 0) > STATE_VERSION
    ):
        raise TrainingSetupError(f"{path}: not a training state this pedattr understands")
    problem = _state_meta_problem(meta)
    if problem:
        raise TrainingSetupError(f"{path}: not a usable training state: {problem}")
    check_attributes(
        meta["attribute_names"],
        model.attribute_names,
        model_source=str(path),
        data_source="the dataset",
    )
    saved_groups, groups = len(meta["optimizer"]["param_groups"]), len(optimizer.param_groups)
    if saved_groups != groups:  # checked here: torch's own error does not say what to change
        raise TrainingSetupError(
            f"{path}: saved with {saved_groups} optimizer parameter group(s), this run has "
            f"{groups}; optim.box_lr_scale cannot switch between 1 and another value on resume"
        )
    # The optimizer's state is per parameter, numbered through the groups in order.
    params = [param for group in optimizer.param_groups for param in group["params"]]
    problem = _state_tensor_problem(tensors, model, params)
    if problem:
        raise TrainingSetupError(f"{path}: not a usable training state: {problem}")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    optim = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
    try:  # what the checks above cannot foresee still gets one line naming the part
        part = "optimizer"
        optimizer.load_state_dict(optimizer_state_dict(optim, meta["optimizer"]))
        part = "scaler"
        if scaler is not None and meta["scaler"]:
            scaler.load_state_dict(meta["scaler"])
        part = "rng.cpu"
        torch.set_rng_state(tensors["rng.cpu"])
        part = "progress"
        return Progress(**meta["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingSetupError(
            f"{path}: not a usable training state: part {part} ({detail})"
        ) from err


#: The JSON parts of a training state and their types.
_STATE_PARTS = {
    "progress": dict,
    "optimizer": dict,
    "attribute_names": list,
    "scaler": dict | None,
}


def _state_meta_problem(meta: dict) -> str | None:
    """What is missing, extra or of the wrong type in a training state's JSON part."""
    for key, kind in _STATE_PARTS.items():
        if key not in meta:
            return f"part {key} is missing"
        if not isinstance(meta[key], kind):
            return f"part {key} is not a JSON {'list' if kind is list else 'object'}"
    expected = {f.name for f in dataclasses.fields(Progress)}
    saved = set(meta["progress"])
    if saved != expected:
        missing, extra = sorted(expected - saved), sorted(saved - expected)
        return f"part progress lacks {missing} or has extra {extra}"
    for key, value in meta["progress"].items():
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        optional = key.startswith("best_") and value is None
        number = key == "best_score" and isinstance(value, float)
        if not (whole or optional or number):
            return f"part progress.{key} is {json.dumps(value)[:40]}, not a count"
    optimizer = meta["optimizer"]
    if not isinstance(optimizer.get("param_groups"), list):
        return "part optimizer.param_groups is missing or not a list"
    if not isinstance(optimizer.get("scalars"), dict):
        return "part optimizer.scalars is missing or not an object"
    return None


def _state_tensor_problem(
    tensors: dict[str, Tensor], model: AttributeModel, params: list[nn.Parameter]
) -> str | None:
    """A missing, extra or misshapen tensor of a training state, against the model and the
    optimizer's parameters (optimizer state is per parameter, by index: a 0-d step count or
    a tensor of the parameter's shape)."""
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    problem = state_dict_mismatch(model.state_dict(), model_state)
    if problem:
        return f"model {problem}"
    if "rng.cpu" not in tensors:
        return "tensor rng.cpu is missing"
    for key, tensor in tensors.items():
        if key.startswith("model.") or key == "rng.cpu":
            continue
        kind, index, name = (key.split(".", 2) + ["", ""])[:3]
        if kind != "optimizer" or not index.isdigit() or int(index) >= len(params) or not name:
            return f"tensor {key} is not part of a training state for this model"
        shape = tuple(params[int(index)].shape)
        if tensor.dim() and tuple(tensor.shape) != shape:
            return f"tensor {key} has shape {list(tensor.shape)}, expected {list(shape)}"
    return None


# --- logging ------------------------------------------------------------------------------------


class RunLog:
    """JSON lines in ``log.jsonl``, and TensorBoard scalars when it is installed."""

    def __init__(self, paths: RunPaths, tensorboard: bool) -> None:
        self.path = paths.log
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.writer = SummaryWriter(str(paths.root / "tensorboard"))

    def write(self, record: dict, step: int) -> None:
        append_text(self.path, json.dumps(json_safe(record)) + "\n")
        if self.writer is not None:
            for key, value in _scalars(record):
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def truncate_log(path: Path, epochs_done: int) -> int:
    """Keep in ``log.jsonl`` only the records of the epochs a saved state holds; returns how
    many lines were dropped.

    An epoch's line is written before its state (so that no finished epoch goes unrecorded), and
    the test's line before the report: a run killed between the two repeats that epoch or the
    test when resumed. Dropping what the state does not hold (and a line cut short by the kill)
    makes the log list each epoch once.
    """
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _record_epoch(line) in range(1, epochs_done + 1)]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _record_epoch(line: str) -> int | None:
    """The epoch of an epoch record, None for any other line (test records, cut lines)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("event") != "epoch":
        return None
    epoch = record.get("epoch")
    return epoch if isinstance(epoch, int) else None


def _scalars(record: dict, prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            yield f"{prefix}{key}", float(value)


def metric_summary(metrics: dict, attribute_names: list[str]) -> dict:
    """The paper's five numbers plus per-attribute mA keyed by name."""
    summary = {key: metrics[key] for key in SUMMARY_KEYS}
    summary["per_attribute_mA"] = dict(
        zip(attribute_names, metrics["per_attribute_mA"], strict=True)
    )
    summary["num_samples"] = metrics["num_samples"]
    return summary


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


# --- the run ------------------------------------------------------------------------------------


class Trainer:
    """One training run (one stage of a recipe) in one process of a possibly distributed job."""

    def __init__(
        self, config: TrainConfig, context: DistributedContext, *, resume: bool = False
    ) -> None:
        self.config = config
        self.context = context
        self.paths = RunPaths(Path(config.run.out))
        self.resume = resume
        self.description, self.val_split, carved = self._splits(
            require_description(config.data.root)
        )
        self.attribute_names = self.description.attribute_names
        try:
            self.part_regions = read_part_regions(
                config.data.part_regions, model_config(config, self.attribute_names)
            )
        except (OSError, ValueError) as err:
            raise TrainingSetupError(f"data.part_regions: {err}") from err
        # The folder's lock, held from here until fit() ends: one writer per run folder.
        self._folder = ExitStack()
        names = [path.name for path in self.paths.files()]
        self._folder.enter_context(claimed_folder(self.paths.root, names, main=context.is_main))
        try:
            self._check_run_folder(carved)
            self._set_up()
        except BaseException:
            self.release()
            raise

    def _set_up(self) -> None:
        config, context, resume = self.config, self.context, self.resume
        self.model = self._build_model()
        self.autocast_dtype = self._autocast_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if config.run.amp == "fp16" else None
        self.criterion = WeightedBCELoss(
            training_weights(self.description, config.data.train_split),
            weighting=config.loss.weighting,
        ).to(context.device)
        groups = parameter_groups(self.model, config.optim.box_lr_scale)
        self.optimizer = torch.optim.Adam(
            groups,
            lr=config.optim.lr,
            betas=config.optim.betas,
            weight_decay=config.optim.weight_decay,
        )
        self.progress = Progress()
        self.stop_requested: list[int] = []
        if resume:
            self.progress = self._load_state(groups)
            if context.is_main:
                dropped = truncate_log(self.paths.log, self.progress.epoch)
                if dropped:
                    self._say(
                        f"{self.paths.log}: dropped {dropped} line(s) written after the saved "
                        "state (the run does that work again)"
                    )
        self.network = wrap_ddp(self.model, context)
        self.train_loader = build_loader(
            self.description,
            config.data.train_split,
            batch_size=config.optim.batch_size,
            train=True,
            workers=config.data.workers,
            input_size=config.model.input_size,
            seed=config.run.seed,
            rank=context.rank,
            world_size=context.world_size,
            part_regions=self.part_regions,
            pin_memory=context.device.type == "cuda",
        )
        self.tracker = FailureTracker(config.data.max_failed_fraction)

    def release(self) -> None:
        """Let go of the run folder (fit() does when it ends)."""
        self._folder.close()

    # -- setup --

    def _splits(
        self, description: DatasetDescription
    ) -> tuple[DatasetDescription, str | None, list[str]]:
        """The description to train on, its validation split (None: none) and carved names."""
        data = self.config.data
        if data.train_split == "trainval":
            return description, None, []
        if "val" in set(description.splits.tolist()):
            return description, "val", []
        if not 0 < data.val_fraction < 1:
            raise TrainingSetupError(
                f"data.val_fraction must lie in (0, 1), got {data.val_fraction}"
            )
        description, carved = carve_validation(description, data.val_fraction, data.val_seed)
        return description, "val", carved

    def _check_run_folder(self, carved: list[str]) -> None:
        paths = self.paths
        if self.resume:
            if not paths.state.is_file():
                raise TrainingSetupError(
                    f"{paths.root}: no state.safetensors to resume from: the run stopped before "
                    "saving any, so there is nothing to continue; run the original command "
                    "again (without --resume) to start it"
                )
            return
        # A log without a state holds only epochs that no state kept (the run was stopped
        # before it saved any): such a folder is started afresh, as the message above says.
        if paths.state.exists():
            raise TrainingSetupError(
                f"{paths.root} already holds a run; continue it with "
                f"`pedattr train --resume {paths.root}` or set run.out to a new folder"
            )
        barrier(self.context)  # every process checked before the main one writes
        if self.context.is_main:
            make_folder(paths.root)  # a file in the way is named, not a FileExistsError
            if truncate_log(paths.log, 0):
                self._say(f"{paths.log}: its epochs were never saved in a state; starting afresh")
            atomic_write_text(paths.config, self.config.to_yaml())
            if carved:
                atomic_write_text(paths.val_split, "\n".join(carved) + "\n")

    def _build_model(self) -> AttributeModel:
        config, context = self.config, self.context
        torch.manual_seed(config.run.seed)  # the same initial weights on every process
        model = build_from_config(
            model_config(config, self.attribute_names), pretrained=config.model.pretrained
        )
        if config.run.init_from and not self.resume:
            copied = initialize_from_checkpoint(model, config.run.init_from)
            self._say(f"initialised {len(copied)} tensors from {config.run.init_from}")
        elif config.model.pretrained is None and not self.resume:
            self._say(
                f"note: model.pretrained is not set, so the {config.model.backbone} backbone "
                "starts from random weights (the paper starts from ImageNet weights)"
            )
        if config.run.sync_bn:
            model = convert_sync_batchnorm(model, context)
        model = model.to(context.device)
        if config.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _autocast_dtype(self) -> torch.dtype | None:
        amp, device = self.config.run.amp, self.context.device
        if amp == "none":
            return None
        if amp == "fp16" and device.type != "cuda":
            raise TrainingSetupError("run.amp=fp16 needs CUDA; use bf16 or none on the CPU")
        return torch.float16 if amp == "fp16" else torch.bfloat16

    def _say(self, message: str) -> None:
        if self.context.is_main:
            tqdm.write(message)

    # -- training --

    def _load_state(self, groups: list[dict]) -> Progress:
        """Resume; the rate multipliers come from the run's (possibly edited) configuration."""
        progress = load_state(self.paths.state, self.model, self.optimizer, self.scaler)
        for group, wanted in zip(self.optimizer.param_groups, groups, strict=True):
            group["lr_scale"] = wanted["lr_scale"]  # states saved before the option lack it
        return progress

    def _learning_rate(self, epoch: int) -> float:
        optim = self.config.optim
        return optim.lr * optim.lr_gamma ** (epoch // optim.lr_step)

    def _save_state(self) -> None:
        if self.context.is_main:
            save_state(
                self.paths.state,
                self.model,
                self.optimizer,
                self.scaler,
                self.progress,
                self.config,
            )

    def _diverged(self, value: float, epoch: int) -> str:
        """What went wrong and what is on disk to continue from (nothing, early in a run)."""
        paths = self.paths
        where = (
            f"the loss became {value} at epoch {epoch + 1}, step {self.progress.step + 1}; "
            "training stopped"
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

    def _stop_signal(self) -> int:
        """The signal that asked this process to stop (another process's: SIGINT)."""
        return self.stop_requested[0] if self.stop_requested else signal.SIGINT

    def _stop_agreed(self) -> bool:
        """Whether any process was asked to stop (between epochs, where no loss is at hand)."""
        return self._agree(torch.zeros(()))[1]

    def _agree(self, loss: Tensor) -> tuple[float, bool]:
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

    def _train_epoch(self, epoch: int) -> dict:
        config, progress, device = self.config, self.progress, self.context.device
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate(epoch) * group["lr_scale"]
        self.train_loader.batch_sampler.set_epoch(epoch, progress.step)
        self.network.train()
        total, seen, started = 0.0, 0, time.perf_counter()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{config.optim.epochs}",
            disable=not self.context.is_main,
            leave=False,
            dynamic_ncols=True,
        )
        for batch in bar:
            self.tracker.update(batch)
            if not len(batch.images):
                if self.context.distributed:
                    raise TrainingError("a batch had no readable image on one process")
                progress.step += 1  # still a batch of the epoch: resume must skip it too
                continue
            images = batch.images.to(device, non_blocking=True)
            if config.run.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = batch.labels.to(device, non_blocking=True)
            part_boxes = None if batch.part_boxes is None else batch.part_boxes.to(device)
            loss = train_step(
                self.network,
                images,
                labels,
                self.optimizer,
                self.criterion,
                autocast_dtype=self.autocast_dtype,
                scaler=self.scaler,
                deep_supervision=config.loss.deep_supervision,
                part_boxes=part_boxes,
            )
            value, stop = self._agree(loss.cpu())
            if not math.isfinite(value):
                raise TrainingDiverged(self._diverged(value, epoch))
            progress.step += 1
            progress.global_step += 1
            batch_images = len(images) * self.context.world_size
            total += value * batch_images
            seen += batch_images
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.1f}")
            every = config.run.checkpoint_every
            if stop or (every and progress.global_step % every == 0):
                self._save_state()
            if stop:
                barrier(self.context)  # nobody leaves before the main process has saved
                raise Interrupted(self._stop_signal())
        self.tracker.finish()
        elapsed = time.perf_counter() - started
        return {
            "train_loss": total / max(seen, 1),
            "lr": self._learning_rate(epoch),
            "images_per_s": seen / elapsed if elapsed > 0 else None,
            "seconds": elapsed,
        }

    # -- evaluation --

    def predict(self, split: str) -> Predictions | None:
        """Every process predicts its shard; the main process gets them all, in order."""
        loader = build_loader(
            self.description,
            split,
            batch_size=self.config.run.eval_batch_size,
            train=False,
            workers=self.config.data.workers,
            input_size=self.config.model.input_size,
            rank=self.context.rank,
            world_size=self.context.world_size,
            pin_memory=self.context.device.type == "cuda",
            part_regions=self.part_regions,
        )
        shard = predict_loader(
            self.model,
            loader,
            device=self.context.device,
            tracker=FailureTracker(self.config.data.max_failed_fraction),
            autocast_dtype=self.autocast_dtype,
            description=split,
        )
        shards = all_gather_objects(shard, self.context)
        if not self.context.is_main:
            return None
        return Predictions.concatenate(shards).sorted_by_index()

    def evaluate(self, split: str) -> dict | None:
        predictions = self.predict(split)
        if predictions is None:
            return None
        metrics = compute_metrics(predictions.labels, predictions.probs)
        return metric_summary(metrics, self.attribute_names) | {"_raw": metrics}

    # -- checkpoints --

    def _save_checkpoint(self, path: Path, metrics: dict) -> None:
        save_checkpoint(
            path,
            self.model,
            metrics=metrics,
            extra={"run": self.config.to_dict()},
        )

    def _end_of_epoch(self, epoch: int, train: dict, log: RunLog | None) -> None:
        progress = self.progress
        val = self.evaluate(self.val_split) if self.val_split else None
        if self.context.is_main:
            record = {"event": "epoch", "epoch": epoch + 1, **train}
            improved = True
            if val is not None:
                raw = val.pop("_raw")
                record["val"] = val
                score = val[self.config.run.select_metric]
                improved = progress.best_score is None or score > progress.best_score
                if improved:
                    progress.best_score, progress.best_epoch = score, epoch + 1
                self._say(
                    f"epoch {epoch + 1}: loss {train['train_loss']:.4f}, "
                    f"val {format_metrics_table(raw).splitlines()[1].strip()} "
                    f"(mA Acc Prec Rec F1){' *best' if improved else ''}"
                )
            else:
                progress.best_epoch = epoch + 1
                self._say(f"epoch {epoch + 1}: loss {train['train_loss']:.4f}")
            log.write(record, progress.global_step)
            epoch_metrics = {"epoch": epoch + 1, "val": val}
            self._save_checkpoint(self.paths.last, epoch_metrics)
            if improved:
                self._save_checkpoint(self.paths.best, epoch_metrics)
        progress.epoch, progress.step = epoch + 1, 0
        self._save_state()
        barrier(self.context)

    def _final_test(self, log: RunLog | None) -> dict | None:
        """Evaluate the selected checkpoint once on the test split; write the report."""
        best = load_checkpoint(self.paths.best) if self.context.is_main else None
        state = broadcast_object(None if best is None else best.state_dict, self.context)
        self.model.load_state_dict(state)
        has_test = "test" in set(self.description.splits.tolist())
        test = self.evaluate("test") if has_test else None
        if not self.context.is_main:
            return None
        if test is not None:
            raw = test.pop("_raw")
            self._say(
                f"test, epoch {self.progress.best_epoch} selected on "
                f"{'validation' if self.val_split else 'the last epoch'}:\n"
                + format_metrics_table(raw, self.attribute_names)
            )
            log.write({"event": "test", "epoch": self.progress.best_epoch, "test": test}, 0)
        report = {
            "run": str(self.paths.root),
            "selected_epoch": self.progress.best_epoch,
            "selected_by": f"val {self.config.run.select_metric}" if self.val_split else "last",
            "val": best.metrics.get("val"),
            "test": test,
            "best_checkpoint": str(self.paths.best),
            "last_checkpoint": str(self.paths.last),
        }
        best.metrics = {**best.metrics, "test": test}
        write_checkpoint(self.paths.best, best)
        atomic_write_text(self.paths.report, json.dumps(json_safe(report), indent=2))
        return report

    def fit(self) -> dict | None:
        """Train the remaining epochs, then test the selected checkpoint; returns the report.

        Ctrl-C or SIGTERM stops the run after the current step with its state saved, so that
        ``pedattr train --resume`` continues exactly where it stopped.
        """
        log = RunLog(self.paths, self.config.run.tensorboard) if self.context.is_main else None
        resume = f"`pedattr train --resume {self.paths.root}`"
        try:
            with deferred_interrupts() as self.stop_requested:
                for epoch in range(self.progress.epoch, self.config.optim.epochs):
                    try:
                        train = self._train_epoch(epoch)
                    except KeyboardInterrupt:
                        self._say(
                            f"interrupted at epoch {epoch + 1}, step {self.progress.step}; "
                            f"continue with {resume}"
                        )
                        raise
                    self._end_of_epoch(epoch, train, log)
                    # A signal during the validation: the epoch's state is saved, stop here.
                    if self._stop_agreed():
                        self._say(f"interrupted after epoch {epoch + 1}; continue with {resume}")
                        raise Interrupted(self._stop_signal())
            # The test is not resumable part-way: a signal stops it at once.
            try:
                with immediate_interrupts():
                    return self._final_test(log)
            except KeyboardInterrupt:
                self._say(
                    f"interrupted during the final test; every epoch is saved, {resume} "
                    "runs the test again"
                )
                raise
        finally:
            if log is not None:
                log.close()
            self.release()


# --- entry points -------------------------------------------------------------------------------


RECIPE_FILE = "recipe.yaml"


def plan_run(config: TrainConfig, stages: list, source: str) -> list[Stage]:
    """The stages of a new run; a recipe's definition is kept in ``<run.out>/recipe.yaml``.

    Paths are made absolute first, so that ``--resume`` works from any working directory.
    """
    _absolute_paths(config, stage_names={s.get("name") for s in stages if isinstance(s, dict)})
    planned = expand_stages(config, stages, source)
    root = Path(config.run.out)
    # Only the main process checks and writes: the others would see its file as a rival run.
    if stages and int(os.environ.get("RANK", "0")) == 0:
        recipe = root / RECIPE_FILE
        if recipe.exists():
            raise TrainingSetupError(
                f"{root} already holds a recipe run; continue it with "
                f"`pedattr train --resume {root}` or set run.out to a new folder"
            )
        make_folder(root)
        text = yaml.safe_dump({**config.to_dict(), "stages": stages}, sort_keys=False)
        atomic_write_text(recipe, text)
    return planned


def _absolute_paths(config: TrainConfig, stage_names: set) -> None:
    """Resolve the configuration's paths against the current directory."""
    config.run.out = str(Path(config.run.out).resolve())
    if config.data.root is not None:
        config.data.root = str(Path(config.data.root).resolve())
    if config.model.pretrained is not None:
        config.model.pretrained = str(Path(config.model.pretrained).resolve())
    if config.run.init_from is not None and config.run.init_from not in stage_names:
        config.run.init_from = str(Path(config.run.init_from).resolve())


def plan_resume(run_dir: str | Path) -> list[Stage]:
    """The stages of an interrupted run, read back from its folder.

    The folder given is where the run continues, wherever its configuration says it was
    started (a run folder may have been moved).
    """
    root = Path(run_dir).resolve()
    recipe = root / RECIPE_FILE
    if recipe.is_file():
        config, stages = read_config_file(recipe)
        config.run.out = str(root)
        return expand_stages(config, stages, str(recipe))
    path = root / "config.yaml"
    if not path.is_file():
        raise TrainingSetupError(
            f"{root}: not a pedattr run folder (no config.yaml or {RECIPE_FILE})"
        )
    config, _ = read_config_file(path)
    config.run.out = str(root)
    return [Stage("", config)]


def run_stages(
    stages: list[Stage], context: DistributedContext, *, resume: bool = False
) -> list[dict | None]:
    """Run a recipe's stages in order; on resume, finished stages are skipped."""
    reports = []
    for stage in stages:
        paths = RunPaths(Path(stage.config.run.out))
        if resume and paths.report.is_file():
            if context.is_main:
                tqdm.write(f"{paths.root}: already complete ({paths.report})")
            reports.append(json.loads(paths.report.read_text(encoding="utf-8")))
            continue
        if stage.name and context.is_main:
            tqdm.write(f"stage {stage.name}: {paths.root}")
        # Resuming, only a recipe stage that saved no state yet begins afresh (rerunning the
        # recipe's command is refused, its folder holds the recipe); any other run without its
        # state is an error (Trainer says so), never a silent new start.
        never_started = bool(stage.name) and not paths.state.exists()
        trainer = Trainer(stage.config, context, resume=resume and not never_started)
        reports.append(trainer.fit())
    return reports


def train(
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    resume: str | Path | None = None,
) -> list[dict | None]:
    """Start a run from a config file plus ``section.key=value`` overrides, or resume one.

    Under torchrun every process calls this; each joins the process group, and only the main
    one writes files. Returns each stage's report (None on the other processes).
    """
    # Each stage's Trainer locks its own folder; a recipe's folder, which holds recipe.yaml and
    # the stages' folders, is locked here. Only the main process (RANK 0) writes, and locks.
    main = int(os.environ.get("RANK", "0")) == 0
    with ExitStack() as held:
        if resume is not None:
            if config is not None or overrides:
                raise TrainingSetupError(
                    "--resume continues a run as it was configured; drop --config and the overrides"
                )
            stages = plan_resume(resume)
            if stages[0].name:
                root = Path(resume).resolve()
                held.enter_context(claimed_folder(root, [RECIPE_FILE], main=main))
        else:
            if config is None:
                raise TrainingSetupError("give --config FILE (see configs/) or --resume RUN_DIR")
            base, raw_stages = read_config_file(config)
            apply_overrides(base, list(overrides))
            check_values(base, str(config), overrides)
            if raw_stages:
                root = Path(base.run.out).resolve()
                held.enter_context(claimed_folder(root, [RECIPE_FILE], main=main))
            stages = plan_run(base, raw_stages, str(config))
        context = init_distributed(stages[0].config.run.device)
        try:
            return run_stages(stages, context, resume=resume is not None)
        finally:
            shutdown_distributed(context)
