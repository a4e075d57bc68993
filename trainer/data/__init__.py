# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Data: the task schemas and collators (`collators`), the generated scenes (`scenes`), where a run's datasets come
from (`sources`), labelling with teacher models (`labelling`), dataset readers (`readers`), text embeddings
(`text_embedding`) and the real assets PyPI packages ship (`assets`).

`versavit_trainer.data` re-exports the schemas and collators (the module of that name before the package)."""

from .collators import *  # noqa: F401, F403
from .collators import __all__  # noqa: F401
