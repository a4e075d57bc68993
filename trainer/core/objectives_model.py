# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The model a `MultiTaskTrainer` trains: a VersaViT model plus the modules its objectives add, run one objective
at a time."""

import json
from pathlib import Path

from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..parts import training_parts, unwrap_versavit

# In a run's `final/` folder beside the VersaViT model: the parts its objectives added (`Objective.modules`), each
# weight under `<part>.<name>`, and in the file's metadata which objective added each part.
OBJECTIVE_PARTS_FILE = "objective_parts.safetensors"


class ObjectivesModel(nn.Module):
    """What a `MultiTaskTrainer` trains: a VersaViT model plus the modules its objectives add.

    `forward(task=name, **batch)` runs objective `name`'s loss. With the run's `context` (`ObjectiveContext`), each
    objective first fits the model config to the run's data (`Objective.configure`). Its state dict has the VersaViT
    model's own names (`visual.*`, `depth_head.*`, ...) and each added part under its part name, so Trainer checkpoints
    load into the task classes as before. With `idle_parameter_term` (set by `MultiTaskTrainer` under DDP) it adds
    `0 x (sum of the trainable parameters this objective does not reach)` to the loss: the other objectives' parts and
    the backbone blocks after the last one it reads. That changes no value or gradient, but every parameter takes part
    in every backward, as DDP's reducer (with `find_unused_parameters=False`, gradient checkpointing included) requires
    when each micro-batch drives one objective. The sharding engines need no such term and cannot take it: under
    ZeRO-3 and FSDP2 a parameter outside the running modules holds only its shard, whose gradient would not match.
    """

    idle_parameter_term = False

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

    def __getattr__(self, name: str):
        """The modules under the names of `state_dict()` too (`visual`, `depth_head`, an added part's name): PyTorch's
        distributed state-dict functions (FSDP2 checkpoints) walk a state dict's names as attributes."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            for holder in ("objective_modules", "model"):
                module = self._modules.get(holder)
                if module is not None and name in module._modules:
                    return module._modules[name]
            raise

    @property
    def wrapped_model(self):
        return self.model

    @property
    def config(self):
        return self.model.config

    @property
    def _no_split_modules(self):  # FSDP's auto-wrap units (accelerate reads it): each tower block and LLM layer
        return getattr(unwrap_versavit(self.model), "_no_split_modules", None)

    @property
    def _keys_to_ignore_on_save(self):  # read by the Trainer when a resumed checkpoint lacks keys
        return getattr(unwrap_versavit(self.model), "_keys_to_ignore_on_save", None)

    def tie_weights(self):
        unwrap_versavit(self.model).tie_weights()

    def training_parts(self) -> dict[str, nn.Module]:
        return {**training_parts(self.model), **dict(self.objective_modules.items())}

    def activation_checkpointing_enable(self, **kwargs):
        unwrap_versavit(self.model).activation_checkpointing_enable(**kwargs)

    def activation_checkpointing_disable(self):
        unwrap_versavit(self.model).activation_checkpointing_disable()

    def save_objective_parts(self, folder, whole: dict | None = None) -> Path | None:
        """Write the parts the objectives added to `folder/objective_parts.safetensors` (None when they added
        none): a run's `final/` holds every trained part, the VersaViT model's and its objectives'. `whole`: this
        model's whole `state_dict()` gathered from the processes' shards (ZeRO-3, FSDP2), read instead of its own."""
        state = {f"{part}.{name}": tensor for part, module in self.objective_modules.items()
                 for name, tensor in module.state_dict().items()}
        if whole is not None:
            state = {name: whole[name] for name in state}
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}
        if not state:
            return None
        path = Path(folder) / OBJECTIVE_PARTS_FILE
        save_file(state, path, metadata={"format": "pt", "added_by": json.dumps(self.added_by)})
        return path

    def load_objective_parts(self, folder) -> None:
        """Load the objectives' parts saved by `save_objective_parts` into this model, whose objectives must add
        the same parts (build it as the run did: `ObjectivesModel(VersaViTForMultiTask.from_pretrained(folder),
        [get_objective(name), ...])`). A missing file, part or weight is an error naming it."""
        path = Path(folder) / OBJECTIVE_PARTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {OBJECTIVE_PARTS_FILE} (the run's objectives added no part, or this "
                                    "is not a run's final/ folder).")
        with safe_open(str(path), "pt") as handle:
            saved = json.loads((handle.metadata() or {}).get("added_by", "{}"))
        if saved != self.added_by:
            raise ValueError(f"{path}: holds the parts {saved} (part: objective), but this model's objectives add "
                             f"{self.added_by}.")
        state = load_file(path)
        for part, module in self.objective_modules.items():
            own = {name[len(part) + 1:]: tensor for name, tensor in state.items() if name.startswith(f"{part}.")}
            missing, unexpected = module.load_state_dict(own, strict=False)
            if missing or unexpected:
                raise ValueError(f"{path}: part {part!r} lacks {missing} / has unexpected {unexpected}.")

    def forward(self, task: str, **batch):
        if task not in self.objectives:
            raise ValueError(f"task: {task!r} is not an objective of this run, which has {sorted(self.objectives)}.")
        objective = self.objectives[task]
        output = objective.forward(self.model, self.objective_modules, batch)
        if self.training and output.loss is not None and self.idle_parameter_term:
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


def own_names(state_dict: dict) -> dict:
    """`state_dict` of an `ObjectivesModel` under the names its `state_dict()` gives (the VersaViT model's own, added
    parts under their part names), for a state gathered without it (DeepSpeed ZeRO-3 walks the modules itself)."""
    _drop_wrapper_prefixes(None, state_dict, "", None)
    return state_dict


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


__all__ = ["OBJECTIVE_PARTS_FILE", "ObjectivesModel", "own_names"]
