#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Overhead of VersaViTModel's wrapping and dense-feature API against the transformers Qwen2-VL vision tower it wraps
(peer: `Qwen2VisionTransformerPretrainedModel`, same weights, same inputs).

Three forward+backward passes per batch, interleaved and repeated, median time each:
    peer:           tower(pixel_values, grid_thw).last_hidden_state            -> sum().backward()
    forward:        VersaViTModel(pixel_values, image_grid_thw).last_hidden_state (input checks included)
    dense features: VersaViTModel.get_dense_features(layers=[-1])  (raster reordering included)
on a dynamic-resolution batch (images of different sizes) and a fixed-resolution dense batch. Prints tokens/s and
each path's time relative to the peer; the target is under 1.03. Then the patch embedding alone: VersaViT's
`MatmulPatchEmbed` against the tower's Conv3d with the same weight.

    python benchmarks/backbone_throughput.py                      # 1280-d (Qwen2-VL-7B width), 2 blocks
    python benchmarks/backbone_throughput.py --embed_dim 32 --depth 3 --num_heads 4   # the tests' tiny size
"""

import argparse

import torch
from common import measure, tower_config
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

from modeling_versavit import VersaViTConfig, VersaViTModel


def passes(model: VersaViTModel, tower, inputs: dict):
    def peer():
        tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).last_hidden_state.sum().backward()

    def forward():
        model(**inputs).last_hidden_state.sum().backward()

    def dense():
        sum(m.sum() for m in model.get_dense_features(**inputs, layers=[-1], stack=False)[0]).backward()

    return {"peer (transformers tower)": peer, "VersaViTModel.forward": forward, "get_dense_features": dense}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed_dim", type=int, default=1280)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    vision = tower_config(args.depth, args.embed_dim, args.num_heads)
    model = VersaViTModel(VersaViTConfig(vision_config=vision, depth_layer_indices=[args.depth] * 3))
    attention = model.visual.config._attn_implementation  # the same kernels on both sides
    tower = Qwen2VisionTransformerPretrainedModel._from_config(
        model.config.vision_config, attn_implementation=attention
    )
    tower.load_state_dict(model.visual.state_dict())
    batches = {
        "dynamic (16x20, 12x12, 20x16 patches)": [(16, 20), (12, 12), (20, 16)],
        "dense (4 x 16x16 patches)": [(16, 16)] * 4,
    }
    print(f"tower {args.depth} blocks x {args.embed_dim}, attention {attention} (peer: "
          f"{tower.config._attn_implementation}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    for label, grids in batches.items():
        grid = torch.tensor([[1, h, w] for h, w in grids])
        tokens = int(grid.prod(-1).sum())
        inputs = {"pixel_values": torch.randn(tokens, model.config.patch_dim), "image_grid_thw": grid}
        times = measure(passes(model, tower, inputs), args.repeats)
        peer = times["peer (transformers tower)"]
        print(f"\n{label}: {tokens} tokens, forward + backward")
        for name, seconds in times.items():
            print(f"  {name:<28}{seconds * 1e3:9.1f} ms  {tokens / seconds:10.0f} tokens/s  ratio {seconds / peer:.3f}")

    # The patch embedding alone: VersaViT's matmul against the tower's Conv3d (the same weight), forward + backward.
    patches = torch.randn(1024, model.config.patch_dim)
    times = measure({
        "Conv3d (transformers tower)": lambda: tower.patch_embed(patches).sum().backward(),
        "MatmulPatchEmbed": lambda: model.visual.patch_embed(patches).sum().backward(),
    }, args.repeats)
    conv = times["Conv3d (transformers tower)"]
    print("\npatch embedding, 1024 patches, forward + backward")
    for name, seconds in times.items():
        print(f"  {name:<28}{seconds * 1e3:9.1f} ms  ratio {seconds / conv:.3f}")


if __name__ == "__main__":
    main()
