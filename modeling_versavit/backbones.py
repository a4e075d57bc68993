# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The registry of tower families (see `backbone_base.VisionBackbone`): one line per family."""

from .backbone_base import VisionBackbone
from .backbone_qwen2_vl import Qwen2_5_VLBackbone, Qwen2VLBackbone
from .backbone_qwen3_vl import Qwen3_5Backbone, Qwen3VLBackbone
from .backbone_siglip import SiglipBackbone
from .backbone_siglip2 import Siglip2Backbone

BACKBONES: dict[str, VisionBackbone] = {}


def register_backbone(backbone: VisionBackbone) -> VisionBackbone:
    """Make `backbone` the family of vision configs of its `vision_model_type`."""
    BACKBONES[backbone.vision_model_type] = backbone
    return backbone


register_backbone(Qwen2VLBackbone())
register_backbone(Qwen2_5_VLBackbone())
register_backbone(Qwen3VLBackbone())
register_backbone(Qwen3_5Backbone())
register_backbone(Siglip2Backbone())
register_backbone(SiglipBackbone())


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


__all__ = ["BACKBONES", "backbone_for", "register_backbone"]
