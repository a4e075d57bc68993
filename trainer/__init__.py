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
"""

from modeling_versavit import __version__

from .core.schedule import MultiTaskBatchSampler
from .core.trainer import (
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

