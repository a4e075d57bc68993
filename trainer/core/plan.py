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
import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig

from modeling_versavit import VersaViTConfig, VersaViTForMultiTask

from ..config import ConfigError
from ..objectives import ObjectiveContext, get_objective
from ..parts import training_parts
from .arguments import apply_stage, stage_learning_rates
from .curriculum import model_tasks, objectives_of
from .models import CONFIG_BOOKKEEPING, backbone_config, language_model_config, whole_models, with_tasks
from .objectives_model import ObjectivesModel
from .options import SHARDINGS, DataArguments, ModelArguments, RunArguments, check_input_sizes

logger = logging.getLogger(__name__)

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


def sharding(training_args) -> str:
    """How this launch holds the model (a key of `SHARDINGS`): "fsdp2" under accelerate's FSDP (its launcher's
    settings or `--fsdp`), "zero<N>" under DeepSpeed, else "ddp" (a whole copy per process)."""
    if training_args.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2"
    stage = zero_stage(training_args)
    return f"zero{stage}" if stage else "ddp"


def refuse_sharding(training_args, what: str) -> None:
    """`ConfigError` naming `what` when this launch shards the parameters (ZeRO-3, FSDP2), for the parts of the
    library that have not been made to gather them (they would save or evaluate one process's shards)."""
    held_as = sharding(training_args)
    if held_as in ("zero3", "fsdp2"):
        raise ConfigError(f"{what} is not supported under {SHARDINGS[held_as]} (parameters sharded over the "
                          "processes): launch it with ddp.yaml or zero2.yaml (docs/training.md, Sharded parameters).")


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
    folders = {name: get_objective(name).data_folder(data_args) for name in objectives_of(stages)}
    parts, scenes = [], []
    for stage in stages:
        for item in stage.objectives:
            if isinstance(item.data, str):
                parts.append(f"{item.name} {item.data} ({stage.name})")
            elif isinstance(item.data, dict):
                texts = f", {item.data['texts']} texts" if item.data.get("texts", "default") != "default" else ""
                parts.append(f"{item.name} {item.data.get('num_scenes', data_args.num_scenes)} generated scenes from "
                             f"seed {item.data.get('scene_seed', data_args.scene_seed)}{texts} ({stage.name})")
            elif folders.get(item.name):
                parts.append(f"{item.name} {folders[item.name]}")
            else:
                scenes.append(item.name)
    if scenes:
        parts.append(f"{data_args.num_scenes} generated scenes ({', '.join(dict.fromkeys(scenes))})")
    return "; ".join(dict.fromkeys(parts))


def _batches(data_args: DataArguments, stage) -> str:
    return ", ".join(f"{item.name} {item.batch_size}{get_objective(item.name).input_description(data_args)} "
                     f"(λ {item.weight:.2g})" for item in stage.objectives)


def _trains(rates: dict[str, float | None]) -> str:
    """What a stage trains, e.g. "projector only at lr 0.001" or "depth head at 0.001, backbone + projector at
    1e-05"."""
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


def captioning_connector(model) -> str | None:
    """How the tower reaches the captioning LLM, where the plan should say it: through the MLLM's own mergers
    (`mllm_language_model`), or past Qwen3-VL's DeepStack mergers, which then neither run nor train."""
    config = model.config
    if "captioning" not in config.tasks:
        return None
    owned = " + ".join(config.backbone.mllm_owned)
    if config.mllm_language_model:
        return (f"the MLLM's own ({owned}, trained as the projector part) into {type(model.language_model).__name__}'s "
                "LLM, as the MLLM runs")
    if "deepstack_merger_list" in config.backbone.mllm_owned:
        return ("a separate projector into the captioning LLM; the DeepStack mergers stay frozen and unused (they feed "
                "Qwen3-VL's own LLM, which this run does not caption with; --mllm_language_model true does)")
    return None


def plan_run(model_args: ModelArguments, data_args: DataArguments, run_args: RunArguments, training_args,
             stages: list, title: str) -> dict:
    """Print what the run of `stages` (`curriculum.Stage`s) is about to do, at what scale and on what, and raise
    `ConfigError` when its memory estimate (that of the stage that needs the most) exceeds what is free (unless
    `run_args.check_memory` is off). Returns the plan (model counts, memory estimate and availability) for the
    caller's records."""

    model = dry_run_model(model_args, data_args, model_tasks(stages))
    check_input_sizes(data_args, model.config.input_size_multiple)
    with torch.device("meta"):
        context = ObjectiveContext(data_args, config=model.config)  # before the data: the objectives' defaults
        wrapped = ObjectivesModel(model, [get_objective(name) for name in objectives_of(stages)], context)
    processes = training_args.world_size
    device = training_args.device
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    held_as = sharding(training_args)
    stage_lines, memory, largest, trainable = [], None, None, 0.0
    for number, stage in enumerate(stages, 1):
        args = stage.arguments(training_args, Path(training_args.output_dir))
        try:
            rates = apply_stage(wrapped, stage_learning_rates(args, training_parts(wrapped)))
        except ValueError as err:
            raise ConfigError(f"stage {stage.name}: {err}") from None
        estimates = estimates_by_sharding(model, data_args, processes, training_args.bf16, held_as,
                                          bool(training_args.activation_checkpointing), stage.objective_names,
                                          {item.name: item.batch_size for item in stage.objectives})
        estimate = estimates[held_as]
        if memory is None or estimate["total_gib"] > memory["total_gib"]:
            memory, largest, others = estimate, stage.name, estimates
            trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad) / 1e6
        data = "largest objective's data" if len(stage.objectives) > 1 else f"{stage.objectives[0].name} data"
        steps = _steps(args.max_steps, args.num_train_epochs, data)
        stage_lines.append(f"  stage {number}   {stage.name}: {steps}, {_trains(rates)}; {_batches(data_args, stage)}")
    parts = {name: sum(p.numel() for p in module.parameters()) / 1e6
             for name, module in training_parts(wrapped).items()}
    vision = model.config.vision_config
    total = sum(p.numel() for p in wrapped.parameters()) / 1e6  # (a part may hold another's modules: counted once)

    lines = [f"{title}: what this run is about to do"]
    lines.append(
        f"  model     {total:.1f}M parameters, {trainable:.1f}M trained in the {largest} stage: tower "
        f"{vision.model_type} {model.config.num_hidden_layers} blocks x {model.config.embed_dim} "
        f"({parts['backbone']:.1f}M, {_backbone_source(model_args)})"
        + "".join(f", {name.replace('_', ' ')} {count:.1f}M" for name, count in parts.items() if name != "backbone")
    )
    if (connector := captioning_connector(model)) is not None:
        lines.append(f"  connector {connector}")
    lines += stage_lines
    eval_text = "" if not data_args.num_eval_scenes else f", {data_args.num_eval_scenes} held-out scenes"
    lines.append(f"  data      {_data(data_args, stages)}{eval_text}")
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    extras = [precision] + (["activation checkpointing"] if training_args.activation_checkpointing else []) + (
        [SHARDINGS[held_as]] if held_as != "ddp" else [])
    lines.append(f"  device    {device.type}, {processes} process{'es' if processes > 1 else ''}; {', '.join(extras)}")

    per_process = memory["total_gib"]
    needed = per_process * (local_processes if device.type == "cpu" else 1)
    free, where = available_memory(device)
    scope = (
        f"x {local_processes} processes on this machine"
        if device.type == "cpu" and local_processes > 1
        else "per process"
    )
    lines.append(
        f"  memory    ~{needed:.1f} GiB ({scope}: weights {memory['weights_gib']:.1f}, gradients "
        f"{memory['gradients_gib']:.1f}, optimizer {memory['optimizer_gib']:.1f}, activations "
        f"{memory['activations_gib']:.1f}; a rough estimate) of {free:.1f} GiB {where}; per process under "
        + compared_shardings(others)
    )
    if training_args.process_index == 0:
        print("\n".join(lines), flush=True)
    if needed > free and run_args.check_memory:
        raise ConfigError(
            f"memory: this run needs about {needed:.1f} GiB ({scope}), more than the {free:.1f} GiB {where}. "
            + sharding_fix(others, held_as, free / (local_processes if device.type == "cpu" else 1))
            + "Or make it smaller (the batch sizes, depth_size / segmentation_size, caption_max_pixels, "
            "activation_checkpointing true, a smaller tower or LLM) or pass --check_memory false to start anyway."
        )
    return {"parameters_m": parts, "trainable_m": trainable, "memory": memory, "needed_gib": needed,
            "free_gib": free, "where": where}


COMPARED_SHARDINGS = ("zero2", "zero3", "fsdp2")  # what the plan and the dry run print beside the launch's


def estimates_by_sharding(model, data_args: DataArguments, num_gpus: int, bf16: bool, held_as: str,
                          gradient_checkpointing: bool, tasks: list[str] | None = None,
                          batch_sizes: dict[str, int] | None = None) -> dict[str, dict]:
    """`memory_estimate` under the launch's sharding `held_as` and under each of `COMPARED_SHARDINGS`."""
    return {how: memory_estimate(model, data_args, num_gpus, bf16, how, gradient_checkpointing, tasks, batch_sizes)
            for how in dict.fromkeys([held_as, *COMPARED_SHARDINGS])}


def compared_shardings(estimates: dict[str, dict]) -> str:
    """E.g. "ZeRO-2 16.1, ZeRO-3 11.7, FSDP2 11.7" (GiB per process)."""
    return ", ".join(f"{SHARDINGS[how]} {estimates[how]['total_gib']:.1f}" for how in COMPARED_SHARDINGS)


def sharding_fix(estimates: dict[str, dict], held_as: str, limit_gib: float) -> str:
    """The sentence that names a sharding whose estimate fits `limit_gib` per process, when the launch's does not."""
    fitting = [how for how in ("zero3", "fsdp2") if how != held_as and estimates[how]["total_gib"] <= limit_gib]
    if not fitting:
        return ""
    configs = " or ".join(f"recipes/accelerate/{'zero3' if how == 'zero3' else 'fsdp2'}.yaml" for how in fitting)
    shown = ", ".join(f"{SHARDINGS[how]} ~{estimates[how]['total_gib']:.1f} GiB" for how in fitting)
    return (f"Under {SHARDINGS[held_as]} every process holds the whole model; sharding its weights fits ({shown} "
            f"per process): launch with {configs}. ")


# ------------------------------------------------------------------------------------------------------ dry run
# Table 13 of the paper (millions of parameters), printed beside our counts by the dry run.
PAPER_PARAMETERS_M = {"visual": 644.5, "projector": 35.0, "segmentation_head": 4.8, "depth_head": 37.0}


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
        paper = name != "visual" or model.config.backbone_family == "qwen2_vl"  # Table 13 sizes Qwen2-VL-7B's tower
        row = {"part": name, "params_m": count / 1e6, "trainable_m": trainable / 1e6,
               "paper_m": PAPER_PARAMETERS_M.get(name) if paper else None}
        if name == "visual" and model.config.backbone.owned_modules(model.visual):  # (InternViT: none in the tower)
            backbone = model.config.backbone
            owned = sum(p.numel() for m in backbone.owned_modules(model.visual) for p in m.parameters())
            what = " + ".join(backbone.mllm_owned)  # the PatchMerger (+ DeepStack mergers; SigLIP's pooling head)
            row["note"] = (f"includes the parts left to the MLLM, {what} ({owned / 1e6:.1f}M, frozen); without them "
                           f"{(count - owned) / 1e6:.1f}M")
        rows.append(row)
    return rows


def memory_estimate(model: VersaViTForMultiTask, data_args: DataArguments, num_gpus: int, bf16: bool,
                    sharding: str, gradient_checkpointing: bool, tasks: list[str] | None = None,
                    batch_sizes: dict[str, int] | None = None) -> dict[str, float]:
    """A rough per-GPU memory estimate (GiB) of the multi-task stage under mixed precision, for a launch that holds
    the model as `sharding` says (a key of `SHARDINGS`).

    weights: every parameter in the compute dtype (2 bytes in bf16; FSDP2: 4, the float32 the recipes load, its mixed
    precision casting only a gathered copy), a whole copy per GPU under DDP and ZeRO-1/2, sharded over the GPUs under
    ZeRO-3 and FSDP2 (plus the largest block gathered whole, twice with prefetching); gradients: per trainable
    parameter in that dtype, sharded from ZeRO stage 2 (FSDP2 too); optimizer: fp32 master copy + AdamW's two moments
    (12 bytes per trainable parameter; FSDP2: the two moments, 8, its fp32 shards being the master copy), sharded
    from ZeRO stage 1 and under FSDP2. A frozen part has no gradient and no optimizer state. Activations: the
    largest task micro-batch (tasks run one at a time);
    with gradient checkpointing each transformer layer keeps its input (tokens x width) and one layer is recomputed
    at a time (~16 values per token and width, attention included), without it every layer keeps ~16 (the factor
    is an approximation, not a measurement). `tasks` (default `data_args.curriculum_tasks`): the objectives that run, at
    `batch_sizes` (default the `<task>_batch_size` options); an objective of the run's own adds no estimate."""
    tasks = list(data_args.curriculum_tasks if tasks is None else tasks)
    sizes = {task: get_objective(task).batch_size(data_args) for task in tasks} | (batch_sizes or {})
    gib = 1024**3
    compute_bytes = 2 if bf16 else 4
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding: expected one of {list(SHARDINGS)}, got {sharding!r}.")
    weight_shards = num_gpus if sharding in ("zero3", "fsdp2") else 1
    grad_shards = num_gpus if sharding in ("zero2", "zero3", "fsdp2") else 1
    optim_shards = num_gpus if sharding != "ddp" else 1
    width, depth = model.config.embed_dim, model.config.num_hidden_layers
    per_layer = 1 if gradient_checkpointing else 16
    patch, merge = model.config.patch_size, model.config.spatial_merge_size
    activations = {}
    for task in tasks:
        objective = get_objective(task)
        pixels = objective.input_pixels(data_args)  # per sample; the largest a dynamic resolution set draws
        if pixels is None:
            continue
        values = sizes[task] * pixels // patch**2 * width * (depth * per_layer + (16 if gradient_checkpointing else 0))
        if "language_model" in objective.parts and model.config.text_config is not None:
            text = model.config.text_config.get_text_config()  # (an MLLM's config: its LLM's)
            tokens = sizes[task] * (data_args.caption_max_pixels // (patch**2 * merge**2) + 256)
            values += (
                tokens * text.hidden_size * (text.num_hidden_layers * per_layer + (16 if gradient_checkpointing else 0))
            )
            values += tokens * text.vocab_size * 2  # logits and their gradient
        activations[task] = values * compute_bytes / gib
    gathered = 0  # the largest block (tower block or LLM layer) gathered whole, twice with prefetching
    if weight_shards > 1:
        blocks = [m for m in model.modules() if type(m).__name__ in (getattr(model, "_no_split_modules", None) or ())]
        gathered = 2 * max((sum(p.numel() for p in block.parameters()) for block in blocks), default=0)
    # FSDP2 keeps the parameters as the recipes load them (float32; its mixed precision casts a gathered copy for
    # compute) and gradients in their dtype; AdamW's two moments are then the whole optimizer state. DeepSpeed casts
    # the module to the compute dtype and keeps an fp32 master copy of what trains beside the moments.
    stored_bytes, optimizer_bytes = (4, 8) if sharding == "fsdp2" else (compute_bytes, 12)
    estimate = {
        "weights_gib": (total / weight_shards * stored_bytes + gathered * compute_bytes) / gib,
        "gradients_gib": trainable * stored_bytes / grad_shards / gib,
        "optimizer_gib": trainable * optimizer_bytes / optim_shards / gib,
        "activations_gib": max(activations.values(), default=0.0),
        "activations_by_task_gib": activations,
    }
    estimate["total_gib"] = sum(v for k, v in estimate.items() if k != "activations_by_task_gib")
    return estimate


@whole_models()
def dry_run_model(model_args: ModelArguments, data_args: DataArguments,
                  tasks: list[str] | None = None) -> VersaViTForMultiTask:
    """The run's multi-task model with the heads of `tasks` (default `data_args.curriculum_tasks`) on the meta device:
    shapes
    and counts, no weights (nothing is read but configs)."""
    tasks = list(data_args.curriculum_tasks if tasks is None else tasks)
    if model_args.mllm and not (Path(model_args.mllm) / "config.json").is_file():
        if model_args.mllm_vision_config is not None:
            logger.warning("mllm %s is not on this machine: sizing its tower from mllm_vision_config (%s)",
                           model_args.mllm, model_args.mllm_vision_config["model_type"])
            config = VersaViTConfig(vision_config=dict(model_args.mllm_vision_config))
        else:
            logger.warning("mllm %s is not on this machine: sizing VersaViTConfig's default tower (Qwen2-VL-7B's)",
                           model_args.mllm)
            config = VersaViTConfig()
    else:
        config = backbone_config(model_args.model_name_or_path, model_args.mllm, model_args.vision_config)
    dense = [task for task in tasks if task != "captioning"]
    settings = {**config.to_dict(), **(model_args.head_config or {}), "tasks": dense or None}
    if "captioning" in tasks and config.text_config is None and model_args.mllm_language_model:
        if not (Path(model_args.mllm) / "config.json").is_file():
            raise ConfigError(f"mllm_language_model: sizing the MLLM's own LLM needs {model_args.mllm}/config.json, "
                              "which is not on this machine.")
        mllm_config = AutoConfig.from_pretrained(model_args.mllm)
        settings.update(text_config=mllm_config.to_dict(), image_token_id=mllm_config.image_token_id,
                        mllm_language_model=True)
    elif "captioning" in tasks and config.text_config is None:
        text_config = language_model_config(model_args)
        settings["text_config"] = text_config.to_dict()
        # the `<image>` token: a free slot of the embedding table (Qwen3's has ~270 unused) or one more row
        settings["image_token_id"] = text_config.vocab_size - 1
    config = with_tasks(VersaViTConfig(**{k: v for k, v in settings.items() if k not in CONFIG_BOOKKEEPING}), tasks)
    with torch.device("meta"):
        return VersaViTForMultiTask(config)


def format_report(rows: list[dict], memory: dict, num_gpus: int, sharding_name: str = "") -> str:
    lines = [f"{'part':<20}{'params':>12}{'trainable':>12}{'paper (Table 13)':>19}"]
    for row in rows:
        paper = f"{row['paper_m']:.1f}M" if row["paper_m"] is not None else "-"
        lines.append(f"{row['part']:<20}{row['params_m']:>11.1f}M{row['trainable_m']:>11.1f}M{paper:>19}")
        if row.get("note"):
            lines.append(f"{'':<20}({row['note']})")
    total = sum(r["params_m"] for r in rows)
    lines.append(f"{'total':<20}{total:>11.1f}M")
    lines.append(f"\nEstimated memory per GPU ({num_gpus} GPUs{', ' + sharding_name if sharding_name else ''}), GiB:")
    for key in ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib", "total_gib"):
        lines.append(f"  {key.removesuffix('_gib'):<12}{memory[key]:>8.1f}")
    by_task = ", ".join(f"{k} {v:.1f}" for k, v in memory["activations_by_task_gib"].items())
    lines.append(f"  (activations by task: {by_task}; the largest counts, tasks run one at a time)")
    return "\n".join(lines)


__all__ = [
    "PAPER_PARAMETERS_M",
    "available_memory",
    "COMPARED_SHARDINGS",
    "captioning_connector",
    "compared_shardings",
    "dry_run_model",
    "estimates_by_sharding",
    "format_report",
    "memory_estimate",
    "parameter_report",
    "plan_run",
    "refuse_sharding",
    "sharding",
    "sharding_fix",
    "zero_stage",
]
