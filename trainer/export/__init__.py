# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Export: the trained tower back into an MLLM (`mllm`: swap, sizes, checks) and onto the Hub (`hub`).

`versavit_trainer.export` re-exports the MLLM swap (the module of that name before the package)."""

from .mllm import *  # noqa: F401, F403
from .mllm import __all__  # noqa: F401
