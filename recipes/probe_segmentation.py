#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Linear semantic-segmentation probe of a frozen encoder (paper §5.1, Table 3; DINOv3's protocol scaled down).

    python recipes/probe_segmentation.py              # the embedded default: configs/probe_default.yaml
    python recipes/probe_segmentation.py --model outputs/demo/backbone --size 112          # generated scenes
    python recipes/probe_segmentation.py --mllm models/Qwen2-VL-7B-Instruct --dataset ade20k --data_root data/ade \\
        --size 560 --steps 4000 --batch_size 16

Last-layer patch features (raster order) -> BatchNorm + dropout + 1x1 conv -> bilinear upsampling -> cross-entropy,
AdamW with warmup + cosine; evaluated with a sliding window (windows of `size`, 2/3 stride) and dataset-level mIoU.
Datasets: scenes (5 classes), ade20k (ADEChallengeData2016 layout), voc (VOC2012), cityscapes (labelTrainIds).
Writes output_dir/results.json (mIoU, per-class IoU, a majority-class baseline) and model_index.json (for
recipes/push_to_hub.py --results). The encoder never changes.
"""

import sys
from pathlib import Path

from versavit_trainer.config import DefaultConfig, parse_config
from versavit_trainer.probes import ProbeArguments, run_probes

DEFAULT_CONFIG = DefaultConfig(Path(__file__).resolve().parent / "configs" / "probe_default.yaml",
                               "the segmentation probe of `make demo`'s backbone (run it first) on generated scenes at 112 px")


def main(argv: list[str] | None = None) -> dict:
    try:
        (args,) = parse_config((ProbeArguments,), argv, description=__doc__, default_config=DEFAULT_CONFIG)
        return run_probes(args, ["segmentation"])
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"probe_segmentation.py: error: {err}")


if __name__ == "__main__":
    main()
