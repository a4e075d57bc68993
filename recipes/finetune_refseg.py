#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Referring-segmentation fine-tuning from a multi-task checkpoint (supplement §9.4, "Ours*" in Table 10).

    python recipes/finetune_refseg.py       # the embedded default, finetune_refseg_default.yaml; after `make demo`
    python recipes/finetune_refseg.py --model_name_or_path outputs/run/final --data data/refcoco_train \\
        --eval_data data/refcoco_val --text_encoder models/Qwen3-Embedding-8B --output_dir outputs/finetune_refseg

The backbone and the segmentation head start from the checkpoint. By default the expressions are embedded online by
a transformers text-embedding model (MiniLM here; its width must be the head's text_embed_dim) adapted with LoRA
(r = 8, alpha = 8 as in the paper); `--text_mode offline` uses the dataset's precomputed embeddings instead. Backbone
at backbone_learning_rate (1e-5), head and text adapters at learning_rate (1e-4). Held-out mIoU and cIoU are measured
before and after. Writes output_dir/finetune/ (Trainer checkpoints), output_dir/final/ (the segmentation model, and
text_encoder/ with the merged adapters) and summary.json. The data folders are refCOCO-format datasets
(recipes/data/convert_refcoco.py, plus embed_texts.py for offline mode).
"""

import logging
from pathlib import Path

from versavit_trainer import MultiTaskTrainingArguments
from versavit_trainer.config import DefaultConfig, parse_config
from versavit_trainer.core.lora import LoraArguments
from versavit_trainer.core.stages import run_as_script
from versavit_trainer.methods.finetune import FinetuneArguments, TextEncoderArguments, finetune, print_summary

DEFAULT_CONFIG = DefaultConfig(
    Path(__file__).resolve().parent / "configs" / "finetune_refseg_default.yaml",
    "referring-segmentation fine-tuning of `make demo`'s model (run it first), about 1.5 minutes on a CPU",
)


def main(argv: list[str] | None = None) -> dict:
    args, text_args, lora_args, training_args = parse_config(
        (FinetuneArguments, TextEncoderArguments, LoraArguments, MultiTaskTrainingArguments), argv, description=__doc__,
        default_config=DEFAULT_CONFIG,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    summary = finetune("segmentation", args, lora_args, training_args, text_args)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    run_as_script(main)
