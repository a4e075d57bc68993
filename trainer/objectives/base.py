# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What an objective is (`Objective`, see the package docstring), what it gets from the run (`ObjectiveContext`),
and the registry (`register_objective`, `get_objective`)."""


import difflib
import logging
import textwrap
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
        """The tower's image processor (`data.processors.image_processor_for`), None for Qwen2-VL's default."""
        from ..data.processors import image_processor_for

        return None if self.config is None else image_processor_for(self.config)


def wrap_text(text: str, width: int) -> str:
    """`text` in lines of at most `width` characters, eight lines at most: captions and expressions in `draw`."""
    return "\n".join(textwrap.wrap(text, width)[:8])


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
        """The loss of one collated batch (what `collator` made): a `ModelOutput` with `loss` (and optional
        `loss_terms`, logged as `<name>/<term>`). `modules` holds the run's objective-added parts by name (this
        objective's `modules(model)`). `model` is the run's `VersaViTForMultiTask`, possibly inside a training
        wrapper (`online_text`'s text encoder): `versavit_trainer.parts.unwrap_versavit(model)` is the VersaViT model,
        whose tower is read the same way for every family: `get_last_hidden_state(pixel_values, image_grid_thw)`
        (packed last-layer tokens, `(tokens, embed_dim)`), `get_dense_features(pixel_values, image_grid_thw,
        layers)` (feature maps of chosen layers), `model(task=..., **batch)` for its own heads, and
        `config.backbone` (the `VisionBackbone`: blocks, widths). Never `model.visual`'s own attributes or call
        signature: they differ per family."""
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
        from ..data.labelling import dataset_folder

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
        raise ValueError(
            f"register_objective: expected an Objective with an identifier as its name, got {objective!r}."
        )
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

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveContext",
    "get_objective",
    "register_objective",
    "wrap_text",
]
