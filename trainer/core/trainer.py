# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""MultiTaskTrainer: the interleaved multi-task post-training of paper §4.3 on `transformers.Trainer`.

One optimizer step = `rounds_per_step` rounds of one batch of every task (fixed order); each task's loss is scaled
by its λ (and 1 / rounds_per_step), the gradients accumulate, then one update:

    L_step = (1 / k) Σ_rounds Σ_τ λ_τ · L_τ

The Trainer's gradient accumulation provides the accumulation (`gradient_accumulation_steps` is set to
rounds_per_step x number of tasks), its no_sync / DeepSpeed handling, checkpointing, logging and resume; this file
adds the schedule, the per-task weights, parameter groups with their own learning rates, the training stages and
per-task logging.
"""

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainingArguments

from ..objectives import get_objective
from ..parts import training_parts, unwrap_versavit
from .lora import freeze_lora_bases
from .objectives_model import ObjectivesModel
from .schedule import MultiTaskBatchSampler

logger = logging.getLogger(__name__)

# Consecutive samples a task may fail to load before the run stops: one bad file is skipped, a bad dataset is not.
MAX_CONSECUTIVE_FAILURES = 16
# Consecutive optimizer steps that may be skipped for a non-finite loss or gradient before the run stops.
MAX_CONSECUTIVE_NONFINITE_STEPS = 16
# What loading, transforming, validating or collating a bad sample raises (a decompression bomb from `datasets`'
# image decoding is not an OSError).
SAMPLE_ERRORS = (OSError, ValueError, PIL.Image.DecompressionBombError)
STAGES = ("alignment", "multitask", "custom")
FROZEN = "frozen"


def stage_learning_rates(
    args: "MultiTaskTrainingArguments", parts, stage: str | None = None
) -> dict[str, float | None]:
    """The learning rate of each part in `stage` (default `args.stage`; None: frozen), then `args.part_learning_rates`
    over it.

    `"alignment"` (the captioning warm-up, paper §4.2.1): only the projector, at `alignment_learning_rate`.
    `"multitask"` (paper §4.3, §5.1): backbone, projector and LLM at `backbone_learning_rate` (the LLM frozen with
    `train_language_model=False`), the heads and any other part at `learning_rate`.
    `"custom"` (a curriculum stage's `train:`): every part frozen but those `part_learning_rates` gives a rate."""
    parts = list(parts)
    if (stage or args.stage) == "custom":
        rates = dict.fromkeys(parts)
    elif (stage or args.stage) == "alignment":
        if "projector" not in parts:
            raise ValueError("stage 'alignment' trains the captioning projector, which this model lacks.")
        rates = {part: (args.alignment_learning_rate if part == "projector" else None) for part in parts}
    else:
        backbone_side = {"backbone", "projector", "language_model"}
        rates = {part: args.backbone_learning_rate if part in backbone_side else args.learning_rate for part in parts}
        if not args.train_language_model and "language_model" in rates:
            rates["language_model"] = None
    for part, rate in (args.part_learning_rates or {}).items():
        if part not in rates:
            raise ValueError(f"part_learning_rates: {part!r} is not a part of this model, which has {parts}.")
        rates[part] = None if rate == FROZEN else float(rate)
    return rates


@dataclass
class TaskSpec:
    """One task stream of multi-task training.

    Args:
        name: the model task it drives: `"captioning"`, `"depth"` or `"segmentation"` (`config.tasks`).
        dataset: a map-style dataset (`len` and integer indexing), e.g. a `datasets.Dataset`.
        collator: turns a list of samples into the task model's forward arguments (with `labels`).
        batch_size: per-device batch size (paper: 8 for captioning, 32 for depth and segmentation).
        weight: the loss weight λ (paper: 1/3 each).
        transform: optional per-sample function applied after indexing (decoding, augmentation). A sample whose
            indexing, transform or the collator's `validate` raises `OSError`, `ValueError` or a decompression-bomb
            error is skipped, logged (with its index) and counted.
    """

    name: str
    dataset: Dataset
    collator: Callable[[list], dict]
    batch_size: int
    weight: float = 1 / 3
    transform: Callable | None = None

    def __post_init__(self):
        where = f"TaskSpec({self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TaskSpec.name: expected a task name, got {self.name!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"{where}.batch_size: must be a positive integer, got {self.batch_size!r}.")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"{where}.weight: the loss weight λ must be a finite value >= 0, got {self.weight!r}.")
        try:
            size = len(self.dataset)
        except TypeError as err:
            raise ValueError(f"{where}.dataset: needs len() and integer indexing (a map-style dataset).") from err
        if size == 0:
            raise ValueError(f"{where}.dataset: is empty.")


class MultiTaskDataset(Dataset):
    """Samples of several tasks addressed by `(task_index, sample_index[, stream_position])`; failing samples are
    skipped and counted.

    A sample is loaded, transformed and checked by its collator's `validate` (when it has one); if any of these
    raises one of `SAMPLE_ERRORS`, the next index of the same dataset is tried, so batches keep their size. Item:
    `(task_index, sample, skipped, stream_position)`, where `skipped` is the number of samples passed over.
    """

    def __init__(self, tasks: Sequence[TaskSpec]):
        self.tasks = list(tasks)

    def __len__(self) -> int:
        return sum(len(task.dataset) for task in self.tasks)

    def __getitem__(self, key: tuple[int, ...]):
        task_index, index = key[0], key[1]
        stream_position = key[2] if len(key) > 2 else index
        task = self.tasks[task_index]
        size = len(task.dataset)
        validate = getattr(task.collator, "validate", None)
        error = None
        for attempt in range(MAX_CONSECUTIVE_FAILURES):
            position = (index + attempt) % size
            try:
                sample = task.dataset[position]
                if task.transform is not None:
                    sample = task.transform(sample)
                if validate is not None:
                    validate(sample)
                return task_index, sample, attempt, stream_position
            except SAMPLE_ERRORS as err:
                error = err
                logger.warning("task %s: skipping sample %d, which failed to load: %s", task.name, position, err)
        raise RuntimeError(
            f"task {task.name}: {MAX_CONSECUTIVE_FAILURES} consecutive samples from index {index} failed to load; "
            f"last error: {error}"
        ) from error


class MultiTaskCollator:
    """Collates one micro-batch (all of one task) with its task's collator and tags it with the task name.

    The task collator's random decisions are seeded from the stream position of the batch's first sample
    (`at_position`, when it has it). A batch the collator still refuses is collated without the samples that fail
    alone (each skipped, logged and counted); a batch left empty stops the run."""

    def __init__(self, tasks: Sequence[TaskSpec]):
        self.tasks = list(tasks)

    def __call__(self, items: list) -> dict:
        task_indices = {item[0] for item in items}
        if len(task_indices) != 1:
            raise ValueError(f"a multi-task micro-batch must hold one task, got tasks {sorted(task_indices)}.")
        task = self.tasks[task_indices.pop()]
        samples = [item[1] for item in items]
        positions = [item[3] if len(item) > 3 else None for item in items]
        skipped = sum(item[2] for item in items)
        try:
            batch = self._collate(task, samples, positions[0])
        except SAMPLE_ERRORS as err:
            kept = []
            for sample, position in zip(samples, positions):
                try:
                    self._collate(task, [sample], position)
                    kept.append(sample)
                except SAMPLE_ERRORS as single:
                    logger.warning("task %s: skipping the sample at stream position %s, which failed to collate: %s",
                                   task.name, position, single)
            if not kept:
                raise RuntimeError(f"task {task.name}: no sample of the batch at stream position {positions[0]} "
                                   f"could be collated; last error: {err}") from err
            skipped += len(samples) - len(kept)
            batch = self._collate(task, kept, positions[0])
        batch["task"] = task.name
        batch["num_skipped"] = skipped
        batch["stream_positions"] = positions
        return batch

    @staticmethod
    def _collate(task: TaskSpec, samples: list, position: int | None) -> dict:
        if position is not None and hasattr(task.collator, "at_position"):
            task.collator.at_position(position)
        return dict(task.collator(samples))


class _ScheduleDataLoader(DataLoader):
    """A DataLoader over a `MultiTaskBatchSampler` that forwards `set_epoch` (the Trainer calls it per epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """`TrainingArguments` for multi-task post-training. `learning_rate` (default 1e-4) is the task heads' rate."""

    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the task heads (paper: 1e-4)."})
    backbone_learning_rate: float = field(
        default=1e-5,
        metadata={"help": "Learning rate of the backbone, the captioning projector and the LLM (paper: 1e-5)."},
    )
    alignment_learning_rate: float = field(
        default=1e-3, metadata={"help": "Learning rate of the projector in the alignment stage (paper: 1e-3)."}
    )
    stage: str = field(
        default="multitask",
        metadata={"help": "What trains, as a preset: 'alignment' (captioning warm-up: only the projector, at "
                          "alignment_learning_rate), 'multitask' (everything, at the paper's rates) or 'custom' "
                          "(only the parts part_learning_rates names)."},
    )
    train_language_model: bool = field(
        default=True,
        metadata={"help": "Train the captioning LLM in the multi-task stage (paper: yes, at backbone_learning_rate). "
                          "False freezes it; its gradients still reach the projector and the backbone."},
    )
    part_learning_rates: dict | str | None = field(
        default=None,
        metadata={"help": "Per-part learning rates over the stage's (a mapping: backbone, projector, language_model, "
                          "depth_head, segmentation_head -> a rate or 'frozen'), e.g. {backbone: frozen}."},
    )
    rounds_per_step: int = field(
        default=1, metadata={"help": "Rounds of one batch of every task per optimizer step."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: collators shape the inputs."})
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "False: VersaViTForMultiTask makes every parameter take part in every backward itself."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in STAGES:
            raise ValueError(f"stage: expected one of {STAGES}, got {self.stage!r}.")
        from ..config import mapping_option

        self.part_learning_rates = mapping_option(self.part_learning_rates, "part_learning_rates")
        for part, rate in (self.part_learning_rates or {}).items():
            if rate != FROZEN and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                   or not math.isfinite(rate) or rate < 0):
                raise ValueError(f"part_learning_rates.{part}: expected a finite rate >= 0 or 'frozen', got {rate!r}.")
        if self.max_steps == 0:
            raise ValueError("max_steps: 0 would train nothing (a stage still takes one step); give a positive number "
                             "of optimizer steps, or -1 to train num_train_epochs over the data (a VersaViT run skips "
                             "its warm-up with alignment_max_steps: 0).")
        if isinstance(self.rounds_per_step, bool) or self.rounds_per_step < 1:
            raise ValueError(f"rounds_per_step: must be >= 1, got {self.rounds_per_step!r}.")
        for name in ("learning_rate", "backbone_learning_rate", "alignment_learning_rate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite value >= 0, got {value!r}.")


def apply_stage(model, rates: dict[str, float | None]) -> dict[str, float | None]:
    """Freeze or unfreeze each part of `model` as `rates` says (None: frozen); returns `rates`. What a model freezes
    by design (`frozen_by_design()`: the tower's merger, fixed encodings) stays frozen, and in a LoRA-adapted part
    (`lora_tuners`, or a wrapper's `adapter_only_parts`) only the adapters train."""
    parts = training_parts(model)
    owned = {id(p) for module in parts.values() for p in module.parameters()}
    for name, parameter in model.named_parameters():
        if id(parameter) not in owned:
            raise ValueError(f"parameter {name} belongs to no part of {sorted(parts)}; a wrapper model declares its "
                             "parts with training_parts().")
    for part, module in parts.items():
        module.requires_grad_(rates.get(part) is not None)
    inner = unwrap_versavit(model)
    for parameter in getattr(inner, "frozen_by_design", list)():
        parameter.requires_grad_(False)
    freeze_lora_bases(inner)
    adapter_only = {part for m in _wrappers(model) for part in getattr(m, "adapter_only_parts", ())}
    for part in sorted(adapter_only):
        for name, parameter in parts[part].named_parameters():
            if "lora_" not in name:
                parameter.requires_grad_(False)
    return rates


def _wrappers(model):
    """`model` and the models it wraps (`wrapped_model`), outermost first."""
    found = [model]
    while getattr(found[-1], "wrapped_model", None) is not None:
        found.append(found[-1].wrapped_model)
    return found


def _objectives_model(model, names: list[str]) -> ObjectivesModel:
    """`model` as an `ObjectivesModel` over the registered objectives `names` (the task streams' names): wrapped
    here, or checked when the caller wrapped it (objectives that add modules are wrapped once, before the first stage,
    so that every stage trains the same modules)."""
    if isinstance(model, ObjectivesModel):
        missing = [name for name in names if name not in model.objectives]
        if missing:
            raise ValueError(
                f"tasks: {missing} are not objectives of this model, which has {sorted(model.objectives)}."
            )
        return model
    objectives = [get_objective(name, "tasks") for name in names]
    supported = list(getattr(model.config, "tasks", None) or [])
    unknown = [o.name for o in objectives if o.model_task is not None and o.model_task not in supported]
    if unknown:
        raise ValueError(f"tasks: {unknown} are not tasks of this model, which has {supported}.")
    return ObjectivesModel(model, objectives)


class MultiTaskTrainer(Trainer):
    """A `transformers.Trainer` that interleaves task batches on a [`VersaViTForMultiTask`] (paper §4.3).

    Args:
        model: a `VersaViTForMultiTask` (any model with `forward(task=..., **batch)` returning `.loss` and
            `config.tasks`, whose parameters belong to its `training_parts`). The trainer freezes and groups the
            parts as the stage says (`stage_learning_rates`, `apply_stage`).
        args: [`MultiTaskTrainingArguments`].
        tasks: the task streams, in schedule order (paper: captioning, depth, segmentation).
        **kwargs: the other `Trainer` arguments (callbacks, ...); no `train_dataset` or `data_collator`.

    Logs, at every logging step, next to the Trainer's `loss` (the λ-weighted total): `loss_<task>` (the task's
    mean unweighted loss since the last log), `loss_<task>_weighted` (λ x it), the loss terms a task reports (e.g.
    `depth/loss_ssi`), `skipped_samples` (samples that failed to load or collate), `truncated_samples` (captioning
    sequences cut to `max_length`) and `skipped_steps` (optimizer steps skipped), each counted since the start.

    Non-finite losses and gradients never reach the weights: a step whose micro-batches gave a NaN / inf loss, or
    whose gradients hold one (checked on every rank's optimizer shard, agreed across ranks), is skipped (no update,
    logged with the task and stream positions of the batches at fault); `MAX_CONSECUTIVE_NONFINITE_STEPS` skipped
    steps in a row stop the run.
    """

    def __init__(self, model, args: MultiTaskTrainingArguments, tasks: Sequence[TaskSpec], **kwargs):
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError(f"args: expected MultiTaskTrainingArguments, got {type(args).__name__}.")
        for forbidden in ("train_dataset", "data_collator"):
            if kwargs.get(forbidden) is not None:
                raise ValueError(f"{forbidden}: MultiTaskTrainer builds it from `tasks`; pass TaskSpecs instead.")
        if kwargs.get("eval_dataset") is not None:
            raise ValueError(
                "eval_dataset: MultiTaskTrainer trains; evaluate the saved task models (depth, segmentation, "
                "captioning) with their own metrics instead."
            )
        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks: at least one TaskSpec is needed.")
        names = [task.name for task in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: one TaskSpec per task, got {names}.")
        model = _objectives_model(model, names)
        if args.stage == "alignment" and names != ["captioning"]:
            raise ValueError(f"stage 'alignment' is the captioning warm-up: tasks must be ['captioning'], got {names}.")
        accumulation = args.rounds_per_step * len(tasks)
        if args.gradient_accumulation_steps not in (1, accumulation):
            raise ValueError(
                f"gradient_accumulation_steps: set by the schedule to rounds_per_step x tasks = {accumulation}, got "
                f"{args.gradient_accumulation_steps}; use rounds_per_step for more accumulation."
            )
        args.gradient_accumulation_steps = accumulation  # before Trainer.__init__ builds the accelerator
        adapted = getattr(unwrap_versavit(model), "lora_tuners", {})
        if not args.train_language_model and "language_model" in adapted:
            raise ValueError("train_language_model=False freezes the LLM, whose LoRA adapters would then never train.")
        self.part_rates = apply_stage(model, stage_learning_rates(args, training_parts(model)))
        self.tasks = tasks
        super().__init__(
            model=model,
            args=args,
            train_dataset=MultiTaskDataset(tasks),
            data_collator=MultiTaskCollator(tasks),
            **kwargs,
        )
        self.loss_is_scaled_for_ga = True  # compute_loss applies λ / rounds_per_step itself
        self._weights = {task.name: float(task.weight) for task in tasks}
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}
        self._skipped = 0
        self._truncated = 0
        self._skipped_steps = 0
        self._consecutive_skipped_steps = 0
        self._step_losses: list[tuple[str, list, torch.Tensor]] = []

    # ------------------------------------------------------------------------------------------------ data
    def get_train_dataloader(self) -> DataLoader:
        """This rank's schedule. Not passed through `accelerator.prepare`: the sampler already knows the rank, and
        a plain batch sampler lets a resumed run skip the trained batches without loading them."""
        sampler = MultiTaskBatchSampler(
            dataset_sizes=[len(task.dataset) for task in self.tasks],
            batch_sizes=[task.batch_size for task in self.tasks],
            num_replicas=self.args.world_size,
            rank=self.args.process_index,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            rounds_per_step=self.args.rounds_per_step,
        )
        for task in self.tasks:  # a dense collator draws one resolution per global batch (see _FixedSizeCollator)
            if hasattr(task.collator, "positions_per_batch"):
                task.collator.positions_per_batch = task.batch_size * self.args.world_size
        workers = self.args.dataloader_num_workers
        return _ScheduleDataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor if workers > 0 else None,
        )

    # ------------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        task = inputs.pop("task")
        self._skipped += int(inputs.pop("num_skipped", 0))
        self._truncated += int(inputs.pop("num_truncated", 0))
        positions = inputs.pop("stream_positions", None)
        outputs = model(task=task, **inputs)
        loss = outputs.loss
        if model.training:
            self._record(task, loss.detach(), outputs.get("loss_terms"))
            self._step_losses.append((task, positions, loss.detach()))
        weighted = loss * (self._weights[task] / self.args.rounds_per_step)
        return (weighted, outputs) if return_outputs else weighted

    def _record(self, task: str, loss: torch.Tensor, terms: dict | None) -> None:
        """Add a micro-batch's loss and terms to the task means; a non-finite loss is left out of them (its step
        is skipped), so one bad batch does not turn the logged means into NaN."""
        finite = torch.isfinite(loss).to(loss.dtype)
        values = {f"loss_{task}": loss.float()}
        values.update({f"{task}/{name}": value.float() for name, value in (terms or {}).items()})
        for key, value in values.items():
            self._loss_sums[key] = self._loss_sums.get(key, 0.0) + torch.nan_to_num(value * finite, 0.0, 0.0, 0.0)
            self._loss_counts[key] = self._loss_counts.get(key, 0) + finite

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every rank is here (the Trainer gathers the loss just before)
            keys = sorted(self._loss_sums)
            device = self.args.device
            sums = torch.stack([torch.as_tensor(self._loss_sums[k], device=device) for k in keys]) if keys else None
            counted = [torch.as_tensor(self._loss_counts[k], device=device, dtype=torch.float64) for k in keys]
            totals = torch.tensor([self._skipped, self._truncated], device=device, dtype=torch.float64)
            counts = torch.cat([torch.stack(counted), totals]) if counted else totals
            if self.args.world_size > 1:
                counts = self.accelerator.reduce(counts, reduction="sum")
                sums = self.accelerator.reduce(sums, reduction="sum") if sums is not None else None
            for i, key in enumerate(keys):
                if counts[i] == 0:  # every batch of the task was non-finite since the last log
                    continue
                mean = (sums[i] / counts[i]).item()
                logs[key] = mean
                if key.startswith("loss_"):
                    logs[f"{key}_weighted"] = self._weights[key.removeprefix("loss_")] * mean
            logs["skipped_samples"] = int(counts[-2].item())
            logs["truncated_samples"] = int(counts[-1].item())
            logs["skipped_steps"] = self._skipped_steps
            self._loss_sums, self._loss_counts = {}, {}
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------------ optimizer
    def part_of_parameters(self, model=None) -> dict[int, str]:
        """`id(parameter)` -> the part that owns it (`training_parts`)."""
        return {
            id(p): part for part, module in training_parts(model or self.model).items() for p in module.parameters()
        }

    def learning_rate_of(self, name: str) -> float | None:
        """The learning rate of parameter `name` in this stage: its owning part's (None when frozen)."""
        owners = self.part_of_parameters()
        parameter = self.model.state_dict(keep_vars=True)[name]  # the model's own names (see ObjectivesModel)
        return self.part_rates.get(owners.get(id(parameter)))

    def _run_epoch(self, *args, **kwargs):
        """transformers' epoch loop, which takes a first step before it looks at `max_steps`: a run resumed from a
        checkpoint at its last step (a finished stage whose record was lost) would train one step past it."""
        if 0 < self.args.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    @property
    def trained_model(self):
        """The model this trainer was given (unwrapped from DDP / DeepSpeed and from its `ObjectivesModel`)."""
        return self.accelerator.unwrap_model(self.model).wrapped_model

    def _save(self, output_dir: str | None = None, state_dict=None):
        """Checkpoints hold the VersaViT model as itself (`save_pretrained`: config and weights under the model's
        own names, loadable into every task class), with the parts objectives add under their part names."""
        from transformers import PreTrainedModel
        from transformers.trainer import TRAINING_ARGS_NAME

        inner = self.trained_model
        if not isinstance(inner, PreTrainedModel):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        inner.save_pretrained(output_dir, state_dict=state_dict, is_main_process=self.args.should_save)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def create_optimizer(self, model=None):
        """`args.optim` (AdamW by default, with `optim_args`; or the Trainer's `optimizer_cls_and_kwargs`) over one
        parameter group per (part, weight decay): each part at its stage learning rate, frozen parts left out. Used
        under DeepSpeed as well (the shipped ZeRO config has no optimizer section). An optimizer factory (Muon-style,
        built from the whole model) is refused: it would ignore the parts' learning rates."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        owners = self.part_of_parameters(opt_model)
        groups: dict[tuple[str, float], list] = {}
        for name, parameter in opt_model.named_parameters():
            if not parameter.requires_grad:
                continue
            part = owners.get(id(parameter))
            if part is None or self.part_rates.get(part) is None:
                raise ValueError(f"parameter {name} trains but belongs to no trained part ({self.part_rates}).")
            weight_decay = self.args.weight_decay if name in decay else 0.0
            groups.setdefault((part, weight_decay), []).append(parameter)
        if not groups:
            raise ValueError(f"stage {self.args.stage!r}: the model has no trainable parameter.")
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        from transformers.trainer_optimizer import is_optimizer_factory

        if is_optimizer_factory(optimizer_cls):
            raise ValueError(f"optim: {optimizer_cls.__name__} is an optimizer factory, built from the whole model; "
                             "MultiTaskTrainer needs per-part parameter groups.")
        optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("lr", "params", "model")}
        param_groups = [{"params": ps, "lr": self.part_rates[part], "weight_decay": wd, "part": part}
                        for (part, wd), ps in groups.items()]
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        self.optimizer.step = self._finite_step(self.optimizer, self.optimizer.step)
        return self.optimizer

    # ------------------------------------------------------------------------------------------------ bad steps
    def _finite_step(self, optimizer, step):
        """`optimizer.step`, skipped when this step's losses or the gradients the optimizer holds are not finite.

        Installed on the optimizer itself, so it guards DeepSpeed's inner step too (there the gradients are this
        rank's ZeRO shard): every rank checks its own and the verdict is agreed with an all-reduce."""

        def guarded(*args, **kwargs):
            losses, self._step_losses = self._step_losses, []
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            device = grads[0].device if grads else self.args.device
            bad = torch.zeros((), device=device)
            if grads:
                bad = (
                    bad + (~torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(grads)]).sum())).float()
                )
            for _, _, loss in losses:
                bad = bad + (~torch.isfinite(loss.to(device))).float()
            if self.args.world_size > 1 and torch.distributed.is_initialized():
                torch.distributed.all_reduce(bad)
            if bad.item() == 0:
                self._consecutive_skipped_steps = 0
                return step(*args, **kwargs)
            self._skipped_steps += 1
            self._consecutive_skipped_steps += 1
            at_fault = [f"{task} batch at stream positions {positions}" for task, positions, loss in losses
                        if not torch.isfinite(loss)]
            logger.warning("step %d skipped (no update): non-finite %s", self.state.global_step + 1,
                           "loss in " + "; ".join(at_fault) if at_fault else "gradients (on this or another rank)")
            if self._consecutive_skipped_steps >= MAX_CONSECUTIVE_NONFINITE_STEPS:
                raise RuntimeError(
                    f"{self._consecutive_skipped_steps} consecutive optimizer steps had non-finite losses or gradients "
                    f"(last at step {self.state.global_step + 1}); stopping. The data (NaN / inf labels, embeddings or "
                    "images) or the learning rate is at fault; resume from the last checkpoint once fixed."
                )
            return None

        return guarded


__all__ = [
    "FROZEN",
    "apply_stage",
    "stage_learning_rates",
    "MAX_CONSECUTIVE_FAILURES",
    "MAX_CONSECUTIVE_NONFINITE_STEPS",
    "SAMPLE_ERRORS",
    "MultiTaskBatchSampler",
    "MultiTaskCollator",
    "MultiTaskDataset",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "TaskSpec",
]
