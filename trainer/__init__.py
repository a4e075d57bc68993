# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT training: the multi-task trainer and what feeds it.

Installed as `versavit_trainer` (the folder is `trainer/`; a PyPI package named `trainer` already exists).
"""

from modeling_versavit import __version__

from .multitask import (
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
from .data import (
    CaptioningCollator,
    DepthCollator,
    SegmentationCollator,
    check_schema,
    decode_depth,
    encode_depth,
    scene_datasets,
)
from .scenes import Camera, Scene, SceneObject, generate_scene
from .schedule import MultiTaskBatchSampler

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
