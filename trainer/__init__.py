# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT training: the multi-task trainer and what feeds it.

Installed as `versavit_trainer` (the folder is `trainer/`; a PyPI package named `trainer` already exists).

    core/         MultiTaskTrainer, the model it trains, schedule, stage curricula, LoRA, a run's options and plan
    objectives/   one registered unit per training objective (captioning, depth, referring segmentation, ...)
    methods/      compositions of objectives and stages: VersaViT's curriculum, task fine-tuning
    data/         schemas and collators, where a run's data come from, generated scenes, labelling, readers
    evaluation/   metrics, held-out evaluation, linear probes
    export/       the tower back into an MLLM, the Hub
    run_folder    an output folder belongs to one run (used by every layer that writes one)

The modules of the flat layout before it (`versavit_trainer.multitask`, `.metrics`, `.hub`, ...) still import, as
the modules they became, with a FutureWarning; they will be removed in a later release.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from modeling_versavit import __version__

from .core.schedule import MultiTaskBatchSampler
from .core.trainer import (
    BACKBONE_PREFIXES,
    PART_MODULES,
    MultiTaskCollator,
    MultiTaskDataset,
    MultiTaskTrainer,
    MultiTaskTrainingArguments,
    TaskSpec,
    apply_stage,
    stage_learning_rates,
    training_parts,
)
from .data.collators import (
    CaptioningCollator,
    DepthCollator,
    SegmentationCollator,
    check_schema,
    decode_depth,
    encode_depth,
    scene_datasets,
)
from .data.scenes import Camera, Scene, SceneObject, generate_scene

__all__ = [
    "BACKBONE_PREFIXES",
    "PART_MODULES",
    "apply_stage",
    "stage_learning_rates",
    "training_parts",
    "Camera",
    "CaptioningCollator",
    "DepthCollator",
    "SegmentationCollator",
    "check_schema",
    "decode_depth",
    "encode_depth",
    "scene_datasets",
    "MultiTaskBatchSampler",
    "MultiTaskCollator",
    "MultiTaskDataset",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "Scene",
    "SceneObject",
    "TaskSpec",
    "__version__",
    "generate_scene",
]


# The flat layout's modules, now in subpackages: importing the old name gives the new module (one object, so a
# pickle of the old path, e.g. a checkpoint's training_args.bin, still loads). `build`, `data`, `export` and
# `objectives` are real modules of their own.
MOVED_MODULES = {
    "assets": "data.assets", "config": "core.config", "curriculum": "core.curriculum", "finetune": "methods.finetune",
    "hub": "export.hub", "labelling": "data.labelling", "lora": "core.lora", "metrics": "evaluation.metrics",
    "multitask": "core.trainer", "online_text": "objectives.online_text", "plan": "core.plan",
    "probes": "evaluation.probes", "readers": "data.readers", "reporting": "core.reporting", "scenes": "data.scenes",
    "schedule": "core.schedule", "stages": "core.stages", "text_embedding": "data.text_embedding",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == __name__ and name in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        name = spec.name.rpartition(".")[2]
        new = f"{__name__}.{MOVED_MODULES[name]}"
        warnings.warn(f"{spec.name} is deprecated: import {new}.", FutureWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module is already executed


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
