# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Qwen3-VL and Qwen3.5 towers: patch 16, a learned position grid resampled per image plus 2D rotary, biased patch
embedding, LayerNorm-MLP merger; Qwen3-VL adds DeepStack mergers that feed intermediate blocks into the LLM.

Tokens come in plain 2x2 merge-block order (no windows). VersaViT leaves the merger and the DeepStack mergers to the
MLLM, as the Qwen2-VL PatchMerger: no dense head reads them, task models freeze them, a swap keeps the MLLM's.
A captioning branch with a separate LLM feeds it through one projector (the main merger's structure), and the
DeepStack mergers neither run nor train; with the MLLM's own LLM (`VersaViTConfig.mllm_language_model`) the mergers,
DeepStack included, feed it as in Qwen3-VL.
"""

import copy

from torch import nn
from transformers.models.qwen3_5.modeling_qwen3_5 import (
    Qwen3_5VisionBlock,
    Qwen3_5VisionModel,
    Qwen3_5VisionPatchMerger,
)
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    Qwen3VLVisionBlock,
    Qwen3VLVisionModel,
    Qwen3VLVisionPatchMerger,
)

from .backbone_base import VisionBackbone, register_backbone

# Qwen3-VL's and Qwen3.5's image processors normalise with mean = std = 0.5 (transformers' IMAGENET_STANDARD_*).
HALF = [0.5, 0.5, 0.5]


@register_backbone
class Qwen3_5Backbone(VisionBackbone):
    """`Qwen3_5VisionModel`."""

    name = "qwen3_5"
    vision_model_type = "qwen3_5_vision"
    mllm_model_types = ("qwen3_5", "qwen3_5_moe")
    tower_class = Qwen3_5VisionModel
    block_class = Qwen3_5VisionBlock
    merger_class = Qwen3_5VisionPatchMerger
    lora_targets = ("qkv", "proj", "linear_fc1", "linear_fc2")
    architecture_fields = ("depth", "hidden_size", "intermediate_size", "out_hidden_size", "num_heads", "hidden_act",
                           "in_channels", "patch_size", "spatial_merge_size", "temporal_patch_size",
                           "num_position_embeddings")

    def image_processor_kwargs(self, vision_config) -> dict:
        return {**super().image_processor_kwargs(vision_config), "image_mean": HALF, "image_std": HALF}

    def build_projector(self, vision_config, out_dim: int) -> nn.Module:
        projector_config = copy.deepcopy(vision_config)
        projector_config.out_hidden_size = out_dim
        return self.merger_class(projector_config, use_postshuffle_norm=False)


@register_backbone
class Qwen3VLBackbone(Qwen3_5Backbone):
    """`Qwen3VLVisionModel`: Qwen3.5's tower plus the DeepStack mergers (`deepstack_merger_list`)."""

    name = "qwen3_vl"
    vision_model_type = "qwen3_vl_vision"
    mllm_model_types = ("qwen3_vl", "qwen3_vl_moe")
    tower_class = Qwen3VLVisionModel
    block_class = Qwen3VLVisionBlock
    merger_class = Qwen3VLVisionPatchMerger
    mllm_owned = ("merger", "deepstack_merger_list")
    architecture_fields = Qwen3_5Backbone.architecture_fields + ("deepstack_visual_indexes",)
