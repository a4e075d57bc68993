# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What a training run is about to do, said before it does it, and whether it fits the machine.

`plan_run` sizes the run's model on the meta device (the `--dry_run` model: configs are read, no weights), prints
the run's scale in a few lines (parameters per part and what trains, each stage with its steps and learning rates,
the data, the device and the number of processes, the memory estimate beside what is free) and refuses a run whose
estimate does not fit with a `ConfigError`, before any data is generated or any weight is read, unless
`check_memory` is off. The estimate is `build.memory_estimate`'s: rough, per process, for the stage that trains the
most.
"""

import json
import os
from pathlib import Path

import torch

from .build import DataArguments, ModelArguments, RunArguments, dry_run_model, memory_estimate
from .config import ConfigError
from .data import parse_resolutions
from .multitask import apply_stage, stage_learning_rates, training_parts

GIB = 1024**3


def available_memory(device: torch.device) -> tuple[float, str]:
    """Free memory (GiB) where the run's tensors live, and its name: the GPU's free memory for a CUDA device, the
    machine's available RAM otherwise."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / GIB, f"free memory on {torch.cuda.get_device_name(device)} ({device})"
    import psutil

    return psutil.virtual_memory().available / GIB, "available RAM"


def zero_stage(training_args) -> int:
    """The DeepSpeed ZeRO stage the run uses: from `--deepspeed` (a file or a mapping) or accelerate's launcher
    settings; 0 without DeepSpeed."""
    config = training_args.deepspeed
    if config is None and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"):
            return int(os.environ["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
        config = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if isinstance(config, str) and Path(config).is_file():
        config = json.loads(Path(config).read_text())
    if isinstance(config, dict):
        stage = config.get("zero_optimization", {}).get("stage", 0)
        return int(stage) if str(stage).isdigit() else 0
    return 0


def _steps(max_steps: int, epochs: float, data: str) -> str:
    if max_steps > 0:
        return f"{max_steps} step{'s' if max_steps > 1 else ''}"
    return f"{epochs:g} epoch{'s' if epochs != 1 else ''} of the {data}"


def _backbone_source(model_args: ModelArguments) -> str:
    if model_args.model_name_or_path:
        return f"from {model_args.model_name_or_path}"
    if model_args.mllm:
        return f"the tower of {model_args.mllm}"
    return "random init"


def _data(data_args: DataArguments, stages) -> str:
    folders = {"depth": data_args.depth_data, "segmentation": data_args.segmentation_data,
               "captioning": data_args.captioning_data}
    parts, scenes = [], []
    for stage in stages:
        for item in stage.objectives:
            if isinstance(item.data, str):
                parts.append(f"{item.name} {item.data} ({stage.name})")
            elif isinstance(item.data, dict):
                parts.append(f"{item.name} {item.data.get('num_scenes', data_args.num_scenes)} generated scenes from "
                             f"seed {item.data.get('scene_seed', data_args.scene_seed)} ({stage.name})")
            elif folders.get(item.name):
                parts.append(f"{item.name} {folders[item.name]}")
            else:
                scenes.append(item.name)
    if scenes:
        parts.append(f"{data_args.num_scenes} generated scenes ({', '.join(dict.fromkeys(scenes))})")
    return "; ".join(dict.fromkeys(parts))


def _batches(data_args: DataArguments, stage) -> str:
    sizes = {"captioning": f" x <= {int(data_args.caption_max_pixels ** 0.5)}^2 px"}
    for task in ("depth", "segmentation"):
        resolutions = parse_resolutions(getattr(data_args, f"{task}_resolutions"), f"{task}_resolutions")
        sizes[task] = (" x " + " | ".join(f"{h}x{w}" for h, w in resolutions) + " px, one per batch" if resolutions
                       else f" x {getattr(data_args, f'{task}_size')}px")
    return ", ".join(f"{item.name} {item.batch_size}{sizes.get(item.name, '')} (λ {item.weight:.2g})"
                     for item in stage.objectives)


def _trains(rates: dict[str, float | None]) -> str:
    """What a stage trains, e.g. "projector only at lr 0.001" or "depth head at 0.001, backbone + projector at 1e-05"."""
    trained = {part: rate for part, rate in rates.items() if rate is not None}
    if len(trained) == 1:
        (part, rate), = trained.items()
        return f"{part.replace('_', ' ')} only at lr {rate:g}"
    by_rate: dict[float, list[str]] = {}
    for part, rate in trained.items():
        by_rate.setdefault(rate, []).append(part.replace("_", " "))
    text = ", ".join(f"{' + '.join(parts)} at {rate:g}" for rate, parts in by_rate.items())
    frozen = [part.replace("_", " ") for part, rate in rates.items() if rate is None]
    return f"lr {text}" + (f"; {' + '.join(frozen)} frozen" if frozen else "")


def plan_run(model_args: ModelArguments, data_args: DataArguments, run_args: RunArguments, training_args,
             stages: list, title: str) -> dict:
    """Print what the run of `stages` (`curriculum.Stage`s) is about to do, at what scale and on what, and raise
    `ConfigError` when its memory estimate (that of the stage that needs the most) exceeds what is free (unless
    `run_args.check_memory` is off). Returns the plan (model counts, memory estimate and availability) for the
    caller's records."""
    from .curriculum import model_tasks, objectives_of
    from .objectives import ObjectivesModel, get_objective

    model = dry_run_model(model_args, data_args, model_tasks(stages))
    with torch.device("meta"):
        wrapped = ObjectivesModel(model, [get_objective(name) for name in objectives_of(stages)])
    processes = training_args.world_size
    device = training_args.device
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    stage_of_zero = zero_stage(training_args)
    stage_lines, memory, largest, trainable = [], None, None, 0.0
    for number, stage in enumerate(stages, 1):
        args = stage.arguments(training_args, Path(training_args.output_dir))
        try:
            rates = apply_stage(wrapped, stage_learning_rates(args, training_parts(wrapped)))
        except ValueError as err:
            raise ConfigError(f"stage {stage.name}: {err}") from None
        estimate = memory_estimate(model, data_args, processes, training_args.bf16, stage_of_zero,
                                   bool(training_args.activation_checkpointing), stage.objective_names,
                                   {item.name: item.batch_size for item in stage.objectives})
        if memory is None or estimate["total_gib"] > memory["total_gib"]:
            memory, largest = estimate, stage.name
            trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad) / 1e6
        data = "largest objective's data" if len(stage.objectives) > 1 else f"{stage.objectives[0].name} data"
        steps = _steps(args.max_steps, args.num_train_epochs, data)
        stage_lines.append(f"  stage {number}   {stage.name}: {steps}, {_trains(rates)}; {_batches(data_args, stage)}")
    parts = {name: sum(p.numel() for p in module.parameters()) / 1e6
             for name, module in training_parts(wrapped).items()}
    vision = model.config.vision_config

    lines = [f"{title}: what this run is about to do"]
    lines.append(
        f"  model     {sum(parts.values()):.1f}M parameters, {trainable:.1f}M trained in the {largest} stage: tower "
        f"{vision.model_type} {model.config.num_hidden_layers} blocks x {model.config.embed_dim} "
        f"({parts['backbone']:.1f}M, {_backbone_source(model_args)})"
        + "".join(f", {name.replace('_', ' ')} {count:.1f}M" for name, count in parts.items() if name != "backbone")
    )
    lines += stage_lines
    eval_text = "" if not data_args.num_eval_scenes else f", {data_args.num_eval_scenes} held-out scenes"
    lines.append(f"  data      {_data(data_args, stages)}{eval_text}")
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    extras = [precision] + (["activation checkpointing"] if training_args.activation_checkpointing else []) + (
        [f"DeepSpeed ZeRO-{stage_of_zero}"] if stage_of_zero else [])
    lines.append(f"  device    {device.type}, {processes} process{'es' if processes > 1 else ''}; {', '.join(extras)}")

    per_process = memory["total_gib"]
    needed = per_process * (local_processes if device.type == "cpu" else 1)
    free, where = available_memory(device)
    scope = f"x {local_processes} processes on this machine" if device.type == "cpu" and local_processes > 1 else "per process"
    lines.append(
        f"  memory    ~{needed:.1f} GiB ({scope}: weights {memory['weights_gib']:.1f}, gradients "
        f"{memory['gradients_gib']:.1f}, optimizer {memory['optimizer_gib']:.1f}, activations "
        f"{memory['activations_gib']:.1f}; a rough estimate) of {free:.1f} GiB {where}"
    )
    if training_args.process_index == 0:
        print("\n".join(lines), flush=True)
    if needed > free and run_args.check_memory:
        raise ConfigError(
            f"memory: this run needs about {needed:.1f} GiB ({scope}), more than the {free:.1f} GiB {where}. Make it "
            "smaller (the batch sizes, depth_size / segmentation_size, caption_max_pixels, activation_checkpointing "
            "true, a smaller tower or LLM, more processes under ZeRO) or pass --check_memory false to start anyway."
        )
    return {"parameters_m": parts, "trainable_m": trainable, "memory": memory, "needed_gib": needed,
            "free_gib": free, "where": where}


__all__ = ["available_memory", "plan_run", "zero_stage"]
