#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Linear semantic-segmentation probe of a frozen encoder (paper §5.1, Table 3; DINOv3's protocol scaled down).

    python recipes/evaluation/probe_segmentation.py              # the embedded default: configs/probe_default.yaml
    python recipes/evaluation/probe_segmentation.py --model outputs/demo/backbone --size 112          # generated scenes
    python recipes/evaluation/probe_segmentation.py --config recipes/configs/probe_paper.yaml \\
        --mllm models/Qwen2-VL-7B-Instruct \\
        --data_root data/ade         # the paper: 560x560; DINOv3's optimiser settings

Last-layer patch features (raster order) -> BatchNorm + dropout + 1x1 conv -> bilinear upsampling -> cross-entropy,
AdamW with warmup + cosine; dataset-level mIoU at each image's original size. Training and evaluation see the images
through one rule: `--resize square` (the paper: the image squashed to `size` x `size`) or `short_side` (DINOv3: short
side `size`, windows of `size` at a 2/3 stride, their logits averaged in evaluation).
Datasets: scenes (5 classes), ade20k (ADEChallengeData2016 layout), voc (VOC2012), cityscapes (labelTrainIds).
Writes output_dir/results.json (mIoU, per-class IoU, a majority-class baseline) and model_index.json (for
recipes/export/push_to_hub.py --results). The encoder never changes.
"""

from pathlib import Path

from versavit_trainer.evaluation.probe_runs import probe_recipe

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "probe_default.yaml"


def main(argv: list[str] | None = None) -> dict:
    return probe_recipe("segmentation", argv, __doc__, DEFAULT_CONFIG)


if __name__ == "__main__":
    main()
