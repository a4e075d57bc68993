# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What probe_segmentation.py and probe_depth.py share: their options (`ProbeArguments`), the encoder and the data they
name, running the probes and writing the results (`probe_recipe`)."""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_versavit import VersaViTModel

from ..core.models import backbone_from
from ..data import readers
from .probes import (
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
                "stereo_motorcycle": "middlebury-stereo", "da2k": "depth-anything/DA-2K"}


@dataclass
class ProbeArguments(ProbeSettings):
    """The probe settings, the encoder and the data of probe_segmentation.py / probe_depth.py."""

    model: str | None = field(default=None, metadata={"help": "A VersaViT folder (backbone or any checkpoint)."})
    mllm: str | None = field(
        default=None, metadata={"help": "An MLLM folder of any tower family: probe its own tower."}
    )
    vision_config: str | None = field(default=None, metadata={"help": "JSON of a random tower (a floor to compare)."})
    dataset: str = field(default="scenes", metadata={"help": "scenes | ade20k | voc | cityscapes | nyuv2 | kitti | "
                                                              "stereo_motorcycle (depth only)."})
    data_root: str | None = field(default=None, metadata={"help": "Root folder of a segmentation dataset."})
    train_split: str = field(default="", metadata={"help": "Segmentation: split name (default training / train); "
                                                          "depth: the split file of training pairs."})
    eval_split: str = field(default="", metadata={"help": "Segmentation: split name (default validation / val); "
                                                         "depth: the split file of evaluation pairs."})
    num_scenes: int = field(default=120, metadata={"help": "Generated training scenes (dataset scenes)."})
    num_eval_scenes: int = field(default=24, metadata={"help": "Generated held-out scenes (dataset scenes)."})
    output_dir: str = field(default="outputs/probe", metadata={"help": "Where results.json goes."})


def probe_settings(args: ProbeSettings) -> ProbeSettings:
    """The plain `ProbeSettings` of recipe arguments that extend it."""
    return ProbeSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ProbeSettings)})


def load_backbone(args: ProbeArguments) -> VersaViTModel:
    if sum(bool(x) for x in (args.model, args.mllm, args.vision_config)) != 1:
        raise ValueError("encoder: give exactly one of model, mllm, vision_config.")
    return backbone_from(args.model, args.mllm, args.vision_config, option="encoder", seed=args.seed,
                         dtype=torch.float32)


def sources(args: ProbeArguments, task: str):
    name = args.dataset
    if task == "segmentation":
        if name not in SEGMENTATION_DATASETS:
            raise ValueError(
                f"dataset: {name!r} has no segmentation labels (choose among {sorted(SEGMENTATION_DATASETS)})."
            )
        if name == "scenes":
            return readers.scene_segmentation(args.num_scenes, 5000), readers.scene_segmentation(
                args.num_eval_scenes, 9000
            )
        if not args.data_root:
            raise ValueError(f"data_root: {name} needs the folder that holds the dataset.")
        reader = {"ade20k": readers.ade20k, "voc": readers.pascal_voc, "cityscapes": readers.cityscapes}[name]
        train_default, eval_default = ("training", "validation") if name == "ade20k" else ("train", "val")
        return (reader(args.data_root, args.train_split or train_default),
                reader(args.data_root, args.eval_split or eval_default))
    if name not in DEPTH_DATASETS:
        raise ValueError(f"dataset: {name!r} has no depth labels (choose among {sorted(DEPTH_DATASETS)}).")
    if name == "scenes":
        return readers.scene_depth(args.num_scenes, 5000), readers.scene_depth(args.num_eval_scenes, 9000)
    if name == "stereo_motorcycle":  # one real image: a check that the probe fits real data, not a benchmark
        source = readers.stereo_motorcycle()
        return source, source
    reader = {"nyuv2": readers.nyuv2, "kitti": readers.kitti}[name]
    if not (args.train_split and args.eval_split):
        raise ValueError(
            f"train_split / eval_split: {name} needs the split files of its training and evaluation pairs."
        )
    return reader(args.train_split), reader(args.eval_split)


def probe_recipe(task: str, argv: list[str] | None, description: str, default_config: Path) -> dict:
    """The body of probe_segmentation.py / probe_depth.py: parse the options (with `default_config` when no
    --config is given), run the `task` probe, and exit with the error's message when it fails."""
    from ..config import DefaultConfig, parse_config

    default = DefaultConfig(default_config, f"the {task} probe of `make demo`'s backbone (run it first) on "
                                            "generated scenes")
    try:
        (args,) = parse_config((ProbeArguments,), argv, description=description, default_config=default)
        return run_probes(args, [task])
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"probe_{task}.py: error: {err}") from None


def run_probes(args: ProbeArguments, tasks: list[str]) -> dict:
    """Train and evaluate the probes of `tasks` on `args.dataset`; writes `results.json` and `model_index.json`."""
    backbone = load_backbone(args)
    settings = probe_settings(args)
    features = FrozenFeatures(backbone, args.size)
    results, model_index = {}, []
    for task in tasks:
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
        model_index += [
            {
                "task_type": task_type,
                "dataset_type": HUB_DATASETS[args.dataset],
                "dataset_name": args.dataset,
                "metric_type": metric,
                "metric_name": label,
                "metric_value": round(value, 4),
            }
            for task_type, metric, label, value in card
        ]
    summary = {"encoder": args.model or args.mllm or "random", "dataset": args.dataset, "size": args.size,
               "resize": args.resize, "depth_resolution": "native", "steps": args.steps, "results": results,
               "model_index": model_index}
    return write_results(args.output_dir, summary, model_index)


def write_results(output_dir, summary: dict, model_index: list[dict]) -> dict:
    """`results.json` (the summary) and `model_index.json` (the model card's results, for push_to_hub --results)."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(summary, indent=2))
    (output / "model_index.json").write_text(json.dumps(model_index, indent=2))
    print(f"results     {output / 'results.json'}\nmodel index {output / 'model_index.json'}  "
          "(recipes/export/push_to_hub.py --results)")
    return summary


__all__ = [
    "DEPTH_DATASETS",
    "HUB_DATASETS",
    "ProbeArguments",
    "SEGMENTATION_DATASETS",
    "load_backbone",
    "probe_recipe",
    "probe_settings",
    "run_probes",
    "sources",
    "write_results",
]
