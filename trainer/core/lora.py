# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""LoRA (through `peft`) on the big parts of a VersaViT model: the backbone's attention and MLP projections and the
captioning LLM, each switchable, with its own target modules, rank, alpha and dropout.

The adapters are injected in place (`peft.tuners.lora.LoraModel`), so the model keeps its class and its parameter
names (`...q_proj.base_layer.weight`, `...q_proj.lora_A.default.weight`): Trainer checkpoints hold the base weights
and the adapters and resume both; `merge_lora` merges the adapters into the base weights (peft's
`merge_and_unload`) and gives back plain modules, so an exported model needs no peft.
"""

import re
from dataclasses import dataclass, field

from peft import LoraConfig
from peft.tuners.lora import LoraModel

# The backbone's default targets are its tower family's (`VisionBackbone.lora_targets`).
LANGUAGE_MODEL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PARTS = {"backbone": "visual", "language_model": "language_model"}


@dataclass
class LoraArguments:
    """LoRA on the backbone and / or the captioning LLM (paper §9.4 uses r = 8, α = 8 on its text encoder)."""

    backbone_lora: bool = field(
        default=False, metadata={"help": "LoRA on the backbone's blocks instead of full tuning."}
    )
    backbone_lora_rank: int = field(default=8, metadata={"help": "LoRA rank r of the backbone adapters."})
    backbone_lora_alpha: float = field(default=8.0, metadata={"help": "LoRA alpha of the backbone adapters."})
    backbone_lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout of the backbone adapters."})
    backbone_lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names inside the tower's blocks to adapt; default: the tower family's attention and "
                          "MLP projections (`VisionBackbone.lora_targets`)."},
    )
    language_model_lora: bool = field(
        default=False, metadata={"help": "LoRA on the captioning LLM instead of full tuning."}
    )
    language_model_lora_rank: int = field(default=8, metadata={"help": "LoRA rank r of the LLM adapters."})
    language_model_lora_alpha: float = field(default=8.0, metadata={"help": "LoRA alpha of the LLM adapters."})
    language_model_lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout of the LLM adapters."})
    language_model_lora_target_modules: list[str] = field(
        default_factory=lambda: list(LANGUAGE_MODEL_TARGETS),
        metadata={"help": "Module names of the LLM to adapt (peft's suffix match)."},
    )

    def __post_init__(self):
        for part in PARTS:
            rank, alpha = getattr(self, f"{part}_lora_rank"), getattr(self, f"{part}_lora_alpha")
            dropout, targets = getattr(self, f"{part}_lora_dropout"), getattr(self, f"{part}_lora_target_modules")
            if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
                raise ValueError(f"{part}_lora_rank: must be a positive integer, got {rank!r}.")
            if not alpha > 0:
                raise ValueError(f"{part}_lora_alpha: must be > 0, got {alpha!r}.")
            if not 0 <= dropout < 1:
                raise ValueError(f"{part}_lora_dropout: must be in [0, 1), got {dropout!r}.")
            if targets is not None and not targets:
                raise ValueError(f"{part}_lora_target_modules: needs at least one module name.")

    def lora_config(self, part: str, backbone=None) -> LoraConfig | None:
        """The `peft.LoraConfig` of `part` ("backbone" or "language_model"), None when its LoRA is off; backbone
        adapters go inside the blocks of `backbone` (the tower family, a `VisionBackbone`) only, on its
        `lora_targets` unless `backbone_lora_target_modules` names others."""
        if not getattr(self, f"{part}_lora"):
            return None
        targets = getattr(self, f"{part}_lora_target_modules")
        if part == "backbone":  # only inside the transformer blocks (never the patch embedding or the merger)
            if backbone is None:
                raise ValueError("backbone_lora: the tower family is needed to place the adapters.")
            names = "|".join(re.escape(t) for t in (targets or backbone.lora_targets))
            targets = rf"(.*\.)?{backbone.blocks_pattern}\.(.*\.)?({names})"
        return LoraConfig(r=getattr(self, f"{part}_lora_rank"), lora_alpha=getattr(self, f"{part}_lora_alpha"),
                          lora_dropout=getattr(self, f"{part}_lora_dropout"), target_modules=targets)


def apply_lora(model, lora_args: LoraArguments) -> dict[str, LoraModel]:
    """Inject the configured adapters into `model` in place; their tuners are kept as `model.lora_tuners` (for
    `merge_lora` and `freeze_lora_bases`). Raises `ValueError` naming the option when a target matches nothing."""
    tuners = dict(getattr(model, "lora_tuners", {}))
    for part, attribute in PARTS.items():
        config = lora_args.lora_config(part, model.config.backbone)
        if config is None:
            continue
        module = getattr(model, attribute, None)
        if module is None:
            raise ValueError(
                f"{part}_lora: the model has no {attribute} (tasks {getattr(model.config, 'tasks', '?')})."
            )
        if attribute in tuners:
            raise ValueError(f"{part}_lora: the model already has adapters there.")
        try:
            tuners[attribute] = LoraModel(module, config, adapter_name="default")
        except ValueError as err:
            if "not found" in str(err) or "did not find" in str(err).lower():
                names = getattr(lora_args, f"{part}_lora_target_modules") or list(model.config.backbone.lora_targets)
                raise ValueError(f"{part}_lora_target_modules: {names} match no module of {attribute}.") from err
            raise
    object.__setattr__(model, "lora_tuners", tuners)  # a plain dict: the tuners are not submodules of the model
    freeze_lora_bases(model)
    return tuners


def freeze_lora_bases(model) -> None:
    """In each adapted part only the adapters train: every other parameter of that part is frozen."""
    for attribute in getattr(model, "lora_tuners", {}):
        for name, parameter in getattr(model, attribute).named_parameters():
            if "lora_" not in name:
                parameter.requires_grad_(False)


def merge_lora(model):
    """Merge every adapter into its base weights and put the plain modules back (in place); returns `model`."""
    for attribute, tuner in getattr(model, "lora_tuners", {}).items():
        setattr(model, attribute, tuner.merge_and_unload(safe_merge=True))
    object.__setattr__(model, "lora_tuners", {})
    return model


__all__ = ["LANGUAGE_MODEL_TARGETS", "LoraArguments", "apply_lora", "freeze_lora_bases", "merge_lora"]
