# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT models.

The backbone is the transformers implementation of the MLLM's vision tower, held as `self.visual` so that its
parameter names are the MLLM's own `visual.*` names: VersaViT weights drop back into the MLLM by a rename.

Shipped as Hub remote code (`auto_map`): imports only torch, transformers and its sibling files.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedModel
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.vision_utils import get_vision_window_index

from .configuration_versavit import VersaViTConfig

VISION_TOWER_CLASSES = {
    "qwen2_vl": Qwen2VisionTransformerPretrainedModel,
    "qwen2_5_vl": Qwen2_5_VisionTransformerPretrainedModel,
}
# Where MLLM checkpoints keep the vision tower: transformers v5 naming first, then the original release naming.
MLLM_VISION_PREFIXES = ("model.visual.", "visual.")


@dataclass
class VersaViTModelOutput(ModelOutput):
    r"""
    Outputs of [`VersaViTModel`], exactly those of the transformers vision tower it wraps.

    All token tensors are packed over the batch: image `i` owns `t_i * h_i * w_i` consecutive rows (see
    `image_grid_thw`). Rows are in the tower's own token order, not raster order: 2x2 merge blocks for Qwen2-VL,
    additionally permuted into attention windows for Qwen2.5-VL's pre-merger tensors. Use
    [`VersaViTModel.get_dense_features`] for `(C, h, w)` grids in image order.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(num_patches, embed_dim)`):
            Output of the last block, before the PatchMerger.
        pooler_output (`torch.FloatTensor` of shape `(num_patches // merge_size**2, merged_dim)`):
            The PatchMerger's output: the MLLM-ready visual tokens the LLM consumes, in merge-block order.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            `depth + 1` tensors of shape `(num_patches, embed_dim)`: the patch embedding, then every block's output.
            With `output_hidden_states=[i, j]` only those entries are kept (the others are `None`).
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per-block attention weights, with `output_attentions=True` under eager attention.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def check_vision_inputs(config: VersaViTConfig, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> None:
    """Raise a `ValueError` naming the field and value when `pixel_values` and `image_grid_thw` do not fit the tower.

    Runs before any compute: a mismatch would otherwise surface as an opaque reshape error deep in the tower, or
    worse, as features silently attributed to the wrong image.
    """
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 2:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(
            f"pixel_values: expected a 2-D tensor (num_patches, {config.patch_dim}) as produced by the image "
            f"processor, got {shape}."
        )
    if pixel_values.shape[1] != config.patch_dim:
        raise ValueError(
            f"pixel_values: rows have {pixel_values.shape[1]} values, but this tower takes {config.patch_dim} "
            f"(in_channels x temporal_patch_size {config.temporal_patch_size} x patch_size {config.patch_size}^2)."
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values: expected a floating-point tensor, got dtype {pixel_values.dtype}.")
    if not isinstance(image_grid_thw, torch.Tensor) or image_grid_thw.ndim != 2 or image_grid_thw.shape[1] != 3:
        shape = tuple(image_grid_thw.shape) if isinstance(image_grid_thw, torch.Tensor) else image_grid_thw
        raise ValueError(f"image_grid_thw: expected an integer tensor of shape (num_images, 3), got {shape}.")
    if image_grid_thw.is_floating_point() or image_grid_thw.dtype == torch.bool:
        raise ValueError(f"image_grid_thw: expected an integer tensor, got dtype {image_grid_thw.dtype}.")
    merge = config.spatial_merge_size
    total = 0
    for index, (t, h, w) in enumerate(image_grid_thw.tolist()):
        if t < 1 or h < 1 or w < 1 or h % merge or w % merge:
            raise ValueError(
                f"image_grid_thw[{index}] = {[t, h, w]}: t, h and w must be positive and h, w multiples of the "
                f"spatial merge size {merge}."
            )
        total += t * h * w
    if total != pixel_values.shape[0]:
        raise ValueError(
            f"image_grid_thw describes {total} patches (sum of t*h*w over {len(image_grid_thw)} images) but "
            f"pixel_values has {pixel_values.shape[0]} rows."
        )


def tokens_to_feature_maps(
    tokens: torch.Tensor,
    image_grid_thw: torch.Tensor,
    spatial_merge_size: int,
    window_index: torch.Tensor | None = None,
    stack: bool = True,
) -> torch.Tensor | list[torch.Tensor]:
    """Turn packed tower tokens into per-image feature maps in raster (row-major image) order.

    Args:
        tokens: `(num_patches, C)` tokens of one layer, in the tower's order.
        image_grid_thw: `(num_images, 3)`; every `t` must be 1 (images, not videos).
        spatial_merge_size: the tower's merge size `m`: tokens come in `m x m` blocks, block-major.
        window_index: for Qwen2.5-VL's pre-merger tokens, the merge-unit permutation the tower applied
            (`transformers.vision_utils.get_vision_window_index`); it is undone first.
        stack: return one `(num_images, C, h, w)` tensor (every image must share its grid size), else a list of
            `(C, h, w)` tensors.
    """
    m = spatial_merge_size
    channels = tokens.shape[-1]
    if window_index is not None:
        unit = tokens.view(-1, m * m, channels)
        tokens = unit[torch.argsort(window_index.to(tokens.device))].view(-1, channels)
    grids = image_grid_thw.tolist()
    for index, (t, _, _) in enumerate(grids):
        if t != 1:
            raise ValueError(f"image_grid_thw[{index}] has t={t}: dense feature maps are defined for images (t=1).")
    if stack:
        sizes = {(h, w) for _, h, w in grids}
        if len(sizes) != 1:
            raise ValueError(
                f"stack=True needs every image to share one grid size, got {sorted(sizes)}; pass stack=False "
                "for a list of per-image maps."
            )
        (h, w) = sizes.pop()
        maps = tokens.view(len(grids), h // m, w // m, m, m, channels)
        return maps.permute(0, 5, 1, 3, 2, 4).reshape(len(grids), channels, h, w)
    maps = []
    for chunk, (_, h, w) in zip(tokens.split([h * w for _, h, w in grids]), grids):
        chunk = chunk.view(h // m, w // m, m, m, channels)
        maps.append(chunk.permute(4, 0, 2, 1, 3).reshape(channels, h, w))
    return maps


class VersaViTPreTrainedModel(PreTrainedModel):
    """Weight initialisation, loading and the shared backbone (`self.visual`) of every VersaViT model."""

    config: VersaViTConfig
    config_class = VersaViTConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen2VLVisionBlock", "Qwen2_5_VLVisionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _build_backbone(self, config: VersaViTConfig) -> None:
        tower_class = VISION_TOWER_CLASSES[config.backbone_family]
        self.visual = tower_class._from_config(config.vision_config)

    def _window_index(self, image_grid_thw: torch.Tensor) -> torch.Tensor | None:
        """The Qwen2.5-VL window permutation of these grids (None for Qwen2-VL, whose tokens are not windowed)."""
        if self.config.backbone_family != "qwen2_5_vl":
            return None
        vision = self.config.vision_config
        window_index, _ = get_vision_window_index(
            image_grid_thw, vision.spatial_merge_size, vision.window_size, vision.patch_size
        )
        return window_index

    def get_dense_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        layers: int | Sequence[int] = -1,
        stack: bool = True,
    ) -> tuple[torch.Tensor, ...] | tuple[list[torch.Tensor], ...]:
        """Features of chosen layers as raster grids per image, for dense heads and probes.

        Args:
            pixel_values, image_grid_thw: as for `forward` (images only: every `t` is 1).
            layers: indices into `hidden_states` (0 = patch embedding, `depth` = last block, negative from the
                end), e.g. `config.depth_layer_indices`. Only these layers are kept in memory.
            stack: `(num_images, C, h, w)` per layer (all images must share a grid size), else per layer a list of
                `(C, h, w)` tensors.

        Returns:
            One entry per requested layer, in the order requested. Entry `[r, c]` of an image's map is the patch at
            row `r`, column `c` of the (resized) image, for Qwen2-VL and Qwen2.5-VL alike.
        """
        single = isinstance(layers, int)
        requested = [layers] if single else list(layers)
        num_states = self.config.num_hidden_layers + 1
        for index in requested:
            if isinstance(index, bool) or not isinstance(index, int) or not -num_states <= index < num_states:
                raise ValueError(
                    f"layers: index {index!r} is outside the tower's hidden states (valid: {-num_states}.."
                    f"{num_states - 1}; 0 = patch embedding)."
                )
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        outputs = self.visual(pixel_values, grid_thw=image_grid_thw, output_hidden_states=requested)
        window_index = self._window_index(image_grid_thw)
        merge = self.config.spatial_merge_size
        return tuple(
            tokens_to_feature_maps(outputs.hidden_states[i], image_grid_thw, merge, window_index, stack)
            for i in requested
        )


class VersaViTModel(VersaViTPreTrainedModel):
    r"""
    The VersaViT vision backbone: an MLLM vision tower (Qwen2-VL or Qwen2.5-VL) post-trained for dense features.

    Its weights are the MLLM tower's `visual.*` weights. Load a trained VersaViT with
    `AutoModel.from_pretrained(path_or_repo)`, or the untrained tower of an MLLM with [`VersaViTModel.from_mllm`].

    Example:

    ```python
    >>> from transformers import AutoModel
    >>> from modeling_versavit import VersaViTImageProcessor
    >>> model = AutoModel.from_pretrained("org/versavit")
    >>> inputs = VersaViTImageProcessor()(images=[image], return_tensors="pt")
    >>> features = model(**inputs).pooler_output            # MLLM-ready visual tokens
    >>> (grid,) = model.get_dense_features(**inputs)         # (1, 1280, h, w) last-layer feature map
    ```
    """

    # A multi-task or task checkpoint carries head weights next to `visual.*`; the backbone ignores them quietly.
    _keys_to_ignore_on_load_unexpected = [r"^(?!visual\.)"]

    def __init__(self, config: VersaViTConfig):
        super().__init__(config)
        self._build_backbone(config)
        self.post_init()

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.visual.patch_embed

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> VersaViTModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_patches, 3 * temporal_patch_size * patch_size**2)`):
            Flattened patches of all images, from [`VersaViTImageProcessor`].
        image_grid_thw (`torch.LongTensor` of shape `(num_images, 3)`):
            The (temporal, height, width) patch grid of each image.
        output_hidden_states (`bool` or `list[int]`, *optional*):
            Return every layer's tokens, or only the listed `hidden_states` indices.
        """
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        if output_hidden_states is not None:
            kwargs["output_hidden_states"] = output_hidden_states
        if output_attentions is not None:
            kwargs["output_attentions"] = output_attentions
        outputs = self.visual(pixel_values, grid_thw=image_grid_thw, **kwargs)
        return VersaViTModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=outputs.pooler_output,
            hidden_states=outputs.get("hidden_states"),
            attentions=outputs.get("attentions"),
        )

    @classmethod
    def from_mllm(cls, mllm_path: str | Path, **kwargs) -> "VersaViTModel":
        """Build a VersaViT backbone from the vision tower of a local Qwen2-VL / Qwen2.5-VL checkpoint folder.

        Reads only the tower's tensors (keys `visual.*` or `model.visual.*`), shard by shard, from safetensors
        weights (sharded or not): the LLM's weights are never loaded. `kwargs` go to `from_pretrained` (`dtype`,
        `attn_implementation`, `device_map`, ...); the dtype defaults to the checkpoint's.
        """
        from safetensors import safe_open

        folder = Path(mllm_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json; expected a Qwen2-VL / Qwen2.5-VL model folder.")
        mllm_config = AutoConfig.from_pretrained(folder)
        vision_config = getattr(mllm_config, "vision_config", None)
        if vision_config is None:
            raise ValueError(
                f"{folder}/config.json (model_type {mllm_config.model_type!r}) has no vision_config; expected a "
                "Qwen2-VL or Qwen2.5-VL MLLM."
            )
        config = VersaViTConfig(vision_config=vision_config.to_dict())

        index_file = folder / "model.safetensors.index.json"
        if index_file.is_file():
            weight_map = json.loads(index_file.read_text())["weight_map"]
        elif (folder / "model.safetensors").is_file():
            with safe_open(folder / "model.safetensors", framework="pt") as handle:
                weight_map = dict.fromkeys(handle.keys(), "model.safetensors")
        else:
            found = sorted(p.name for p in folder.iterdir())
            raise FileNotFoundError(
                f"{folder}: no safetensors weights (model.safetensors or model.safetensors.index.json); found {found}."
            )
        prefix = next((p for p in MLLM_VISION_PREFIXES if any(k.startswith(p) for k in weight_map)), None)
        if prefix is None:
            raise ValueError(
                f"{folder}: the checkpoint has no vision tower weights (no key starts with "
                f"{' or '.join(repr(p) for p in MLLM_VISION_PREFIXES)}); it holds {len(weight_map)} tensors such as "
                f"{sorted(weight_map)[:3]}."
            )
        shards: dict[str, list[str]] = {}
        for key, shard in weight_map.items():
            if key.startswith(prefix):
                shards.setdefault(shard, []).append(key)
        state_dict = {}
        for shard, keys in shards.items():
            with safe_open(folder / shard, framework="pt") as handle:
                for key in keys:
                    state_dict["visual." + key[len(prefix) :]] = handle.get_tensor(key)

        kwargs.setdefault("dtype", getattr(mllm_config, "dtype", None) or next(iter(state_dict.values())).dtype)
        model, info = cls.from_pretrained(None, config=config, state_dict=state_dict, output_loading_info=True, **kwargs)
        if info["missing_keys"]:
            raise ValueError(
                f"{folder}: the vision tower weights are incomplete, {len(info['missing_keys'])} tensors missing, "
                f"e.g. {sorted(info['missing_keys'])[:5]}."
            )
        if info["mismatched_keys"]:
            raise ValueError(f"{folder}: vision tower tensors of unexpected shape: {info['mismatched_keys'][:5]}.")
        model.name_or_path = str(folder)
        return model


__all__ = [
    "VersaViTPreTrainedModel",
    "VersaViTModel",
    "VersaViTModelOutput",
    "check_vision_inputs",
    "tokens_to_feature_maps",
]
