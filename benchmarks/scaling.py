#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Step time of the backbone (forward + backward) against image size and images per batch, dynamic resolution.

Attention must stay per image: B images of T tokens should cost about B times one image (linear in B), not what
one image of B x T tokens costs (quadratic attention across images). Peers, timed in the same run:
  - images per batch: B separate single-image passes (the cost of no batching at all);
  - cross-image attention: the same tokens packed as one tall image (what attention across the batch would cost).
Then time per token against tokens per image, which grows only through each image's own attention.

    python benchmarks/scaling.py [--embed_dim 384 --depth 4 --repeats 5]
"""

import argparse

import torch
from common import measure, tower_config

from modeling_versavit import VersaViTConfig, VersaViTModel


def inputs_for(config, grids):
    grid = torch.tensor([[1, h, w] for h, w in grids])
    return {"pixel_values": torch.randn(int(grid.prod(-1).sum()), config.patch_dim), "image_grid_thw": grid}


def step(model, inputs):
    def run():
        maps = model.get_dense_features(**inputs, layers=[-1], stack=False)[0]
        sum(m.sum() for m in maps).backward()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed_dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--side", type=int, default=16, help="patch grid side of the images-per-batch sweep")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    vision = tower_config(args.depth, args.embed_dim)
    model = VersaViTModel(VersaViTConfig(vision_config=vision)).train()
    config = model.config
    print(f"tower {args.depth} blocks x {args.embed_dim}, {config.vision_config._attn_implementation} attention, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; forward + backward of get_dense_features")

    side = args.side
    single = measure({"one": step(model, inputs_for(config, [(side, side)]))}, args.repeats)["one"]
    print(f"\nImages per batch ({side}x{side} patches each): time / (B x one image), against the same tokens as one "
          "tall image (cross-image attention)")
    print(f"{'B':>3}{'tokens':>8}{'batch ms':>10}{'/ B x one':>11}{'one tall image ms':>19}{'batch / tall':>14}")
    for count in (1, 2, 4, 8):
        batch = inputs_for(config, [(side, side)] * count)
        tall = inputs_for(config, [(side * count, side)])
        times = measure({"batch": step(model, batch), "tall": step(model, tall)}, args.repeats)
        print(
            f"{count:>3}{count * side * side:>8}{times['batch'] * 1e3:>10.1f}{times['batch'] / (count * single):>11.2f}"
            f"{times['tall'] * 1e3:>19.1f}{times['batch'] / times['tall']:>14.2f}"
        )

    print("\nTokens per image (one image per batch): time per token, relative to the smallest")
    print(f"{'grid':>8}{'tokens':>8}{'ms':>10}{'us / token':>12}{'relative':>10}")
    first = None
    for grid_side in (8, 16, 24, 32):
        seconds = measure({"one": step(model, inputs_for(config, [(grid_side, grid_side)]))}, args.repeats)["one"]
        per_token = seconds / grid_side**2
        first = first or per_token
        print(f"{grid_side}x{grid_side:<5}{grid_side**2:>8}{seconds * 1e3:>10.1f}{per_token * 1e6:>12.1f}"
              f"{per_token / first:>10.2f}")

    mixed = [(8, 12), (16, 16), (24, 8), (12, 20), (4, 6)]
    batch = inputs_for(config, mixed)
    separate = [step(model, inputs_for(config, [grid])) for grid in mixed]
    times = measure({"batch": step(model, batch), "separate": lambda: [run() for run in separate]}, args.repeats)
    tokens = sum(h * w for h, w in mixed)
    print(
        f"\nDynamic-resolution batch {mixed} ({tokens} tokens): {times['batch'] * 1e3:.1f} ms, against "
        f"{times['separate'] * 1e3:.1f} ms for the images one by one (ratio {times['batch'] / times['separate']:.2f})"
    )


if __name__ == "__main__":
    main()
