# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""AIMv2 towers: `Aimv2VisionModel`, Apple's autoregressively pre-trained ViT, one of the two towers SAILViT refines
(AIMv2-Huge-448 in SAILViT-Huge).

SigLIP's reading (`backbone_siglip`): whole images in, raster-order patch tokens out, an RMSNorm after the last block
(VersaViT's last hidden state is after it), an optional attention-pooling head left to the model it came from. Two
position schemes, as transformers has them: the `-native` checkpoints (`is_native: true`) add a 2D sine-cosine table
built for each image's size, so any size runs; the others learn one table for `image_size` and transformers cannot
resize it, so they take `image_size` x `image_size` images only (a clear error otherwise). The checkpoints ship as
the `Aimv2Model` dual encoder (`vision_model.*`), which `from_mllm` reads.
"""

from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.aimv2.modeling_aimv2 import Aimv2EncoderLayer, Aimv2VisionModel
from transformers.utils.import_utils import torch_compilable_check

from .backbone_base import register_backbone
from .backbone_siglip import SiglipBackbone


@register_backbone
class Aimv2Backbone(SiglipBackbone):
    """`Aimv2VisionModel`: SwiGLU blocks with RMSNorm, no merger."""

    name = "aimv2"
    vision_model_type = "aimv2_vision_model"
    mllm_model_types = ("aimv2",)
    tower_class = Aimv2VisionModel
    block_class = Aimv2EncoderLayer
    architecture_fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "num_channels", "image_size", "patch_size", "hidden_act", "rms_norm_eps", "qkv_bias",
                           "mlp_bias", "use_head", "is_native")
    mllm_prefixes = ("vision_model.",)
    mllm_attribute = "vision_model"
    lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj")

    def image_processor_kwargs(self, vision_config) -> dict:
        return {**super().image_processor_kwargs(vision_config), "image_mean": list(OPENAI_CLIP_MEAN),
                "image_std": list(OPENAI_CLIP_STD)}

    def patch_embedding(self, tower):
        return tower.embeddings.patch_embed

    def attention(self, block):
        return block.attention

    def final_norm(self, tower):
        return tower.rms_norm

    def owned_modules(self, tower):
        return [tower.head] if tower.use_head else []

    def image_call(self, config, images):
        height, width = images.shape[-2:]
        if not config.is_native:  # (a check `torch.export` keeps: such a graph serves `image_size` only)
            for side in (height, width):
                torch_compilable_check(
                    side == config.image_size,
                    lambda: f"image_grid_thw: this AIMv2 tower learned its positions for {config.image_size}x"
                    f"{config.image_size} images (vision_config.is_native false) and transformers does not resize "
                    f"them; got {height}x{width} pixels. Resize the images to {config.image_size} or use a "
                    "native-resolution checkpoint.",
                )
        return {"pixel_values": images}, None
