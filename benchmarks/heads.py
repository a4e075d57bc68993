#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The dense heads against their transformers peers, forward + backward.

Depth: `VersaViTForDepthEstimation` (Qwen2-VL tower, DPT head, SSI + gradient-matching loss) against transformers'
`DepthAnythingForDepthEstimation` (a DINOv2 tower of the same width and depth, the same DPT neck and head on the same
layers) trained with a plain L1 loss, on the same images. The loss alone (ours against L1 on the same prediction) is
timed too, so its share of the step is visible.

Segmentation: `VersaViTForReferringSegmentation` with N expressions per image in one forward against N forwards of
one expression each (the peer: a head that takes one prompt per backbone pass). One pass should cost the backbone
once and the decoder N times.

    python benchmarks/heads.py                   # 6 blocks x 384 (ViT-S width), Depth Anything Small's head
    python benchmarks/heads.py --depth 12        # ViT-S depth
"""

import argparse

import torch
import torch.nn.functional as F
from common import DPT_FACTORS, DPT_NECK, dense_config, dense_inputs, dense_size_arguments, measure
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from modeling_versavit import VersaViTConfig, VersaViTForDepthEstimation, VersaViTForReferringSegmentation
from modeling_versavit.losses_versavit import depth_loss, depth_validity, gradient_matching_loss, ssi_loss


def depth_anything(config: VersaViTConfig, side: int) -> DepthAnythingForDepthEstimation:
    backbone = Dinov2Config(
        hidden_size=config.embed_dim, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.vision_config.num_heads, patch_size=14, image_size=side,
        out_indices=list(config.depth_layer_indices), reshape_hidden_states=False, apply_layernorm=True,
    )
    backbone._attn_implementation = "sdpa"  # the same kernels as ours (Depth Anything itself only lists eager)
    peer = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=config.embed_dim, patch_size=14,
        neck_hidden_sizes=DPT_NECK, reassemble_factors=DPT_FACTORS, fusion_hidden_size=64, head_hidden_size=32,
    )
    model = DepthAnythingForDepthEstimation(peer)
    assert model.backbone.config._attn_implementation == "sdpa", model.backbone.config._attn_implementation
    return model


def depth(args):
    torch.manual_seed(0)
    config = dense_config(args)
    ours = VersaViTForDepthEstimation._from_config(config, attn_implementation="sdpa").train()
    peer = depth_anything(config, args.side).train()
    inputs = dense_inputs(config, args)
    images = torch.randn(args.batch, 3, args.side, args.side)
    labels = torch.rand(args.batch, args.side, args.side) + 0.1
    prediction = torch.rand(args.batch, args.side, args.side, requires_grad=True)

    def peer_step():
        F.l1_loss(peer(pixel_values=images).predicted_depth, labels).backward()

    def our_step():
        ours(**inputs, labels=labels).loss.backward()

    def our_step_with_merger():  # before: the tower also ran its PatchMerger, whose output dense features discard
        ours._pre_merger_tokens = lambda pixels, grid, **kwargs: ours.visual(pixels, grid_thw=grid, **kwargs)
        try:
            our_step()
        finally:
            del ours._pre_merger_tokens

    def l1_loss():
        F.l1_loss(prediction, labels).backward()

    def ssi_gm_loss():
        depth_loss(prediction, labels)[0].backward()

    def ssi_gm_separately():  # before: each term normalised both maps again (two medians per map)
        valid = depth_validity(labels)
        (ssi_loss(prediction, labels, valid) + 0.5 * gradient_matching_loss(prediction, labels, valid)).backward()

    times = measure({"peer": peer_step, "ours": our_step, "ours_with_merger": our_step_with_merger, "l1": l1_loss,
                     "ssi_gm": ssi_gm_loss, "ssi_gm_separately": ssi_gm_separately}, args.repeats)
    params = {
        name: sum(p.numel() for p in model.parameters()) / 1e6 for name, model in (("ours", ours), ("peer", peer))
    }
    print(f"\nDepth, {args.batch} images of {args.side} px, forward + backward "
          f"(VersaViT {params['ours']:.1f}M parameters, Depth Anything {params['peer']:.1f}M)")
    print(f"  DepthAnythingForDepthEstimation + L1 (peer) {times['peer'] * 1e3:8.1f} ms")
    ratio = times["ours"] / times["peer"]
    print(f"  VersaViTForDepthEstimation + SSI/GM loss    {times['ours'] * 1e3:8.1f} ms   ratio {ratio:.3f}")
    print(f"    the same, the tower's merger run (before) {times['ours_with_merger'] * 1e3:8.1f} ms   ratio "
          f"{times['ours_with_merger'] / times['peer']:.3f}")
    print(f"  loss alone: L1 {times['l1'] * 1e3:.2f} ms, SSI + GM {times['ssi_gm'] * 1e3:.2f} ms "
          f"({times['ssi_gm'] / times['ours']:.1%} of our step); the two terms normalising separately (before) "
          f"{times['ssi_gm_separately'] * 1e3:.2f} ms")
    return times


def segmentation(args):
    torch.manual_seed(0)
    config = dense_config(args)
    model = VersaViTForReferringSegmentation._from_config(config, attn_implementation="sdpa").train()
    inputs = dense_inputs(config, args)
    print(f"\nSegmentation, {args.batch} images of {args.side} px, N expressions per image, forward + backward")
    print(f"  {'N':>3} {'one pass':>10} {'N passes (peer)':>16} {'ratio':>7} {'one pass / N=1':>15}")
    single = None
    for n in args.expressions:
        embeds = torch.randn(args.batch, n, config.text_embed_dim)
        labels = (torch.rand(args.batch * n, args.side, args.side) < 0.3).float()
        per_pass = labels.view(args.batch, n, args.side, args.side)

        def one_pass():
            model(**inputs, text_embeds=embeds, labels=labels).loss.backward()

        def n_passes():
            for k in range(n):
                (model(**inputs, text_embeds=embeds[:, k], labels=per_pass[:, k]).loss / n).backward()

        times = measure({"one": one_pass, "peer": n_passes}, args.repeats)
        single = single or times["one"]
        print(
            f"  {n:>3} {times['one'] * 1e3:8.1f} ms {times['peer'] * 1e3:13.1f} ms {times['one'] / times['peer']:7.3f} "
            f"{times['one'] / single:15.2f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dense_size_arguments(parser)
    parser.add_argument("--expressions", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"tower {args.depth} blocks x {args.embed_dim}, sdpa attention, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    depth(args)
    segmentation(args)


if __name__ == "__main__":
    main()
