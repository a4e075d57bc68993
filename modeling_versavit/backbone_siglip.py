# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Fixed-resolution SigLIP towers: `SiglipVisionModel`, which transformers uses for SigLIP and for the fixed-resolution
SigLIP2 checkpoints (SigLIP2-so400m-patch16-512, the tower of the paper's Table 6) and inside PaliGemma.

Everything but the input is SigLIP2's (`backbone_siglip2`): no merger, raster-order tokens, post-LayerNorm last
layer, an optional attention-pooling head, LFM2-VL-style 2x2 blocks for the captioning projector. The input is a
batch of whole images: the packed patches are folded back into `(num_images, C, H, W)`; a size other than the
checkpoint's `image_size` resizes its learned position grid (`interpolate_pos_encoding`, bicubic, as transformers
does); images of different sizes run one size at a time.
"""

import torch
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer, SiglipVisionModel

from .backbone_base import register_backbone, tokens_to_feature_maps
from .backbone_siglip2 import Siglip2Backbone


@register_backbone
class SiglipBackbone(Siglip2Backbone):
    """`SiglipVisionModel`: a Conv2d patch embedding, a fixed `image_size` position grid."""

    name = "siglip"
    vision_model_type = "siglip_vision_model"
    mllm_model_types = ("siglip", "paligemma")
    tower_class = SiglipVisionModel
    block_class = SiglipEncoderLayer
    architecture_fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
                           "vision_use_head")
    # PaliGemma (with and without SigLIP's inner `vision_model.`; transformers saves `vision_tower.*`) and the SigLIP
    # dual encoder's own folder
    mllm_prefixes = ("model.vision_tower.vision_model.", "vision_tower.vision_model.", "model.vision_tower.",
                     "vision_tower.", "vision_model.")

    def tower_calls(self, config, pixel_values, image_grid_thw):
        """Images folded back from their packed patches, one call per run of same-size images (under
        `torch.export`, one call: an exported call's images share one size)."""
        patch, channels = self.patch_size(config), config.num_channels
        if torch.compiler.is_exporting():
            maps = tokens_to_feature_maps(pixel_values, image_grid_thw, self.merge)  # (n, C*P*P, h, w): shared grid
            count, _, h, w = maps.shape
            images = maps.view(count, channels, patch, patch, h, w).permute(0, 1, 4, 2, 5, 3)
            yield self.image_call(config, images.reshape(count, channels, h * patch, w * patch))
            return
        for images in folded_images(pixel_values, image_grid_thw, patch, channels, self.merge):
            yield self.image_call(config, images)

    def image_call(self, config, images: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
        """The tower's inputs for a batch of same-size images `(n, C, H, W)`, and the mask of its real patch tokens
        among its output tokens after `prefix_tokens` (None: all of them)."""
        # (exported: always resized, which at `image_size` is the identity, so the graph serves every size)
        resized = torch.compiler.is_exporting() or tuple(images.shape[-2:]) != (config.image_size, config.image_size)
        return {"pixel_values": images, "interpolate_pos_encoding": resized}, None


def folded_images(pixel_values, image_grid_thw, patch: int, channels: int, merge: int):
    """Packed patch rows (`(C, P, P)` each, merge blocks in order) folded back into `(n, C, H, W)` images, one tensor
    per run of consecutive same-size images."""
    grids = [tuple(row) for row in image_grid_thw[:, 1:].tolist()]
    start, offset = 0, 0
    while start < len(grids):
        end = start
        while end < len(grids) and grids[end] == grids[start]:
            end += 1
        h, w = grids[start]
        rows = pixel_values[offset : offset + (end - start) * h * w]
        maps = tokens_to_feature_maps(rows, image_grid_thw[start:end], merge)  # (n, C*P*P, h, w), raster
        images = maps.view(-1, channels, patch, patch, h, w).permute(0, 1, 4, 2, 5, 3)
        yield images.reshape(-1, channels, h * patch, w * patch)
        start, offset = end, offset + (end - start) * h * w
