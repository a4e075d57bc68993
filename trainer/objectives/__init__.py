# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Training objectives: one registered unit per objective, read by the trainer, the recipes and the exports.

An [`Objective`] says everything the library needs to train with it:

- `name`: how stages, configs, logs (`loss_<name>`, `<name>/<term>`) and task streams (`TaskSpec.name`) call it;
- `parts`: the parts of the model its loss reaches besides the backbone (`training_parts` names), so that the
  trainer knows what a micro-batch of it does not reach; `modules(model)`: parts it adds to the model itself (a
  head the VersaViT model does not have), trained, grouped and checkpointed like the model's own, after
  `configure(config, context)` has fitted the model's config to the run's data;
- `collator(context)`, `batch_size(data_args)`, `weight(data_args)`: its training batches and its λ;
- `from_scenes(tables)` / `load_folder(path)`, `data_folder` / `held_out_folder`: its data, generated or read, then
  `prepare_data(dataset, data_args)` once per run (e.g. expert embeddings added);
- `forward(model, modules, batch)`: its loss (a `ModelOutput` with `loss` and, for logging, `loss_terms`);
- `layers_read(model)`: how many backbone blocks its forward uses (None: all of them);
- `evaluate(model, dataset, context)`: its held-out metrics (None when it has none); `draw(...)`: its column of the
  run's predictions.png;
- `task_class`, `checkpoint_prefixes`: the task model its trained parts load into (Hub export);
  `input_pixels` / `input_description`: its input size for the run's plan and memory estimate.

The three objectives of the paper (captioning, depth, referring segmentation) are in `captioning.py` and `dense.py`;
the image-text contrastive objective (SAILViT's cross-modal alignment) in `contrastive.py`; VisPer-LM's embedding
distillation in `distillation.py`.
Another one is a subclass plus one line, from any file (a run imports it with `--imports path/to/file.py`; see
tests/toy_objective.py):

    @register_objective
    class PooledFeatureRegression(Objective):
        name = "pooled_l2"
        def modules(self, model):
            return {"pooled_head": torch.nn.Linear(model.config.embed_dim, 3)}
        ...
"""

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class ObjectiveContext:
    """What an objective's collator and evaluation may need from the run: its data options (`DataArguments`), the
    captioning tokenizer, the seed of the collators' random decisions, the width of the text embeddings, whether
    the model embeds expressions itself (`online_text`: an `OnlineTextSegmentation`) and the tower's config (its patch
    and merge sizes)."""

    data_args: Any
    tokenizer: Any = None
    seed: int | None = None
    text_embed_dim: int | None = None
    online_text: bool = False
    caption_max_new_tokens: int = 40  # the captions drawn in predictions.png
    config: Any = None  # the tower's `VersaViTConfig` (patch and merge sizes); None: Qwen2-VL's
    datasets: dict | None = None  # the run's training datasets by objective name (each a list, one per use)

    @property
    def image_processor(self):
        """The tower's image processor (`data.collators.image_processor_for`), None for Qwen2-VL's default."""
        from ..data.collators import image_processor_for

        return None if self.config is None else image_processor_for(self.config)


class Objective:
    """A training objective (see the module docstring). Subclasses set `name` and override what differs; the
    defaults read the run's options named after the objective (`<name>_batch_size`, `<name>_weight`,
    `<name>_data`, `<name>_eval_data`) when `DataArguments` has them."""

    name: ClassVar[str] = ""
    parts: ClassVar[tuple[str, ...]] = ()
    # the head of `VersaViTForMultiTask` it drives (`config.tasks`), None when it brings its own modules
    model_task: ClassVar[str | None] = None
    default_batch_size: ClassVar[int] = 8
    min_batch_size: ClassVar[int] = 1  # e.g. 2 for a contrastive loss, whose negatives are the batch's other pairs
    default_weight: ClassVar[float] = 1.0
    # a generated-scenes dataset of it needs texts embedded (the text encoder is loaded)
    needs_text_embeddings: ClassVar[bool] = False
    # tables `data.scene_datasets` builds only when asked (e.g. "contrastive"), for `from_scenes`
    scene_tables: ClassVar[tuple[str, ...]] = ()
    # the task model (a `VersaViTFor...` class) its trained parts load into, and their weight-name prefixes in a
    # checkpoint: what the Hub export and `require_task_weights` offer for it
    task_class: ClassVar[type | None] = None
    checkpoint_prefixes: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------------------------------------ model
    def configure(self, config, context: "ObjectiveContext") -> None:
        """Fit the model's `config` to the run's data before `modules` builds this objective's parts (e.g. the width
        of the run's text embeddings); the default changes nothing."""

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

    def prepare_data(self, dataset, data_args) -> Any:
        """Its training `dataset` (from `from_scenes` or `load_folder`) made ready once, when the run starts (e.g.
        the distillation targets of frozen experts added); the default changes nothing."""
        return dataset

    def from_scenes(self, tables: dict) -> Any:
        """Its dataset among the generated scenes' tables (`data.scene_datasets`)."""
        if self.name not in tables:
            raise ValueError(f"objective {self.name!r}: the generated scenes have no {self.name} table; give its data "
                             f"as a folder (stages[...].objectives.{self.name}.data).")
        return tables[self.name]

    def load_folder(self, path: str) -> Any:
        """Its dataset from a folder (a saved dataset or a labelling output), schema-checked."""
        from ..data.sources import dataset_folder

        return dataset_folder(path, self.name)

    def input_pixels(self, data_args) -> int | None:
        """The pixels of its largest input image (the memory estimate); None: not estimated."""
        return None

    def input_description(self, data_args) -> str:
        """Its input size for the run's plan, e.g. " x 532px"."""
        return ""

    def collator(self, context: ObjectiveContext) -> Callable[[list], dict]:
        """Its training collator: a list of dataset rows -> the keyword arguments of `forward`'s batch. Every
        objective defines one (`register_objective` refuses one that does not)."""
        raise TypeError(f"objective {self.name!r} defines no collator.")

    # ------------------------------------------------------------------------------------------------ evaluation
    has_held_out: ClassVar[bool] = False
    draws_predictions: ClassVar[bool] = False  # a column of the run's predictions.png (`draw`)

    def draw(self, axis, model, image, row: dict, context: ObjectiveContext) -> dict | None:
        """Draw the prediction of `model` (eval mode) for held-out `image` (its dataset `row`) on the matplotlib
        `axis`; returns what it drew, for the run's summary."""
        return None

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
    if type(instance).collator is Objective.collator:
        raise ValueError(f"register_objective: objective {instance.name!r} defines no collator(context).")
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


# The paper's objectives register themselves on import.
from . import captioning, contrastive, dense, distillation  # noqa: E402, F401

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveContext",
    "get_objective",
    "register_objective",
]
