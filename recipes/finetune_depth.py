#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Depth fine-tuning from a multi-task checkpoint (supplement §9.3, the paper's "Ours*" in Table 9).

    python recipes/finetune_depth.py        # the embedded default, finetune_depth_default.yaml; after `make demo`
    python recipes/finetune_depth.py --model_name_or_path outputs/run/final --data data/depth --eval_data data/nyu \\
        --output_dir outputs/finetune_depth

The backbone and the DPT head start from the checkpoint; the backbone trains at backbone_learning_rate (paper 1e-5),
the head at learning_rate (1e-4); `--backbone_lora true` adapts the backbone with LoRA instead. Held-out relative
depth (affine-aligned AbsRel and δ1) is measured before and after. Writes output_dir/finetune/ (Trainer checkpoints),
output_dir/final/ (loads with VersaViTForDepthEstimation / AutoModelForDepthEstimation) and summary.json.
"""

import logging
from pathlib import Path

from versavit_trainer import MultiTaskTrainingArguments
from versavit_trainer.config import DefaultConfig, parse_config
from versavit_trainer.core.lora import LoraArguments
from versavit_trainer.core.stages import run_as_script
from versavit_trainer.methods.finetune import FinetuneArguments, finetune, print_summary

DEFAULT_CONFIG = DefaultConfig(Path(__file__).resolve().parent / "configs" / "finetune_depth_default.yaml",
                               "depth fine-tuning of `make demo`'s model (run it first), about a minute on a CPU")


def main(argv: list[str] | None = None) -> dict:
    args, lora_args, training_args = parse_config(
        (FinetuneArguments, LoraArguments, MultiTaskTrainingArguments), argv, description=__doc__,
        default_config=DEFAULT_CONFIG,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    summary = finetune("depth", args, lora_args, training_args)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    run_as_script(main)
