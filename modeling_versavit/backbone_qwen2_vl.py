# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Qwen2-VL and Qwen2.5-VL towers: the paper's backbone (Qwen2-VL-7B's) and Table 6's window-attention tower."""

import torch
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLPatchMerger,
    Qwen2_5_VLVisionBlock,
)
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    PatchMerger,
    Qwen2VisionTransformerPretrainedModel,
    Qwen2VLVisionBlock,
)
from transformers.vision_utils import get_vision_window_index

from .backbone_base import VisionBackbone, register_backbone


@register_backbone
class Qwen2VLBackbone(VisionBackbone):
    """`Qwen2VisionTransformerPretrainedModel`: width `embed_dim`, merged width `hidden_size`, global attention."""

    name = "qwen2_vl"
    vision_model_type = "qwen2_vl_vision"
    mllm_model_types = ("qwen2_vl",)
    legacy_model_types = ("qwen2_vl",)
    tower_class = Qwen2VisionTransformerPretrainedModel
    block_class = Qwen2VLVisionBlock
    architecture_fields = ("depth", "embed_dim", "hidden_size", "mlp_ratio", "num_heads", "hidden_act", "in_channels",
                           "patch_size", "spatial_merge_size", "temporal_patch_size")

    def embed_dim(self, vision_config) -> int:
        return vision_config.embed_dim

    def merged_dim(self, vision_config) -> int:
        return vision_config.hidden_size

    def build_projector(self, vision_config, out_dim: int) -> nn.Module:
        return PatchMerger(dim=out_dim, context_dim=self.embed_dim(vision_config),
                           spatial_merge_size=vision_config.spatial_merge_size)


@register_backbone
class Qwen2_5_VLBackbone(VisionBackbone):
    """`Qwen2_5_VisionTransformerPretrainedModel`: window attention, so its pre-merger tokens come permuted into
    attention windows (undone from `transformers.vision_utils.get_vision_window_index`)."""

    name = "qwen2_5_vl"
    vision_model_type = "qwen2_5_vl_vision"
    mllm_model_types = ("qwen2_5_vl",)
    legacy_model_types = ("qwen2_5_vl",)
    tower_class = Qwen2_5_VisionTransformerPretrainedModel
    block_class = Qwen2_5_VLVisionBlock
    lora_targets = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")  # a gated MLP
    architecture_fields = ("depth", "hidden_size", "intermediate_size", "out_hidden_size", "num_heads", "hidden_act",
                           "in_channels", "patch_size", "spatial_merge_size", "temporal_patch_size", "window_size",
                           "fullatt_block_indexes")
    export_blocker = (
        "transformers' window attention (without flash attention) splits the sequence at the window boundaries with "
        "a Python list of lengths, so a traced graph would keep the trace's number of windows, which the image size "
        "sets (and its window permutation, get_vision_window_index, is a Python loop over the grid)"
    )

    def build_projector(self, vision_config, out_dim: int) -> nn.Module:
        return Qwen2_5_VLPatchMerger(dim=out_dim, context_dim=vision_config.hidden_size,
                                     spatial_merge_size=vision_config.spatial_merge_size)

    def token_permutation(self, vision_config, image_grid_thw: torch.Tensor) -> torch.Tensor:
        window_index, _ = get_vision_window_index(
            image_grid_thw, vision_config.spatial_merge_size, vision_config.window_size, vision_config.patch_size
        )
        return window_index
