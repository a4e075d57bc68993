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

Writes to `output_dir`:
    alignment/            the warm-up's Trainer checkpoints, tensorboard events and projector.safetensors
    multitask/            the multi-task stage's Trainer checkpoints and tensorboard events
    final/                the multi-task checkpoint (VersaViTForMultiTask + tokenizer + image processor)
    backbone/             the trained encoder alone: AutoModel.from_pretrained(it) gives a VersaViTModel
    config.yaml           the resolved configuration (re-run it with --config)
    summary.json          per-task final losses, steps, throughput, held-out metrics before / after
    loss_curves.png       per-task losses of both stages
    predictions.png       held-out images | predicted depth | predicted mask | generated caption
"""

import json
import logging
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import set_seed

from versavit_trainer.build import (
    build_model,
    dry_run_model,
    evaluate_held_out,
    format_report,
    load_data,
    memory_estimate,
    parameter_report,
    run_argument_types,
    task_specs,
)
from versavit_trainer.config import DefaultConfig, check_run_record, parse_config, resolved_config, write_run_record
from versavit_trainer.lora import apply_lora, merge_lora
from versavit_trainer.plan import plan_run
from versavit_trainer.reporting import GracefulStop, plot_loss_curves, render_panel
from versavit_trainer.stages import final_losses, run_as_script, run_stage, save_model_folders, stage_arguments

logger = logging.getLogger("versavit.multitask")


ARGUMENT_TYPES = run_argument_types()
CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = DefaultConfig(
    CONFIGS / "default.yaml", "the same run as `make demo`, minutes on a CPU",
    f"the paper's setting is --config {CONFIGS.relative_to(CONFIGS.parent.parent)}/versavit_qwen2vl_7b.yaml",
)
# What describes this machine rather than the run: not written to config.yaml.
NOT_RECORDED = ("resume", "dry_run", "check_memory", "allow_config_change")


def dry_run(model_args, data_args, run_args, training_args) -> dict:
    model = dry_run_model(model_args, data_args)
    rows = parameter_report(model)
    memory = memory_estimate(model, data_args, run_args.dry_run_gpus, training_args.bf16, run_args.zero_stage,
                             bool(training_args.activation_checkpointing))
    allocated = sum(p.numel() for p in model.parameters() if p.device.type != "meta")
    print(format_report(rows, memory, run_args.dry_run_gpus))
    print(f"\nParameters allocated: {allocated} (meta device: nothing was read or allocated)")
    return {"parameters": rows, "memory": memory, "allocated_parameters": allocated}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("--dry_run", "--dry-run") for arg in argv):
        argv += ["--use_cpu", "true"]  # the dry run trains nothing: a GPU config (bf16) is checked on any machine
    model_args, lora_args, data_args, run_args, training_args = parse_config(
        ARGUMENT_TYPES, argv, description=__doc__, default_config=DEFAULT_CONFIG
    )
    if run_args.dry_run:
        return dry_run(model_args, data_args, run_args, training_args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = Path(training_args.output_dir)
    config = resolved_config(model_args, lora_args, data_args, run_args, training_args, exclude=NOT_RECORDED)
    resuming = check_run_record(output_dir, config, run_args.resume, run_args.allow_config_change)
    plan_run(model_args, data_args, run_args, training_args, ["alignment", "multitask"], "VersaViT multi-task run")
    main_process = training_args.process_index == 0
    set_seed(training_args.seed)
    data = load_data(data_args, with_eval=main_process)
    model, tokenizer = build_model(model_args, data_args.tasks, data.text_embed_dim, data.depth_label_space)
    apply_lora(model, lora_args)
    specs = task_specs(data_args, data.train, tokenizer, training_args.seed, data.text_embed_dim)
    if main_process:  # only once everything that can be checked before training has been
        write_run_record(output_dir, config, resuming)
    stop = GracefulStop()
    summary: dict = {"output_dir": str(output_dir), "stages": {}}
    histories = {}

    # Stage 1: captioning-alignment warm-up (only the projector trains).
    projector_file = output_dir / "alignment" / "projector.safetensors"
    captioning = [spec for spec in specs if spec.name == "captioning"]
    if captioning and run_args.alignment_max_steps != 0:
        if run_args.resume and projector_file.is_file():
            model.projector.load_state_dict(load_file(projector_file))
            logger.info("alignment stage: finished earlier, projector loaded from %s", projector_file)
            histories["alignment"] = json.loads((output_dir / "alignment" / "log_history.json").read_text())
        else:
            args = stage_arguments(
                training_args, "alignment", output_dir / "alignment", max_steps=run_args.alignment_max_steps,
                num_train_epochs=run_args.alignment_num_train_epochs,
            )
            trainer, seconds, interrupted = run_stage(model, args, captioning, run_args.resume, stop)
            if interrupted:
                return interrupted
            histories["alignment"] = trainer.state.log_history
            summary["stages"]["alignment"] = {"steps": trainer.state.global_step, "seconds": seconds}
            if main_process:
                save_file({k: v.contiguous() for k, v in model.projector.state_dict().items()}, projector_file)
                (projector_file.parent / "log_history.json").write_text(json.dumps(trainer.state.log_history))

    # Held-out quality before multi-task training (kept across --resume).
    before_file, before = output_dir / "eval_before.json", None
    if main_process and data.eval:
        if run_args.resume and before_file.is_file():
            before = json.loads(before_file.read_text())
        else:
            before = evaluate_held_out(model, data_args, data.eval)
            before_file.write_text(json.dumps(before, indent=2))

    # Stage 2: multi-task training.
    args = stage_arguments(training_args, "multitask", output_dir / "multitask")
    trainer, seconds, interrupted = run_stage(model, args, specs, run_args.resume, stop)
    if interrupted:
        return interrupted
    start_step = trainer.resumed_from_step
    histories["multitask"] = trainer.state.log_history
    steps, run = trainer.state.global_step, trainer.state.global_step - start_step
    images = {spec.name: spec.batch_size * args.world_size * args.rounds_per_step * run for spec in specs}
    summary["stages"]["multitask"] = {
        "steps": steps,
        "steps_this_run": run,  # fewer than `steps` after --resume
        "world_size": args.world_size,
        "seconds": seconds,
        "steps_per_second": run / seconds if run else None,
        "images_per_second": {task: count / seconds for task, count in images.items()} if run else None,
        "final_losses": final_losses(trainer.state.log_history),
    }
    if not main_process:
        return summary

    model = merge_lora(trainer.accelerator.unwrap_model(trainer.model))  # exported models are plain, without peft
    folders = save_model_folders(model, tokenizer, output_dir, data_args.caption_max_pixels)
    summary.update({k: str(v) for k, v in folders.items()})
    if data.eval:
        model.eval()  # and it stays so for the prediction panel
        summary["held_out"] = {"before": before, "after": evaluate_held_out(model, data_args, data.eval)}
    if any("loss" in entry for history in histories.values() for entry in history):
        summary["loss_curves"] = str(plot_loss_curves(histories, output_dir / "loss_curves.png"))
    else:  # a run shorter than logging_steps
        logger.warning("no training loss was logged (logging_steps %d): loss_curves.png is not drawn",
                       args.logging_steps)
    panel_rows = data.eval.get("segmentation") or data.eval.get("depth")
    if run_args.panel_samples and panel_rows is not None:
        rows = [panel_rows[i] for i in range(min(run_args.panel_samples, len(panel_rows)))]
        path, drawn = render_panel(model, tokenizer, rows, output_dir / "predictions.png", data_args.depth_size,
                                   data_args.segmentation_size, data_args.caption_max_pixels,
                                   run_args.caption_max_new_tokens)
        summary["predictions"], summary["panel"] = str(path), drawn
    summary["config"] = str(output_dir / "config.yaml")
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, output_dir)
    return summary


def print_summary(summary: dict, output_dir: Path) -> None:
    stage = summary["stages"]["multitask"]
    speed = f"{stage['steps_per_second']:.2f} steps/s" if stage["steps_per_second"] else "resumed after the last step"
    print(f"\nMulti-task training: {stage['steps']} steps, {stage['steps_this_run']} in this run, "
          f"{stage['seconds']:.0f} s ({speed})")
    print("Final task losses: " + ", ".join(f"{k} {v:.4f}" for k, v in stage["final_losses"].items()))
    held_out = summary.get("held_out")
    if held_out:
        before, after = held_out["before"], held_out["after"]
        if "depth" in after:
            print(f"Held-out depth   AbsRel {before['depth']['abs_rel']:.3f} -> {after['depth']['abs_rel']:.3f}   "
                  f"δ1 {before['depth']['delta1']:.3f} -> {after['depth']['delta1']:.3f}")
        if "segmentation" in after:
            print(f"Held-out masks   mIoU {before['segmentation']['miou']:.3f} -> {after['segmentation']['miou']:.3f}   "
                  f"cIoU {before['segmentation']['ciou']:.3f} -> {after['segmentation']['ciou']:.3f}")
    for key in ("final", "backbone", "predictions", "loss_curves", "config"):
        if key in summary:
            print(f"{key:<12}{summary[key]}")
    print(f"{'summary':<12}{output_dir / 'summary.json'}")
    print(f"{'tensorboard':<12}tensorboard --logdir {output_dir}")


if __name__ == "__main__":
    run_as_script(main)
