# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""MultiTaskTrainer: the interleaved multi-task post-training of paper §4.3 on `transformers.Trainer`.

One optimizer step = `rounds_per_step` rounds of one batch of every task (fixed order); each task's loss is scaled
by its λ (and 1 / rounds_per_step), the gradients accumulate, then one update:

    L_step = (1 / k) Σ_rounds Σ_τ λ_τ · L_τ

The Trainer's gradient accumulation provides the accumulation (`gradient_accumulation_steps` is set to
rounds_per_step x number of tasks), its no_sync / DeepSpeed handling, checkpointing, logging and resume; this file
adds the schedule, the per-task weights, parameter groups with their own learning rates, the training stages and
per-task logging. The task streams it interleaves are in `streams`, what a stage trains in `arguments`.
"""

import logging
import os
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from ..objectives import get_objective
from ..parts import training_parts, unwrap_versavit
from .arguments import MultiTaskTrainingArguments, apply_stage, stage_learning_rates
from .objectives_model import ObjectivesModel, own_names
from .schedule import MultiTaskBatchSampler
from .streams import MultiTaskCollator, MultiTaskDataset, ScheduleDataLoader, TaskSpec

logger = logging.getLogger(__name__)


# Consecutive optimizer steps that may be skipped for a non-finite loss or gradient before the run stops.
MAX_CONSECUTIVE_NONFINITE_STEPS = 16


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
        # DDP's reducer wants every trainable parameter in every backward; the sharding engines do not (ObjectivesModel)
        model.idle_parameter_term = args.world_size > 1 and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        self._weights = {task.name: float(task.weight) for task in tasks}
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}
        self._skipped = 0
        self._truncated = 0
        self._skipped_steps = 0
        self._consecutive_skipped_steps = 0
        self._step_losses: list[tuple[int, str, list, torch.Tensor]] = []  # (optimizer step, task, positions, loss)
        self._judged_step, self._judged_losses, self._step_skipped = None, [], False
        self.add_callback(_ShardedEngineHooks(self))

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
        return ScheduleDataLoader(
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
            self._step_losses.append((self.state.global_step, task, positions, loss.detach()))
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
        if self.is_fsdp_enabled:  # every process is here (Trainer.save_model): gather the shards
            state_dict = _whole(self.model.state_dict())
        elif state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        state_dict = own_names(state_dict)  # (ZeRO-3 gathers under the wrapper's names)
        inner.save_pretrained(output_dir, state_dict=state_dict, is_main_process=self.args.should_save)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def full_state_dict(self) -> dict | None:
        """The trained model's whole state (`ObjectivesModel.state_dict()` names) on the main process, None on the
        others; every process must call it. Under ZeRO-3 and FSDP2 each process holds a shard of every parameter, and
        this gathers them (ZeRO-3: accelerate's `get_state_dict`, which needs
        `stage3_gather_16bit_weights_on_model_save`; FSDP2: each DTensor's `full_tensor`, one at a time, since
        accelerate's gave the shards here); otherwise it is the model's own state."""
        if self.is_fsdp_enabled:
            state = _whole(self.model.state_dict())
        else:
            state = self.accelerator.get_state_dict(self.model_wrapped if self.is_deepspeed_enabled else self.model)
        return own_names(dict(state)) if self.is_world_process_zero() else None

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

        Installed on the optimizer itself, so it guards DeepSpeed's inner step too: under ZeRO and FSDP2 the
        gradients are this rank's shard, every rank checks its own and the verdict is agreed with an all-reduce.
        ZeRO-3 calls the inner step once per parameter sub-group, each with only its own gradients: the step's losses
        are judged at its first call and the verdict holds for every sub-group, so a step is taken whole or not at all
        (DeepSpeed skips a step whose gradients are not finite before any sub-group runs)."""

        def guarded(*args, **kwargs):
            if self._judged_step != self.state.global_step:  # the first call of this optimizer step
                self._judged_step, self._step_skipped = self.state.global_step, False
                self._judged_losses = self._losses_of_this_step()
            losses = self._judged_losses
            grads = [_local(p.grad) for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
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
            if bad.item() == 0 and not self._step_skipped:
                self._consecutive_skipped_steps = 0
                return step(*args, **kwargs)
            if not self._step_skipped:  # (a later sub-group of a skipped step: counted once)
                self._skip_step(losses)
            return None

        return guarded

    def _losses_of_this_step(self) -> list[tuple[str, list, torch.Tensor]]:
        """The (task, stream positions, loss) of this optimizer step's micro-batches; older ones are dropped (a step
        DeepSpeed skipped before our guard ran leaves its losses behind)."""
        current = [(task, positions, loss) for step, task, positions, loss in self._step_losses
                   if step == self.state.global_step]
        self._step_losses = []
        return current

    def _skip_step(self, losses) -> None:
        """Count and log a skipped optimizer step; stop the run after `MAX_CONSECUTIVE_NONFINITE_STEPS` in a row."""
        self._step_skipped = True
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

    # ------------------------------------------------------------------------------------------------ sharding
    @property
    def shards_parameters(self) -> bool:
        """Whether each process holds only a shard of the parameters (DeepSpeed ZeRO-3, FSDP): the model object of
        a process is then not a whole model until `full_state_dict` gathers it."""
        if self.is_fsdp_enabled:
            return True
        return self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3

    def _clear_gradient_partitions(self):
        """Under ZeRO-3, zero the optimizer's accumulated gradient partitions at every step boundary.

        DeepSpeed's stage-3 optimizer overwrites a parameter's partition with the gradient of the first micro-batch
        of a step (`micro_step_id == 0`) and adds the others to it, and never clears it otherwise: a parameter that
        the first micro-batch does not reach (the depth head, when the step starts with captioning) would add its
        gradients to those of the step before. Measured on the tiny multi-task model: the second step's gradient norm
        10.87 instead of 6.11. Zeroed after every optimizer step, each micro-batch accumulates into a clean partition
        (the first one's copy is then the same as an add)."""
        optimizer = getattr(self.model_wrapped, "optimizer", None)  # the DeepSpeed engine's ZeRO optimizer
        if getattr(optimizer, "grad_partitions_flat_buffer", None) is None or hasattr(optimizer, "_step_only"):
            return
        optimizer._step_only = optimizer.step

        def step(*args, **kwargs):
            try:
                return optimizer._step_only(*args, **kwargs)
            finally:  # (a step DeepSpeed skipped for non-finite gradients discards them too)
                optimizer.grad_partitions_flat_buffer.zero_()
                if getattr(optimizer, "overflow", False) and self._judged_step != self.state.global_step:
                    # DeepSpeed skipped the step (non-finite gradients) before our guard ran: count it as ours
                    self._judged_step = self.state.global_step
                    self._skip_step(self._losses_of_this_step())

        optimizer.step = step


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of an FSDP2 (DTensor) gradient; any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _whole(state: dict) -> dict:
    """`state` with every FSDP2 (DTensor) shard gathered into the whole tensor, on the CPU; every process must call it
    (each gather is collective)."""
    from torch.distributed.tensor import DTensor

    return {name: value.full_tensor().cpu() if isinstance(value, DTensor) else value for name, value in state.items()}


class _ShardedEngineHooks(TrainerCallback):
    """What `MultiTaskTrainer` installs on the engine once `accelerate` has built it (at the start of training)."""

    def __init__(self, trainer: MultiTaskTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._clear_gradient_partitions()


__all__ = ["MAX_CONSECUTIVE_NONFINITE_STEPS", "MultiTaskTrainer", "logger"]
