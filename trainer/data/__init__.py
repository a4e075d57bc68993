# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Data: the task schemas and the depth codec (`schemas`), the towers' image processors and input sizes
(`processors`), the training collators (`collators`), the generated scenes (`scenes`) and as the task datasets
(`scene_tables`), labelling with teacher models and reading dataset folders (`labelling`), frozen expert models
(`experts`), dataset readers (`readers`) and the real assets PyPI packages ship (`assets`). Texts are embedded by
`modeling_versavit.SentenceEmbedder` (the pipelines use it too). Where a run's datasets come from is the core's
(`core.sources`).

`versavit_trainer.data` re-exports the schemas, processors, collators and `scene_datasets`."""

from . import collators, processors, scene_tables, schemas
from .collators import *  # noqa: F403
from .processors import *  # noqa: F403
from .scene_tables import *  # noqa: F403
from .schemas import *  # noqa: F403

__all__ = [*schemas.__all__, *processors.__all__, *collators.__all__, *scene_tables.__all__]
