# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What a stage trains: `MultiTaskTrainingArguments` (`TrainingArguments` plus the stage, the per-part learning rates
and the schedule's options), the learning rate of each part in a stage (`stage_learning_rates`) and freezing parts by
hand (`apply_stage`)."""

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..parts import training_parts, unwrap_versavit
from .lora import freeze_lora_bases

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


__all__ = ["FROZEN", "MultiTaskTrainingArguments", "STAGES", "apply_stage", "stage_learning_rates"]
