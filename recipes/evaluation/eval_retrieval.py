#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Image-text retrieval of an encoder (the paper's out-of-task evaluation, Table 11; supplement §9.5).

    python recipes/evaluation/eval_retrieval.py            # the embedded default: configs/retrieval_default.yaml
    python recipes/evaluation/eval_retrieval.py --model outputs/demo/backbone --backbone_learning_rate 1e-5  # + tower
    python recipes/evaluation/eval_retrieval.py --mllm models/Qwen2-VL-7B-Instruct --dataset coco \\
        --split_json data/karpathy/dataset_coco.json --image_root data/coco --text_model models/siglip2-text-embedder

An attention-pooling head (a learned query over the tower's last-layer tokens, then an MLP) and a text projection
MLP map images and offline text embeddings (`--text_model`, a sentence-embedding folder; default all-MiniLM-L6-v2)
into a shared space; they train with a SigLIP sigmoid (or CLIP softmax) contrastive loss on the training split, the
tower frozen (`--backbone_learning_rate 0`, the paper's head-only setting) or training at its own rate. Then
Recall@1/5/10 image->text and text->image on the held-out split, all captions of every image. Datasets: scenes
(generated, their captions), coco / flickr30k (Karpathy split files: `dataset_coco.json`, `dataset_flickr30k.json`,
images under `--image_root`). `--zero_shot scenes|FOLDER` then classifies images zero-shot through the trained text
side (Table 15): one prompt per class name, top-1 accuracy (top-5 over 5 classes) beside the majority-class share;
`--mmvp FOLDER` scores MMVP-VLM's CLIP-blind pairs (`Questions.csv`, `MLLM_VLM Images/`): a pair passes when each
statement is closer to its own image (chance 0.25). Writes output_dir/results.json and model_index.json (for
recipes/export/push_to_hub.py --results); the encoder folder never changes.
"""

from dataclasses import dataclass, field
from pathlib import Path

from modeling_versavit import SentenceEmbedder
from versavit_trainer.config import DefaultConfig, parse_config
from versavit_trainer.data import readers
from versavit_trainer.data.assets import minilm_path
from versavit_trainer.evaluation.probe_runs import load_backbone, write_results
from versavit_trainer.evaluation.retrieval import (
    RetrievalSettings,
    embed_captions,
    evaluate_retrieval,
    retrieval_model,
    statement_pair_accuracy,
    train_retrieval,
    zero_shot_accuracy,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "retrieval_default.yaml"
DATASETS = ("scenes", "coco", "flickr30k")


@dataclass
class RetrievalArguments(RetrievalSettings):
    model: str | None = field(default=None, metadata={"help": "A VersaViT folder (backbone or any checkpoint)."})
    mllm: str | None = field(
        default=None, metadata={"help": "An MLLM folder of any tower family: evaluate its own tower."}
    )
    vision_config: str | None = field(default=None, metadata={"help": "JSON of a random tower (a floor to compare)."})
    dataset: str = field(default="scenes", metadata={"help": f"One of {DATASETS}."})
    split_json: str | None = field(default=None, metadata={"help": "coco / flickr30k: the Karpathy split file."})
    image_root: str | None = field(default=None, metadata={"help": "coco / flickr30k: the folder of the images."})
    train_split: str = field(default="train", metadata={"help": "Karpathy split the head trains on."})
    eval_split: str = field(default="test", metadata={"help": "Karpathy split it is evaluated on."})
    num_scenes: int = field(default=120, metadata={"help": "Generated training scenes (dataset scenes)."})
    num_eval_scenes: int = field(default=48, metadata={"help": "Generated held-out scenes (dataset scenes)."})
    scene_style: str = field(default="simple", metadata={"help": "dataset scenes / zero_shot scenes: simple or "
                                                                    "cluttered."})
    text_model: str | None = field(default=None, metadata={"help": "Sentence-embedding folder (default: the packaged "
                                                                  "all-MiniLM-L6-v2)."})
    zero_shot: str | None = field(default=None, metadata={"help": "Also classify zero-shot with the trained text side: "
                                                                 "'scenes' (largest object's shape) or an "
                                                                 "ImageNet-style folder of class folders."})
    class_names: str | None = field(default=None, metadata={"help": "zero_shot folder: JSON of the class names (a "
                                                                   "list, or a {folder: name} map)."})
    prompt_template: str | None = field(default=None, metadata={"help": "Prompt per class, '{}' for the name (default: "
                                                                       "'a photo of a {}.'; scenes: 'A checkered "
                                                                       "floor with a {}.')."})
    num_classify_scenes: int = field(default=48, metadata={"help": "Generated scenes classified (zero_shot scenes)."})
    mmvp: str | None = field(default=None, metadata={"help": "Also score MMVP-VLM (its folder: Questions.csv and "
                                                            "'MLLM_VLM Images/') with the trained text side."})
    output_dir: str = field(default="outputs/retrieval", metadata={"help": "Where results.json goes."})


def sources(args: RetrievalArguments):
    if args.dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {args.dataset!r}.")
    if args.dataset == "scenes":
        return (readers.scene_captions(args.num_scenes, 5000, camera=None, style=args.scene_style),
                readers.scene_captions(args.num_eval_scenes, 9000, camera=None, style=args.scene_style))
    if not (args.split_json and args.image_root):
        raise ValueError(f"split_json / image_root: {args.dataset} needs its Karpathy split file and image folder.")
    return (readers.karpathy(args.split_json, args.image_root, args.train_split),
            readers.karpathy(args.split_json, args.image_root, args.eval_split))


def run(args: RetrievalArguments) -> dict:
    backbone = load_backbone(args)
    train, held_out = sources(args)
    # every evaluation source is read before the head trains: a bad folder fails in seconds, not after training
    scenes = args.zero_shot == "scenes"
    classes = None if not args.zero_shot else (
        readers.scene_classes(args.num_classify_scenes, 13000, camera=None, style=args.scene_style) if scenes
        else readers.image_folder_classes(args.zero_shot, args.class_names))
    pairs = readers.mmvp_vlm(args.mmvp) if args.mmvp else None
    embedder = SentenceEmbedder(args.text_model or minilm_path())
    settings = RetrievalSettings(**{name: getattr(args, name) for name in RetrievalSettings.__dataclass_fields__})
    model = retrieval_model(backbone, embedder.dim, settings)
    train_texts, train_owners = embed_captions(embedder, train)
    losses = train_retrieval(model, train, train_texts, train_owners, settings)
    eval_texts, eval_owners = embed_captions(embedder, held_out)
    metrics = evaluate_retrieval(model, held_out, eval_texts, eval_owners, args.size)
    metrics["final_loss"] = losses[-1]
    if classes is not None:
        template = args.prompt_template or (readers.SCENE_PROMPT if scenes else "a photo of a {}.")
        metrics["zero_shot"] = zero_shot_accuracy(model, classes, embedder, args.size, template)
        zero_shot = metrics["zero_shot"]
        print(f"zero-shot classification ({classes.name}, {len(classes)} images, {len(classes.class_names)} classes): "
              f"top-1 {zero_shot['top1_accuracy']:.3f} (majority class {zero_shot['majority']:.3f})")
    if pairs is not None:
        metrics["mmvp"] = statement_pair_accuracy(model, pairs, embedder, args.size)
        print(f"MMVP-VLM ({len(pairs)} pairs): pairs passed {metrics['mmvp']['pair_accuracy']:.3f} (chance 0.25)")
    print(f"{args.dataset} retrieval ({len(held_out)} images, {len(eval_owners)} captions): "
          + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith(("image_to", "text_to"))))
    tower = "tower trained" if args.backbone_learning_rate else "tower frozen"
    model_index = [
        {"task_type": "image-text-retrieval", "dataset_type": {"scenes": "versavit-scenes", "coco": "coco",
                                                               "flickr30k": "nlphuji/flickr30k"}[args.dataset],
         "dataset_name": f"{args.dataset} ({args.eval_split if args.dataset != 'scenes' else 'held-out'})",
         "metric_type": key.lower().replace("@", "_at_"), "metric_name": f"{key} ({tower})",
         "metric_value": round(value, 4)}
        for key, value in metrics.items() if key.endswith(("R@1", "R@5", "R@10"))
    ]
    if "zero_shot" in metrics:
        model_index.append({"task_type": "zero-shot-image-classification", "dataset_type": args.zero_shot,
                            "dataset_name": args.zero_shot, "metric_type": "accuracy",
                            "metric_name": f"top-1 accuracy (zero-shot, {tower})",
                            "metric_value": round(metrics["zero_shot"]["top1_accuracy"], 4)})
    if "mmvp" in metrics:
        model_index.append({"task_type": "zero-shot-image-classification", "dataset_type": "MMVP/MMVP_VLM",
                            "dataset_name": "MMVP-VLM", "metric_type": "accuracy",
                            "metric_name": f"pair accuracy (zero-shot, {tower})",
                            "metric_value": round(metrics["mmvp"]["pair_accuracy"], 4)})
    summary = {"encoder": args.model or args.mllm or "random", "dataset": args.dataset, "size": args.size,
               "steps": args.steps, "tower": tower, "text_model": str(embedder.folder), "results": metrics,
               "model_index": model_index}
    return write_results(args.output_dir, summary, model_index)


def main(argv: list[str] | None = None) -> dict:
    default = DefaultConfig(DEFAULT_CONFIG, "retrieval of `make demo`'s backbone (run it first) on generated scenes")
    try:
        (args,) = parse_config((RetrievalArguments,), argv, description=__doc__, default_config=default)
        return run(args)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"eval_retrieval.py: error: {err}") from None


if __name__ == "__main__":
    main()
