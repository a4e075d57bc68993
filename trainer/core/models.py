# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The model of a training run: the backbone from its source (a VersaViT folder, an MLLM's tower or a fresh config),
the heads of its tasks and the captioning LLM; and which weights a checkpoint holds."""

import contextlib
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

from modeling_versavit import (
    TASKS,
    VersaViTConfig,
    VersaViTForMultiTask,
    VersaViTModel,
    captioning_config,
    mllm_captioning_config,
    mllm_language_state,
    read_safetensors,
    safetensors_weight_map,
)

from ..config import mapping_option
from ..data.assets import MINIATURE_RECORD, miniature_path
from ..objectives import OBJECTIVES
from ..parts import require_weights
from .options import ModelArguments

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ model
def language_model_path(model_args: ModelArguments) -> Path | str:
    if model_args.language_model:
        return model_args.language_model
    from ..data.assets import smollm2_path

    return smollm2_path()


@contextlib.contextmanager
def whole_models():
    """Models built inside are whole on every process, also under a ZeRO-3 run, whose `TrainingArguments` switch on
    transformers' sharded construction (`deepspeed.zero.Init`) for every model built after them. The recipes build
    the model from parts (tower, LLM, heads) and load weights into them, or on the meta device for the plan: both need
    whole tensors. DeepSpeed shards the model when the trainer starts (so each process reads the whole model into host
    memory first: docs/training.md); after the last stage `run_curriculum` switches the sharded construction off."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved, hf_deepspeed._hf_deepspeed_config_weak_ref = hf_deepspeed._hf_deepspeed_config_weak_ref, None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


@whole_models()
def build_model(model_args: ModelArguments, tasks: list[str], text_embed_dim: int | None = None,
                depth_label_space: str | None = None):
    """The multi-task model and its tokenizer (None without captioning).

    The backbone comes from `model_name_or_path` (a VersaViT folder), `mllm` (an MLLM's tower) or a fresh config.
    When `model_name_or_path` is a checkpoint with the captioning branch (`recipes/align.py` or `multitask.py`
    output), its projector, LLM, tokenizer and heads are reused, and heads it lacks start fresh; otherwise the heads
    are fresh (with `head_config`) and the LLM is `language_model` (SmolLM2 by default), or with
    `mllm_language_model` the `mllm` folder's own LLM and tokenizer, fed by its tower's mergers. `text_embed_dim`
    (the text encoder's width) must agree with a loaded segmentation head. `depth_label_space` (the depth data's) is
    the depth head's; a trained depth head of the other space is an error."""
    backbone, config = None, None
    kwargs = {"attn_implementation": model_args.attn_implementation, "dtype": torch.float32}
    for option in ("model_name_or_path", "mllm") + (("language_model",) if "captioning" in tasks else ()):
        _require_source(getattr(model_args, option), option)
    if model_args.model_name_or_path:
        if (Path(model_args.model_name_or_path) / MINIATURE_RECORD).is_file():  # an asset with a recorded digest
            miniature_path(model_args.model_name_or_path)
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
    if "captioning" in tasks and model_args.mllm_language_model:
        tokenizer = AutoTokenizer.from_pretrained(model_args.mllm)
        mllm = AutoModelForImageTextToText.from_pretrained(model_args.mllm, dtype=torch.float32)
        config = mllm_captioning_config(config, mllm)
        llm = mllm_language_state(config, mllm)
    elif "captioning" in tasks:
        path = language_model_path(model_args)
        tokenizer = AutoTokenizer.from_pretrained(path)
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        config = captioning_config(config, llm, tokenizer)
    config = with_tasks(config, tasks)
    config._attn_implementation = model_args.attn_implementation
    model = VersaViTForMultiTask(config)
    if backbone is not None:
        model.visual.load_state_dict(backbone.visual.state_dict())
    if llm is not None:
        model.language_model.load_state_dict(llm if isinstance(llm, dict) else llm.state_dict())
    if model_args.model_name_or_path:
        _load_trained_heads(model, model_args.model_name_or_path)
    return model, tokenizer


BACKBONE_SOURCES = ("model", "mllm", "vision_config")


def _one_source(model, mllm, vision_config, option: str) -> str | None:
    given = [name for name, value in zip(BACKBONE_SOURCES, (model, mllm, vision_config)) if value]
    if len(given) > 1:
        raise ValueError(f"{option}: give one backbone source, got {given}.")
    return given[0] if given else None


def backbone_config(model: str | None = None, mllm: str | None = None, vision_config=None,
                    option: str = "model") -> VersaViTConfig:
    """The `VersaViTConfig` of a backbone source, reading configs only: a VersaViT folder (`model`), the vision tower
    of an MLLM folder of any tower family (`mllm`), a fresh tower (`vision_config`: a mapping or its JSON text), or,
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
    captioning branch), and the captioning projector of a tower saved with its projector but without its LLM (the
    pre-trained miniature, `versavit_trainer.data.assets.miniature_path`), are reused rather than silently replaced
    by fresh ones."""
    weight_map = safetensors_weight_map(folder)
    for name in ("depth_head", "segmentation_head", "projector"):
        if getattr(model, name, None) is None:
            continue
        state = read_safetensors(folder, name + ".", weight_map)
        if not state:
            continue
        try:
            getattr(model, name).load_state_dict(state)
        except RuntimeError as err:
            option, what = ("language_model", "LLM's width") if name == "projector" else ("head_config", "head")
            raise ValueError(f"{option}: the {name} of {folder} does not fit the configured {what} ({err}).") from None
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
    model = VersaViTForMultiTask.from_pretrained(path, config=with_tasks(config, tasks), **kwargs)
    return model, AutoTokenizer.from_pretrained(path)


# The weight-name prefixes a checkpoint holds for each part it can serve: the backbone, each objective's parts
# (`Objective.checkpoint_prefixes`), a multi-task checkpoint.
TASK_WEIGHTS = {"backbone": ("visual.",),
                **{name: o.checkpoint_prefixes for name, o in OBJECTIVES.items() if o.checkpoint_prefixes},
                "multitask": ("visual.",)}


def require_task_weights(folder, task: str) -> None:
    """`ValueError` unless the checkpoint `folder` holds trained weights for `task` (`from_pretrained` would
    otherwise start a missing head from random values, with only a warning)."""
    require_weights(folder, TASK_WEIGHTS[task], task)


# Keys of `PretrainedConfig.to_dict()` that are not constructor arguments of a fresh config.
CONFIG_BOOKKEEPING = {"transformers_version", "architectures", "auto_map", "custom_pipelines", "model_type", "dtype",
                      "_name_or_path"}


def with_tasks(config: VersaViTConfig, tasks: list[str]) -> VersaViTConfig:
    config.tasks = [task for task in TASKS if task in tasks]
    return config


def _mllm_vision_config(path: str) -> dict:
    mllm = AutoConfig.from_pretrained(path)
    vision = getattr(mllm, "vision_config", None)
    if vision is None:
        raise ValueError(f"mllm: {path} has no vision_config (not an MLLM folder with a vision tower).")
    return vision.to_dict()


def language_model_config(model_args: ModelArguments):
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


__all__ = [
    "BACKBONE_SOURCES",
    "CONFIG_BOOKKEEPING",
    "TASK_WEIGHTS",
    "backbone_config",
    "backbone_from",
    "build_model",
    "whole_models",
    "language_model_config",
    "language_model_path",
    "require_task_weights",
    "with_tasks",
]
