#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Linear probes of a frozen encoder (paper §5.1, DINOv3's protocol scaled down): semantic segmentation and metric
depth, on the standard dataset layouts or the generated scenes.

    python recipes/probe.py --model outputs/demo/backbone                       # both probes on generated scenes
    python recipes/probe.py --mllm models/Qwen2-VL-7B-Instruct --task segmentation --dataset ade20k \\
        --data_root data/ade --size 560 --steps 4000 --batch_size 16
    python recipes/probe.py --model outputs/demo/backbone --task depth --dataset nyuv2 \\
        --train_split data/nyu/train.txt --eval_split data/nyu/test.txt

Segmentation: last-layer features -> BatchNorm + dropout + 1x1 conv, bilinear upsampling, cross-entropy, AdamW with
warmup + cosine; sliding-window evaluation, dataset-level mIoU. Depth: the same features -> 256 bins, bin-centre
expectation, scale-invariant log loss; AbsRel / RMSE / δ1 ... with the Eigen (NYUv2) or Garg (KITTI) crop. The
encoder never changes. Writes output_dir/results.json: the metrics, a chance baseline (majority class / median
depth), and `model_index`: the results in the form `recipes/push_to_hub.py --results` takes.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from modeling_versavit import VersaViTConfig, VersaViTModel
from versavit_trainer import readers
from versavit_trainer.probes import (
    FrozenFeatures,
    ProbeSettings,
    chance_depth,
    chance_segmentation,
    evaluate_depth_probe,
    evaluate_segmentation_probe,
    train_depth_probe,
    train_segmentation_probe,
)

SEGMENTATION_DATASETS = {"scenes", "ade20k", "voc", "cityscapes"}
DEPTH_DATASETS = {"scenes", "nyuv2", "kitti", "stereo_motorcycle"}
HUB_DATASETS = {"ade20k": "scene_parse_150", "voc": "pascal_voc", "cityscapes": "cityscapes",
                "nyuv2": "nyu_depth_v2", "kitti": "kitti", "scenes": "versavit-scenes",
                "stereo_motorcycle": "middlebury-stereo"}


@dataclass
class ProbeArguments:
    model: str | None = field(default=None, metadata={"help": "A VersaViT folder (backbone or any checkpoint)."})
    mllm: str | None = field(default=None, metadata={"help": "A Qwen2-VL / Qwen2.5-VL folder: probe its own tower."})
    vision_config: str | None = field(default=None, metadata={"help": "JSON of a random tower (a floor to compare)."})
    task: list[str] = field(default_factory=lambda: ["segmentation", "depth"], metadata={"help": "Probes to run."})
    dataset: str = field(default="scenes", metadata={"help": "scenes | ade20k | voc | cityscapes | nyuv2 | kitti | "
                                                              "stereo_motorcycle (depth only)."})
    data_root: str | None = field(default=None, metadata={"help": "Root folder of a segmentation dataset."})
    train_split: str = field(default="", metadata={"help": "Segmentation: split name (default training / train); "
                                                          "depth: the split file of training pairs."})
    eval_split: str = field(default="", metadata={"help": "Segmentation: split name (default validation / val); "
                                                         "depth: the split file of evaluation pairs."})
    num_scenes: int = field(default=120, metadata={"help": "Generated training scenes (dataset scenes)."})
    num_eval_scenes: int = field(default=24, metadata={"help": "Generated held-out scenes (dataset scenes)."})
    size: int = field(default=224, metadata={"help": "Probe input size, a multiple of 28 (paper: 560 segmentation)."})
    steps: int = field(default=300, metadata={"help": "Optimizer steps of the linear head."})
    batch_size: int = field(default=8, metadata={"help": "Images per step."})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate (warmup, then cosine)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head and the batch order."})
    output_dir: str = field(default="outputs/probe", metadata={"help": "Where results.json goes."})


def load_backbone(args: ProbeArguments) -> VersaViTModel:
    if sum(bool(x) for x in (args.model, args.mllm, args.vision_config)) != 1:
        raise SystemExit("probe.py: error: give exactly one of --model, --mllm, --vision_config.")
    if args.model:
        return VersaViTModel.from_pretrained(args.model, dtype=torch.float32)
    if args.mllm:
        return VersaViTModel.from_mllm(args.mllm, dtype=torch.float32)
    torch.manual_seed(args.seed)
    return VersaViTModel(VersaViTConfig(vision_config=json.loads(args.vision_config)))


def sources(args: ProbeArguments, task: str):
    name = args.dataset
    if task == "segmentation":
        if name not in SEGMENTATION_DATASETS:
            raise SystemExit(f"probe.py: error: dataset {name!r} has no segmentation labels ({sorted(SEGMENTATION_DATASETS)}).")
        if name == "scenes":
            return readers.scene_segmentation(args.num_scenes, 5000), readers.scene_segmentation(args.num_eval_scenes, 9000)
        reader = {"ade20k": readers.ade20k, "voc": readers.pascal_voc, "cityscapes": readers.cityscapes}[name]
        train_default, eval_default = ("training", "validation") if name == "ade20k" else ("train", "val")
        return (reader(args.data_root, args.train_split or train_default),
                reader(args.data_root, args.eval_split or eval_default))
    if name not in DEPTH_DATASETS:
        raise SystemExit(f"probe.py: error: dataset {name!r} has no depth labels ({sorted(DEPTH_DATASETS)}).")
    if name == "scenes":
        return readers.scene_depth(args.num_scenes, 5000), readers.scene_depth(args.num_eval_scenes, 9000)
    if name == "stereo_motorcycle":  # one real image: a check that the probe fits real data, not a benchmark
        source = readers.stereo_motorcycle()
        return source, source
    reader = {"nyuv2": readers.nyuv2, "kitti": readers.kitti}[name]
    return reader(args.train_split), reader(args.eval_split)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ProbeArguments).parse_args_into_dataclasses(args=argv)
    backbone = load_backbone(args)
    settings = ProbeSettings(size=args.size, steps=args.steps, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, seed=args.seed)
    features = FrozenFeatures(backbone, args.size)
    results, model_index = {}, []
    for task in args.task:
        train, held_out = sources(args, task)
        if task == "segmentation":
            head, losses = train_segmentation_probe(features, train, settings)
            metrics, _ = evaluate_segmentation_probe(features, head, held_out)
            metrics["chance_mean_iou"] = chance_segmentation(held_out)["mean_iou"]
            print(f"{args.dataset} segmentation probe: mIoU {metrics['mean_iou']:.4f} "
                  f"(majority class {metrics['chance_mean_iou']:.4f})")
            card = [("image-segmentation", "mean_iou", "mIoU (linear probe)", metrics["mean_iou"])]
        else:
            head, losses = train_depth_probe(features, train, settings)
            metrics, _ = evaluate_depth_probe(features, head, held_out)
            metrics["chance"] = chance_depth(train, held_out)
            print(f"{args.dataset} depth probe: AbsRel {metrics['abs_rel']:.4f} RMSE {metrics['rmse']:.4f} "
                  f"δ1 {metrics['delta1']:.4f} (median depth: AbsRel {metrics['chance']['abs_rel']:.4f}, "
                  f"RMSE {metrics['chance']['rmse']:.4f})")
            card = [("depth-estimation", "rmse", "RMSE (linear probe)", metrics["rmse"]),
                    ("depth-estimation", "abs_rel", "AbsRel (linear probe)", metrics["abs_rel"])]
        metrics["final_loss"] = losses[-1]
        results[task] = metrics
        model_index += [{"task_type": task_type, "dataset_type": HUB_DATASETS[args.dataset], "dataset_name": args.dataset,
                         "metric_type": metric, "metric_name": label, "metric_value": round(value, 4)}
                        for task_type, metric, label, value in card]
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    summary = {"encoder": args.model or args.mllm or "random", "dataset": args.dataset, "size": args.size,
               "steps": args.steps, "results": results, "model_index": model_index}
    (output / "results.json").write_text(json.dumps(summary, indent=2))
    (output / "model_index.json").write_text(json.dumps(model_index, indent=2))
    print(f"results     {output / 'results.json'}\nmodel index {output / 'model_index.json'}  "
          "(recipes/push_to_hub.py --results)")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
