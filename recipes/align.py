#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The captioning-alignment warm-up alone (paper §4.2.1): backbone and LLM frozen, only the projector trains.

    python recipes/align.py --output_dir outputs/align          # the embedded default (recipes/configs/default.yaml)
    accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/align.py \\
        --config recipes/configs/versavit_qwen2vl_7b.yaml --output_dir outputs/align_7b

Takes the same options and YAML files as `recipes/multitask.py` (its captioning options, `alignment_*` for the
stage; LoRA options are accepted and unused: only the projector trains here); `--resume` continues from the last
checkpoint. Without `--config` it runs the embedded default, recipes/configs/default.yaml, and says so first; the
run's scale and memory estimate are printed before anything is built (`--check_memory false`: start a run whose
estimate exceeds the free memory anyway). Writes to `output_dir`:
    alignment/                 Trainer checkpoints, tensorboard events; once finished trained_parts.safetensors (the
                               projector), log_history.json, stage.json
    final/                     the aligned captioning model (loads into VersaViTForCaptioning), tokenizer, processor
    backbone/                  the (unchanged) encoder as a VersaViTModel
    config.yaml, summary.json  the resolved configuration; steps, seconds and the final captioning loss

Continue with multi-task training from the aligned model:
    python recipes/multitask.py --config ... --model_name_or_path outputs/align/final --alignment_max_steps 0
"""

import json
import logging
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
from versavit_trainer.core.curriculum import check_finished_stages, check_stage_parts, run_curriculum
from versavit_trainer.core.models import build_model
from versavit_trainer.core.objectives_model import ObjectivesModel
from versavit_trainer.core.options import run_argument_types
from versavit_trainer.core.plan import plan_run, refuse_sharding
from versavit_trainer.core.reporting import GracefulStop
from versavit_trainer.core.sources import DataSources
from versavit_trainer.core.stages import run_as_script, save_model_folders
from versavit_trainer.methods.versavit import versavit_stages
from versavit_trainer.objectives import ObjectiveContext, get_objective

CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = DefaultConfig(CONFIGS / "default.yaml", "the warm-up of `make demo`'s run, about a minute on a CPU")


def main(argv: list[str] | None = None) -> dict:
    model_args, lora_args, data_args, run_args, training_args = parse_config(
        run_argument_types(), argv,
        description=__doc__, default_config=DEFAULT_CONFIG,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if run_args.alignment_max_steps == 0:
        raise ConfigError("alignment_max_steps: 0 would skip the only stage of align.py.")
    output_dir = Path(training_args.output_dir)
    data_args.tasks = ["captioning"]
    stages = versavit_stages(data_args, run_args)[:1]  # the VersaViT curriculum's alignment stage
    if lora_args.backbone_lora or lora_args.language_model_lora:
        refuse_sharding(training_args, "LoRA (backbone_lora / language_model_lora)")
    plan_run(model_args, data_args, run_args, training_args, stages, "VersaViT alignment run")
    claim_run_folder(output_dir, "recipes/align.py", run_args, training_args)  # held until the process ends
    config = resolved_config(model_args, lora_args, data_args, run_args, training_args, exclude=NOT_RECORDED)
    resuming = check_run_record(output_dir, config, run_args.resume, run_args.allow_config_change)
    if resuming:
        check_finished_stages(stages, training_args, output_dir)
    set_seed(training_args.seed)
    sources = DataSources(data_args, data_args.tasks)
    model, tokenizer = build_model(model_args, data_args.tasks)
    main_process = training_args.process_index == 0
    trained = ObjectivesModel(model, [get_objective("captioning")])
    context = ObjectiveContext(data_args, tokenizer, training_args.seed,
                               config=model.config)
    check_stage_parts(trained, stages, training_args, output_dir)
    if main_process:  # only once everything that can be checked before training has been
        write_run_record(output_dir, config, resuming)

    result = run_curriculum(trained, stages, sources, context, training_args, output_dir, run_args.resume,
                            GracefulStop())
    if result["interrupted"]:
        return result["interrupted"]
    stage = result["stages"]["alignment"]
    summary = {"steps": stage["steps"], "seconds": stage["seconds"], "final_losses": stage["final_losses"]}
    if main_process:
        folders, _ = save_model_folders(model, tokenizer, output_dir, data_args.caption_max_pixels,
                                        result["gathered"])
        summary.update({k: str(v) for k, v in folders.items()})
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"\nAlignment: {summary['steps']} steps in {stage['seconds']:.0f} s, final captioning loss "
              f"{summary['final_losses'].get('captioning', float('nan')):.4f}\naligned model  {folders['final']}")
    return summary


if __name__ == "__main__":
    run_as_script(main)
