#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Step time of the dense tasks per input resolution: what dynamic resolution (`depth_resolutions`,
`segmentation_resolutions`) costs, so a run can be budgeted.

For each size of a set, a training step (forward + backward, the task's loss) of `VersaViTForDepthEstimation` and of
`VersaViTForReferringSegmentation` (4 expressions per image) on a batch at that size. The peer is the same step at
the fixed size (dynamic resolution off), timed interleaved in the same run; the ratio is per step and per pixel.

    python benchmarks/resolution.py      # 6 blocks x 384, the CPU sets (224 px and three aspect ratios)
    python benchmarks/resolution.py --depth 32 --embed_dim 1280 --size 532 \\
        --resolutions 532x532 448x644 644x448 364x784          # the paper variant's depth set, on a GPU machine
"""

import argparse

import torch
from common import dense_config, dense_size_arguments, measure

from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation
from versavit_trainer.data.processors import parse_resolutions


def batch_inputs(config, batch: int, height: int, width: int) -> dict:
    grid = [1, height // config.patch_size, width // config.patch_size]
    return {"pixel_values": torch.randn(batch * grid[1] * grid[2], config.patch_dim),
            "image_grid_thw": torch.tensor([grid] * batch)}


def steps(model, task: str, batch: int, sizes: list[tuple[int, int]], text_embed_dim: int, expressions: int = 4):
    """A training step of `model` at each size, keyed by `HxW`."""
    functions = {}
    for height, width in sizes:
        inputs = batch_inputs(model.config, batch, height, width)
        if task == "depth":
            inputs["labels"] = torch.rand(batch, height, width) + 0.1
        else:
            inputs["text_embeds"] = torch.randn(batch, expressions, text_embed_dim)
            inputs["labels"] = (torch.rand(batch * expressions, height, width) < 0.3).float()

        def step(inputs=inputs):
            model(**inputs).loss.backward()

        functions[f"{height}x{width}"] = step
    return functions


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dense_size_arguments(parser)
    parser.add_argument("--size", type=int, default=224, help="the fixed size (the peer), a multiple of 28")
    parser.add_argument("--resolutions", nargs="+", default=["224x224", "196x252", "252x196", "168x308"],
                        help="the resolution set, HEIGHTxWIDTH multiples of 28")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = parse_resolutions(args.resolutions, "--resolutions")
    fixed = (args.size, args.size)
    sizes = [fixed] + [s for s in sizes if s != fixed]
    config = dense_config(args)
    print(f"tower {args.depth} blocks x {args.embed_dim}, sdpa attention, {args.batch} images per batch, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; peer: the fixed {args.size}x{args.size} step")
    for task, cls in (("depth", VersaViTForDepthEstimation), ("segmentation", VersaViTForReferringSegmentation)):
        torch.manual_seed(0)
        model = cls._from_config(config, attn_implementation="sdpa").train()
        times = measure(steps(model, task, args.batch, sizes, config.text_embed_dim), args.repeats)
        base = times[f"{args.size}x{args.size}"]
        print(f"\n{task} step (forward + backward)")
        print(f"  {'size':>14} {'pixels':>8} {'ms':>9} {'ratio':>7} {'ratio per pixel':>16}")
        for height, width in sizes:
            key = f"{height}x{width}"
            pixels = height * width / (args.size**2)
            label = f"{key} (peer)" if (height, width) == fixed else key
            print(f"  {label:>14} {height * width:8d} {times[key] * 1e3:9.1f} {times[key] / base:7.3f} "
                  f"{times[key] / base / pixels:16.3f}")


if __name__ == "__main__":
    main()
