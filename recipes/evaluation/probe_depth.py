#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Linear metric-depth probe of a frozen encoder (paper §5.1, Table 3; DINOv3's protocol scaled down).

    python recipes/evaluation/probe_depth.py              # the embedded default: configs/probe_default.yaml
    python recipes/evaluation/probe_depth.py --model outputs/demo/backbone                        # generated scenes
    python recipes/evaluation/probe_depth.py --model outputs/demo/backbone --dataset stereo_motorcycle   # a real image
    python recipes/evaluation/probe_depth.py --config recipes/configs/probe_paper.yaml \\
        --mllm models/Qwen2-VL-7B-Instruct \\
        --dataset nyuv2 --train_split data/nyu/train.txt --eval_split data/nyu/test.txt

Each image is fed at the dataset's own resolution, its sides rounded to multiples of 28 (the paper; NYUv2's 480x640
at 476x644); `--size` is the segmentation probes'. Last-layer patch features -> BatchNorm + 1x1 conv to 256 depth
bins (linear centres over the dataset's range) -> softmax-weighted sum of the centres -> bilinear upsampling ->
scale-invariant log loss (λ = 0.85), AdamW with warmup + cosine. Evaluated per image on valid pixels: AbsRel,
Sq-Rel, RMSE, RMSE-log, log10, δ1-3, with the Eigen crop (NYUv2,
≤ 10 m) or the Garg crop (KITTI, ≤ 80 m). stereo_motorcycle (scikit-image's real Middlebury pair) trains and
evaluates on its one image's disparity: a check that the probe fits real data, not a benchmark. Writes
output_dir/results.json (with a median-depth baseline) and model_index.json. The encoder never changes.
"""

from pathlib import Path

from versavit_trainer.evaluation.probe_runs import probe_recipe

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "probe_default.yaml"


def main(argv: list[str] | None = None) -> dict:
    return probe_recipe("depth", argv, __doc__, DEFAULT_CONFIG)


if __name__ == "__main__":
    main()
