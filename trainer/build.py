# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Deprecated: `versavit_trainer.build` was split by concern. Its names now live in `core.options` (the option
dataclasses), `core.models` (the run's model and backbone sources), `data.sources` (the run's datasets and
collators), `evaluation.held_out` and `core.plan` (the dry run's sizing). This module re-exports them and will be
removed in a later release."""

import warnings

from .core.models import *  # noqa: F401, F403
from .core.options import *  # noqa: F401, F403
from .core.plan import *  # noqa: F401, F403
from .data.sources import *  # noqa: F401, F403
from .evaluation.held_out import *  # noqa: F401, F403

warnings.warn("versavit_trainer.build is deprecated: import from versavit_trainer.core.options, core.models, "
              "data.sources, evaluation.held_out or core.plan.", FutureWarning, stacklevel=2)
