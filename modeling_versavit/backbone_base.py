# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The backbone interface: how VersaViT reads one family of transformers vision towers.

A family is a `VisionBackbone` subclass in a file of its own (`backbone_qwen2_vl.py`, `backbone_qwen3_vl.py`,
`backbone_siglip2.py`, `backbone_siglip.py`, `backbone_internvit.py`, `backbone_aimv2.py`), marked
`@register_backbone`; one line of `backbones.py` imports the file. The heads, objectives, probes, export and swap
go through it and never through a tower's internals. What a family says:

- which transformers tower it wraps (`tower_class`, built from the vision config, weights keeping the MLLM's own
  names) and the MLLM `model_type`s that carry it;
- its geometry read from the vision config: pre-merger width (`embed_dim`), merged width (`merged_dim`);
- the parts of the tower that belong to the MLLM and that VersaViT leaves untouched (`mllm_owned`: the PatchMerger,
  Qwen3-VL's DeepStack mergers), and the architecture fields a swap must match;
- its token order (`token_permutation`): the packed forward's rows are merge blocks, possibly permuted into attention
  windows; `feature_maps` turns any layer into raster `(C, h, w)` grids;
- the captioning projector built like the MLLM's own merger (`build_projector`).

The packed forward itself is the transformers tower's (`run`): VersaViT wraps it, skipping the mergers when only
pre-merger tokens are read and stopping after the last block anyone reads.

Why not transformers' `BackboneMixin`: its contract is a batched `(B, C, H, W)` input and `feature_maps` per stage,
and the dense heads that consume it (`load_backbone`) rebuild the backbone from a config. The MLLM towers take packed
patches of mixed-size images plus `grid_thw`, which is what lets one forward serve the LLM and the dense heads; a
`BackboneMixin` facade would pad and batch away exactly that. `VersaViTModel.get_dense_features(layers=...)` is
timm's `forward_intermediates(indices=...)` in that packed world.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils.import_utils import torch_compilable_check
from transformers.utils.output_capturing import maybe_install_capturing_hooks


class MatmulPatchEmbed(nn.Module):
    """The tower's patch embedding computed as the matmul it is.

    The Qwen-family towers embed each flattened `(C, T, P, P)` patch with a `Conv3d` whose kernel equals its stride:
    one output per patch, i.e. `patches @ W.view(embed_dim, -1).T (+ bias)`. As a convolution it runs 3-4x slower
    forward + backward on the CPU (docs/benchmarks.md); as a GEMM it is the same arithmetic. The `proj` Conv3d is
    kept as the parameter holder, so `visual.patch_embed.proj.weight` (and `.bias`, Qwen3-VL's) and their shapes are the
    MLLM's own and weights load and export unchanged.
    """

    def __init__(self, patch_embed: nn.Module):
        super().__init__()
        proj = patch_embed.proj
        if tuple(proj.kernel_size) != tuple(proj.stride) or any(proj.padding):
            raise ValueError(f"patch_embed.proj: expected a Conv3d with kernel == stride and no padding, got {proj}.")
        self.proj = proj
        self.patch_size = patch_embed.patch_size
        self.temporal_patch_size = patch_embed.temporal_patch_size
        self.in_channels = patch_embed.in_channels
        self.embed_dim = patch_embed.embed_dim

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight.reshape(self.embed_dim, -1)
        return F.linear(hidden_states.reshape(-1, weight.shape[1]).to(weight.dtype), weight, self.proj.bias)


def shared_grid(
    image_grid_thw: torch.Tensor,
    num_tokens: int,
    what: str,
    hint: str = "resize the images to one size (the paper trains at a fixed resolution) or run them one at a time.",
    multiple: int = 1,
) -> tuple[int, int]:
    """The `(h, w)` patch grid that every image of a batch shares, read from the first row (one host read).

    Every other row must equal it and `t` must be 1 (images): checked with `torch_compilable_check`, which under
    `torch.export` also tells the tracer that the `num_images * h * w` tokens fill `num_tokens` exactly, so the
    reshapes that follow hold for any (dynamic) image size; so is that `h` and `w` are positive multiples of `multiple`
    (the merge size, as `check_vision_inputs` ensured), which lets the tracer decide shape checks such as
    `h * w > 1` in attention. `what` names the caller in the error, `hint` the way out.
    """
    same = (image_grid_thw == image_grid_thw[:1]).all()
    torch_compilable_check(
        same,
        lambda: f"image_grid_thw: {what} needs every image to share one patch grid, got grids "
        f"{sorted({tuple(row) for row in image_grid_thw[:, 1:].tolist()})}; {hint}",
    )
    t, h, w = image_grid_thw[0].tolist()
    torch_compilable_check(
        t == 1, lambda: f"image_grid_thw[0] has t={t}: {what} is defined for images (t=1), not videos."
    )
    for side, name in ((h, "h"), (w, "w")):  # two checks: `and` of symbolic conditions would be a branch
        message = f"image_grid_thw[0]: {name} is not a positive multiple of {multiple}."
        torch_compilable_check(side >= multiple, message)
        torch_compilable_check(side % multiple == 0, message)
    torch_compilable_check(
        image_grid_thw.shape[0] * h * w == num_tokens,  # (`shape`, not `len`: the image count may be dynamic)
        lambda: f"image_grid_thw: {len(image_grid_thw)} images of {h}x{w} patches are {len(image_grid_thw) * h * w} "
        f"tokens, but there are {num_tokens}.",
    )
    return h, w


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
    if stack:
        num_images = image_grid_thw.shape[0]
        h, w = shared_grid(image_grid_thw, tokens.shape[0], "stack=True", "pass stack=False for per-image maps.", m)
        maps = tokens.view(num_images, h // m, w // m, m, m, channels)
        return maps.permute(0, 5, 1, 3, 2, 4).reshape(num_images, channels, h, w)
    grids = image_grid_thw.tolist()
    for index, (t, _, _) in enumerate(grids):
        if t != 1:
            raise ValueError(f"image_grid_thw[{index}] has t={t}: dense feature maps are defined for images (t=1).")
    maps = []
    for chunk, (_, h, w) in zip(tokens.split([h * w for _, h, w in grids]), grids):
        chunk = chunk.view(h // m, w // m, m, m, channels)
        maps.append(chunk.permute(4, 0, 2, 1, 3).reshape(channels, h, w))
    return maps


def attention_maps(records: Sequence[Sequence[torch.Tensor]], image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per block, the `(num_images, heads, N, N)` attention weights (zero-padded to the largest image's `N`) from its
    recorded calls: `(1, heads, n, n)` each, segments of consecutive tokens in the tower's order, never across
    images."""
    sizes = image_grid_thw.prod(-1).tolist()
    maps = []
    for block, calls in enumerate(records):
        if len(calls) == 1 and len(sizes) == 1:  # one image, one segment: the very tensor the block used
            maps.append(calls[0])
            continue
        heads = calls[0].shape[1]
        weights = calls[0].new_zeros(len(sizes), heads, max(sizes), max(sizes))
        image, offset = 0, 0
        for call in calls:
            n = call.shape[-1]
            while n and offset == sizes[image]:
                image, offset = image + 1, 0
            if offset + n > sizes[image]:
                raise RuntimeError(f"block {block}: an attention segment of {n} tokens crosses image {image}'s end.")
            weights[image, :, offset : offset + n, offset : offset + n] = call[0]
            offset += n
        maps.append(weights)
    return tuple(maps)


class VisionBackbone(ABC):
    """One family of transformers vision towers, as VersaViT reads it (see the module docstring).

    The defaults describe a packed Qwen-family tower: `forward(hidden_states, grid_thw)` over `(num_patches,
    C*T*P*P)` patches in 2x2 merge-block order, `blocks` of attention blocks, a `merger` into the LLM, `hidden_size`
    as the block width and `out_hidden_size` as the merged width. A family overrides what differs.
    """

    # The family's name (`VersaViTConfig.backbone_family`), the transformers vision config's `model_type`, the MLLM
    # `model_type`s whose checkpoints carry this tower, and older `model_type`s its vision configs were saved with.
    name: str = ""
    vision_model_type: str = ""
    mllm_model_types: tuple[str, ...] = ()
    legacy_model_types: tuple[str, ...] = ()
    # The transformers tower class and its attention-block class (never split across devices).
    tower_class: type | None = None
    block_class: type | None = None
    # The tower's submodules that belong to the MLLM's connector: no dense head reads them, VersaViT leaves them as
    # the MLLM had them (frozen in task models, kept from the MLLM by a swap), and skips them when only pre-merger
    # tokens are read.
    mllm_owned: tuple[str, ...] = ("merger",)
    # The vision-config fields that fix the tower's architecture: a swap into an MLLM checks they are equal.
    architecture_fields: tuple[str, ...] = ()
    # Where MLLM checkpoints keep the tower: transformers v5 naming first, then the original release naming.
    mllm_prefixes: tuple[str, ...] = ("model.visual.", "visual.")
    # Module-name pattern of the tower's blocks (LoRA adapts projections inside them only), and the names of the
    # attention and MLP projections inside a block that backbone LoRA adapts by default.
    blocks_pattern: str = r"blocks\.\d+"
    lora_targets: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")
    # The tower's attribute in a loaded transformers MLLM (`mllm.model.<attribute>`).
    mllm_attribute: str = "visual"
    # Whether transformers' exporter (`torch.export`) can trace the tower; `export_blocker` says why not. An exported
    # graph takes images of one size per call, of any size; `export_fixed_image_count` says why the number of images
    # per call is the traced one (None: any number).
    export_blocker: str | None = None
    export_fixed_image_count: str | None = (
        "transformers' packed Qwen towers build their rotary position ids (and Qwen3's resampled position grid) "
        "with Python loops over the images, which a traced graph keeps"
    )

    # Geometry ---------------------------------------------------------------------------------------------------
    def embed_dim(self, vision_config) -> int:
        """Width of the tower's tokens before the merger."""
        return vision_config.hidden_size

    def merged_dim(self, vision_config) -> int | None:
        """Width of the merger's output, the LLM hidden size the MLLM's tower feeds (None: the tower has no merger)."""
        return vision_config.out_hidden_size

    def num_layers(self, vision_config) -> int:
        return vision_config.depth

    def num_heads(self, vision_config) -> int:
        return vision_config.num_heads

    def spatial_merge_size(self, vision_config) -> int:
        """Side of the token blocks the packed rows come in (and that input sides are whole multiples of)."""
        return vision_config.spatial_merge_size

    def patch_size(self, vision_config) -> int:
        """Side of the tower's square patches, in pixels."""
        return vision_config.patch_size

    def temporal_patch_size(self, vision_config) -> int:
        return vision_config.temporal_patch_size

    def in_channels(self, vision_config) -> int:
        return vision_config.in_channels

    def image_processor_kwargs(self, vision_config) -> dict:
        """`VersaViTImageProcessor` settings for this tower: the patch layout (and, where the MLLM's processor
        differs from Qwen2-VL's CLIP statistics, its normalisation)."""
        return {"patch_size": self.patch_size(vision_config), "merge_size": self.spatial_merge_size(vision_config),
                "temporal_patch_size": self.temporal_patch_size(vision_config)}

    # Modules ----------------------------------------------------------------------------------------------------
    def build_tower(self, vision_config) -> nn.Module:
        """The transformers tower of `vision_config`, its patch embedding computed as a matmul (same parameters)."""
        tower = self.tower_class._from_config(vision_config)
        tower.patch_embed = MatmulPatchEmbed(tower.patch_embed)
        return tower

    @abstractmethod
    def build_projector(self, vision_config, out_dim: int) -> nn.Module:
        """A fresh captioning projector from the tower's tokens to an LLM of width `out_dim`, built like the MLLM's
        own merger."""

    def patch_embedding(self, tower: nn.Module) -> nn.Module:
        """The tower's patch embedding, the first layer the pixels meet (`get_input_embeddings`)."""
        return tower.patch_embed

    def owned_modules(self, tower: nn.Module) -> list[nn.Module]:
        """The tower's `mllm_owned` submodules (a `ModuleList` counts as its members)."""
        modules = []
        for name in self.mllm_owned:
            module = getattr(tower, name)
            modules += list(module) if isinstance(module, nn.ModuleList) else [module]
        return modules

    def blocks(self, tower: nn.Module) -> nn.ModuleList:
        return tower.blocks

    def attention(self, block: nn.Module) -> nn.Module:
        """A block's attention module (whose calls `output_attentions` records)."""
        return block.attn

    def unread_modules(self, tower: nn.Module, hidden_state: int) -> list[nn.Module]:
        """The tower's modules that hidden state `hidden_state` (the output of block `hidden_state - 1`; 0: the
        patch embedding) does not depend on, `mllm_owned` aside: the blocks from `hidden_state` on. A head reading
        no later state leaves them without gradient (what DDP's reducer must be told)."""
        return list(self.blocks(tower)[hidden_state:])

    # Token order ------------------------------------------------------------------------------------------------
    def token_permutation(self, vision_config, image_grid_thw: torch.Tensor) -> torch.Tensor | None:
        """The merge-unit permutation the tower applies to its pre-merger tokens (None: plain merge-block order)."""
        return None

    def feature_maps(self, vision_config, tokens, image_grid_thw, stack: bool = True):
        """One layer's packed tokens as raster `(C, h, w)` maps per image (see `tokens_to_feature_maps`)."""
        permutation = self.token_permutation(vision_config, image_grid_thw)
        merge = self.spatial_merge_size(vision_config)
        return tokens_to_feature_maps(tokens, image_grid_thw, merge, permutation, stack)

    def merged_in_image_order(self, vision_config, merged: torch.Tensor, image_grid_thw) -> torch.Tensor:
        """Merged tokens computed from pre-merger tokens (a projector's output) in merge-block order, image after
        image, as the MLLM's own merger output is."""
        permutation = self.token_permutation(vision_config, image_grid_thw)
        if permutation is None:
            return merged
        return merged[torch.argsort(permutation.to(merged.device))]

    def attention_maps(self, calls_per_block, image_grid_thw):
        """Per block, `(num_images, heads, N, N)` maps from its recorded attention calls (see `attention_maps`)."""
        return attention_maps(calls_per_block, image_grid_thw)

    def tower_prefix(self, keys, where="checkpoint") -> str:
        """The prefix under which an MLLM checkpoint with tensor names `keys` keeps this tower (`model.visual.` or
        `visual.`); a `ValueError` naming `where` when it has none."""
        prefix = next((p for p in self.mllm_prefixes if any(k.startswith(p) for k in keys)), None)
        if prefix is None:
            keys = sorted(keys)
            raise ValueError(
                f"{where}: the checkpoint has no vision tower weights (no key starts with "
                f"{' or '.join(repr(p) for p in self.mllm_prefixes)}); it holds {len(keys)} tensors such as {keys[:3]}."
            )
        return prefix

    # Forward ----------------------------------------------------------------------------------------------------
    @contextmanager
    def restricted(self, tower: nn.Module, merge: bool = True, num_blocks: int | None = None):
        """Within the block, `tower`'s forward skips its `mllm_owned` modules (`merge=False`: each returns a
        zero-width tensor, one row per merged token) and runs only its first `num_blocks` blocks (then
        `last_hidden_state` is block `num_blocks`' output). The module is restored on exit."""
        with ExitStack() as stack:
            if not merge:
                for module in self.owned_modules(tower):
                    module.forward = _skipped(self.spatial_merge_size(tower.config))  # shadows the class's forward
                    stack.callback(delattr, module, "forward")
            blocks = self.blocks(tower)
            if num_blocks is not None and num_blocks < len(blocks):
                # transformers hooks the blocks for `output_hidden_states` on a tower's first call, walking its
                # modules once: hook every block now, so a later full forward still records all of them
                maybe_install_capturing_hooks(tower)
                holder, name = _owner(tower, blocks)
                holder._modules[name] = nn.ModuleList(list(blocks)[:num_blocks])
                stack.callback(holder._modules.__setitem__, name, blocks)
            yield

    def tower_inputs(self, vision_config, image_grid_thw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs the tower would otherwise compute from `image_grid_thw`'s values in Python, computed here in a form
        `torch.export` traces (none by default; Qwen2.5-VL's attention windows when exporting)."""
        return {}

    def run(self, tower, pixel_values, image_grid_thw, output_hidden_states=False, merge=True, num_blocks=None):
        """The transformers tower's packed forward (`output_hidden_states`: a flag or the indices to keep)."""
        with self.restricted(tower, merge, num_blocks):
            return tower(pixel_values, grid_thw=image_grid_thw, output_hidden_states=output_hidden_states,
                         output_attentions=False, **self.tower_inputs(tower.config, image_grid_thw))


BACKBONES: dict[str, VisionBackbone] = {}


def register_backbone(backbone):
    """Make `backbone` (a `VisionBackbone` subclass, as a class decorator, or an instance) the family of the vision
    configs of its `vision_model_type`; returns what it was given."""
    instance = backbone() if isinstance(backbone, type) else backbone
    if not isinstance(instance, VisionBackbone) or not instance.vision_model_type or not instance.name:
        raise ValueError(f"register_backbone: expected a VisionBackbone with a name and a vision_model_type, got "
                         f"{backbone!r}.")
    BACKBONES[instance.vision_model_type] = instance
    return backbone


def _skipped(merge_size: int):
    def forward(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states.new_empty(hidden_states.shape[0] // merge_size**2, 0)

    return forward


def _owner(tower: nn.Module, blocks: nn.ModuleList) -> tuple[nn.Module, str]:
    """The module holding `blocks` and its attribute name there."""
    for module in tower.modules():
        for name, child in module._modules.items():
            if child is blocks:
                return module, name
    raise ValueError("blocks: not a submodule of the tower")


__all__ = ["BACKBONES", "MatmulPatchEmbed", "VisionBackbone", "attention_maps", "register_backbone", "shared_grid",
           "tokens_to_feature_maps"]
