# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT training: the multi-task trainer and what feeds it.

Installed as `versavit_trainer` (the folder is `trainer/`; a PyPI package named `trainer` already exists). Layers,
bottom first; each imports only those below it (docs/architecture.md, tests/test_layers.py):

    parts, config, run_folder, metrics   the shared vocabulary: model parts, recipe configs, output folders, metrics
    data/         schemas and collators, generated scenes, readers, labelling, experts, text embeddings, assets
    objectives/   one registered unit per training objective (captioning, depth, referring segmentation, ...)
    core/         MultiTaskTrainer, the model it trains, schedule, curricula, a run's options, model, data and plan
    methods/      compositions of objectives and stages: VersaViT, SAILViT, VisPer-LM, task fine-tuning
    evaluation/   linear probes, QA, retrieval, correspondence, the proving ground
    export/       the tower back into an MLLM, the Hub, deployment graphs
"""

from modeling_versavit import __version__

from .core.arguments import MultiTaskTrainingArguments, apply_stage, stage_learning_rates
from .core.schedule import MultiTaskBatchSampler
from .core.streams import MultiTaskCollator, MultiTaskDataset, TaskSpec
from .core.trainer import MultiTaskTrainer
from .data.collators import CaptioningCollator, DepthCollator, SegmentationCollator
from .data.scene_tables import scene_datasets
from .data.scenes import Camera, Scene, SceneObject, generate_scene
from .data.schemas import check_schema, decode_depth, encode_depth
from .parts import PART_MODULES, training_parts, unwrap_versavit

__all__ = [
    "PART_MODULES",
    "apply_stage",
    "stage_learning_rates",
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
    "training_parts",
    "unwrap_versavit",
]

