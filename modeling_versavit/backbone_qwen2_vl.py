# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Qwen2-VL and Qwen2.5-VL towers: the paper's backbone (Qwen2-VL-7B's) and Table 6's window-attention tower."""

from contextlib import ExitStack
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLPatchMerger,
    Qwen2_5_VLVisionBlock,
    apply_rotary_pos_emb_vision,
)
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    PatchMerger,
    Qwen2VisionTransformerPretrainedModel,
    Qwen2VLVisionBlock,
)
from transformers.vision_utils import get_vision_window_index

from .backbone_base import VisionBackbone, register_backbone, shared_grid


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
    def build_projector(self, vision_config, out_dim: int) -> nn.Module:
        return Qwen2_5_VLPatchMerger(dim=out_dim, context_dim=vision_config.hidden_size,
                                     spatial_merge_size=vision_config.spatial_merge_size)

    def token_permutation(self, vision_config, image_grid_thw: torch.Tensor) -> torch.Tensor:
        return self.windows(vision_config, image_grid_thw)[0]

    def windows(self, vision_config, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The merge-unit permutation into attention windows and the windows' cumulative token counts:
        transformers' `get_vision_window_index` (a Python loop over the grid values), or under `torch.export`
        `shared_grid_windows`, the same for images of one size from tensor ops."""
        merge, patch = vision_config.spatial_merge_size, vision_config.patch_size
        if torch.compiler.is_exporting():
            return shared_grid_windows(image_grid_thw, merge, vision_config.window_size // merge // patch)
        return get_vision_window_index(image_grid_thw, merge, vision_config.window_size, patch)

    def tower_inputs(self, vision_config, image_grid_thw: torch.Tensor) -> dict[str, torch.Tensor]:
        if not torch.compiler.is_exporting():
            return {}  # the tower computes its own
        window_index, cu_window_seqlens = self.windows(vision_config, image_grid_thw)
        return {"window_index": window_index, "cu_window_seqlens": cu_window_seqlens}

    def run(self, tower, pixel_values, image_grid_thw, output_hidden_states=False, merge=True, num_blocks=None):
        """Under `torch.export`, the blocks attend with `masked_packed_attention`: transformers' attention (and the
        exporter's own stand-in, which needs windows of one length) splits the sequence at the window boundaries,
        which a traced graph would keep, while the windows' number and lengths follow the image size."""
        with ExitStack() as stack:
            if torch.compiler.is_exporting():
                for block in self.blocks(tower):
                    attention = self.attention(block)
                    attention.forward = partial(masked_packed_attention, attention)  # shadows the class's forward
                    stack.callback(delattr, attention, "forward")
            return super().run(tower, pixel_values, image_grid_thw, output_hidden_states, merge, num_blocks)


def masked_packed_attention(module, hidden_states, cu_seqlens, position_embeddings=None, **kwargs):
    """`Qwen2_5_VLVisionAttention.forward` as one SDPA call over the whole packed sequence with the block-diagonal
    mask of `cu_seqlens` (each token attends to its own window or image): the same values as its per-window calls,
    from tensor ops alone, so a traced graph serves windows of any number and lengths. The mask is tokens x tokens
    of the call (one 896-px image: 4096^2 booleans, 16 MB), which deployment sizes afford."""
    length = hidden_states.shape[0]
    query, key, value = module.qkv(hidden_states).reshape(length, 3, module.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)
    query, key, value = (states.transpose(0, 1).unsqueeze(0) for states in (query, key, value))
    positions = torch.arange(length, device=hidden_states.device)
    segment = (positions[:, None] >= cu_seqlens[None, 1:].to(positions.device)).sum(-1)  # each token's window
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=segment[:, None] == segment[None, :],
                                            scale=module.scaling)
    return module.proj(output.squeeze(0).transpose(0, 1).reshape(length, -1))


def shared_grid_windows(image_grid_thw: torch.Tensor, merge: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`get_vision_window_index`'s result for images that share one grid (as `shared_grid` checks), from tensor ops
    on symbolic sizes, so `torch.export` traces it for any image size and count: the merge units ordered window by
    window (windows of `window` x `window` units in row-major order, the last ones cut by the image's edge),
    row-major inside each, image after image; and the windows' cumulative token counts, from 0."""
    count = image_grid_thw.shape[0]
    h, w = shared_grid(image_grid_thw, image_grid_thw[:, 1:].prod(-1).sum(), "an exported call",
                       "export with images of one size (the exporter's contract).", merge)
    rows, cols = h // merge, w // merge
    windows_w = (cols + window - 1) // window
    device = image_grid_thw.device
    height = (rows - torch.arange((rows + window - 1) // window, device=device) * window).clamp(max=window)
    width = (cols - torch.arange(windows_w, device=device) * window).clamp(max=window)
    units = (height[:, None] * width[None, :]).reshape(-1)  # each window's merge units
    starts = units.cumsum(0) - units  # where each window begins in window order
    r = torch.arange(rows, device=device)[:, None]
    c = torch.arange(cols, device=device)[None, :]
    # unit (r, c): its window's start, then its row-major place inside that (possibly cut) window
    place = starts[(r // window) * windows_w + c // window] + (r % window) * width[c // window] + c % window
    order = torch.empty(rows * cols, dtype=torch.long, device=device)
    order = order.scatter(0, place.reshape(-1), torch.arange(rows * cols, device=device))  # place's inverse
    window_index = (order[None] + torch.arange(count, device=device)[:, None] * (rows * cols)).reshape(-1)
    tokens = units.repeat(count) * merge**2
    return window_index, F.pad(tokens.cumsum(0), (1, 0)).to(torch.int32)
