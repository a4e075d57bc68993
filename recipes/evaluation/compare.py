#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Compare encoders with the linear-probe suite: a Markdown table in the paper's layout (Table 3) and a figure of
qualitative examples (Figure 4) from your own run.

    python recipes/evaluation/compare.py --encoders mllm:models/Qwen2-VL-7B-Instruct outputs/run/backbone \\
        --names Qwen2-VL-ViT VersaViT --segmentation_dataset ade20k --data_root data/ade --size 560
    python recipes/evaluation/compare.py --encoders outputs/demo/backbone random --size 112      # generated scenes
    python recipes/evaluation/compare.py            # the same: the embedded default, configs/compare_default.yaml

Each encoder (a VersaViT folder, `mllm:<folder>` for an MLLM's own tower, or `random` for a randomly initialised
tower of the first encoder's shape) gets the same segmentation and depth probes
(recipes/evaluation/probe_segmentation.py, probe_depth.py: same data, settings and seed). Writes
output_dir/comparison.md (mIoU ↑ and RMSE ↓ per encoder,
differences to the first encoder in parentheses), comparison.json and examples.png (image, ground truth, each
encoder's probe prediction, for segmentation and depth). `--out_of_task correspondence retrieval classification`
adds the paper's out-of-task columns measured on generated scenes (eval_correspondence.py, eval_retrieval.py).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_versavit import VersaViTModel
from versavit_trainer.config import DefaultConfig, parse_config
from versavit_trainer.core.models import backbone_from
from versavit_trainer.core.reporting import probe_figure
from versavit_trainer.evaluation.out_of_task import OUT_OF_TASK, scene_out_of_task
from versavit_trainer.evaluation.probe_runs import ProbeArguments, sources
from versavit_trainer.evaluation.probes import (
    FrozenFeatures,
    ProbeSettings,
    evaluate_depth_probe,
    evaluate_segmentation_probe,
    train_depth_probe,
    train_segmentation_probe,
)

# (key, column label, higher is better) of each column; the label's {seg} / {depth} name the probe datasets.
COLUMNS = {
    "miou": ("{seg} mIoU ↑", True), "rmse": ("{depth} RMSE ↓", False), "abs_rel": ("{depth} AbsRel ↓", False),
    "correspondence": ("scene correspondence R@10% ↑", True), "retrieval": ("scene retrieval mean R ↑", True),
    "classification": ("scene zero-shot top-1 ↑", True),
}


@dataclass
class CompareArguments:
    encoders: list[str] = field(metadata={"help": "Encoders: VersaViT folders, mllm:<folder>, or random."})
    names: list[str] = field(default_factory=list, metadata={"help": "Row names (default: the encoder arguments)."})
    segmentation_dataset: str = field(default="scenes", metadata={"help": "scenes | ade20k | voc | cityscapes."})
    depth_dataset: str = field(default="scenes", metadata={"help": "scenes | nyuv2 | kitti | stereo_motorcycle."})
    data_root: str | None = field(default=None, metadata={"help": "Root folder of the segmentation dataset."})
    depth_train_split: str = field(default="", metadata={"help": "nyuv2 / kitti: training split file."})
    depth_eval_split: str = field(default="", metadata={"help": "nyuv2 / kitti: evaluation split file."})
    num_scenes: int = field(default=120, metadata={"help": "Generated training scenes."})
    num_eval_scenes: int = field(default=24, metadata={"help": "Generated held-out scenes."})
    num_examples: int = field(default=3, metadata={"help": "Held-out examples in examples.png."})
    out_of_task: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"Out-of-task columns on generated scenes, among {OUT_OF_TASK}: keypoint correspondence between "
            "two views (recall within a tenth of the scale), image-text retrieval (mean of R@1/5/10 both ways; head "
            "trained on the scenes' captions, tower frozen) and zero-shot shape classification through that head "
            "(top-1)."
        },
    )
    output_dir: str = field(default="outputs/compare", metadata={"help": "Where the table and the figure go."})


def load_encoder(spec: str, reference: VersaViTModel | None, seed: int) -> VersaViTModel:
    if spec == "random":
        if reference is None:
            raise ValueError("encoders: 'random' takes the shape of an encoder listed before it.")
        return backbone_from(vision_config=reference.config.vision_config.to_dict(), seed=seed)
    if spec.startswith("mllm:"):
        return backbone_from(mllm=spec.removeprefix("mllm:"), option="encoders", dtype=torch.float32)
    return backbone_from(spec, option="encoders", dtype=torch.float32)


def table(rows: list[dict], segmentation: str, depth: str) -> str:
    """Markdown: a row per encoder, a column per measurement it has (the probes, then any out-of-task ones), each
    later row with its difference to the first (✓ where better)."""
    def cell(value, first, higher_is_better):
        if first is None:
            return f"{value:.3f}"
        delta = value - first
        better = delta > 0 if higher_is_better else delta < 0
        return f"{value:.3f} ({'+' if delta >= 0 else ''}{delta:.3f}{' ✓' if better else ''})"

    keys = [key for key in COLUMNS if key in rows[0]]
    labels = [COLUMNS[key][0].format(seg=segmentation, depth=depth) for key in keys]
    lines = ["| Method | " + " | ".join(labels) + " |", "|---|" + "---|" * len(keys)]
    first = rows[0]
    for index, row in enumerate(rows):
        cells = [cell(row[key], None if index == 0 else first[key], COLUMNS[key][1]) for key in keys]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DEFAULT_CONFIG = DefaultConfig(Path(__file__).resolve().parent.parent / "configs" / "compare_default.yaml",
                               "`make demo`'s backbone (run it first) against a random tower, scenes at 112 px")


def main(argv: list[str] | None = None) -> dict:
    try:
        args, settings = parse_config((CompareArguments, ProbeSettings), argv, description=__doc__,
                                      default_config=DEFAULT_CONFIG)
    except ValueError as err:
        sys.exit(f"compare.py: error: {err}")
    names = args.names or args.encoders
    if len(args.encoders) < 2 or len(names) != len(args.encoders):
        sys.exit("compare.py: error: give two or more --encoders (and as many --names, if any).")
    unknown = [kind for kind in args.out_of_task if kind not in OUT_OF_TASK]
    if unknown:
        sys.exit(f"compare.py: error: out_of_task: {unknown} (choose among {OUT_OF_TASK}).")
    data = ProbeArguments(dataset=args.segmentation_dataset, data_root=args.data_root, num_scenes=args.num_scenes,
                          num_eval_scenes=args.num_eval_scenes)
    try:
        seg_train, seg_eval = sources(data, "segmentation")
        data.dataset, data.train_split, data.eval_split = (
            args.depth_dataset,
            args.depth_train_split,
            args.depth_eval_split,
        )
        depth_train, depth_eval = sources(data, "depth")
        encoders = []
        for spec in args.encoders:
            encoders.append(load_encoder(spec, encoders[0] if encoders else None, settings.seed))
    except (ValueError, OSError) as err:
        sys.exit(f"compare.py: error: {err}")
    count = min(args.num_examples, len(seg_eval), len(depth_eval))
    examples = [(seg_eval.load(i)[0], seg_eval.load(i)[1], depth_eval.load(i)[1]) for i in range(count)]
    rows = []
    for name, encoder in zip(names, encoders):
        features = FrozenFeatures(encoder, settings.size)
        head, _ = train_segmentation_probe(features, seg_train, settings)
        segmentation, seg_predictions = evaluate_segmentation_probe(features, head, seg_eval)
        head, _ = train_depth_probe(features, depth_train, settings)
        depth, depth_predictions = evaluate_depth_probe(features, head, depth_eval)
        rows.append({"name": name, "miou": segmentation["mean_iou"], "rmse": depth["rmse"], "abs_rel": depth["abs_rel"],
                     **scene_out_of_task(encoder, args.out_of_task, settings.size, settings.seed, args.num_scenes,
                                         args.num_eval_scenes),
                     "segmentations": seg_predictions[:count], "depths": depth_predictions[:count]})
        extra = "".join(f"  {kind} {rows[-1][kind]:.4f}" for kind in OUT_OF_TASK if kind in rows[-1])
        print(f"{name}: mIoU {segmentation['mean_iou']:.4f}  RMSE {depth['rmse']:.4f}  AbsRel {depth['abs_rel']:.4f}"
              + extra)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    markdown = table(rows, args.segmentation_dataset, args.depth_dataset)
    (output / "comparison.md").write_text(markdown)
    probe_figure(output / "examples.png", examples, rows)
    summary = {"rows": [{k: v for k, v in row.items() if k not in ("segmentations", "depths")} for row in rows],
               "settings": {"size": settings.size, "resize": settings.resize, "steps": settings.steps,
                            "segmentation": args.segmentation_dataset, "depth": args.depth_dataset,
                            "out_of_task": args.out_of_task}}
    (output / "comparison.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{markdown}\ntable       {output / 'comparison.md'}\nfigure      {output / 'examples.png'}")
    return summary


if __name__ == "__main__":
    main()
