#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Pseudo-label depth with any transformers depth-estimation checkpoint (paper §4.2.2: Depth-Anything-V2-Large).

    python recipes/data/label_depth.py --model path/to/Depth-Anything-V2-Large-hf --images photos/ \\
        --output_dir depth_ds/

Writes the depth task dataset (columns image, depth, depth_scale, depth_space, source; see versavit_trainer.data),
the model's output stored as a 16-bit map with its scale, at each image's own size. `--space` says what the model
outputs: Depth Anything's relative models give disparity (default; 0 is the sky and far field, kept as a valid
label), metric models give depth (0 is a hole). Resumable: rerunning with the same settings skips finished shards
(other settings are refused). Unreadable images are skipped and counted.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Features, Value
from transformers import AutoImageProcessor, AutoModelForDepthEstimation, HfArgumentParser

from modeling_versavit import load_image
from versavit_trainer.data.labelling import Skip, list_images, process_device, run_sharded, stored_image
from versavit_trainer.data.schemas import DEPTH_FEATURES, DEPTH_SPACE_COLUMN, encode_depth

FEATURES = Features({**DEPTH_FEATURES, DEPTH_SPACE_COLUMN: Value("string"), "source": Value("string")})


@dataclass
class LabelDepthArguments:
    model: str = field(metadata={"help": "Local folder of a depth-estimation checkpoint and its image processor."})
    images: str = field(metadata={"help": "Folder of images (searched recursively)."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    batch_size: int = field(default=8, metadata={"help": "Images per forward pass."})
    shard_size: int = field(default=256, metadata={"help": "Images per saved (and resumable) shard."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Torch device."})
    space: str = field(default="disparity", metadata={"help": "What the model outputs: disparity (Depth Anything's "
                                                               "relative models) or depth (metric models)."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(LabelDepthArguments).parse_args_into_dataclasses(args=argv)
    args.device = process_device(args.device)  # this process's GPU under a launcher
    if args.space not in ("depth", "disparity"):
        sys.exit(f"label_depth.py: error: space: expected 'depth' or 'disparity', got {args.space!r}.")
    processor = AutoImageProcessor.from_pretrained(args.model)
    model = AutoModelForDepthEstimation.from_pretrained(args.model).to(args.device).eval()
    root = Path(args.images)

    @torch.inference_mode()
    def label(paths):
        results, loaded = [None] * len(paths), []
        for i, path in enumerate(paths):
            try:
                loaded.append((i, load_image(path)))
            except (OSError, ValueError) as err:
                results[i] = Skip("unreadable image", str(err))
        if loaded:
            images = [image for _, image in loaded]
            inputs = processor(images=images, return_tensors="pt").to(args.device)
            outputs = model(**inputs)
            sizes = [(image.height, image.width) for image in images]
            for (i, image), result in zip(loaded, processor.post_process_depth_estimation(outputs, target_sizes=sizes)):
                depth = result["predicted_depth"].float().cpu().numpy()
                if not (np.isfinite(depth) & (depth > 0)).any():  # nothing but holes, or all sky
                    results[i] = Skip("no valid depth")
                    continue
                stored, scale = encode_depth(depth, args.space)
                source = str(paths[i].relative_to(root))
                results[i] = {"image": stored_image(paths[i], image, source), "depth": stored, "depth_scale": scale,
                              DEPTH_SPACE_COLUMN: args.space, "source": source}
        return results

    return run_sharded(list_images(root), label, args.output_dir, FEATURES, args.shard_size, args.batch_size, "depth",
                       settings=vars(args))


if __name__ == "__main__":
    main(sys.argv[1:])
