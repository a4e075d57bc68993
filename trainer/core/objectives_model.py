# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The model a `MultiTaskTrainer` trains: a VersaViT model plus the modules its objectives add, run one objective
at a time."""

import torch
from torch import nn


def unwrap_versavit(model):
    """The VersaViT model inside training wrappers (`ObjectivesModel`, `OnlineTextSegmentation`)."""
    while True:
        inner = getattr(model, "wrapped_model", None)
        if inner is None:
            return model
        model = inner


class ObjectivesModel(nn.Module):
    """What a `MultiTaskTrainer` trains: a VersaViT model plus the modules its objectives add.

    `forward(task=name, **batch)` runs objective `name`'s loss. With the run's `context` (`ObjectiveContext`), each
    objective first fits the model config to the run's data (`Objective.configure`). Its state dict has the VersaViT
    model's own names (`visual.*`, `depth_head.*`, ...) and each added part under its part name, so Trainer checkpoints
    load into the task classes as before. Under multi-process training it adds `0 x (sum of the trainable parameters
    this objective does not reach)` to the loss: the other objectives' parts and the backbone blocks after the last one
    it reads. That changes no value or gradient, but every parameter takes part in every backward, as DDP's reducer
    (with `find_unused_parameters=False`, gradient checkpointing included) requires when each micro-batch drives one
    objective.
    """

    accepts_loss_kwargs = False  # each objective normalises its own loss; the trainer weights and accumulates them

    def __init__(self, model, objectives, context=None):
        super().__init__()
        self.model = model
        self.objectives = {objective.name: objective for objective in objectives}
        added, self.added_by = {}, {}
        if context is not None:  # the run's data (e.g. its text width) decides the shape of added parts
            for objective in self.objectives.values():
                objective.configure(unwrap_versavit(model).config, context)
        for objective in self.objectives.values():
            for part, module in objective.modules(unwrap_versavit(model)).items():
                if part in added or hasattr(unwrap_versavit(model), part):
                    raise ValueError(f"objective {objective.name!r}: part {part!r} already exists in the model.")
                added[part], self.added_by[part] = module, objective.name
        self.objective_modules = nn.ModuleDict(added)
        self.register_state_dict_post_hook(_drop_wrapper_prefixes)
        self.register_load_state_dict_pre_hook(_add_wrapper_prefixes)

    @property
    def wrapped_model(self):
        return self.model

    @property
    def config(self):
        return self.model.config

    @property
    def _keys_to_ignore_on_save(self):  # read by the Trainer when a resumed checkpoint lacks keys
        return getattr(unwrap_versavit(self.model), "_keys_to_ignore_on_save", None)

    def tie_weights(self):
        unwrap_versavit(self.model).tie_weights()

    def training_parts(self) -> dict[str, nn.Module]:
        from .trainer import training_parts

        return {**training_parts(self.model), **dict(self.objective_modules.items())}

    def activation_checkpointing_enable(self, **kwargs):
        unwrap_versavit(self.model).activation_checkpointing_enable(**kwargs)

    def activation_checkpointing_disable(self):
        unwrap_versavit(self.model).activation_checkpointing_disable()

    def forward(self, task: str, **batch):
        if task not in self.objectives:
            raise ValueError(f"task: {task!r} is not an objective of this run, which has {sorted(self.objectives)}.")
        objective = self.objectives[task]
        output = objective.forward(self.model, self.objective_modules, batch)
        if self.training and output.loss is not None and _is_multi_process():
            idle = self.idle_parameters(task)
            if idle:
                output.loss = output.loss + 0.0 * sum(parameter.sum() for parameter in idle)
        return output

    def idle_parameters(self, task: str) -> list[nn.Parameter]:
        """Trainable parameters the forward of objective `task` does not reach: the parts only other objectives
        of the run reach, and the tower's modules after the last hidden state `task` reads
        (`VisionBackbone.unread_modules`)."""
        objective = self.objectives[task]
        parts = self.training_parts()
        owners = {part: {name} for part, name in self.added_by.items()}
        for name, other in self.objectives.items():
            for part in other.parts:
                owners.setdefault(part, set()).add(name)
        modules = [parts[part] for part, names in sorted(owners.items()) if task not in names and part in parts]
        inner = unwrap_versavit(self.model)
        last_read = objective.layers_read(inner)
        if last_read is not None:
            modules += inner.config.backbone.unread_modules(inner.visual, last_read)
        seen, idle = set(), []
        for module in modules:
            for parameter in module.parameters():
                if parameter.requires_grad and id(parameter) not in seen:
                    seen.add(id(parameter))
                    idle.append(parameter)
        return idle


def _is_multi_process() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def _drop_wrapper_prefixes(module, state_dict, prefix, local_metadata):
    for key in list(state_dict):
        for inner in ("model.", "objective_modules."):
            if key.startswith(prefix + inner):
                state_dict[prefix + key[len(prefix + inner):]] = state_dict.pop(key)


def _add_wrapper_prefixes(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                          error_msgs):
    added = tuple(f"{prefix}{part}." for part in module.objective_modules)
    for key in list(state_dict):
        if not key.startswith(prefix) or key.startswith((prefix + "model.", prefix + "objective_modules.")):
            continue
        inner = "objective_modules." if key.startswith(added) else "model."
        state_dict[prefix + inner + key[len(prefix):]] = state_dict.pop(key)


__all__ = ["ObjectivesModel", "unwrap_versavit"]
