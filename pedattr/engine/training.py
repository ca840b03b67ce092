"""``pedattr train``: the paper's recipe, honest model selection, safe checkpoints, exact resume.

:class:`Trainer` sets a run up from its configuration (data, model, optimizer, the run folder
and the hooks of :mod:`pedattr.engine.hooks`) and runs one step; the loop is
:class:`pedattr.engine.trainer.TrainerBase`; what the run folder holds, and the training state
that ``--resume`` reads, are in :mod:`pedattr.engine.state`. The entry points at the end plan a
run (or a recipe's stages, or a resume) and run it.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from pedattr.checkpoint.format import load_checkpoint
from pedattr.data.annotations import positive_ratio
from pedattr.data.dataset import Batch, FailureTracker, build_loader
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
    convert_sync_batchnorm,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from pedattr.engine.hooks import build_hooks
from pedattr.engine.loss import WeightedBCELoss
from pedattr.engine.runfolder import claimed_folder
from pedattr.engine.state import (
    RECIPE_FILE,
    Progress,
    RunPaths,
    TrainingDiverged,
    TrainingError,
    TrainingSetupError,
    load_state,
    save_state,
    truncate_log,
)
from pedattr.engine.trainer import TrainerBase, train_step
from pedattr.evaluation.evaluate import Predictions, predict_loader, read_part_regions
from pedattr.evaluation.metrics import compute_metrics
from pedattr.models.alm import AttributeLocalization
from pedattr.models.model import AttributeModel, ModelConfig, build_from_config
from pedattr.utils.io import atomic_write_text, make_folder

# Names that tests, recipes and the command line import from here.
__all__ = [
    "RECIPE_FILE",
    "SUMMARY_KEYS",
    "Progress",
    "RunPaths",
    "Trainer",
    "TrainingDiverged",
    "TrainingError",
    "TrainingSetupError",
    "claimed_folder",
    "load_state",
    "model_config",
    "plan_resume",
    "plan_run",
    "run_stages",
    "save_state",
    "train",
    "train_step",
    "truncate_log",
]

SUMMARY_KEYS = ("mA", "accuracy", "precision", "recall", "f1")


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


def metric_summary(metrics: dict, attribute_names: list[str]) -> dict:
    """The paper's five numbers plus per-attribute mA keyed by name."""
    summary = {key: metrics[key] for key in SUMMARY_KEYS}
    summary["per_attribute_mA"] = dict(
        zip(attribute_names, metrics["per_attribute_mA"], strict=True)
    )
    summary["num_samples"] = metrics["num_samples"]
    return summary


# --- the run ------------------------------------------------------------------------------------


class Trainer(TrainerBase):
    """One training run (one stage of a recipe) in one process of a possibly distributed job.

    It sets up the model, optimizer, data and hooks (:mod:`pedattr.engine.hooks`) from the
    configuration and runs one step; :class:`TrainerBase` runs the loop.
    """

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
        self.stop_requested = []
        if resume:
            self.progress = self._load_state(groups)
            if context.is_main:
                dropped = truncate_log(self.paths.log, self.progress.epoch)
                if dropped:
                    self.say(
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
        self.max_epochs = config.optim.epochs
        self.register_hooks(
            build_hooks(
                config,
                val_split=self.val_split,
                has_test="test" in set(self.description.splits.tolist()),
                attribute_names=self.attribute_names,
            )
        )

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
                self.say(f"{paths.log}: its epochs were never saved in a state; starting afresh")
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
            self.say(f"initialised {len(copied)} tensors from {config.run.init_from}")
        elif config.model.pretrained is None and not self.resume:
            self.say(
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

    # -- steps --

    def _load_state(self, groups: list[dict]) -> Progress:
        """Resume; the rate multipliers come from the run's (possibly edited) configuration."""
        progress = load_state(self.paths.state, self.model, self.optimizer, self.scaler)
        for group, wanted in zip(self.optimizer.param_groups, groups, strict=True):
            group["lr_scale"] = wanted["lr_scale"]  # states saved before the option lack it
        return progress

    def save_state(self) -> None:
        """Write ``state.safetensors`` (the main process; the module's :func:`save_state`)."""
        if self.context.is_main:
            save_state(
                self.paths.state,
                self.model,
                self.optimizer,
                self.scaler,
                self.progress,
                self.config,
            )

    def run_step(self, batch: Batch) -> Tensor:
        """One optimisation step (:func:`train_step`) on ``batch``; returns its loss on the CPU."""
        device = self.context.device
        images = batch.images.to(device, non_blocking=True)
        if self.config.run.channels_last:
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
            deep_supervision=self.config.loss.deep_supervision,
            part_boxes=part_boxes,
        )
        return loss.cpu()

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
        """``split``'s metric summary with the raw metrics under ``_raw`` (None on a process
        other than the main one); the validation and final-test hooks call it."""
        predictions = self.predict(split)
        if predictions is None:
            return None
        metrics = compute_metrics(predictions.labels, predictions.probs)
        return metric_summary(metrics, self.attribute_names) | {"_raw": metrics}

    def fit(self) -> dict | None:
        """Train the remaining epochs, then test the selected checkpoint; returns the report
        (None on a process other than the main one).

        Ctrl-C or SIGTERM stops the run after the current step with its state saved, so that
        ``pedattr train --resume`` continues exactly where it stopped.
        """
        try:
            return super().fit()
        finally:
            self.release()


# --- entry points -------------------------------------------------------------------------------


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
            reports = run_stages(stages, context, resume=resume is not None)
            # No process tears the group down while another still finishes its last collective
            # (a gloo peer that leaves early can abort the other at exit).
            barrier(context)
            return reports
        finally:
            shutdown_distributed(context)
