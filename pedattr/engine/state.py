"""The run folder and the training state: what ``pedattr train`` writes, and reads back on resume.

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
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from pedattr.checkpoint.format import write_safetensors
from pedattr.engine.config import TrainConfig
from pedattr.errors import RunFailed
from pedattr.evaluation.evaluate import check_attributes
from pedattr.models.model import AttributeModel
from pedattr.models.weight_files import state_dict_mismatch
from pedattr.utils.io import atomic_write_text

STATE_FORMAT = "pedattr-train-state"
STATE_VERSION = 1
STATE_KEY = "pedattr-state"
#: A recipe's definition, kept in the recipe's folder (its stages' run folders lie below it).
RECIPE_FILE = "recipe.yaml"


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
