#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot relative depth of a VersaViT depth model (paper Table 9 style).

    python recipes/evaluation/eval_depth.py --model outputs/demo/final                   # held-out generated scenes
    python recipes/evaluation/eval_depth.py --model outputs/finetune_depth/final --dataset nyuv2 \\
        --split data/nyu/test.txt --space disparity

    python recipes/evaluation/eval_depth.py --model outputs/run/final --dataset da2k --data_root data/DA-2K \\
        --space disparity

Each image is resized at its own aspect ratio, short side `size` and long side the nearest multiple of the tower's patch
x merge, 28 for Qwen2-VL (Depth Anything's protocol: KITTI's 352x1216 is fed at 532x1848, not squashed to a square), the
predicted map upsampled back to the label's size; per image the prediction is aligned to the ground truth by
least-squares scale and shift in the space the model was trained in (its config's `depth_label_space`; `--space`
overrides: disparity is Depth Anything's protocol), then AbsRel and δ1 are taken over the valid pixels (the dataset's
range and crop: Eigen for NYUv2, Garg for KITTI) and averaged over images. DA-2K (Table 9's third column) has no dense
labels: its score is the pairwise accuracy, the share of annotated point pairs whose closer point the prediction (at the
image's size) puts closer, larger disparity or smaller depth per `--space`. Writes output_dir/results.json and
model_index.json (for recipes/export/push_to_hub.py --results).
"""

import sys
from dataclasses import dataclass, field

import PIL.Image
import torch
import torch.nn.functional as F
from transformers import HfArgumentParser

from modeling_versavit import VersaViTForDepthEstimation, fixed_size_pixels
from versavit_trainer.core.models import require_task_weights
from versavit_trainer.data import readers
from versavit_trainer.data.processors import image_processor_for
from versavit_trainer.evaluation.probe_runs import HUB_DATASETS, write_results
from versavit_trainer.evaluation.probes import keep_aspect_size, score_depth_source
from versavit_trainer.metrics import pairwise_depth_order, relative_depth_metrics


@dataclass
class EvalDepthArguments:
    model: str = field(metadata={"help": "A VersaViT folder with a depth head (depth or multi-task checkpoint)."})
    dataset: str = field(default="scenes", metadata={"help": "scenes | nyuv2 | kitti | stereo_motorcycle | da2k."})
    split: str | None = field(default=None, metadata={"help": "nyuv2 / kitti: the split file of evaluation pairs."})
    data_root: str | None = field(default=None, metadata={"help": "da2k: the folder with annotations.json."})
    num_eval_scenes: int = field(default=16, metadata={"help": "Held-out generated scenes (dataset scenes)."})
    size: int = field(default=532, metadata={"help": "Short side of the input, a multiple of the tower's patch x merge "
                                                     "(28 for Qwen2-VL; paper: 532); the long side keeps the image's "
                                                     "aspect ratio."})
    space: str | None = field(
        default=None,
        metadata={"help": "Alignment space of the predictions: depth or disparity. Default: the space the model was "
                          "trained in (its config's depth_label_space)."},
    )
    output_dir: str = field(default="outputs/eval_depth", metadata={"help": "Where results.json goes."})


def source(args: EvalDepthArguments) -> readers.DepthSource:
    if args.dataset == "scenes":  # the same held-out seeds as recipes/multitask.py's before/after metrics
        from versavit_trainer.core.sources import EVAL_SCENE_SEED_OFFSET

        return readers.scene_depth(args.num_eval_scenes, EVAL_SCENE_SEED_OFFSET)
    if args.dataset == "stereo_motorcycle":
        return readers.stereo_motorcycle()
    if args.dataset in ("nyuv2", "kitti"):
        if not args.split:
            raise ValueError(f"split: {args.dataset} needs the split file of its evaluation pairs.")
        return getattr(readers, args.dataset)(args.split)
    if args.dataset == "da2k":
        if not args.data_root:
            raise ValueError("data_root: da2k needs the folder that holds annotations.json.")
        return readers.da2k(args.data_root)
    raise ValueError(f"dataset: expected scenes, nyuv2, kitti, stereo_motorcycle or da2k, got {args.dataset!r}.")


def predict(model, processor, image: PIL.Image.Image, size: int, shape: tuple[int, int]) -> torch.Tensor:
    """The model's map for `image` fed at its own aspect ratio (short side `size`, long side the nearest multiple of
    the tower's patch x merge), resized bilinearly to `shape` (height, width)."""
    shape_in = keep_aspect_size(image.height, image.width, size, model.config.input_size_multiple)
    inputs = fixed_size_pixels([image], shape_in, processor)
    prediction = model(**inputs).predicted_depth[:, None]
    return F.interpolate(prediction, size=shape, mode="bilinear", align_corners=False)[0, 0]


@torch.no_grad()
def evaluate(args: EvalDepthArguments) -> dict:
    require_task_weights(args.model, "depth")
    model = VersaViTForDepthEstimation.from_pretrained(args.model, dtype=torch.float32).eval()
    args.space = args.space or model.config.depth_label_space
    processor = image_processor_for(model.config)
    data = source(args)
    if isinstance(data, readers.PairSource):
        correct = total = 0
        for index in range(len(data)):
            image, pairs = data.load(index)
            try:
                right, count = pairwise_depth_order(predict(model, processor, image, args.size,
                                                            (image.height, image.width)), pairs, args.space)
            except ValueError as err:
                raise ValueError(f"{data.items[index][0]}: {err}") from None
            correct, total = correct + right, total + count
        return {"accuracy": correct / total, "pairs": total, "images": len(data)}
    result, _ = score_depth_source(
        data, lambda image, shape: predict(model, processor, image, args.size, shape),
        lambda prediction, target, mask: relative_depth_metrics(prediction, target, mask=mask, space=args.space))
    return result


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EvalDepthArguments).parse_args_into_dataclasses(args=argv)
    try:
        result = evaluate(args)
    except ValueError as err:
        sys.exit(f"eval_depth.py: error: {err}")
    summary = {"model": args.model, "dataset": args.dataset, "space": args.space, "size": args.size, **result}
    metrics = (("accuracy", "pairwise accuracy (zero-shot)"),) if "accuracy" in result else (
        ("abs_rel", "AbsRel (zero-shot, aligned)"), ("delta1", "δ1 (zero-shot, aligned)"))
    model_index = [{"task_type": "depth-estimation", "dataset_type": HUB_DATASETS[args.dataset],
                    "dataset_name": args.dataset, "metric_type": name, "metric_name": label,
                    "metric_value": round(result[name], 4)} for name, label in metrics]
    if "accuracy" in result:
        print(f"{args.dataset}: pairwise accuracy {result['accuracy']:.4f}  ({result['pairs']} pairs, "
              f"{result['images']} images)")
    else:
        print(f"{args.dataset}: AbsRel {result['abs_rel']:.4f}  δ1 {result['delta1']:.4f}  ({result['images']} images)")
    return write_results(args.output_dir, summary, model_index)


if __name__ == "__main__":
    main()
