# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT configuration.

This file is shipped as Hub remote code (``auto_map``): it imports only ``transformers`` and its own
siblings, so a saved VersaViT folder loads in a Python where the ``versavit`` package is not installed.
"""

import difflib
import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .backbones import BACKBONES, backbone_for, legacy_vision_model_types

# The tasks of the multi-task post-training (paper §4.2), in the names the models and the trainer use.
TASKS = ("captioning", "depth", "segmentation")


DEPTH_LABEL_SPACES = ("depth", "disparity")
RETRIEVAL_LOSSES = ("sigmoid", "softmax")


def uniform_layer_indices(num_layers: int, count: int = 3) -> list[int]:
    """`count` block outputs spread uniformly over a tower of `num_layers` blocks, ending at the last one.

    Indices address `hidden_states` (0 = patch embedding, `num_layers` = last block): 32 layers -> [11, 21, 32],
    the three-layer analogue of DPT's [6, 12, 18, 24] for a 24-layer ViT.
    """
    return [max(1, round(num_layers * (k + 1) / count)) for k in range(count)]


def _misspelt_options(kwargs: dict, fields: list[str]) -> list[str]:
    """The keys of `kwargs` that are not fields yet look like one: close to a field's name, or in a head's namespace
    (`depth_`, `segmentation_`, `retrieval_`). PreTrainedConfig keeps any other key as a plain attribute, as
    transformers itself sets some at run time (`use_cache`); a misspelt field would be kept and never read."""
    found = []
    for key in sorted(set(kwargs) - _BASE_CONFIG_KEYS - set(fields)):
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
        if close or key.startswith(_HEAD_NAMESPACES):
            found.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return found


_HEAD_NAMESPACES = ("depth_", "segmentation_", "retrieval_")
# What PreTrainedConfig itself takes or writes into config.json (`architectures`, `dtype`, `id2label`, ...): the keys
# VersaViTConfig accepts beyond its own fields.
_BASE_CONFIG_KEYS = frozenset(PreTrainedConfig().to_dict()) | {
    "name_or_path", "_name_or_path", "attn_implementation", "experts_implementation", "output_attentions",
    "_commit_hash", "torch_dtype", "num_labels", "per_layer_config", "model_type", "transformers_version",
    "auto_map", "architectures", "dtype", "use_return_dict", "custom_pipelines",
}


def _pipelines_not_served_here(custom_pipelines: dict) -> dict:
    """The entries of a loaded config's `custom_pipelines` that no pipeline registered in this Python serves.

    A saved folder names its VersaViT pipelines in `custom_pipelines` so that they load as remote code without the
    package; transformers' `pipeline()` then demands `trust_remote_code=True` for those tasks even where the package
    (which registers the same pipelines) is installed. A task whose registered pipeline class is the one the folder
    names is served by the installed code, so its entry is dropped, as the Auto classes prefer registered local
    classes over a folder's `auto_map`."""
    from transformers.pipelines import PIPELINE_REGISTRY

    served = PIPELINE_REGISTRY.supported_tasks
    return {
        task: entry for task, entry in custom_pipelines.items()
        if not isinstance(entry, dict)
        or getattr(served.get(task, {}).get("impl"), "__name__", None) != str(entry.get("impl", "")).split(".")[-1]
    }


@strict
class VersaViTConfig(PreTrainedConfig):
    r"""
    Configuration of a VersaViT model: the MLLM vision tower being post-trained plus the settings its task heads share.

    The default configuration is the paper's backbone, the Qwen2-VL-7B vision tower (32 blocks, width 1280, merged
    width 3584).

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the vision tower, of any registered family (`backbones.BACKBONES`): a `Qwen2VLVisionConfig`
            (`model_type="qwen2_vl_vision"`, the default), `Qwen2_5_VLVisionConfig` (`"qwen2_5_vl_vision"`),
            `Qwen3VLVisionConfig` (`"qwen3_vl_vision"`), `Qwen3_5VisionConfig` (`"qwen3_5_vision"`),
            `Siglip2VisionConfig` (`"siglip2_vision_model"`), `SiglipVisionConfig` (`"siglip_vision_model"`),
            `InternVLVisionConfig` (`"internvl_vision"`) or `Aimv2VisionConfig` (`"aimv2_vision_model"`). A dict is
            resolved by its `model_type`.
        depth_layer_indices (`list[int]`, *optional*):
            The tower layers the depth (DPT) head reads, as indices into `hidden_states` (0 = patch embedding,
            `depth` = last block; negative indices count from the end and are stored normalised). Defaults to three
            uniformly spaced layers ending at the last block (paper §4.2.2).
        depth_neck_hidden_sizes (`list[int]`, *optional*, defaults to `[1024, 1024, 1024]`):
            Channels of the DPT reassemble stage, one per depth layer. The default gives a 38.4M-parameter head on a
            1280-d tower, the closest standard layout to the paper's 37.0M (Table 13); Depth Anything V2-Large's
            `[256, 512, 1024]` gives 15.0M and a quarter of the activation memory.
        depth_reassemble_factors (`list[int]`, *optional*, defaults to `[4, 2, 1]`):
            Upsampling of each depth layer's feature map relative to the patch grid, one per depth layer.
        depth_fusion_hidden_size (`int`, *optional*, defaults to 256):
            Channels of the DPT fusion stage.
        depth_head_hidden_size (`int`, *optional*, defaults to 32):
            Channels of the last hidden convolution of the depth head.
        depth_ssi_weight, depth_gm_weight (`float`, *optional*, defaults to 1.0 and 0.5):
            λ_ssi and λ_gm of the depth loss (supplement §7).
        depth_gm_scales (`int`, *optional*, defaults to 4):
            K, the number of scales (strides 1, 2, 4, ...) of the gradient-matching loss.
        depth_label_space (`str`, *optional*, defaults to `"depth"`):
            What the depth labels (and so the head's output) are: `"depth"` (larger is farther; 0 and negatives
            are holes) or `"disparity"` (larger is closer, as Depth Anything V2's relative output the paper
            pseudo-labels with; 0 is the sky / far field and supervises). The loss is scale-and-shift invariant in
            that space and never inverts it; evaluation aligns predictions in it.
        segmentation_layer_index (`int`, *optional*, defaults to -1):
            The layer the referring-segmentation head reads (paper §4.2.3: the final layer).
        text_embed_dim (`int`, *optional*, defaults to 4096):
            Width of the offline text embeddings the segmentation prompt encoder takes (4096 for Qwen3-Embedding-8B,
            the paper's text encoder; 384 for all-MiniLM-L6-v2).
        text_encoder (`str`, *optional*):
            The sentence encoder that embedded the texts this model's heads were trained on (a local folder or a Hub
            id), as the training run loaded it; None when the embeddings came precomputed with the data. The
            referring-segmentation and retrieval pipelines embed their texts with it.
        segmentation_hidden_size (`int`, *optional*, defaults to 256):
            Width of the SAM-style neck, prompt tokens and mask decoder (SAM's 256).
        segmentation_num_prompt_tokens (`int`, *optional*, defaults to 4):
            Sparse prompt tokens the prompt encoder makes from one text embedding.
        segmentation_normalize_text (`bool`, *optional*, defaults to `True`):
            Layer-normalise (no affine parameters) each text embedding before the prompt encoder. Sentence embedders
            return unit-norm vectors whose entries are ~1/sqrt(text_embed_dim) (0.05 for MiniLM, 0.016 for
            Qwen3-Embedding-8B): fed as they are, the prompt tokens start ~100x smaller than the mask token and the
            decoder learns to segment every object before it learns to read the text. Set it to `False` only for a
            checkpoint trained without it.
        segmentation_decoder_layers, segmentation_decoder_heads, segmentation_decoder_mlp_dim (`int`, *optional*):
            The SAM two-way transformer of the mask decoder (SAM's 2, 8 and 2048 by default).
        segmentation_bce_weight, segmentation_dice_weight (`float`, *optional*, defaults to 2.0 and 0.5):
            λ_bce and λ_dice of the segmentation loss (supplement §8.1).
        retrieval_embed_dim (`int`, *optional*, defaults to 1280):
            The shared image-text embedding width of [`VersaViTForImageTextRetrieval`] (supplement §9.5: 1280).
        retrieval_pooling_heads (`int`, *optional*, defaults to 16):
            Heads of its attention-pooling layer over the tower's last-layer tokens; must divide the tower width.
        retrieval_text_embed_dim (`int`, *optional*):
            Width of the offline text embeddings its text projection takes (the paper: SigLIP2's text tower, 1152).
            Defaults to `text_embed_dim`.
        retrieval_loss (`str`, *optional*, defaults to `"sigmoid"`):
            `"sigmoid"` (SigLIP) or `"softmax"` (CLIP) contrastive loss, see `losses_versavit.contrastive_loss`.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the causal LLM of the captioning / VQA branch (Qwen3-1.7B in the paper). Only
            [`VersaViTForCaptioning`] needs it. With `mllm_language_model`, the whole MLLM's config.
        mllm_language_model (`bool`, *optional*, defaults to `False`):
            The captioning branch is the MLLM the tower came from, run as that MLLM runs: its LLM and head
            (`text_config` is the MLLM's config), fed by the tower's own mergers (the PatchMerger and Qwen3-VL's
            DeepStack mergers, which then train as the `projector` part) instead of a separate projector. For the
            families whose MLLM keeps its connector in the tower (the Qwen families).
        image_token_id (`int`, *optional*):
            The LLM token id marking image positions in captioning prompts: each image takes as many of them as it
            has merged visual tokens.
        task_tokens (`dict[str, int]`, *optional*):
            VisPer-LM's task tokens (arXiv 2412.09585): per expert (e.g. `{"depth": 64, "segmentation": 64}`), the
            number of learnable queries of its embedding predictors, in the LLM's width. The means of
            `num_task_tokens` equal groups of them follow every image in the LLM's input sequence, expert after
            expert, in this order. None: no task tokens.
        num_task_tokens (`int`, *optional*, defaults to 8):
            Task tokens per expert in the input sequence (the paper's 8); divides each expert's query count.
        tasks (`list[str]`, *optional*):
            The heads of [`VersaViTForMultiTask`], among `"captioning"`, `"depth"` and `"segmentation"`. Defaults to
            all three when `text_config` and `image_token_id` are set, else depth and segmentation; `[]`: none (a
            run whose objectives bring their own heads, e.g. the contrastive one).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of the head weights.

    Example:

    ```python
    >>> from modeling_versavit import VersaViTConfig, VersaViTModel
    >>> config = VersaViTConfig(vision_config={"model_type": "qwen2_vl_vision", "depth": 4, "embed_dim": 64,
    ...                                          "num_heads": 4, "hidden_size": 128})
    >>> config.depth_layer_indices
    [1, 3, 4]
    >>> model = VersaViTModel(config)
    ```
    """

    model_type = "versavit"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2_vl_vision"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    # Depth (DPT head over Depth Anything's neck and head modules).
    depth_layer_indices: list[int] | tuple[int, ...] | None = None
    depth_neck_hidden_sizes: list[int] | tuple[int, ...] = (1024, 1024, 1024)
    depth_reassemble_factors: list[int] | tuple[int, ...] = (4, 2, 1)
    depth_fusion_hidden_size: int = 256
    depth_head_hidden_size: int = 32
    depth_ssi_weight: float = 1.0
    depth_gm_weight: float = 0.5
    depth_gm_scales: int = 4
    depth_label_space: str = "depth"
    # Referring segmentation (SAM-style neck, text prompt encoder, SAM mask decoder).
    segmentation_layer_index: int = -1
    text_embed_dim: int = 4096
    text_encoder: str | None = None
    segmentation_hidden_size: int = 256
    segmentation_num_prompt_tokens: int = 4
    segmentation_normalize_text: bool = True
    segmentation_decoder_layers: int = 2
    segmentation_decoder_heads: int = 8
    segmentation_decoder_mlp_dim: int = 2048
    segmentation_bce_weight: float = 2.0
    segmentation_dice_weight: float = 0.5
    # Image-text retrieval (attention pooling + text projection into a shared space, supplement §9.5).
    retrieval_embed_dim: int = 1280
    retrieval_pooling_heads: int = 16
    retrieval_text_embed_dim: int | None = None
    retrieval_loss: str = "sigmoid"
    # Captioning / VQA (projector into a causal LLM).
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int | None = None
    mllm_language_model: bool = False
    task_tokens: dict[str, int] | None = None
    num_task_tokens: int = 8
    # Multi-task model.
    tasks: list[str] | tuple[str, ...] | None = None
    initializer_range: float = 0.02

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """`PreTrainedConfig.from_pretrained`, refusing a folder of another kind of model by name (transformers
        only warns, then fails on whichever of that model's keys clashes with a VersaViT property)."""
        config_dict, _ = cls.get_config_dict(
            pretrained_model_name_or_path,
            **{
                key: kwargs[key]
                for key in ("cache_dir", "local_files_only", "revision", "subfolder", "token")
                if key in kwargs
            },
        )
        found = config_dict.get("model_type")
        if found not in (None, cls.model_type):
            raise ValueError(
                f"{pretrained_model_name_or_path}: its config.json is a {found!r} model's, not a VersaViT one. For the "
                "vision tower of an MLLM folder use VersaViTModel.from_mllm(path) (or --mllm path in the recipes).")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def __post_init__(self, **kwargs):
        if kwargs.get("custom_pipelines"):
            kwargs["custom_pipelines"] = _pipelines_not_served_here(kwargs["custom_pipelines"])
        if "custom_pipelines" in kwargs and not kwargs["custom_pipelines"]:
            del kwargs["custom_pipelines"]
        misspelt = _misspelt_options(kwargs, [name for name in type(self).__dataclass_fields__ if name[:1] != "_"])
        if misspelt:
            raise ValueError(f"VersaViTConfig: unknown option {', '.join(misspelt)}; the options are its fields (see "
                             "the class docstring).")
        if isinstance(self.vision_config, dict):
            self.vision_config = dict(self.vision_config)
            legacy = self.vision_config.get("model_type")
            self.vision_config["model_type"] = legacy_vision_model_types().get(legacy, legacy)
        super().__post_init__(**kwargs)
        model_type = getattr(self.vision_config, "model_type", None)
        if model_type not in BACKBONES:
            raise ValueError(
                f"VersaViTConfig.vision_config: model_type {model_type!r} is not supported; "
                f"expected one of {tuple(BACKBONES)}."
            )
        if self.depth_layer_indices is None:
            self.depth_layer_indices = uniform_layer_indices(self.num_hidden_layers)
        self.depth_layer_indices = [self._normalize_layer("depth_layer_indices", i) for i in self.depth_layer_indices]
        self.segmentation_layer_index = self._normalize_layer("segmentation_layer_index", self.segmentation_layer_index)
        # JSON has no tuples: keep lists so a saved and reloaded config compares equal.
        self.depth_neck_hidden_sizes = list(self.depth_neck_hidden_sizes)
        self.depth_reassemble_factors = list(self.depth_reassemble_factors)
        has_llm = self.text_config is not None and self.image_token_id is not None
        if self.tasks is None:
            self.tasks = [task for task in TASKS if task != "captioning" or has_llm]
        self.tasks = list(self.tasks)
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"VersaViTConfig.tasks: expected distinct names among {TASKS}, got {self.tasks}.")
        if "captioning" in self.tasks and not has_llm:
            raise ValueError(
                "VersaViTConfig.tasks: 'captioning' needs text_config (the LLM) and image_token_id to be set."
            )
        self._check_head_settings()

    def _check_mllm_language_model(self) -> None:
        """`mllm_language_model` (a bool: the strict dataclass checks) needs an MLLM of the tower's family whose
        connector is in the tower, and no task tokens (the MLLM splices the visual tokens itself)."""
        if not self.mllm_language_model:
            return
        backbone = self.backbone
        if backbone.merged_dim(self.vision_config) is None:
            raise ValueError(
                f"VersaViTConfig.mllm_language_model: the {backbone.name} family's MLLMs keep their connector outside "
                "the tower; captioning through the MLLM's own LLM is for the families whose tower ends in the MLLM's "
                "merger (the Qwen families); leave it false to caption through a separate projector."
            )
        model_type = getattr(self.text_config, "model_type", None)
        if model_type not in backbone.mllm_model_types:
            raise ValueError(f"VersaViTConfig.mllm_language_model: text_config must be the config of a "
                             f"{' / '.join(backbone.mllm_model_types)} MLLM (the tower's family), got model_type "
                             f"{model_type!r}.")
        if self.task_tokens:
            raise ValueError("VersaViTConfig.mllm_language_model: VisPer-LM's task_tokens need the separate "
                             "projector branch (the MLLM splices its visual tokens itself); set one or the other.")

    def _normalize_layer(self, field: str, index) -> int:
        depth = self.num_hidden_layers
        if isinstance(index, bool) or not isinstance(index, int) or not -(depth + 1) <= index <= depth:
            raise ValueError(
                f"VersaViTConfig.{field}: layer index {index!r} is outside the tower, which has {depth} blocks "
                f"(valid: 0..{depth}, 0 = patch embedding, or -{depth + 1}..-1 from the end)."
            )
        return index % (depth + 1)

    def _check_task_tokens(self):
        count = self.num_task_tokens
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"VersaViTConfig.num_task_tokens: must be a positive integer, got {count!r}.")
        if self.task_tokens is None:
            return
        if not isinstance(self.task_tokens, dict) or not self.task_tokens:
            raise ValueError(f"VersaViTConfig.task_tokens: expected a mapping expert -> number of queries, got "
                             f"{self.task_tokens!r}.")
        for expert, queries in self.task_tokens.items():
            if not isinstance(expert, str) or not expert.isidentifier():
                raise ValueError(f"VersaViTConfig.task_tokens: expert names must be identifiers, got {expert!r}.")
            if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1 or queries % count:
                raise ValueError(f"VersaViTConfig.task_tokens.{expert}: the number of queries must be a positive "
                                 f"multiple of num_task_tokens ({count}), got {queries!r}.")

    def _check_head_settings(self):
        """Head settings that would fail later fail at construction, with a `ValueError` naming the field."""
        if not self.depth_layer_indices:
            raise ValueError("VersaViTConfig.depth_layer_indices: must name at least one layer, got [].")
        for name in ("depth_neck_hidden_sizes", "depth_reassemble_factors"):
            value = getattr(self, name)
            if len(value) != len(self.depth_layer_indices):
                raise ValueError(
                    f"VersaViTConfig.{name}: needs one entry per depth layer ({len(self.depth_layer_indices)}, "
                    f"from depth_layer_indices={self.depth_layer_indices}), got {value}."
                )
            if any(v < 1 for v in value):
                raise ValueError(f"VersaViTConfig.{name}: entries must be >= 1, got {value}.")
        if self.retrieval_text_embed_dim is None:
            self.retrieval_text_embed_dim = self.text_embed_dim
        for name in (
            "text_embed_dim", "depth_fusion_hidden_size", "depth_head_hidden_size", "depth_gm_scales",
            "segmentation_num_prompt_tokens", "segmentation_decoder_layers", "segmentation_decoder_heads",
            "segmentation_decoder_mlp_dim", "retrieval_embed_dim", "retrieval_pooling_heads",
            "retrieval_text_embed_dim",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or value < 1:
                raise ValueError(f"VersaViTConfig.{name}: must be a positive integer, got {value!r}.")
        if self.depth_fusion_hidden_size % 2:
            raise ValueError(
                f"VersaViTConfig.depth_fusion_hidden_size: must be even (the head halves it), got "
                f"{self.depth_fusion_hidden_size}."
            )
        width, heads = self.segmentation_hidden_size, self.segmentation_decoder_heads
        if width < 8 or width % 8 or width % heads or (width // heads) % 2:
            raise ValueError(
                f"VersaViTConfig.segmentation_hidden_size: must be a multiple of 8 (the mask decoder upsamples to "
                f"width / 8) and of 2 x segmentation_decoder_heads ({heads}), got {width}."
            )
        self._check_mllm_language_model()
        if self.text_config is not None and self.image_token_id is not None:
            vocab = getattr(self.text_config.get_text_config(), "vocab_size", None)
            if not 0 <= self.image_token_id < (vocab or self.image_token_id + 1):
                raise ValueError(
                    f"VersaViTConfig.image_token_id: {self.image_token_id} is outside the LLM vocabulary of {vocab}."
                )
        self._check_task_tokens()
        if not isinstance(self.segmentation_normalize_text, bool):
            raise ValueError(f"VersaViTConfig.segmentation_normalize_text: must be true or false, got "
                             f"{self.segmentation_normalize_text!r}.")
        for name in ("depth_ssi_weight", "depth_gm_weight", "segmentation_bce_weight", "segmentation_dice_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"VersaViTConfig.{name}: must be a finite value >= 0, got {value!r}.")
        if self.embed_dim % self.retrieval_pooling_heads:
            raise ValueError(
                f"VersaViTConfig.retrieval_pooling_heads: must divide the tower width {self.embed_dim}, got "
                f"{self.retrieval_pooling_heads}."
            )
        if self.retrieval_loss not in RETRIEVAL_LOSSES:
            raise ValueError(f"VersaViTConfig.retrieval_loss: expected one of {RETRIEVAL_LOSSES}, got "
                             f"{self.retrieval_loss!r}.")
        if self.depth_label_space not in DEPTH_LABEL_SPACES:
            raise ValueError(f"VersaViTConfig.depth_label_space: expected one of {DEPTH_LABEL_SPACES}, got "
                             f"{self.depth_label_space!r}.")
        if not (math.isfinite(self.initializer_range) and self.initializer_range > 0):
            raise ValueError(f"VersaViTConfig.initializer_range: must be > 0, got {self.initializer_range!r}.")

    # Backbone geometry under one set of names, whichever tower family the vision config describes.
    @property
    def backbone(self):
        """The tower family's [`~backbone_base.VisionBackbone`] (how VersaViT reads this tower)."""
        return backbone_for(self.vision_config)

    @property
    def backbone_family(self) -> str:
        """The family's name: `"qwen2_vl"`, `"qwen2_5_vl"`, `"qwen3_vl"`, `"qwen3_5"`, `"siglip2"`, `"siglip"`,
        `"internvit"` or `"aimv2"`."""
        return self.backbone.name

    @property
    def num_hidden_layers(self) -> int:
        return self.backbone.num_layers(self.vision_config)

    @property
    def embed_dim(self) -> int:
        """Width of the tower's tokens before the merger (1280 for Qwen2-VL-7B)."""
        return self.backbone.embed_dim(self.vision_config)

    @property
    def merged_dim(self) -> int:
        """Width of the merger's output, i.e. the LLM hidden size the tower feeds (3584 for Qwen2-VL-7B)."""
        return self.backbone.merged_dim(self.vision_config)

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size(self.vision_config)

    @property
    def spatial_merge_size(self) -> int:
        """Side of the token blocks (2): the merger's for the Qwen towers, the captioning projector's for SigLIP2."""
        return self.backbone.spatial_merge_size(self.vision_config)

    @property
    def input_size_multiple(self) -> int:
        """What each side of a fixed-size input must be a multiple of: whole merge blocks (patch x merge, 28 for
        Qwen2-VL's 14 x 2)."""
        return self.patch_size * self.spatial_merge_size

    @property
    def temporal_patch_size(self) -> int:
        return self.backbone.temporal_patch_size(self.vision_config)

    @property
    def patch_dim(self) -> int:
        """Length of one row of `pixel_values`: channels x temporal patch x patch x patch."""
        return self.backbone.in_channels(self.vision_config) * self.temporal_patch_size * self.patch_size**2


__all__ = ["TASKS", "VersaViTConfig", "uniform_layer_indices"]
