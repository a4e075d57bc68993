# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""InternViT towers: `InternVLVisionModel`, the tower of InternVL (2.5 / 3, the `-hf` checkpoints transformers loads)
and the other tower SAILViT refines.

SigLIP's reading (`backbone_siglip`): whole images in, raster-order patch tokens out; a CLS token comes first in each
image's sequence and no dense head reads it (`prefix_tokens`). The learned position table is resized bicubically to
each image's patch grid by transformers itself, so any size runs. The MLLM's connector lives outside the tower
(InternVL's pixel shuffle then `multi_modal_projector`), so nothing of the tower is the MLLM's own; the captioning
projector is built like that connector: each 2x2 block of tokens concatenated, LayerNorm, MLP.
"""

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.internvl.modeling_internvl import InternVLVisionLayer, InternVLVisionModel

from .backbone_base import register_backbone
from .backbone_siglip import SiglipBackbone


class PixelShuffleProjector(nn.Module):
    """InternVL's `multi_modal_projector` over VersaViT's packed tokens: each `merge` x `merge` block of
    `context_dim`-wide tokens (consecutive rows) concatenated, then LayerNorm, Linear, GELU, Linear into `dim`."""

    def __init__(self, dim: int, context_dim: int, spatial_merge_size: int = 2, hidden_act: str = "gelu"):
        super().__init__()
        self.block_dim = context_dim * spatial_merge_size**2
        self.layer_norm = nn.LayerNorm(self.block_dim)
        self.linear_1 = nn.Linear(self.block_dim, dim)
        self.act = ACT2FN[hidden_act]
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.layer_norm(hidden_states.reshape(-1, self.block_dim))
        return self.linear_2(self.act(self.linear_1(hidden_states)))


@register_backbone
class InternViTBackbone(SiglipBackbone):
    """`InternVLVisionModel`: a CLS token, layer-scaled blocks, a LayerNorm after the last block unless the tower mean
    pools (then none)."""

    name = "internvit"
    vision_model_type = "internvl_vision"
    mllm_model_types = ("internvl",)
    tower_class = InternVLVisionModel
    block_class = InternVLVisionLayer
    mllm_owned = ()
    architecture_fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "num_channels", "image_size", "patch_size", "hidden_act", "norm_type", "layer_norm_eps",
                           "attention_bias", "use_qk_norm", "use_absolute_position_embeddings", "use_mean_pooling",
                           "use_mask_token")
    # InternVL as transformers saves it, then the `-hf` releases' naming
    mllm_prefixes = ("model.vision_tower.", "vision_tower.")
    mllm_attribute = "vision_tower"
    blocks_pattern = r"encoder\.layer\.\d+"
    lora_targets = ("q_proj", "k_proj", "v_proj", "projection_layer", "fc1", "fc2")
    prefix_tokens = 1  # the CLS token

    def patch_size(self, vision_config) -> int:
        height, width = vision_config.patch_size
        if height != width:
            raise ValueError(f"vision_config.patch_size: VersaViT needs square patches, got {[height, width]}.")
        return height

    def image_processor_kwargs(self, vision_config) -> dict:
        return {**super().image_processor_kwargs(vision_config), "image_mean": list(IMAGENET_DEFAULT_MEAN),
                "image_std": list(IMAGENET_DEFAULT_STD)}

    def build_projector(self, vision_config, out_dim: int) -> nn.Module:
        return PixelShuffleProjector(out_dim, vision_config.hidden_size, self.merge)

    def patch_embedding(self, tower):
        return tower.embeddings.patch_embeddings

    def blocks(self, tower):
        return tower.encoder.layer

    def attention(self, block):
        return block.attention

    def final_norm(self, tower):
        return tower.layernorm

    def owned_modules(self, tower):
        return []

    def image_call(self, config, images):
        return {"pixel_values": images}, None
