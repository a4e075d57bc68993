#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Referring-segmentation evaluation of a VersaViT model (paper Table 10 style): cIoU and mIoU.

    python recipes/evaluation/eval_refseg.py --model outputs/demo/final                      # held-out generated scenes
    python recipes/evaluation/eval_refseg.py --model outputs/finetune_refseg/final --data data/refcoco_val \\
        --text_encoder outputs/finetune_refseg/final/text_encoder --size 560

`--data` is a refCOCO-format dataset folder (recipes/data/convert_refcoco.py output: image, expressions, masks),
embedded here with `--text_encoder` (default MiniLM; use the fine-tuned one a finetune_refseg run saved, or the model
the offline embeddings were made with), or a segmentation dataset that already carries `text_embeds` (used as is when no
`--text_encoder` is given). Every expression is evaluated at its image's original resolution (refCOCO's definition): the
head's logits at `size` are resized bilinearly to the image's size and thresholded at 0. cIoU = total intersection /
total union, mIoU = mean per-expression IoU. Writes output_dir/results.json and model_index.json.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import HfArgumentParser

from modeling_versavit import SentenceEmbedder, VersaViTForReferringSegmentation
from versavit_trainer.core.models import require_task_weights
from versavit_trainer.core.options import DataArguments
from versavit_trainer.core.sources import EVAL_SCENE_SEED_OFFSET
from versavit_trainer.data.labelling import load_labelled
from versavit_trainer.data.processors import image_processor_for
from versavit_trainer.data.scene_tables import scene_datasets
from versavit_trainer.evaluation.probe_runs import write_results
from versavit_trainer.metrics import evaluate_segmentation
from versavit_trainer.objectives.dense import eval_batches


@dataclass
class EvalRefsegArguments:
    model: str = field(metadata={"help": "A VersaViT folder with a segmentation head (task or multi-task checkpoint)."})
    data: str | None = field(default=None, metadata={"help": "A refCOCO-format dataset folder. Default: scenes."})
    text_encoder: str | None = field(
        default=None, metadata={"help": "Sentence-embedding model folder for the expressions. Default: MiniLM."}
    )
    num_eval_scenes: int = field(default=16, metadata={"help": "Held-out generated scenes (without --data)."})
    size: int = field(default=560, metadata={"help": "Input size, a multiple of the tower's patch x merge (28 for "
                                                     "Qwen2-VL; paper: 560)."})
    output_dir: str = field(default="outputs/eval_refseg", metadata={"help": "Where results.json goes."})


def dataset(args: EvalRefsegArguments, embedder):
    if args.data is None:
        return scene_datasets(args.num_eval_scenes, embedder, seed=EVAL_SCENE_SEED_OFFSET)["segmentation"], "scenes"
    folder = Path(args.data)
    rows = load_labelled(folder) if any(folder.glob("shard-*/DONE")) else load_from_disk(str(folder))
    missing = [c for c in ("image", "expressions", "masks") if c not in rows.column_names]
    if missing:
        raise ValueError(f"data: {folder} lacks the columns {missing} (has {rows.column_names}).")
    if "text_embeds" in rows.column_names and args.text_encoder is None:
        return rows, folder.name
    rows = rows.remove_columns([c for c in ("text_embeds",) if c in rows.column_names])
    embeds = [embedder(list(expressions)).tolist() for expressions in rows["expressions"]]
    return rows.add_column("text_embeds", embeds), folder.name


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EvalRefsegArguments).parse_args_into_dataclasses(args=argv)
    try:
        require_task_weights(args.model, "segmentation")
        model = VersaViTForReferringSegmentation.from_pretrained(args.model, dtype=torch.float32).eval()
        from versavit_trainer.data.assets import minilm_path

        embedder = SentenceEmbedder(args.text_encoder or minilm_path())
        if embedder.dim != model.config.text_embed_dim:
            raise ValueError(f"text_encoder: gives {embedder.dim}-d embeddings, the head reads "
                             f"{model.config.text_embed_dim}-d.")
        rows, name = dataset(args, embedder)
        data_args = DataArguments(tasks=["segmentation"], segmentation_size=args.size)
        batches = eval_batches(data_args, "segmentation", rows, image_processor=image_processor_for(model.config))
        result = evaluate_segmentation(model, batches)
    except ValueError as err:
        sys.exit(f"eval_refseg.py: error: {err}")
    summary = {"model": args.model, "dataset": name, "size": args.size, **result}
    model_index = [{"task_type": "image-segmentation", "dataset_type": "refcoco" if args.data else "versavit-scenes",
                    "dataset_name": name, "metric_type": metric, "metric_name": f"{metric} (referring)",
                    "metric_value": round(result[metric], 4)} for metric in ("ciou", "miou")]
    print(f"{name}: cIoU {result['ciou']:.4f}  mIoU {result['miou']:.4f}  ({result['expressions']} expressions)")
    return write_results(args.output_dir, summary, model_index)


if __name__ == "__main__":
    main()
