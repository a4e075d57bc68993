#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT multi-task post-training (paper §4): the captioning-alignment warm-up, then multi-task training.

    accelerate launch recipes/multitask.py                                          # the embedded default, CPU
    python recipes/multitask.py --config recipes/configs/default.yaml               # the same, named
    accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/multitask.py \\
        --config recipes/configs/versavit_qwen2vl_7b.yaml --mllm /models/Qwen2-VL-7B-Instruct \\
        --language_model /models/Qwen3-1.7B --depth_data ... --segmentation_data ... --captioning_data ...
    python recipes/multitask.py --config recipes/configs/versavit_qwen2vl_7b.yaml --dry_run   # sizes, no weights
    python recipes/multitask.py --config ... --resume          # continue an interrupted run (Ctrl-C / SIGTERM)

Every option is a flag (`--help`) and a key of the YAML config; flags override the file. Without `--config` the
recipe runs the embedded default, recipes/configs/default.yaml (the run of `make demo`), and says so first. Before
anything is built it prints the run's scale (model, stages, steps, data, device, processes, memory estimate) and
refuses a run whose estimate exceeds the free memory (`--check_memory false` starts it anyway).

The run is a list of stages: without `stages:` in the config, VersaViT's two (the alignment warm-up, then
multi-task training); with it, any curriculum of registered objectives (`versavit_trainer.core.curriculum`; e.g.
recipes/configs/vqa_eval.yaml, the paper's VQA-evaluation protocol, or recipes/configs/sailvit_default.yaml,
SAILViT's three stages of gradual refinement). `--imports my_objective.py` registers a run's own objectives.

Writes to `output_dir`:
    <stage>/              per stage (alignment/, multitask/): Trainer checkpoints, tensorboard events; once the stage
                          has finished, trained_parts.safetensors (what it trained), log_history.json, stage.json
    final/                the multi-task checkpoint (VersaViTForMultiTask + tokenizer + image processor), and the
                          heads a run's objectives added themselves (objective_parts.safetensors; see
                          ObjectivesModel.load_objective_parts)
    backbone/             the trained encoder alone: AutoModel.from_pretrained(it) gives a VersaViTModel
    config.yaml           the resolved configuration (re-run it with --config)
    run.json              which recipe owns the folder (with .versavit.lock, held while the run lives: a second run
                          into the folder is refused; so is a folder of anything else, unless --overwrite_output_dir)
    summary.json          per-task final losses, steps, throughput, held-out metrics before / after (depth, masks,
                          captioning answers)
    loss_curves.png       per-task losses of both stages
    predictions.png       held-out images | predicted depth | predicted mask | generated caption
"""

import dataclasses
import json
import logging
import sys
from pathlib import Path

from transformers import set_seed

from versavit_trainer.config import (
    NOT_RECORDED,
    ConfigError,
    DefaultConfig,
    check_run_record,
    claim_run_folder,
    parse_config,
    resolved_config,
    write_run_record,
)
from versavit_trainer.core.arguments import apply_stage, stage_learning_rates
from versavit_trainer.core.curriculum import (
    check_finished_stages,
    check_stage_parts,
    import_objectives,
    model_tasks,
    objectives_of,
    parse_stages,
    run_curriculum,
)
from versavit_trainer.core.held_out import evaluate_held_out
from versavit_trainer.core.lora import apply_lora, merge_lora
from versavit_trainer.core.models import build_model
from versavit_trainer.core.objectives_model import ObjectivesModel
from versavit_trainer.core.options import SHARDINGS, run_argument_types
from versavit_trainer.core.plan import (
    captioning_connector,
    compared_shardings,
    dry_run_model,
    estimates_by_sharding,
    format_report,
    parameter_report,
    plan_run,
    refuse_sharding,
    sharding_fix,
)
from versavit_trainer.core.reporting import GracefulStop, plot_loss_curves, render_panel
from versavit_trainer.core.sources import DataSources
from versavit_trainer.core.stages import run_as_script, save_model_folders
from versavit_trainer.methods.versavit import versavit_stages
from versavit_trainer.objectives import ObjectiveContext, get_objective
from versavit_trainer.parts import training_parts

logger = logging.getLogger("versavit.multitask")


ARGUMENT_TYPES = run_argument_types()
CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = DefaultConfig(
    CONFIGS / "default.yaml", "the same run as `make demo`, minutes on a CPU",
    f"the paper's setting is --config {CONFIGS.relative_to(CONFIGS.parent.parent)}/versavit_qwen2vl_7b.yaml",
)


def dry_run(model_args, data_args, run_args, training_args, stages: list) -> dict:
    tasks = model_tasks(stages)
    model = dry_run_model(model_args, data_args, tasks)
    # what the last stage (the multi-task one) trains: a frozen part has no gradient or optimizer state
    last = stages[-1].arguments(training_args, Path(training_args.output_dir))
    apply_stage(model, stage_learning_rates(last, training_parts(model)))
    rows = parameter_report(model)
    held_as = run_args.dry_run_sharding
    estimates = estimates_by_sharding(model, data_args, run_args.dry_run_gpus, training_args.bf16, held_as,
                                      bool(training_args.activation_checkpointing), tasks)
    memory = estimates[held_as]
    allocated = sum(p.numel() for p in model.parameters() if p.device.type != "meta")
    print(format_report(rows, memory, run_args.dry_run_gpus, SHARDINGS[held_as]))
    print(f"  per GPU under {compared_shardings(estimates)}")
    limit = run_args.dry_run_gpu_memory_gib
    if limit is not None and memory["total_gib"] > limit:
        raise ConfigError(
            f"memory: under {SHARDINGS[held_as]} each of the {run_args.dry_run_gpus} GPUs needs about "
            f"{memory['total_gib']:.1f} GiB, more than its {limit:g} GiB. "
            + (sharding_fix(estimates, held_as, limit) or "No sharding fits: more GPUs or a smaller run."))
    if (connector := captioning_connector(model)) is not None:
        print(f"\nCaptioning connector: {connector}")
    print(f"\nParameters allocated: {allocated} (meta device: nothing was read or allocated)")
    return {"parameters": rows, "memory": memory, "allocated_parameters": allocated,
            "per_sharding_gib": {how: estimate["total_gib"] for how, estimate in estimates.items()}}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("--dry_run", "--dry-run") for arg in argv):
        argv += ["--use_cpu", "true"]  # the dry run trains nothing: a GPU config (bf16) is checked on any machine
    model_args, lora_args, data_args, run_args, training_args = parse_config(
        ARGUMENT_TYPES, argv, description=__doc__, default_config=DEFAULT_CONFIG
    )
    import_objectives(run_args.imports)
    stages = curriculum(data_args, run_args, training_args)
    if run_args.dry_run:
        return dry_run(model_args, data_args, run_args, training_args, stages)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = Path(training_args.output_dir)
    if lora_args.backbone_lora or lora_args.language_model_lora:
        refuse_sharding(training_args, "LoRA (backbone_lora / language_model_lora)")
    plan_run(model_args, data_args, run_args, training_args, stages, "VersaViT multi-task run")
    claim_run_folder(output_dir, "recipes/multitask.py", run_args, training_args)  # held until the process ends
    config = resolved_config(model_args, lora_args, data_args, run_args, training_args, exclude=NOT_RECORDED)
    resuming = check_run_record(output_dir, config, run_args.resume, run_args.allow_config_change)
    if resuming:
        check_finished_stages(stages, training_args, output_dir)
    main_process = training_args.process_index == 0
    set_seed(training_args.seed)

    # Every stage's data is read (or generated) now, so that a bad folder of a late stage fails before training.
    names, tasks = objectives_of(stages), model_tasks(stages)
    sources = DataSources(data_args, names)
    used = [(item.name, item.data) for stage in stages for item in stage.objectives]
    train = [(name, sources.train(name, data)) for name, data in used]  # cached: the stages get the same datasets
    held_out = {}
    if main_process:
        held_out = {name: data for name in names if (data := sources.held_out(name)) is not None}
    dim = sources.text_embed_dim([dataset for name, dataset in train if get_objective(name).needs_text_embeddings])
    space = sources.depth_label_space([data for name, data in used if name == "depth"]) if "depth" in names else None
    model, tokenizer = build_model(model_args, tasks, dim, space)
    if sources.text_encoder() is not None:  # what the pipelines embed texts with (kept from a checkpoint otherwise)
        model.config.text_encoder = sources.text_encoder()
    apply_lora(model, lora_args)
    datasets = {name: [dataset for used, dataset in train if used == name] for name in names}
    context = ObjectiveContext(data_args, tokenizer, training_args.seed, dim, config=model.config, datasets=datasets)
    trained = ObjectivesModel(model, [get_objective(name) for name in names], context)
    check_stage_parts(trained, stages, training_args, output_dir)
    if main_process:  # only once everything that can be checked before training has been
        write_run_record(output_dir, config, resuming)

    # Held-out quality before training (kept across --resume).
    before_file, before = output_dir / "eval_before.json", None
    if held_out:
        if run_args.resume and before_file.is_file():
            before = json.loads(before_file.read_text())
        else:
            before = evaluate_held_out(model, data_args, held_out, tokenizer=tokenizer)
            before_file.write_text(json.dumps(before, indent=2))

    result = run_curriculum(trained, stages, sources, context, training_args, output_dir, run_args.resume,
                            GracefulStop())
    if result["interrupted"]:
        return result["interrupted"]
    summary: dict = {"output_dir": str(output_dir), "stages": result["stages"], "last_stage": stages[-1].name}
    if not main_process:
        return summary

    model = merge_lora(model)  # exported models are plain, without peft
    gathered = result["gathered"]  # the whole model, when the last stage trained it sharded (ZeRO-3, FSDP2)
    folders, model = save_model_folders(model, tokenizer, output_dir, data_args.caption_max_pixels, gathered)
    summary.update({k: str(v) for k, v in folders.items()})
    parts = trained.save_objective_parts(folders["final"], gathered)  # the objectives' own heads, beside the model's
    if parts is not None:
        summary["objective_parts"] = str(parts)
    if held_out:
        model.eval()  # and it stays so for the prediction panel
        after = evaluate_held_out(model, data_args, held_out, tokenizer=tokenizer)
        summary["held_out"] = {"before": before, "after": after}
    histories = result["histories"]
    if any("loss" in entry for history in histories.values() for entry in history):
        summary["loss_curves"] = str(plot_loss_curves(histories, output_dir / "loss_curves.png"))
    else:  # a run shorter than logging_steps
        logger.warning("no training loss was logged (logging_steps %d): loss_curves.png is not drawn",
                       training_args.logging_steps)
    panel_rows = held_out.get("segmentation") or held_out.get("depth")
    if run_args.panel_samples and panel_rows is not None:
        rows = [panel_rows[i] for i in range(min(run_args.panel_samples, len(panel_rows)))]
        panel_context = dataclasses.replace(context, caption_max_new_tokens=run_args.caption_max_new_tokens)
        path, drawn = render_panel(model, rows, output_dir / "predictions.png", panel_context)
        summary["predictions"], summary["panel"] = str(path), drawn
    summary["config"] = str(output_dir / "config.yaml")
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, output_dir)
    return summary


def curriculum(data_args, run_args, training_args) -> list:
    """The run's stages: its `stages:` list, else the VersaViT curriculum of the flags."""
    if run_args.stages is None:
        return versavit_stages(data_args, run_args)
    return parse_stages(run_args.stages, data_args, training_args)


def print_summary(summary: dict, output_dir: Path) -> None:
    print()
    for name, stage in summary["stages"].items():
        speed = f"{stage['steps_per_second']:.2f} steps/s" if stage.get("steps_per_second") else (
            "finished earlier" if not stage["steps_this_run"] else "")
        print(f"Stage {name}: {stage['steps']} steps, {stage['steps_this_run']} in this run, "
              f"{stage['seconds']:.0f} s ({speed})")
    stage = summary["stages"][summary["last_stage"]]
    print("Final task losses: " + ", ".join(f"{k} {v:.4f}" for k, v in stage["final_losses"].items()))
    held_out = summary.get("held_out")
    if held_out:
        before, after = held_out["before"], held_out["after"]
        if "depth" in after:
            print(f"Held-out depth   AbsRel {before['depth']['abs_rel']:.3f} -> {after['depth']['abs_rel']:.3f}   "
                  f"δ1 {before['depth']['delta1']:.3f} -> {after['depth']['delta1']:.3f}")
        if "segmentation" in after:
            print(
                f"Held-out masks   mIoU {before['segmentation']['miou']:.3f} -> {after['segmentation']['miou']:.3f}   "
                f"cIoU {before['segmentation']['ciou']:.3f} -> {after['segmentation']['ciou']:.3f}"
            )
        if "captioning" in after:
            print(f"Held-out answers loss/token {before['captioning']['answer_loss']:.3f} -> "
                  f"{after['captioning']['answer_loss']:.3f}   token accuracy "
                  f"{before['captioning']['token_accuracy']:.3f} -> {after['captioning']['token_accuracy']:.3f}")
    for key in ("final", "backbone", "predictions", "loss_curves", "config"):
        if key in summary:
            print(f"{key:<12}{summary[key]}")
    print(f"{'summary':<12}{output_dir / 'summary.json'}")
    print(f"{'tensorboard':<12}tensorboard --logdir {output_dir}")


if __name__ == "__main__":
    run_as_script(main)
