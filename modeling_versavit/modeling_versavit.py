# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT models.

The backbone is the transformers implementation of the MLLM's vision tower, held as `self.visual` so that its
parameter names are the MLLM's own `visual.*` names: VersaViT weights drop back into the MLLM by a rename.

Shipped as Hub remote code (`auto_map`): imports only torch, transformers and its sibling files.
"""

import inspect
import math
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    DepthAnythingConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, DepthEstimatorOutput
from transformers.modeling_utils import AttentionInterface
from transformers.models.depth_anything.modeling_depth_anything import (
    DepthAnythingDepthEstimationHead,
    DepthAnythingNeck,
)
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamVisionConfig
from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPositionalEmbedding, SamVisionNeck
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.import_utils import torch_compilable_check

from .backbone_base import shared_grid, tokens_to_feature_maps
from .backbones import BACKBONES
from .checkpoint_files import read_safetensors, safetensors_problem, safetensors_weight_map
from .configuration_versavit import TASKS, VersaViTConfig
from .losses_versavit import contrastive_logits, contrastive_loss, depth_loss, mask_loss
from .processing_versavit import IGNORE_INDEX


@dataclass
class VersaViTModelOutput(ModelOutput):
    r"""
    Outputs of [`VersaViTModel`], exactly those of the transformers vision tower it wraps.

    All token tensors are packed over the batch: image `i` owns `t_i * h_i * w_i` consecutive rows (see
    `image_grid_thw`). Rows are in the tower's own token order, not raster order: 2x2 merge blocks (every Qwen family),
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
            With `output_attentions=True` (that call runs eager attention): one tensor per block of shape `(num_images,
            num_heads, N, N)`, `N` the largest image's patch count. Entry `[i, :, r, c]` is the weight of token `c` in
            the attention of token `r` of image `i`, tokens numbered in the tower's order within the image (as the rows
            of `hidden_states`); rows and columns past image `i`'s own `t*h*w` patches are 0, and so are token pairs in
            different attention windows (Qwen2.5-VL's windowed blocks). Each row of real tokens sums to 1. Where one
            attention call covers a block (one image, global attention) the map is the tensor the block computed with,
            so gradients reach it; maps assembled from several images or windows are copies.
        deepstack_features (`tuple(torch.FloatTensor)`, *optional*):
            Qwen3-VL towers only: the DeepStack mergers' outputs, `(num_patches // merge_size**2, merged_dim)` each, one
            per `vision_config.deepstack_visual_indexes` entry, the tokens Qwen3-VL's LLM adds to its early layers.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    deepstack_features: tuple[torch.FloatTensor, ...] | None = None


def check_vision_inputs(config: VersaViTConfig, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> None:
    """Raise a `ValueError` naming the field and value when `pixel_values` and `image_grid_thw` do not fit the tower.

    Runs before any compute: a mismatch would otherwise surface as an opaque reshape error deep in the tower, or
    worse, as features silently attributed to the wrong image. Shapes and dtypes are checked in Python; the checks on
    the grid's values are `torch_compilable_check`s, so that `torch.compile` and `torch.export` keep them as runtime
    asserts (and facts about the symbolic sizes) instead of failing on a data-dependent branch. Their messages, which
    read the values back, are only built when a check fails.
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
    t, h, w = image_grid_thw.unbind(-1)
    valid = (t >= 1) & (h >= 1) & (w >= 1) & (h % merge == 0) & (w % merge == 0)

    def bad_grid() -> str:
        index = int((~valid).nonzero()[0, 0])
        return (
            f"image_grid_thw[{index}] = {image_grid_thw[index].tolist()}: t, h and w must be positive and h, w "
            f"multiples of the spatial merge size {merge}."
        )

    torch_compilable_check(valid.all(), bad_grid)
    total = (t * h * w).sum()
    torch_compilable_check(
        total == pixel_values.shape[0],
        lambda: f"image_grid_thw describes {int(total)} patches (sum of t*h*w over {len(image_grid_thw)} images) but "
        f"pixel_values has {pixel_values.shape[0]} rows.",
    )


# Attention maps: the wrapped towers' attention modules hand eager attention's weights to nobody (transformers records
# their outputs as "attentions"). For `output_attentions=True` the tower runs under this eager attention, registered
# with transformers, which keeps the weights of every call: one call per attention segment (an image, or a window).
RECORDING_ATTENTION = "versavit_recording_eager"
_attention_records: ContextVar[dict | None] = ContextVar("versavit_attention_records", default=None)


def _recording_eager_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The eager attention of `module`'s own modeling file, keeping its weights for the running
    `recording_attention`."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    output, weights = eager(module, query, key, value, attention_mask, **kwargs)
    records = _attention_records.get()
    if records is not None:
        records.setdefault(module, []).append(weights)
    return output, weights


AttentionInterface.register(RECORDING_ATTENTION, _recording_eager_attention)
# Towers that attend over padded batches (SigLIP2) build their padding mask for the attention in use: eager's.
AttentionMaskInterface.register(RECORDING_ATTENTION, eager_mask)


@contextmanager
def recording_attention(config):
    """Run modules of `config` under recording eager attention; yields `{attention module: [weights per call]}`."""
    previous = config._attn_implementation_internal
    records: dict = {}
    token = _attention_records.set(records)
    config._attn_implementation_internal = RECORDING_ATTENTION
    try:
        yield records
    finally:
        config._attn_implementation_internal = previous
        _attention_records.reset(token)


def _torch_default_init(module: nn.Module) -> None:
    """PyTorch's own `reset_parameters` of a Linear, Conv2d, ConvTranspose2d or Embedding, written with
    `transformers.initialization` so that weights loaded by `from_pretrained` are left alone. A module's
    `initial_bias` attribute, when it has one, is its bias's constant start instead."""
    if isinstance(module, nn.Embedding):
        init.normal_(module.weight)
        return
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is None:
        return
    if hasattr(module, "initial_bias"):
        init.constant_(module.bias, module.initial_bias)
        return
    fan_in = module.weight.shape[1] * module.weight[0, 0].numel()  # a Linear's weight[0, 0] is one number
    if isinstance(module, nn.ConvTranspose2d):
        fan_in = module.weight.shape[0] * module.weight[0, 0].numel()
    bound = 1 / math.sqrt(fan_in)
    init.uniform_(module.bias, -bound, bound)


class VersaViTPreTrainedModel(PreTrainedModel):
    """Weight initialisation, loading and the shared backbone (`self.visual`) of every VersaViT model."""

    config: VersaViTConfig
    config_class = VersaViTConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = [backbone.block_class.__name__ for backbone in BACKBONES.values()]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, reading weights from safetensors only unless `use_safetensors` is
        given: VersaViT always saves safetensors, and a `pytorch_model.bin` is a pickle, which can run code when it
        is loaded. A folder without safetensors weights is refused with transformers' "no file named
        model.safetensors" error."""
        kwargs.setdefault("use_safetensors", True)
        with_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True,
                                                  **kwargs)
        except SafetensorError as err:
            raise OSError(safetensors_problem(pretrained_model_name_or_path, err)) from err
        except OSError as err:
            folder = Path(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else None
            pickled = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")) \
                if folder is not None and folder.is_dir() and kwargs["use_safetensors"] else []
            if not pickled:
                raise
            raise OSError(
                f"{folder}: holds pickled weights only ({', '.join(pickled)}); VersaViT loads safetensors, since "
                "unpickling a downloaded file can run code. Convert a file you trust with safetensors' save_file, "
                "or pass use_safetensors=False to let transformers read it with torch.load(weights_only=True)."
            ) from err
        heads = sorted(key for key in info["missing_keys"] if not key.startswith("visual."))
        if heads and kwargs.get("_from_pipeline") and pretrained_model_name_or_path is not None:
            # a pipeline predicts with what it loads: a head started at random would give a silent wrong result
            raise ValueError(
                f"{pretrained_model_name_or_path}: holds no trained {cls.__name__} head ({len(heads)} tensors are "
                f"missing: {', '.join(heads[:3])}{', ...' if len(heads) > 3 else ''}), so the "
                f"{kwargs['_from_pipeline']!r} pipeline cannot run on it; load a folder saved with that head."
            )
        missing = sorted(key for key in info["missing_keys"] if key.startswith("visual."))
        if missing and pretrained_model_name_or_path is not None:  # a folder (from_mllm checks its own state_dict)
            # transformers would start them at random with only a load report; from_mllm refuses the same
            total = sum(1 for key in model.state_dict() if key.startswith("visual."))
            raise ValueError(
                f"{pretrained_model_name_or_path}: the checkpoint lacks {len(missing)} of the vision tower's {total} "
                f"tensors ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); a tower partly at random "
                "is not this checkpoint's. Check that the folder was written completely."
            )
        for parameter in model.frozen_by_design():  # loading replaced the parameters `post_init` had frozen
            parameter.requires_grad_(False)
        return (model, info) if with_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, writing a folder that serves every Auto class and pipeline of this
        model, with the package installed (nothing asks about remote code) or as remote code without it.

        Beyond the weights, config and this model's `auto_map` entry: `AutoImageProcessor` (and
        `AutoModelForDepthEstimation` when there is a depth head) in config.json's `auto_map`, `custom_pipelines`
        for the VersaViT pipelines the model serves (`pipelines_versavit.custom_pipelines_of`), and the code files
        those name. The image processor saved beside it (`VersaViTImageProcessor.save_pretrained`) writes neither
        its class name nor an `auto_map`: transformers' video-processor lookup would derive a remote video processor
        from either and ask about remote code in every pipeline."""
        from transformers.dynamic_module_utils import custom_object_save

        from .image_processing_versavit import VersaViTImageProcessor
        from .pipelines_versavit import VersaViTReferringSegmentationPipeline, custom_pipelines_of

        config = self.config
        served = {"AutoImageProcessor": f"image_processing_versavit.{VersaViTImageProcessor.__name__}"}
        if getattr(self, "depth_head", None) is not None:
            served["AutoModelForDepthEstimation"] = f"modeling_versavit.{VersaViTForDepthEstimation.__name__}"
        config.auto_map = {**(getattr(config, "auto_map", None) or {}), **served}
        pipelines = custom_pipelines_of(self)
        if pipelines:
            config.custom_pipelines = pipelines
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            config.__dict__.pop("custom_pipelines", None)
        if kwargs.get("is_main_process", True) and self._auto_class is not None:
            for code in (VersaViTImageProcessor, VersaViTReferringSegmentationPipeline):
                custom_object_save(code, save_directory)  # the module and its relative imports; no auto_map

    def get_input_embeddings(self) -> nn.Module:
        """The tower's patch embedding, the first layer the pixels meet (as transformers' vision models return)."""
        return self.config.backbone.patch_embedding(self.visual)

    def _build_backbone(self, config: VersaViTConfig) -> None:
        self.visual = config.backbone.build_tower(config.vision_config)

    def post_init(self) -> None:
        super().post_init()
        for parameter in self.frozen_by_design():
            parameter.requires_grad_(False)

    def frozen_by_design(self) -> list[nn.Parameter]:
        """Parameters VersaViT never trains, frozen at construction and by the trainer's `apply_stage`: the tower's
        mergers into the MLLM (`VisionBackbone.mllm_owned`: the PatchMerger, Qwen3-VL's DeepStack mergers) in task
        models (no head reads them, export keeps the MLLM's, and a parameter without gradient would break DDP's reducer)
        unless the model captions through the MLLM's own LLM (`config.mllm_language_model`), which they feed; and the
        segmentation head's fixed random-Fourier positional encoding (as SAM's buffer)."""
        frozen = []
        mllm_branch = getattr(self, "language_model", None) is not None and self.config.mllm_language_model
        if not isinstance(self, VersaViTModel) and not mllm_branch:  # (the MLLM's own LLM: the mergers feed it)
            frozen += [p for module in self.config.backbone.owned_modules(self.visual) for p in module.parameters()]
        head = getattr(self, "segmentation_head", None)
        if head is not None:
            frozen += list(head.positional_embedding.parameters())
        return frozen

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # The convolutional heads (DPT, SAM neck and decoder) start from PyTorch's default init, as in the DPT and
            # SAM code: the library-wide normal(0.02) shrinks the signal ~50x per layer in small heads, leaving the
            # depth output at ~1e-8 where the scale-invariant loss cannot see it.
            _torch_default_init(module)
            return
        head = getattr(self, "segmentation_head", None)
        sam_layer = isinstance(module, (nn.Linear, nn.Embedding)) and head is not None
        if sam_layer and any(module is m for m in head.modules()):
            # The SAM-style head as SAM's code initialises it. At normal(0.02) its prompt tokens and mask token start
            # near zero, the decoder's attention cannot tell them apart, and it segments every object for ~100 steps
            # before the text moves the mask.
            _torch_default_init(module)
            return
        super()._init_weights(module)
        if isinstance(module, SamPositionalEmbedding):
            init.normal_(module.positional_embedding, std=module.scale)
        if isinstance(module, VersaViTTaskTokens):  # fresh task tokens at the scale of the LLM's own init
            std = getattr(self.config.text_config, "initializer_range", self.config.initializer_range)
            for queries in module.queries.values():
                init.normal_(queries, std=std)
        if isinstance(module, VersaViTRetrievalHead):
            init.normal_(module.probe, std=self.config.initializer_range)
            init.constant_(module.logit_scale, module.initial_logit_scale())
            if module.logit_bias is not None:
                init.constant_(module.logit_bias, -10.0)

    def _output_flags(self, output_hidden_states, output_attentions) -> tuple:
        """The caller's `output_hidden_states` / `output_attentions`, else the model config's, as transformers models
        resolve them (the flags of the outer config: the tower's sub-config is not consulted)."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        return output_hidden_states, bool(output_attentions)

    def _run_tower(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        output_hidden_states: bool | int | Sequence[int] | None = False,
        output_attentions: bool = False,
        merge: bool = True,
        num_blocks: int | None = None,
    ) -> VersaViTModelOutput:
        """The wrapped tower's forward as a [`VersaViTModelOutput`], for the model's own outputs and for the heads.

        `output_hidden_states` is a flag or the `hidden_states` indices to keep (what a head reads; the others come
        back as `None`). `merge=False` skips the tower's mergers for readers of pre-merger tokens only: their output
        would be thrown away, and while the tower trains they would keep activations for a backward that never comes
        (docs/benchmarks.md); `pooler_output` then has zero width (None for SigLIP). `num_blocks` runs only the first
        blocks, for readers of earlier layers only (`last_hidden_state` is then the last block run). `output_attentions`
        returns per-image attention maps (see [`VersaViTModelOutput`]): that call's attention runs eager, the
        implementation that computes the weights, whatever the model's `attn_implementation` (the outputs are the same
        within float rounding).
        """
        backbone = self.config.backbone
        run = (self.visual, pixel_values, image_grid_thw, output_hidden_states, merge, num_blocks)
        if not output_attentions:
            outputs = backbone.run(*run)
            attentions = None
        else:
            with recording_attention(self.visual.config) as records:
                outputs = backbone.run(*run)
            blocks = list(backbone.blocks(self.visual))[:num_blocks]
            calls = [records.get(backbone.attention(block), []) for block in blocks]
            attentions = backbone.attention_maps(calls, image_grid_thw)
        return VersaViTModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=outputs.pooler_output,
            hidden_states=outputs.get("hidden_states"),
            attentions=attentions,
            deepstack_features=tuple(deepstack) if (deepstack := outputs.get("deepstack_features")) else None,
        )

    def get_last_hidden_state(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """The tower's packed last-layer tokens `(sum of t*h*w, embed_dim)` before any merger (the mergers do not
        run), in the tower's own token order: what pooling heads read."""
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        return self._run_tower(pixel_values, image_grid_thw, merge=False).last_hidden_state

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
            row `r`, column `c` of the (resized) image, for every tower family. The tower stops after the deepest
            requested layer: blocks nobody reads do not run.
        """
        maps, _ = self._dense_features(pixel_values, image_grid_thw, layers, stack=stack)
        return maps

    def _dense_features(self, pixel_values, image_grid_thw, layers, output_hidden_states=False, output_attentions=False,
                        stack=True, task=None):
        """`get_dense_features` and the tower's output, for task models that return it: `hidden_states` as
        `output_hidden_states` asks (all, the listed indices with `None` elsewhere, or none), attention maps with
        `output_attentions`. A `task` (its name) needs one grid for all images, checked before the tower runs."""
        requested = [layers] if isinstance(layers, int) else list(layers)
        num_states = self.config.num_hidden_layers + 1
        for index in requested:
            if isinstance(index, bool) or not isinstance(index, int) or not -num_states <= index < num_states:
                raise ValueError(
                    f"layers: index {index!r} is outside the tower's hidden states (valid: {-num_states}.."
                    f"{num_states - 1}; 0 = patch embedding)."
                )
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        if task is not None:
            shared_grid(image_grid_thw, pixel_values.shape[0], task, multiple=self.config.spatial_merge_size)
        # The caller's selection (a flag, or indices as transformers' `output_hidden_states` takes them) and what the
        # head reads are captured together; the output keeps only the caller's.
        selected = None
        if output_hidden_states is not None and not isinstance(output_hidden_states, bool):
            indices = [output_hidden_states] if isinstance(output_hidden_states, int) else output_hidden_states
            selected = {index % num_states for index in indices}
        needed = {i % num_states for i in requested} | (selected or set())
        capture = True if output_hidden_states is True else sorted(needed)
        # Blocks past the deepest layer read run only when the caller wants every layer or every attention map.
        num_blocks = None if output_hidden_states is True or output_attentions else max(needed)
        outputs = self._run_tower(pixel_values, image_grid_thw, capture, output_attentions, False, num_blocks)
        backbone, vision = self.config.backbone, self.config.vision_config
        maps = tuple(backbone.feature_maps(vision, outputs.hidden_states[i], image_grid_thw, stack) for i in requested)
        if not output_hidden_states:
            outputs.hidden_states = None
        elif selected is not None:
            outputs.hidden_states = tuple(h if i in selected else None for i, h in enumerate(outputs.hidden_states))
        return maps, outputs


class VersaViTModel(VersaViTPreTrainedModel):
    r"""
    The VersaViT vision backbone: an MLLM vision tower (any tower family: Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
    Qwen3.5, SigLIP2, SigLIP) post-trained for dense features.

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
            Return every layer's tokens, or only the listed `hidden_states` indices. Defaults to
            `config.output_hidden_states`.
        output_attentions (`bool`, *optional*):
            Return every block's attention maps (computed with eager attention). Defaults to
            `config.output_attentions`.
        """
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        return self._run_tower(pixel_values, image_grid_thw, output_hidden_states, output_attentions)

    @classmethod
    def from_mllm(cls, mllm_path: str | Path, **kwargs) -> "VersaViTModel":
        """Build a VersaViT backbone from the vision tower of a local MLLM checkpoint folder of any registered tower
        family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, ...; `backbones.BACKBONES`).

        Reads only the tower's tensors (keys `visual.*` or `model.visual.*`), shard by shard, from safetensors
        weights (sharded or not): the LLM's weights are never loaded. `kwargs` go to `from_pretrained` (`dtype`,
        `attn_implementation`, `device_map`, ...); the dtype defaults to the checkpoint's.
        """
        folder = Path(mllm_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json; expected an MLLM model folder (e.g. Qwen2-VL, "
                                    "Qwen3-VL).")
        mllm_config = AutoConfig.from_pretrained(folder)
        vision_config = getattr(mllm_config, "vision_config", None)
        if vision_config is None:
            raise ValueError(
                f"{folder}/config.json (model_type {mllm_config.model_type!r}) has no vision_config; expected an MLLM "
                f"whose tower is one of {tuple(BACKBONES)}."
            )
        config = VersaViTConfig(vision_config=vision_config.to_dict())

        weight_map = safetensors_weight_map(folder)
        prefix = config.backbone.tower_prefix(weight_map, folder)
        state_dict = {"visual." + k: v for k, v in read_safetensors(folder, prefix, weight_map).items()}

        kwargs.setdefault("dtype", getattr(mllm_config, "dtype", None) or next(iter(state_dict.values())).dtype)
        model, info = cls.from_pretrained(
            None, config=config, state_dict=state_dict, output_loading_info=True, **kwargs
        )
        if info["missing_keys"]:
            raise ValueError(
                f"{folder}: the vision tower weights are incomplete, {len(info['missing_keys'])} tensors missing, "
                f"e.g. {sorted(info['missing_keys'])[:5]}."
            )
        if info["mismatched_keys"]:
            raise ValueError(f"{folder}: vision tower tensors of unexpected shape: {info['mismatched_keys'][:5]}.")
        model.name_or_path = str(folder)
        return model


class TraceableDepthEstimationHead(DepthAnythingDepthEstimationHead):
    """Depth Anything's depth head with the output size kept symbolic: the parent's forward casts it with `int()`,
    which `torch.export` cannot do for a size read from `image_grid_thw` (a value, not a shape). Same modules, same
    weights, same arithmetic (tested against the parent).

    Under bf16 / fp16 autocast its last convolution runs in the weights' own dtype: the scale-and-shift-invariant
    loss reads the map's variation around its level, and a freshly initialised head predicts ~1.04 ± 0.0035, which
    bf16's 8-bit mantissa (steps of 0.0078 at 1.0) rounds away (measured: the tiny model's first depth loss 8.11 in
    bf16 against 7.13 in float32; benchmarks/gpu.py checks the agreement)."""

    def forward(self, hidden_states: list[torch.Tensor], patch_height, patch_width) -> torch.Tensor:
        predicted_depth = self.conv1(hidden_states[self.head_in_index])
        size = (patch_height * self.patch_size, patch_width * self.patch_size)
        predicted_depth = F.interpolate(predicted_depth, size, mode="bilinear", align_corners=True)
        predicted_depth = self.activation1(self.conv2(predicted_depth))
        with torch.autocast(predicted_depth.device.type, enabled=False):
            predicted_depth = self.conv3(predicted_depth.to(self.conv3.weight.dtype))
        predicted_depth = self.activation2(predicted_depth) * self.max_depth
        return predicted_depth.squeeze(dim=1)


class VersaViTDepthHead(nn.Module):
    """DPT head (Ranftl et al.) over several backbone layers: Depth Anything's reassemble + fusion neck and its
    depth head, configured from `VersaViTConfig.depth_*`. Predicts relative depth (ReLU output) at 14x the grid,
    i.e. at the processed input resolution.

    The reassemble stage drops a CLS token the Qwen towers lack: a zero token is prepended to each layer.
    """

    def __init__(self, config: VersaViTConfig):
        super().__init__()
        dpt_config = DepthAnythingConfig(
            reassemble_hidden_size=config.embed_dim,
            patch_size=config.patch_size,
            neck_hidden_sizes=list(config.depth_neck_hidden_sizes),
            reassemble_factors=list(config.depth_reassemble_factors),  # explicit: zip() would silently truncate
            fusion_hidden_size=config.depth_fusion_hidden_size,
            head_hidden_size=config.depth_head_hidden_size,
            head_in_index=-1,
            depth_estimation_type="relative",
            max_depth=1,
        )
        self.neck = DepthAnythingNeck(dpt_config)
        self.head = TraceableDepthEstimationHead(dpt_config)
        # The first fusion layer never receives a residual, so its residual unit would never get a gradient.
        self.neck.fusion_stage.layers[0].residual_layer1 = None
        # Start the relative depth at a positive level: the head ends in a ReLU, which would otherwise zero (and stop
        # the gradient of) most of a freshly initialised prediction. The scale-and-shift-invariant loss ignores it.
        self.head.conv3.initial_bias = 1.0

    def _neck(self, feature_maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        batch, channels, height, width = feature_maps[0].shape
        cls = feature_maps[0].new_zeros(batch, 1, channels)
        tokens = [torch.cat([cls, fm.flatten(2).transpose(1, 2)], dim=1) for fm in feature_maps]
        return self.neck(tokens, height, width)

    def fused_features(self, feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The neck's finest fused map `(B, depth_fusion_hidden_size, H, W)`: what the depth output is decoded from
        (a depth expert's embedding for VisPer-LM's distillation)."""
        return self._neck(feature_maps)[-1]

    def forward(self, feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """`feature_maps`: one `(B, C, h, w)` map per configured layer. Returns `(B, 14h, 14w)` relative depth."""
        height, width = feature_maps[0].shape[-2:]
        return self.head(self._neck(feature_maps), height, width)


class VersaViTSegmentationHead(nn.Module):
    """SAM-style referring-segmentation head: a SAM neck from the backbone width to the decoder width, a prompt
    encoder turning one text embedding into `segmentation_num_prompt_tokens` sparse prompt tokens, and SAM's mask
    decoder (two-way transformer) with a single mask output at 4x the grid.

    The positional encoding is SAM's random Fourier features at SAM's scale (1.0), fixed (not trained), computed for
    any grid shape. VersaViT trains no mask-quality score, so the decoder's IoU head is removed (it would be a
    parameter without gradient).
    """

    def __init__(self, config: VersaViTConfig):
        super().__init__()
        width = config.segmentation_hidden_size
        self.num_prompt_tokens = config.segmentation_num_prompt_tokens
        self.text_embed_dim = config.text_embed_dim
        self.neck = SamVisionNeck(SamVisionConfig(hidden_size=config.embed_dim, output_channels=width))
        # A module of its own (no parameters), so that the prompt encoder's weights keep their names either way.
        self.text_norm = (nn.LayerNorm(config.text_embed_dim, elementwise_affine=False)
                          if config.segmentation_normalize_text else nn.Identity())
        self.prompt_encoder = nn.Sequential(
            nn.Linear(config.text_embed_dim, width), nn.GELU(), nn.Linear(width, width * self.num_prompt_tokens)
        )
        self.no_mask_embed = nn.Embedding(1, width)
        # Fixed random Fourier features (frozen by the model: `VersaViTPreTrainedModel.frozen_by_design`).
        self.positional_embedding = SamPositionalEmbedding(SimpleNamespace(scale=1.0, num_pos_feats=width // 2))
        decoder_config = SamMaskDecoderConfig(
            hidden_size=width,
            num_hidden_layers=config.segmentation_decoder_layers,
            num_attention_heads=config.segmentation_decoder_heads,
            mlp_dim=config.segmentation_decoder_mlp_dim,
            num_multimask_outputs=0,
        )
        attn = config._attn_implementation
        decoder_config._attn_implementation = attn if attn in ("eager", "sdpa") else "sdpa"
        self.mask_decoder = SamMaskDecoder(decoder_config)
        self.mask_decoder.iou_prediction_head = nn.Identity()

    def grid_positional_embeddings(self, height: int, width: int) -> torch.Tensor:
        """`(1, width, h, w)` encodings of the patch centres, normalised per axis (non-square grids included)."""
        device = self.positional_embedding.positional_embedding.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self.positional_embedding(coords[None]).permute(0, 3, 1, 2)

    def forward(
        self, image_embeddings: torch.Tensor, text_embeds: torch.Tensor, image_index: torch.Tensor
    ) -> torch.Tensor:
        """Mask logits `(P, 4h, 4w)` for `P` expressions; expression `p` reads image `image_index[p]`.

        `image_embeddings` are the neck's `(B, width, h, w)` output, computed once per image however many
        expressions refer to it.
        """
        num_expressions = text_embeds.shape[0]
        _, channels, height, width = image_embeddings.shape
        sparse = self.prompt_encoder(self.text_norm(text_embeds.to(image_embeddings.dtype)))
        sparse = sparse.view(num_expressions, 1, self.num_prompt_tokens, channels)
        dense = self.no_mask_embed.weight.view(1, channels, 1, 1).expand(num_expressions, channels, height, width)
        positional = self.grid_positional_embeddings(height, width).to(image_embeddings.dtype)
        masks, _ = self.mask_decoder(
            image_embeddings=image_embeddings[image_index],
            image_positional_embeddings=positional.expand(num_expressions, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return masks[:, 0, 0]


@dataclass
class VersaViTDepthEstimatorOutput(DepthEstimatorOutput):
    r"""
    loss (`torch.FloatTensor`, *optional*): `λ_ssi · L_ssi + λ_gm · L_gm`, when `labels` are given.
    predicted_depth (`torch.FloatTensor` of shape `(batch_size, height, width)`):
        Relative depth at the processed input size (`14 h x 14 w` for an `h x w` patch grid).
    hidden_states, attentions (*optional*): the tower's, as [`VersaViTModelOutput`] has them, with
        `output_hidden_states` / `output_attentions`.
    loss_terms (`dict[str, torch.FloatTensor]`, *optional*): the detached `loss_ssi` and `loss_gm`, for logging.
    """

    loss_terms: dict[str, torch.Tensor] | None = None


class DepthEstimationMixin:
    """The depth task on a VersaViT model with `visual` and `depth_head` (shared by the task and multi-task models)."""

    def forward_depth(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        labels: torch.Tensor | None = None,
        labels_mask: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> VersaViTDepthEstimatorOutput:
        r"""
        labels (`torch.FloatTensor` of shape `(batch_size, height, width)`, *optional*):
            Depth or disparity targets (`config.depth_label_space`) at the processed input size. NaN, inf and
            negative values mark invalid pixels and are left out of the loss; so does 0 for depth, while a disparity
            of 0 (sky, far field) supervises.
        labels_mask (`torch.BoolTensor` of the same shape, *optional*): further restricts the valid pixels.
        output_hidden_states (`bool` or `list[int]`, *optional*), output_attentions (`bool`, *optional*): also return
            the tower's `hidden_states` (every layer, or the listed indices, packed as [`VersaViTModel`] returns them)
            / attention maps; default to the config's flags.
        """
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        feature_maps, tower = self._dense_features(
            pixel_values, image_grid_thw, self.config.depth_layer_indices, output_hidden_states, output_attentions,
            task="depth estimation",
        )
        predicted_depth = self.depth_head(feature_maps)
        loss = loss_terms = None
        if labels is not None:
            loss, loss_terms = depth_loss(
                predicted_depth,
                labels.to(predicted_depth.device),
                None if labels_mask is None else labels_mask.to(predicted_depth.device),
                ssi_weight=self.config.depth_ssi_weight,
                gm_weight=self.config.depth_gm_weight,
                gm_scales=self.config.depth_gm_scales,
                label_space=self.config.depth_label_space,
            )
        return VersaViTDepthEstimatorOutput(
            loss=loss,
            predicted_depth=predicted_depth,
            hidden_states=tower.hidden_states,
            attentions=tower.attentions,
            loss_terms=loss_terms,
        )

    def depth_layers_read(self) -> int:
        return max(self.config.depth_layer_indices)


class VersaViTForDepthEstimation(DepthEstimationMixin, VersaViTPreTrainedModel):
    r"""
    VersaViT with a DPT depth head on three (by default) uniformly spaced backbone layers (paper §4.2.2). Trained on
    relative-depth pseudo labels with the scale-and-shift-invariant and gradient-matching losses; runs in
    transformers' `depth-estimation` pipeline with [`VersaViTImageProcessor`].
    """

    _keys_to_ignore_on_load_unexpected = [r"^(?!(visual|depth_head)\.)"]

    def __init__(self, config: VersaViTConfig):
        super().__init__(config)
        self._build_backbone(config)
        self.depth_head = VersaViTDepthHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values,
        image_grid_thw,
        labels=None,
        labels_mask=None,
        output_hidden_states=None,
        output_attentions=None,
        **kwargs,
    ) -> VersaViTDepthEstimatorOutput:
        r"""See [`DepthEstimationMixin.forward_depth`]."""
        return self.forward_depth(
            pixel_values,
            image_grid_thw,
            labels=labels,
            labels_mask=labels_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )


@dataclass
class VersaViTReferringSegmentationOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor`, *optional*): `λ_bce · BCE + λ_dice · Dice`, averaged per mask, when `labels` are given.
    pred_masks (`torch.FloatTensor` of shape `(num_expressions, height, width)`):
        Mask logits, one per expression, at the processed input size (`14 h x 14 w`).
    image_embeddings (`torch.FloatTensor` of shape `(batch_size, segmentation_hidden_size, h, w)`):
        The neck's output, computed once per image.
    hidden_states, attentions (*optional*): the tower's, as [`VersaViTModelOutput`] has them, with
        `output_hidden_states` / `output_attentions`.
    loss_terms (`dict[str, torch.FloatTensor]`, *optional*): the detached `loss_bce` and `loss_dice`.
    """

    loss: torch.FloatTensor | None = None
    pred_masks: torch.FloatTensor | None = None
    image_embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    loss_terms: dict[str, torch.Tensor] | None = None


class ReferringSegmentationMixin:
    """The referring-segmentation task on a VersaViT model with `visual` and `segmentation_head`."""

    def forward_segmentation(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        text_embeds: torch.Tensor,
        expression_image_index: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> VersaViTReferringSegmentationOutput:
        r"""
        text_embeds (`torch.FloatTensor` of shape `(num_expressions, text_embed_dim)` or
            `(batch_size, expressions_per_image, text_embed_dim)`):
            Precomputed embeddings of the referring expressions.
        expression_image_index (`torch.LongTensor` of shape `(num_expressions,)`, *optional*):
            The image each row of a 2-D `text_embeds` refers to. Defaults to one expression per image, in order.
        labels (`torch.Tensor` of shape `(num_expressions, height, width)`, *optional*):
            Binary target masks at the processed input size; an all-zero mask is a valid target.
        output_hidden_states (`bool` or `list[int]`, *optional*), output_attentions (`bool`, *optional*): also return
            the tower's `hidden_states` (all, or the listed indices) / attention maps; default to the config's flags.
        """
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        num_images = image_grid_thw.shape[0]
        text_embeds, image_index = self._expressions(text_embeds, expression_image_index, num_images)
        (feature_map,), tower = self._dense_features(
            pixel_values, image_grid_thw, [self.config.segmentation_layer_index], output_hidden_states,
            output_attentions, task="referring segmentation",
        )
        height, width = feature_map.shape[-2:]
        image_embeddings = self.segmentation_head.neck(feature_map.permute(0, 2, 3, 1))
        low_res = self.segmentation_head(image_embeddings, text_embeds.to(image_embeddings.device), image_index)
        size = (height * self.config.patch_size, width * self.config.patch_size)
        pred_masks = F.interpolate(low_res[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        loss = loss_terms = None
        if labels is not None:
            loss, loss_terms = mask_loss(
                pred_masks,
                labels.to(pred_masks.device),
                bce_weight=self.config.segmentation_bce_weight,
                dice_weight=self.config.segmentation_dice_weight,
            )
        return VersaViTReferringSegmentationOutput(
            loss=loss,
            pred_masks=pred_masks,
            image_embeddings=image_embeddings,
            hidden_states=tower.hidden_states,
            attentions=tower.attentions,
            loss_terms=loss_terms,
        )

    def _expressions(self, text_embeds, expression_image_index, num_images):
        """Flatten `text_embeds` to `(P, D)` with the image index of each row, checking widths and indices."""
        if text_embeds.ndim == 3:
            if text_embeds.shape[0] != num_images:
                raise ValueError(
                    f"text_embeds: a 3-D tensor needs one row per image ({num_images}), got shape "
                    f"{tuple(text_embeds.shape)}."
                )
            if expression_image_index is not None:
                raise ValueError("expression_image_index: only used with 2-D text_embeds (num_expressions, dim).")
            per_image = text_embeds.shape[1]
            expression_image_index = torch.arange(num_images).repeat_interleave(per_image)
            text_embeds = text_embeds.flatten(0, 1)
        if text_embeds.ndim != 2 or text_embeds.shape[-1] != self.config.text_embed_dim:
            raise ValueError(
                f"text_embeds: expected width config.text_embed_dim={self.config.text_embed_dim} (shape "
                f"(num_expressions, {self.config.text_embed_dim})), got shape {tuple(text_embeds.shape)}; embed the "
                "expressions with the text model this head was built for."
            )
        if expression_image_index is None:
            if text_embeds.shape[0] != num_images:
                raise ValueError(
                    f"expression_image_index: required when the number of expressions ({text_embeds.shape[0]}) "
                    f"differs from the number of images ({num_images})."
                )
            expression_image_index = torch.arange(num_images)
        expression_image_index = torch.as_tensor(expression_image_index)
        if expression_image_index.shape != (text_embeds.shape[0],) or expression_image_index.is_floating_point():
            raise ValueError(
                f"expression_image_index: expected {text_embeds.shape[0]} integer indices in [0, {num_images}), got "
                f"{expression_image_index.tolist()}."
            )
        torch_compilable_check(
            ((expression_image_index >= 0) & (expression_image_index < num_images)).all(),
            lambda: f"expression_image_index: expected {text_embeds.shape[0]} integer indices in [0, {num_images}), "
            f"got {expression_image_index.tolist()}.",
        )
        return text_embeds, expression_image_index.to(self.device)

    def segmentation_layers_read(self) -> int:
        return self.config.segmentation_layer_index


class VersaViTForReferringSegmentation(ReferringSegmentationMixin, VersaViTPreTrainedModel):
    r"""
    VersaViT with a SAM-style referring-segmentation head (paper §4.2.3): last-layer features, a neck, a prompt
    encoder fed by precomputed text embeddings (width `config.text_embed_dim`) and SAM's mask decoder. Any number of
    expressions per image; the backbone runs once per image.
    """

    _keys_to_ignore_on_load_unexpected = [r"^(?!(visual|segmentation_head)\.)"]

    def __init__(self, config: VersaViTConfig):
        super().__init__(config)
        self._build_backbone(config)
        self.segmentation_head = VersaViTSegmentationHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values,
        image_grid_thw,
        text_embeds,
        expression_image_index=None,
        labels=None,
        output_hidden_states=None,
        output_attentions=None,
        **kwargs,
    ) -> VersaViTReferringSegmentationOutput:
        r"""See [`ReferringSegmentationMixin.forward_segmentation`]."""
        return self.forward_segmentation(
            pixel_values,
            image_grid_thw,
            text_embeds,
            expression_image_index=expression_image_index,
            labels=labels,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )


class VersaViTRetrievalHead(nn.Module):
    """The retrieval head of the paper's supplement §9.5, as SigLIP pools: a learned query attends to an image's
    last-layer tokens (multi-head attention), a layer norm and an MLP take the result into the shared embedding space
    (`retrieval_embed_dim`); a text projection MLP takes offline text embeddings into the same space. The contrastive
    loss's scale (and, for the sigmoid loss, bias) are learnable, starting at SigLIP's log 10 and -10 or CLIP's
    log(1 / 0.07)."""

    def __init__(self, config: VersaViTConfig):
        super().__init__()
        width, shared = config.embed_dim, config.retrieval_embed_dim
        self.kind = config.retrieval_loss
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.attention = nn.MultiheadAttention(width, config.retrieval_pooling_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, shared))
        self.text_projection = nn.Sequential(
            nn.Linear(config.retrieval_text_embed_dim, shared), nn.GELU(), nn.Linear(shared, shared)
        )
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.logit_bias = nn.Parameter(torch.zeros(())) if self.kind == "sigmoid" else None

    def initial_logit_scale(self) -> float:
        return math.log(10.0) if self.kind == "sigmoid" else math.log(1 / 0.07)

    def pool(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """`(B, N, C)` tokens, `padding` `(B, N)` True where a token is padding -> `(B, retrieval_embed_dim)`."""
        query = self.probe.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        pooled, _ = self.attention(query, tokens, tokens, key_padding_mask=padding, need_weights=False)
        return self.mlp(self.layernorm(pooled[:, 0]))

    def embed_images(self, tokens: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """Pooled, L2-normalised embeddings `(num_images, retrieval_embed_dim)` of a tower's packed pre-merger
        `tokens` `(sum of t*h*w, C)`: each image attends only to its own tokens (padding is masked)."""
        # Per-image rows of a padded (num_images, longest, C) batch, built with tensor ops (traceable).
        counts = image_grid_thw.prod(-1).to(tokens.device)
        num_images = counts.shape[0]
        image_of_token = torch.repeat_interleave(
            torch.arange(num_images, device=tokens.device), counts, output_size=tokens.shape[0]
        )
        position = torch.arange(tokens.shape[0], device=tokens.device) - (counts.cumsum(0) - counts)[image_of_token]
        longest = counts.max().item()  # not int(): under torch.export it stays a symbol
        torch._check(longest >= 1)
        torch._check(longest <= tokens.shape[0])
        padded = tokens.new_zeros(num_images, longest, tokens.shape[-1])
        padded = padded.index_put((image_of_token, position), tokens)
        padding = torch.arange(longest, device=tokens.device)[None] >= counts[:, None]
        return F.normalize(self.pool(padded, padding), dim=-1)

    def embed_texts(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """Projected, L2-normalised `(num_texts, retrieval_embed_dim)` embeddings of offline text embeddings
        `(num_texts, retrieval_text_embed_dim)`; a wrong width or a NaN / inf value is a `ValueError`."""
        width = self.text_projection[0].in_features
        if text_embeds.ndim != 2 or text_embeds.shape[-1] != width:
            raise ValueError(
                f"text_embeds: expected shape (num_texts, {width}) (config.retrieval_text_embed_dim), got "
                f"{tuple(text_embeds.shape)}; embed the texts with the text model this head was built for."
            )
        torch_compilable_check(torch.isfinite(text_embeds).all(), "text_embeds: contains NaN or inf values.")
        projection = self.text_projection
        return F.normalize(projection(text_embeds.to(projection[0].weight.dtype)), dim=-1)

    def loss(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> tuple:
        """`(loss, logits)` of paired embeddings (image `i` with text `i`) under the head's contrastive loss, with
        its learnable scale and bias (`losses_versavit.contrastive_loss`)."""
        return contrastive_loss(image_embeds, text_embeds, self.logit_scale, self.logit_bias, kind=self.kind)


@dataclass
class VersaViTImageTextRetrievalOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor`, *optional*): the contrastive loss (`config.retrieval_loss`), with `return_loss`.
    logits_per_image (`torch.FloatTensor` of shape `(num_images, num_texts)`, *optional*): scaled cosine
        similarities (plus the bias, for the sigmoid loss), when `text_embeds` are given.
    image_embeds (`torch.FloatTensor` of shape `(num_images, retrieval_embed_dim)`): pooled, L2-normalised.
    text_embeds (`torch.FloatTensor` of shape `(num_texts, retrieval_embed_dim)`, *optional*): projected,
        L2-normalised.
    hidden_states, attentions (*optional*): the tower's, as [`VersaViTModelOutput`] has them, with
        `output_hidden_states` / `output_attentions`.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class VersaViTForImageTextRetrieval(VersaViTPreTrainedModel):
    r"""
    VersaViT with the image-text retrieval head of the paper's supplement §9.5 (out-of-task evaluation, Table 11):
    attention pooling over the tower's last-layer tokens and a projection of offline text embeddings (width
    `config.retrieval_text_embed_dim`) into a shared space, trained with a SigLIP or CLIP contrastive loss. Freeze
    the tower to train the head alone (the paper's first setting) or train it too (the second).
    """

    _keys_to_ignore_on_load_unexpected = [r"^(?!(visual|retrieval_head)\.)"]

    def __init__(self, config: VersaViTConfig):
        super().__init__(config)
        self._build_backbone(config)
        self.retrieval_head = VersaViTRetrievalHead(config)
        self.post_init()

    @can_return_tuple
    def get_image_features(
        self, pixel_values, image_grid_thw, output_hidden_states=None, output_attentions=None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """The tower's outputs (`last_hidden_state`, and `hidden_states` / `attentions` when asked) with
        `pooler_output` the pooled, L2-normalised image embeddings `(num_images, retrieval_embed_dim)`. Images of any
        sizes: each attends only to its own tokens (padding is masked)."""
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        tower = self._run_tower(pixel_values, image_grid_thw, output_hidden_states, output_attentions, merge=False)
        tokens = tower.last_hidden_state
        embeds = self.pool_tokens(tokens, image_grid_thw)
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens, pooler_output=embeds, hidden_states=tower.hidden_states,
            attentions=tower.attentions,
        )

    def pool_tokens(self, tokens: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """Pooled, L2-normalised embeddings `(num_images, retrieval_embed_dim)` of the tower's packed last-layer
        `tokens` (as `get_image_features` computes them; callers that cache a frozen tower's tokens pool with it)."""
        return self.retrieval_head.embed_images(tokens, image_grid_thw)

    def retrieval_loss(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> tuple:
        """`(loss, logits)` of paired embeddings (image `i` with text `i`) under `config.retrieval_loss`, with the
        head's learnable scale and bias."""
        return self.retrieval_head.loss(image_embeds, text_embeds)

    def project_text(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """Projected, L2-normalised text embeddings `(num_texts, retrieval_embed_dim)` from offline ones (there is no
        text model here: the texts are embedded beforehand, by the model `retrieval_text_embed_dim` names)."""
        return self.retrieval_head.embed_texts(text_embeds)

    @can_return_tuple
    def forward(
        self,
        pixel_values,
        image_grid_thw,
        text_embeds=None,
        return_loss=None,
        output_hidden_states=None,
        output_attentions=None,
        **kwargs,
    ) -> VersaViTImageTextRetrievalOutput:
        r"""
        text_embeds (`torch.FloatTensor` of shape `(num_texts, retrieval_text_embed_dim)`, *optional*):
            Offline text embeddings. With `return_loss` (the default when there is one text per image), text `i`
            is image `i`'s positive and every other pair of the batch a negative.
        output_hidden_states, output_attentions (*optional*): also return the tower's, as [`VersaViTModel`] does.
        """
        image = self.get_image_features(
            pixel_values, image_grid_thw, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions, return_dict=True,
        )
        image_embeds = image.pooler_output
        loss = logits = text = None
        if text_embeds is not None:
            text = self.project_text(text_embeds.to(image_embeds.device))
            head = self.retrieval_head
            if return_loss is None:
                return_loss = text.shape[0] == image_embeds.shape[0]
            if return_loss:
                loss, logits = self.retrieval_loss(image_embeds, text)
            else:
                logits = contrastive_logits(image_embeds, text, head.logit_scale, head.logit_bias, kind=head.kind)
        return VersaViTImageTextRetrievalOutput(
            loss=loss, logits_per_image=logits, image_embeds=image_embeds, text_embeds=text,
            hidden_states=image.hidden_states, attentions=image.attentions,
        )


@dataclass
class VersaViTCaptioningOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor`, *optional*): next-token cross-entropy over the answer tokens, averaged per token.
    logits (`torch.FloatTensor`): the LLM's logits, `(batch_size, sequence_length, vocab_size)` without `labels`; with
        `labels`, only those of the positions that predict a label, `(num_predicted_tokens, vocab_size)`, in
        row-major order (position `t` of row `b` when `labels[b, t + 1] != -100`).
    image_features (`torch.FloatTensor` of shape `(num_visual_tokens, llm_hidden_size)`): projected image tokens.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): the LLM's, with `output_hidden_states=True` (index 0:
        the input embeddings, `l`: the output of decoder layer `l`), each `(batch_size, sequence_length, hidden)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class VersaViTTaskTokens(nn.Module):
    r"""
    VisPer-LM's task tokens (arXiv 2412.09585, §3): per expert of `config.task_tokens`, a `(num_queries,
    llm_hidden_size)` set of learnable queries. Its embedding predictors read them as their latents (training only);
    the means of `config.num_task_tokens` consecutive equal groups of them follow every image in the LLM's input
    sequence (`sequence()`, expert after expert), at training and at inference.
    """

    def __init__(self, config: VersaViTConfig):
        super().__init__()
        self.num_task_tokens = config.num_task_tokens
        hidden = config.text_config.hidden_size
        self.queries = nn.ParameterDict(
            {expert: nn.Parameter(torch.zeros(count, hidden)) for expert, count in config.task_tokens.items()}
        )

    @property
    def experts(self) -> list[str]:
        return list(self.queries)

    def sequence(self) -> torch.Tensor:
        """The `(num_experts * num_task_tokens, hidden)` tokens placed after each image."""
        groups = [q.view(self.num_task_tokens, -1, q.shape[-1]).mean(1) for q in self.queries.values()]
        return torch.cat(groups)

    def span(self, expert: str) -> tuple[int, int]:
        """Where `expert`'s tokens are among the `sequence()` (start, end)."""
        index = self.experts.index(expert)
        return index * self.num_task_tokens, (index + 1) * self.num_task_tokens


class CaptioningMixin:
    """The captioning / VQA task on a VersaViT model with `visual`, `projector` and `language_model` (and, with
    `config.task_tokens`, VisPer-LM's `task_tokens` after every image)."""

    def _build_captioning(self, config: VersaViTConfig) -> None:
        if config.text_config is None or config.image_token_id is None:
            raise ValueError(
                "The captioning branch needs config.text_config (the LLM) and config.image_token_id; build it with "
                "VersaViTForCaptioning.from_parts(backbone, language_model, tokenizer)."
            )
        if config.mllm_language_model:  # the MLLM's own LLM, fed by the tower's own mergers: no projector
            self.projector = None
            self.language_model = mllm_without_tower(config)
        else:
            self.projector = config.backbone.build_projector(config.vision_config, config.text_config.hidden_size)
            self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.task_tokens = VersaViTTaskTokens(config) if config.task_tokens else None

    def add_task_tokens(self, task_tokens: dict[str, int], num_task_tokens: int = 8) -> "VersaViTTaskTokens":
        """Give the captioning branch VisPer-LM's task tokens (`config.task_tokens`, `config.num_task_tokens`), new
        ones drawn from a normal of the LLM's input-embedding standard deviation (so that they start at the scale of
        a word embedding). A model that has the same ones keeps them; other ones are a `ValueError`."""
        if self.task_tokens is not None:
            same = list(self.config.task_tokens.items()) == list(task_tokens.items())  # their order is the sequence's
            if not same or self.config.num_task_tokens != num_task_tokens:
                raise ValueError(f"task_tokens: this model has {self.config.task_tokens} x "
                                 f"{self.config.num_task_tokens} tokens, asked for {task_tokens} x {num_task_tokens}.")
            return self.task_tokens
        self.config.task_tokens, self.config.num_task_tokens = dict(task_tokens), num_task_tokens
        self.config._check_task_tokens()
        embeddings = self.language_model.get_input_embeddings().weight
        self.task_tokens = VersaViTTaskTokens(self.config).to(embeddings.device, embeddings.dtype)
        if embeddings.device.type != "meta":  # a model on the meta device (sizes only) has no values to draw
            std = embeddings.detach().float().std().item()
            with torch.no_grad():
                for queries in self.task_tokens.queries.values():
                    queries.normal_(0.0, std)
        return self.task_tokens

    @property
    def num_sequence_task_tokens(self) -> int:
        """Task tokens after each image in the input sequence (0 without them)."""
        return 0 if self.task_tokens is None else len(self.config.task_tokens) * self.config.num_task_tokens

    def get_image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """Projected visual tokens `(num_patches / 4, llm_hidden_size)` in merge-block order, image after image (with
        `mllm_language_model`: the tower's own merger output)."""
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        if self.config.mllm_language_model:
            return self._run_tower(pixel_values, image_grid_thw).pooler_output
        tokens = self._run_tower(pixel_values, image_grid_thw, merge=False).last_hidden_state
        features = self.projector(tokens)
        # Qwen2.5-VL: undo the window permutation, as its own merger output does
        return self.config.backbone.merged_in_image_order(self.config.vision_config, features, image_grid_thw)

    def _check_image_tokens(self, input_ids, image_grid_thw, labels=None) -> torch.Tensor:
        """The mask of the image tokens of `input_ids`, checked against the images' visual tokens (and task tokens)
        and against `labels` (never predicted)."""
        image_mask = input_ids == self.config.image_token_id
        merge = self.config.spatial_merge_size**2
        extra = self.num_sequence_task_tokens
        per_image = (image_grid_thw.prod(-1) // merge + extra).tolist()
        per_sample = image_mask.sum(-1).tolist()
        if len(per_image) == len(per_sample):  # one image per sequence: check each one
            for index, (found, needed) in enumerate(zip(per_sample, per_image)):
                if found != needed:
                    raise ValueError(
                        f"input_ids[{index}] has {found} image tokens (id {self.config.image_token_id}) but its image "
                        f"has {needed - extra} visual tokens (image_grid_thw[{index}] = "
                        f"{image_grid_thw[index].tolist()})"
                        + (f" and is followed by {extra} task tokens" if extra else "")
                        + "; the prompt needs exactly one image placeholder, expanded by the processor"
                        + (f" (VersaViTCaptioningProcessor(..., num_task_tokens={extra}))." if extra else ".")
                    )
        elif sum(per_sample) != sum(per_image):
            raise ValueError(
                f"input_ids hold {sum(per_sample)} image tokens but the {len(per_image)} images have {sum(per_image)} "
                "visual tokens."
            )
        if labels is not None and (labels[image_mask] != IGNORE_INDEX).any():
            raise ValueError("labels: image token positions must carry -100 (they are not predicted).")
        return image_mask

    def _splice(self, input_ids, pixel_values, image_grid_thw, labels=None):
        """The LLM's input embeddings with the projected visual tokens (and task tokens) at the image tokens."""
        image_mask = self._check_image_tokens(input_ids, image_grid_thw, labels)
        merge = self.config.spatial_merge_size**2
        extra = self.num_sequence_task_tokens
        features = self.get_image_features(pixel_values, image_grid_thw)
        spliced = features
        if extra:  # every image's visual tokens, then the task tokens
            tokens = self.task_tokens.sequence().to(features.dtype)
            visual = (image_grid_thw.prod(-1) // merge).tolist()
            spliced = torch.cat([part for chunk in features.split(visual) for part in (chunk, tokens)])
        embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        mask = image_mask.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask.to(embeds.device), spliced.to(embeds.dtype)), features

    def _mllm_inputs(self, input_ids, pixel_values, image_grid_thw, labels=None):
        """With `mllm_language_model`: the MLLM's own inputs with its vision encoder's outputs computed by VersaViT's
        tower (`mm_encoder_outputs`, the form transformers' MLLMs take pre-encoded images in): the merger output
        and, for Qwen3-VL, the DeepStack features, per image. The MLLM splices them, places them (its multimodal
        rotary positions) and adds the DeepStack features to its first layers, as it does with pixels."""
        image_mask = self._check_image_tokens(input_ids, image_grid_thw, labels)
        check_vision_inputs(self.config, pixel_values, image_grid_thw)
        tower = self._run_tower(pixel_values, image_grid_thw)
        sizes = (image_grid_thw.prod(-1) // self.config.spatial_merge_size**2).tolist()
        deepstack = [feature.split(sizes) for feature in tower.deepstack_features or ()]
        encoded = BaseModelOutputWithDeepstackFeatures(pooler_output=tower.pooler_output.split(sizes),
                                                       deepstack_features=deepstack or None)
        inputs = {"input_ids": input_ids, "image_grid_thw": image_grid_thw, "mm_encoder_outputs": {"image": encoded}}
        if "mm_token_type_ids" in inspect.signature(self.language_model.forward).parameters:
            inputs["mm_token_type_ids"] = image_mask.int()  # text 0, image 1 (no videos)
        return inputs, tower.pooler_output

    def _llm_inputs(self, input_ids, pixel_values, image_grid_thw, labels=None):
        """The captioning LLM's inputs for these prompts and images (`input_ids` or `inputs_embeds`, and what goes
        with them) and the visual tokens fed to it."""
        if self.config.mllm_language_model:
            return self._mllm_inputs(input_ids, pixel_values, image_grid_thw, labels)
        inputs_embeds, features = self._splice(input_ids, pixel_values, image_grid_thw, labels)
        return {"inputs_embeds": inputs_embeds}, features

    def forward_captioning(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> VersaViTCaptioningOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Token ids with each image's placeholder expanded to its number of visual tokens.
        labels (`torch.LongTensor` of the same shape, *optional*): target ids, -100 where nothing is predicted.
        """
        llm_inputs, features = self._llm_inputs(input_ids, pixel_values, image_grid_thw, labels)
        if labels is None or "logits_to_keep" not in inspect.signature(self.language_model.forward).parameters:
            out = self.language_model(**llm_inputs, attention_mask=attention_mask, labels=labels, **kwargs)
            return VersaViTCaptioningOutput(loss=out.loss, logits=out.logits, image_features=features,
                                            hidden_states=out.hidden_states)
        # Vocabulary-wide logits only where a token is predicted (position t predicts labels[:, t + 1]): the chat
        # template, image and question positions -- most of the sequence -- skip the LM head, its backward and the
        # (batch x length x vocabulary) logits, the largest activation of the step (docs/benchmarks.md).
        targets = labels[:, 1:]
        predicted = targets != IGNORE_INDEX
        keep = F.pad(predicted, (0, 1), value=False)
        out = self.language_model(**llm_inputs, attention_mask=attention_mask, logits_to_keep=keep, **kwargs)
        # The LLM's own loss is the same mean over the predicted tokens (NaN for a batch without any; here 0).
        loss = F.cross_entropy(out.logits.float(), targets[predicted].to(out.logits.device), reduction="sum")
        loss = loss / predicted.sum().clamp(min=1)
        return VersaViTCaptioningOutput(loss=loss, logits=out.logits, image_features=features,
                                        hidden_states=out.hidden_states)

    def captioning_layers_read(self) -> int:
        return self.config.num_hidden_layers

    @torch.no_grad()
    def generate(self, input_ids, pixel_values, image_grid_thw, attention_mask=None, **generate_kwargs):
        """Generate answers: the images are encoded once, the LLM continues the prompts. Returns new tokens only."""
        llm_inputs, _ = self._llm_inputs(input_ids, pixel_values, image_grid_thw)
        generated = self.language_model.generate(**llm_inputs, attention_mask=attention_mask, **generate_kwargs)
        return generated[:, input_ids.shape[1]:] if "input_ids" in llm_inputs else generated


class VersaViTForCaptioning(CaptioningMixin, VersaViTPreTrainedModel):
    r"""
    The VQA & captioning branch (paper §4.2.1): the backbone's last-layer tokens, merged 2x2 and projected by an MLP
    (`projector`, the structure of the MLLM's own PatchMerger, sized for the LLM), are spliced into the text
    embeddings of a causal LLM at the `config.image_token_id` positions. The loss is the LLM's next-token
    cross-entropy on the label tokens (answers; prompt and image positions carry -100), averaged per token.

    Build it around a real LLM with [`VersaViTForCaptioning.from_parts`]; [`VersaViTCaptioningProcessor`] makes
    the inputs and labels.
    """

    _keys_to_ignore_on_load_unexpected = [r"^(?!(visual|projector|language_model|task_tokens)\.)"]

    def __init__(self, config: VersaViTConfig):
        super().__init__(config)
        self._build_backbone(config)
        self._build_captioning(config)
        self.post_init()

    @classmethod
    def from_parts(
        cls, backbone: "VersaViTModel", language_model: PreTrainedModel, tokenizer, image_token: str = "<image>"
    ):
        """Assemble the captioning model from a backbone and a causal LLM (their weights are kept; the projector is
        new). Adds `image_token` to `tokenizer` as a special token if it is missing, growing the LLM's embeddings.

        `language_model` may also be the MLLM the backbone's tower belongs to (an `AutoModelForImageTextToText` with a
        `vision_config`): the model then captions through that MLLM's own LLM, fed by the tower's own mergers
        (`config.mllm_language_model`); the MLLM's image token is used and `tokenizer` is not changed."""
        if getattr(language_model.config, "vision_config", None) is not None:
            config = mllm_captioning_config(backbone.config, language_model)
            model = cls(config)
            model.visual.load_state_dict(backbone.visual.state_dict())
            model.language_model.load_state_dict(mllm_language_state(config, language_model))
            return model.to(dtype=backbone.dtype)
        config = captioning_config(backbone.config, language_model, tokenizer, image_token)
        model = cls(config)
        model.visual.load_state_dict(backbone.visual.state_dict())
        model.language_model.load_state_dict(language_model.state_dict())
        return model.to(dtype=backbone.dtype)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    @can_return_tuple
    def forward(
        self, input_ids, pixel_values, image_grid_thw, attention_mask=None, labels=None, **kwargs
    ) -> VersaViTCaptioningOutput:
        r"""See [`CaptioningMixin.forward_captioning`]."""
        return self.forward_captioning(input_ids, pixel_values, image_grid_thw, attention_mask, labels, **kwargs)


class VersaViTForMultiTask(CaptioningMixin, DepthEstimationMixin, ReferringSegmentationMixin, VersaViTPreTrainedModel):
    r"""
    The multi-task post-training model (paper §4.3): one shared backbone with the heads of `config.tasks`, under
    the same names as in the task models, so its checkpoint loads into each of them (and into [`VersaViTModel`]).

    `forward(task=..., **batch)` runs one task's forward and loss. How the tasks are trained together (which parts
    train, the loss weights, multi-process details) is the trainer's business (`versavit_trainer`), not this class's.
    """

    accepts_loss_kwargs = False  # each task normalises its own loss; the trainer weights and accumulates them

    def __init__(self, config: VersaViTConfig):
        super().__init__(config)
        self._build_backbone(config)
        if "depth" in config.tasks:
            self.depth_head = VersaViTDepthHead(config)
        if "segmentation" in config.tasks:
            self.segmentation_head = VersaViTSegmentationHead(config)
        if "captioning" in config.tasks:
            self._build_captioning(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        if "captioning" in self.config.tasks:
            return self.language_model.get_input_embeddings()
        return self.config.backbone.patch_embedding(self.visual)

    def forward(self, task: str | None = None, **inputs) -> ModelOutput:
        r"""
        task (`str`, *optional*): one of `config.tasks`; `inputs` are that task model's forward arguments. Without a
            task, the tower's outputs as [`VersaViTModel`] returns them: what transformers' `image-feature-extraction`
            pipeline reads where this class is the folder's `AutoModel` (remote code).
        """
        if task is None:
            return VersaViTModel.forward(self, **inputs)
        forwards = {"depth": self.forward_depth, "segmentation": self.forward_segmentation,
                    "captioning": self.forward_captioning}
        if task not in self.config.tasks:
            raise ValueError(f"task: {task!r} is not one of this model's tasks {self.config.tasks}.")
        return forwards[task](**inputs)


def mllm_without_tower(config: VersaViTConfig) -> PreTrainedModel:
    """The MLLM of `config.text_config` (`mllm_language_model`) without its vision tower: VersaViT's `visual` is that
    tower, and the captioning branch hands the MLLM its encoder outputs (`mm_encoder_outputs`). Built whole from the
    config (transformers' MLLM classes have no tower-less form) and the tower then dropped; `from_pretrained` builds
    it on the meta device, so only a direct construction pays for the dropped tower's initialisation."""
    mllm = AutoModelForImageTextToText.from_config(config.text_config)
    inner = getattr(mllm, "model", mllm)
    if "mm_encoder_outputs" not in inspect.signature(type(inner).forward).parameters:
        raise ValueError(f"VersaViTConfig.mllm_language_model: {type(inner).__name__} takes no pre-encoded images "
                         "(mm_encoder_outputs) in this transformers version.")
    setattr(inner, config.backbone.mllm_attribute, None)
    return mllm


def mllm_captioning_config(config: VersaViTConfig, mllm: PreTrainedModel) -> VersaViTConfig:
    """`config` (its tower the MLLM's) extended with the MLLM's own captioning branch (`mllm_language_model`): the
    MLLM's config and image token, "captioning" among `tasks`."""
    tasks = [task for task in TASKS if task in config.tasks or task == "captioning"]
    settings = {**config.to_dict(), "text_config": mllm.config.to_dict(), "image_token_id": mllm.config.image_token_id,
                "mllm_language_model": True, "tasks": tasks}
    return VersaViTConfig(**settings)


def mllm_language_state(config: VersaViTConfig, mllm: PreTrainedModel) -> dict[str, torch.Tensor]:
    """`mllm`'s state dict without its vision tower: what `mllm_without_tower(config)` holds."""
    inner = "model." if hasattr(mllm, "model") else ""
    tower = f"{inner}{config.backbone.mllm_attribute}."
    return {name: tensor for name, tensor in mllm.state_dict().items() if not name.startswith(tower)}


def captioning_config(
    config: VersaViTConfig, language_model: PreTrainedModel, tokenizer, image_token: str = "<image>"
) -> VersaViTConfig:
    """`config` extended with the captioning branch: the LLM's config, the id of `image_token` (added to `tokenizer`
    as a special token, and to the LLM's embeddings, if it is missing) and "captioning" among `tasks`."""
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
    image_token_id = tokenizer.convert_tokens_to_ids(image_token)
    if image_token_id >= language_model.get_input_embeddings().num_embeddings:
        language_model.resize_token_embeddings(len(tokenizer))
    tasks = [task for task in TASKS if task in config.tasks or task == "captioning"]
    return VersaViTConfig(
        **{
            **config.to_dict(),
            "text_config": language_model.config.to_dict(),
            "image_token_id": image_token_id,
            "tasks": tasks,
        }
    )


__all__ = [
    "VersaViTPreTrainedModel",
    "VersaViTModel",
    "VersaViTForDepthEstimation",
    "VersaViTForReferringSegmentation",
    "VersaViTForCaptioning",
    "VersaViTForImageTextRetrieval",
    "VersaViTForMultiTask",
    "captioning_config",
    "mllm_captioning_config",
    "mllm_language_state",
    "VersaViTDepthHead",
    "VersaViTSegmentationHead",
    "VersaViTDepthEstimatorOutput",
    "VersaViTReferringSegmentationOutput",
    "VersaViTCaptioningOutput",
    "VersaViTImageTextRetrievalOutput",
    "VersaViTRetrievalHead",
    "VersaViTTaskTokens",
    "VersaViTModelOutput",
    "check_vision_inputs",
    "tokens_to_feature_maps",
]
