# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Training objectives: one registered unit per objective, read by the trainer, the recipes and the exports.

An [`Objective`] says everything the library needs to train with it:

- `name`: how stages, configs, logs (`loss_<name>`) and task streams (`TaskSpec.name`) call it;
- `parts`: the parts of the model its loss reaches besides the backbone (`training_parts` names), so that the
  trainer knows what a micro-batch of it does not reach; `modules(model)`: parts it adds to the model itself (a
  head the VersaViT model does not have), trained, grouped and checkpointed like the model's own;
- `collator(context)`, `batch_size(data_args)`, `weight(data_args)`: its training batches and its λ;
- `dataset(source, data)` / `held_out(data)`: its training and held-out data;
- `forward(model, modules, batch)`: its loss (a `ModelOutput` with `loss` and, for logging, `loss_terms`);
- `layers_read(model)`: how many backbone blocks its forward uses (None: all of them);
- `evaluate(model, dataset, context)`: its held-out metrics (None when it has none).

The three objectives of the paper (captioning, depth, referring segmentation) are registered below. Another one is
a subclass plus one line, from any file (a run imports it with `--imports path/to/file.py`):

    @register_objective
    class PooledFeatureRegression(Objective):
        name = "pooled_l2"
        def modules(self, model):
            return {"pooled_head": torch.nn.Linear(model.config.out_hidden_size, 3)}
        ...
"""

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class ObjectiveContext:
    """What an objective's collator and evaluation may need from the run: its data options (`DataArguments`), the
    captioning tokenizer, the seed of the collators' random decisions, the width of the text embeddings, and whether
    the model embeds expressions itself (`online_text`: an `OnlineTextSegmentation`)."""

    data_args: Any
    tokenizer: Any = None
    seed: int | None = None
    text_embed_dim: int | None = None
    online_text: bool = False


class Objective:
    """A training objective (see the module docstring). Subclasses set `name` and override what differs; the
    defaults read the run's options named after the objective (`<name>_batch_size`, `<name>_weight`,
    `<name>_data`, `<name>_eval_data`) when `DataArguments` has them."""

    name: ClassVar[str] = ""
    parts: ClassVar[tuple[str, ...]] = ()
    # the head of `VersaViTForMultiTask` it drives (`config.tasks`), None when it brings its own modules
    model_task: ClassVar[str | None] = None
    default_batch_size: ClassVar[int] = 8
    default_weight: ClassVar[float] = 1.0
    # a generated-scenes dataset of it needs the expressions embedded (the text encoder is loaded)
    needs_text_embeddings: ClassVar[bool] = False

    # ------------------------------------------------------------------------------------------------ model
    def modules(self, model) -> dict[str, nn.Module]:
        """The parts this objective adds to `model`, by part name (new modules); {} when the model has them."""
        return {}

    def forward(self, model, modules: nn.ModuleDict, batch: dict):
        """The loss of one collated batch: a `ModelOutput` with `loss` (and optional `loss_terms`). `model` is the
        VersaViT model (possibly wrapped, e.g. by an online text encoder), `modules` the objectives' own parts."""
        return model(task=self.model_task, **batch)

    def layers_read(self, model) -> int | None:
        """The number of backbone blocks the forward uses (hidden state index); None: every block."""
        return None

    # ------------------------------------------------------------------------------------------------ data
    def batch_size(self, data_args) -> int:
        return int(getattr(data_args, f"{self.name}_batch_size", self.default_batch_size))

    def weight(self, data_args) -> float:
        return float(getattr(data_args, f"{self.name}_weight", self.default_weight))

    def data_folder(self, data_args) -> str | None:
        return getattr(data_args, f"{self.name}_data", None)

    def held_out_folder(self, data_args) -> str | None:
        return getattr(data_args, f"{self.name}_eval_data", None)

    def from_scenes(self, tables: dict) -> Any:
        """Its dataset among the generated scenes' tables (`data.scene_datasets`)."""
        if self.name not in tables:
            raise ValueError(f"objective {self.name!r}: the generated scenes have no {self.name} table; give its data "
                             f"as a folder (stages[...].objectives.{self.name}.data).")
        return tables[self.name]

    def load_folder(self, path: str) -> Any:
        """Its dataset from a folder (a saved dataset or a labelling output), schema-checked."""
        from .build import _folder

        return _folder(path, self.name)

    def collator(self, context: ObjectiveContext) -> Callable[[list], dict]:
        raise NotImplementedError(f"objective {self.name!r} defines no collator")

    # ------------------------------------------------------------------------------------------------ evaluation
    has_held_out: ClassVar[bool] = False

    def evaluate(self, model, dataset, context: ObjectiveContext) -> dict | None:
        """Held-out metrics of `model` (in eval mode) on `dataset`; None for an objective without them."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective):
    """Register an `Objective` (an instance or a subclass, which is instantiated); usable as a class decorator.
    Returns what it was given. A second registration of a name replaces the first, with a warning."""
    instance = objective() if isinstance(objective, type) else objective
    if not isinstance(instance, Objective) or not isinstance(instance.name, str) or not instance.name.isidentifier():
        raise ValueError(f"register_objective: expected an Objective with an identifier as its name, got {objective!r}.")
    if instance.name in OBJECTIVES and type(OBJECTIVES[instance.name]) is not type(instance):
        logger.warning("objective %r: %s replaces %s", instance.name, type(instance).__name__,
                       type(OBJECTIVES[instance.name]).__name__)
    OBJECTIVES[instance.name] = instance
    return objective


def get_objective(name: str, option: str = "objective") -> Objective:
    """The registered objective `name`, else a `ValueError` naming `option`, the known names and the closest one."""
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(str(name), list(OBJECTIVES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{option}: unknown objective {name!r}{hint}; registered: {sorted(OBJECTIVES)} (register "
                         "another with versavit_trainer.objectives.register_objective, loaded with --imports).")
    return OBJECTIVES[name]


# ---------------------------------------------------------------------------------------------------- the paper's
@register_objective
class CaptioningObjective(Objective):
    """Captioning / VQA through the LLM (paper §4.2.1): next-token loss on the answers."""

    name = "captioning"
    parts = ("projector", "language_model")
    model_task = "captioning"

    def layers_read(self, model):
        return model.captioning_layers_read()

    def collator(self, context):
        from modeling_versavit import VersaViTCaptioningProcessor

        from .data import CaptioningCollator, caption_image_processor

        data_args = context.data_args
        processor = VersaViTCaptioningProcessor(caption_image_processor(data_args.caption_max_pixels),
                                                context.tokenizer)
        return CaptioningCollator(processor, max_turns=data_args.max_turns, seed=context.seed,
                                  max_length=data_args.caption_max_length)


class _DenseObjective(Objective):
    has_held_out = True

    def collator(self, context):
        from .build import dense_collator

        return dense_collator(context.data_args, self.name, context.seed, **self._collator_options(context))

    def _collator_options(self, context) -> dict:
        return {}


@register_objective
class DepthObjective(_DenseObjective):
    """Monocular relative depth (paper §4.2.2): DPT head, scale-and-shift-invariant + gradient-matching loss."""

    name = "depth"
    parts = ("depth_head",)
    model_task = "depth"

    def layers_read(self, model):
        return model.depth_layers_read()

    def evaluate(self, model, dataset, context):
        from .build import eval_batches
        from .metrics import evaluate_depth

        return evaluate_depth(model, eval_batches(context.data_args, "depth", dataset))


@register_objective
class SegmentationObjective(_DenseObjective):
    """Referring segmentation (paper §4.2.3): SAM-style decoder prompted by text embeddings. Reaches the text
    encoder too when it trains online (`OnlineTextSegmentation`)."""

    name = "segmentation"
    parts = ("segmentation_head", "text_encoder")
    model_task = "segmentation"
    needs_text_embeddings = True

    def layers_read(self, model):
        return model.segmentation_layers_read()

    def _collator_options(self, context):
        return {"text_embed_dim": context.text_embed_dim}

    def from_scenes(self, tables):
        dataset = super().from_scenes(tables)
        if len(dataset) == 0:
            raise ValueError("segmentation data: no image with a referring expression.")
        return dataset

    def evaluate(self, model, dataset, context):
        from .build import eval_batches
        from .metrics import evaluate_segmentation

        return evaluate_segmentation(model, eval_batches(context.data_args, "segmentation", dataset,
                                                         online_text=context.online_text))


def unwrap_versavit(model):
    """The VersaViT model inside training wrappers (`ObjectivesModel`, `OnlineTextSegmentation`)."""
    while True:
        inner = getattr(model, "wrapped_model", None)
        if inner is None:
            return model
        model = inner


class ObjectivesModel(nn.Module):
    """What a `MultiTaskTrainer` trains: a VersaViT model plus the modules its objectives add.

    `forward(task=name, **batch)` runs objective `name`'s loss. Its state dict has the VersaViT model's own names
    (`visual.*`, `depth_head.*`, ...) and each added part under its part name, so Trainer checkpoints load into the
    task classes as before. Under multi-process training it adds `0 x (sum of the trainable parameters this objective
    does not reach)` to the loss: the other objectives' parts and the backbone blocks after the last one it reads.
    That changes no value or gradient, but every parameter takes part in every backward, as DDP's reducer (with
    `find_unused_parameters=False`, gradient checkpointing included) requires when each micro-batch drives one
    objective.
    """

    accepts_loss_kwargs = False  # each objective normalises its own loss; the trainer weights and accumulates them

    def __init__(self, model, objectives):
        super().__init__()
        self.model = model
        self.objectives = {objective.name: objective for objective in objectives}
        added, self.added_by = {}, {}
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
        from .multitask import training_parts

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
        of the run reach, and the backbone blocks after the last one `task` reads."""
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
            modules += list(inner.visual.blocks[last_read:])  # hidden_states[i] is the output of block i - 1
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


__all__ = [
    "CaptioningObjective",
    "DepthObjective",
    "OBJECTIVES",
    "Objective",
    "ObjectiveContext",
    "ObjectivesModel",
    "SegmentationObjective",
    "get_objective",
    "register_objective",
    "unwrap_versavit",
]
