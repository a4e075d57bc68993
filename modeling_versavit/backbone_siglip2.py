# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""SigLIP2 towers: `Siglip2VisionModel` (NaFlex: any aspect ratio, the learned 16x16 position grid resized per image,
padded batches with an attention mask), the tower of the paper's Table 6 (SigLIP2-so400m) and of LFM2-VL.

SigLIP2 does not merge tokens: every patch is a token. VersaViT keeps its packed interface for it: the image processor
lays out patches as for the Qwen towers (temporal patch 1, grids in whole 2x2 blocks), and `run` turns them into
SigLIP2's padded batch (raster order, channels-last patches, `pixel_attention_mask`, `spatial_shapes`) and the outputs
back into packed rows in 2x2 block order, padding dropped. So the dense heads read SigLIP2's patch tokens exactly, and
the captioning projector merges each 2x2 block (a pixel-shuffle merge, as LFM2-VL's projector does) into one LLM token.

`hidden_states[-1]` is the tower's `last_hidden_state`, after `post_layernorm` (what an MLLM consumes), as the last
hidden state is for the Qwen towers; earlier entries are the encoder layers' outputs. `pooler_output` is SigLIP2's
attention-pooled image embedding `(num_images, hidden_size)` when the tower has its head (`vision_use_head`), else
None; VersaViT leaves that head as it is, like a Qwen merger.
"""

from contextlib import contextmanager
from unittest import mock

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger
from transformers.models.siglip2.modeling_siglip2 import Siglip2EncoderLayer, Siglip2VisionModel

from .backbone_base import VisionBackbone, register_backbone, shared_grid

HALF = [0.5, 0.5, 0.5]  # SigLIP's normalisation: mean = std = 0.5


@contextmanager
def resized_positions_when_exporting():
    """Under `torch.export`, transformers' ViT position-grid resizing (SigLIP's and InternViT's
    `interpolate_pos_encoding`) always resizes, as it does "when tracing to ensure the exported model works for
    dynamic input shapes": its shortcut at the checkpoint's own size compares a size read from `image_grid_thw`, which
    the exporter cannot decide. Resizing to the same size is the identity (bicubic at scale 1), so nothing changes."""
    if not torch.compiler.is_exporting():
        yield
        return
    with mock.patch.object(torch.jit, "is_tracing", return_value=True):
        yield


def block_to_raster(image_grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """For packed rows in `merge_size` x `merge_size` block order, image after image: the row that holds each image's
    patch in raster order (image after image). Under `torch.export` every image shares one grid (`shared_grid`) and
    the index is built from shapes alone, so it traces for any image size."""
    m = merge_size
    if torch.compiler.is_exporting():
        count = image_grid_thw.shape[0]
        h, w = shared_grid(image_grid_thw, image_grid_thw[:, 1:].prod(-1).sum(), "an exported call",
                           "export with images of one size (the exporter's contract).", m)
        blocks = torch.arange(count * h * w, device=image_grid_thw.device).view(count, h // m, w // m, m, m)
        return blocks.permute(0, 1, 3, 2, 4).reshape(-1)
    index, offset = [], 0
    for _, h, w in image_grid_thw.tolist():
        blocks = torch.arange(h * w).view(h // m, w // m, m, m)  # packed position of block (R, C), cell (r, c)
        index.append(blocks.permute(0, 2, 1, 3).reshape(-1) + offset)  # rows R*m + r, columns C*m + c
        offset += h * w
    return torch.cat(index).to(image_grid_thw.device)


@register_backbone
class Siglip2Backbone(VisionBackbone):
    """`Siglip2VisionModel`; width `hidden_size`, no merger (the merged width is the LLM's projector's business)."""

    name = "siglip2"
    vision_model_type = "siglip2_vision_model"
    mllm_model_types = ("lfm2_vl",)
    tower_class = Siglip2VisionModel
    block_class = Siglip2EncoderLayer
    mllm_owned = ("head",)
    architecture_fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "num_channels", "patch_size", "hidden_act", "layer_norm_eps", "num_patches",
                           "vision_use_head")
    # LFM2-VL as transformers v5 saves it, then with SigLIP2's inner `vision_model.` (the original release naming)
    mllm_prefixes = ("model.vision_tower.vision_model.", "vision_tower.vision_model.", "model.vision_tower.",
                     "vision_tower.")
    mllm_attribute = "vision_tower"
    export_fixed_image_count = None  # an exported call's images share one size: one batch of any number of them
    blocks_pattern = r"encoder\.layers\.\d+"
    lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    # VersaViT's 2x2 blocks: the captioning projector's pixel-shuffle merge, and what input sides are multiples of.
    merge = 2
    # Tokens the tower puts before each image's patch tokens (a CLS token): no dense head reads them.
    prefix_tokens = 0

    def embed_dim(self, vision_config) -> int:
        return vision_config.hidden_size

    def merged_dim(self, vision_config) -> int | None:
        return None  # no merger in the tower: the MLLM's projector (outside it) sets the LLM width

    def num_layers(self, vision_config) -> int:
        return vision_config.num_hidden_layers

    def num_heads(self, vision_config) -> int:
        return vision_config.num_attention_heads

    def spatial_merge_size(self, vision_config) -> int:
        return self.merge

    def temporal_patch_size(self, vision_config) -> int:
        return 1

    def in_channels(self, vision_config) -> int:
        return vision_config.num_channels

    def image_processor_kwargs(self, vision_config) -> dict:
        return {"patch_size": self.patch_size(vision_config), "merge_size": self.merge, "temporal_patch_size": 1,
                "image_mean": HALF, "image_std": HALF}

    def build_tower(self, vision_config) -> nn.Module:
        return self.tower_class._from_config(vision_config)

    def build_projector(self, vision_config, out_dim: int) -> nn.Module:
        return PatchMerger(dim=out_dim, context_dim=vision_config.hidden_size, spatial_merge_size=self.merge)

    def owned_modules(self, tower: nn.Module) -> list[nn.Module]:
        return [tower.head] if tower.use_head else []

    def blocks(self, tower: nn.Module) -> nn.ModuleList:
        return tower.encoder.layers

    def attention(self, block: nn.Module) -> nn.Module:
        return block.self_attn

    def patch_embedding(self, tower: nn.Module) -> nn.Module:
        return tower.embeddings.patch_embedding

    def final_norm(self, tower: nn.Module) -> nn.Module:
        """The norm after the last block (VersaViT's last hidden state is after it, as an MLLM reads it)."""
        return tower.post_layernorm

    def unread_modules(self, tower: nn.Module, hidden_state: int) -> list[nn.Module]:
        # the final norm acts on the last block's output only
        final = [self.final_norm(tower)] if hidden_state < self.num_layers(tower.config) else []
        return super().unread_modules(tower, hidden_state) + final

    def tower_calls(self, config, pixel_values, image_grid_thw):
        """The tower's inputs made from packed patches, one call after another (here one: SigLIP2's padded NaFlex
        batch), each with the mask of its real patch tokens (None: every output token is one), images in order."""
        patch, channels = self.patch_size(config), config.num_channels
        order = block_to_raster(image_grid_thw, self.merge)
        sizes = image_grid_thw.prod(-1)
        # (C, P, P) rows in block order -> SigLIP2's (P, P, C) rows in raster order, padded per image
        rows = pixel_values[order].view(-1, channels, patch, patch).permute(0, 2, 3, 1).flatten(1)
        if torch.compiler.is_exporting():  # one image size per exported call: nothing to pad
            batch = rows.view(image_grid_thw.shape[0], -1, rows.shape[-1])
            mask = torch.ones(batch.shape[:2], dtype=torch.bool, device=batch.device)
            yield {"pixel_values": batch, "pixel_attention_mask": mask, "spatial_shapes": image_grid_thw[:, 1:]}, None
            return
        batch = nn.utils.rnn.pad_sequence(rows.split(sizes.tolist()), batch_first=True)
        mask = torch.arange(batch.shape[1], device=batch.device)[None] < sizes[:, None].to(batch.device)
        yield {"pixel_values": batch, "pixel_attention_mask": mask, "spatial_shapes": image_grid_thw[:, 1:]}, mask

    def run(self, tower, pixel_values, image_grid_thw, output_hidden_states=False, merge=True, num_blocks=None):
        last, hidden, pooled = [], [], []
        pixel_values = pixel_values.to(tower.dtype)  # (AIMv2's patch embedding does not cast its input)
        with self.restricted(tower, merge, num_blocks), resized_positions_when_exporting():
            for inputs, mask in self.tower_calls(tower.config, pixel_values, image_grid_thw):
                outputs = tower(**inputs, output_hidden_states=output_hidden_states, output_attentions=False)

                def real(tokens, mask=mask):  # the patch tokens, raster order, image after image
                    if tokens is None:
                        return None
                    tokens = tokens[:, self.prefix_tokens:]  # (a CLS token first: not a patch)
                    return tokens[mask] if mask is not None else tokens.flatten(0, 1)

                last.append(real(outputs.last_hidden_state))
                states = outputs.get("hidden_states")
                hidden.append(None if states is None else [real(tokens) for tokens in states])
                pooled.append(outputs.pooler_output)
        back = torch.argsort(block_to_raster(image_grid_thw, self.merge))  # raster rows -> packed (2x2 block) rows
        last = torch.cat(last)[back]
        hidden_states = None
        if hidden[0] is not None:
            hidden_states = [None if parts[0] is None else torch.cat(parts)[back] for parts in zip(*hidden)]
            if len(hidden_states) == self.num_layers(tower.config) + 1 and hidden_states[-1] is not None:
                hidden_states[-1] = last  # after post_layernorm, as the MLLM reads it
            hidden_states = tuple(hidden_states)
        pooler_output = torch.cat(pooled) if merge and pooled[0] is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooler_output,
                                          hidden_states=hidden_states)

    def attention_maps(self, calls_per_block, image_grid_thw):
        """The towers attend over batches of whole images in raster order, `(images in the call, heads, N_max,
        N_max)` per call (after `prefix_tokens` such as a CLS token): per image, its patch tokens in the packed (2x2
        block) order of the other outputs."""
        sizes = image_grid_thw.prod(-1).tolist()
        back = torch.argsort(block_to_raster(image_grid_thw, self.merge))  # packed row -> raster index
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        maps = []
        for calls in calls_per_block:
            out = calls[0].new_zeros(len(sizes), calls[0].shape[1], max(sizes), max(sizes))
            image = 0
            for weights in calls:
                for local in weights:
                    start, n = starts[image], sizes[image]
                    index = back[start : start + n] - start + self.prefix_tokens
                    out[image, :, :n, :n] = local[:, index][:, :, index]
                    image += 1
            maps.append(out)
        return tuple(maps)
