# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The vocabulary every layer shares: the trainable parts of a VersaViT model, the model inside training wrappers,
and which parts a checkpoint folder holds weights for. Imports nothing of the package."""

from torch import nn

from modeling_versavit import safetensors_weight_map

# The parts of a VersaViT model that a stage trains, frozen or at their own learning rate, each owned by one module
# attribute (its weights are named `<attribute>.*`). A wrapper model (e.g. `OnlineTextSegmentation`) declares its own
# with a `training_parts()` method.
PART_MODULES = {"backbone": "visual", "projector": "projector", "language_model": "language_model",
                "task_tokens": "task_tokens", "depth_head": "depth_head", "segmentation_head": "segmentation_head"}


def training_parts(model) -> dict[str, nn.Module]:
    """The trainable parts of `model` by name (`PART_MODULES`, those the model has), or the model's own
    `training_parts()`.

    A model that captions through its MLLM's own LLM (`config.mllm_language_model`) has no separate projector: its
    `projector` part is the MLLM's connector inside the tower (the PatchMerger, Qwen3-VL's DeepStack mergers). It
    comes after `backbone`, which holds those modules too: a later part claims what it shares with an earlier one
    (its learning rate, frozen or not)."""
    if hasattr(model, "training_parts"):
        return model.training_parts()
    parts = {}
    for part, attr in PART_MODULES.items():
        module = getattr(model, attr, None)
        if part == "projector" and mllm_connector_trains(model):
            module = nn.ModuleList(model.config.backbone.owned_modules(model.visual))
        if module is not None:
            parts[part] = module
    return parts


def mllm_connector_trains(model) -> bool:
    """Whether `model` captions through its MLLM's own LLM (`config.mllm_language_model` and a captioning branch):
    the tower's mergers are then its projector."""
    return getattr(model, "language_model", None) is not None and getattr(model.config, "mllm_language_model", False)


def unwrap_versavit(model):
    """The VersaViT model inside training wrappers (`ObjectivesModel`, `OnlineTextSegmentation`: each names what it
    wraps `wrapped_model`)."""
    while True:
        inner = getattr(model, "wrapped_model", None)
        if inner is None:
            return model
        model = inner


def require_weights(folder, prefixes: tuple[str, ...], what: str) -> None:
    """`ValueError` unless the checkpoint `folder` holds weights under every one of `prefixes` (`from_pretrained`
    would otherwise start a missing head from random values, with only a warning); `what` names them."""
    names = list(safetensors_weight_map(folder))
    if not all(any(name.startswith(prefix) for name in names) for prefix in prefixes):
        raise ValueError(f"{folder} has no {what} weights ({' and '.join(prefixes)}*).")


__all__ = ["PART_MODULES", "mllm_connector_trains", "require_weights", "training_parts", "unwrap_versavit"]
