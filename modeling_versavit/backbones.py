# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The tower families (see `backbone_base.VisionBackbone`): one line per family, importing its file registers it."""

# (`from .file import ...`, not `from . import file`: transformers copies a Hub folder's remote code by that form)
from .backbone_aimv2 import Aimv2Backbone  # AIMv2 (SAILViT's tower)
from .backbone_base import BACKBONES, VisionBackbone, register_backbone
from .backbone_internvit import InternViTBackbone  # InternViT (InternVL's and SAILViT's tower)
from .backbone_qwen2_vl import Qwen2_5_VLBackbone, Qwen2VLBackbone
from .backbone_qwen3_vl import Qwen3_5Backbone, Qwen3VLBackbone
from .backbone_siglip import SiglipBackbone  # fixed resolution (SiglipVisionModel)
from .backbone_siglip2 import Siglip2Backbone  # NaFlex (Siglip2VisionModel)


def backbone_for(vision_config) -> VisionBackbone:
    """The family of a vision config (or of its `model_type` string)."""
    model_type = vision_config if isinstance(vision_config, str) else getattr(vision_config, "model_type", None)
    if model_type not in BACKBONES:
        raise ValueError(f"vision_config: model_type {model_type!r} is not supported; expected one of "
                         f"{tuple(BACKBONES)}.")
    return BACKBONES[model_type]


def legacy_vision_model_types() -> dict[str, str]:
    """MLLM model types that older configs store as the tower's `model_type`, mapped to the tower's own."""
    return {old: backbone.vision_model_type for backbone in BACKBONES.values() for old in backbone.legacy_model_types}


__all__ = [
    "BACKBONES",
    "Aimv2Backbone",
    "InternViTBackbone",
    "Qwen2VLBackbone",
    "Qwen2_5_VLBackbone",
    "Qwen3VLBackbone",
    "Qwen3_5Backbone",
    "Siglip2Backbone",
    "SiglipBackbone",
    "backbone_for",
    "legacy_vision_model_types",
    "register_backbone",
]
