#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Achieved FLOP/s of the training step against this machine's measured GEMM peak (the CPU roofline).

Peer: a square fp32 matmul (`--gemm_size`, default 2048) timed in the same run, the best this CPU does on dense
math. Ours: each task's training forward + backward at the embedded default config (`recipes/configs/default.yaml`,
frozen parts frozen as the run freezes them), its FLOPs counted by `torch.utils.flop_counter` (matmuls,
convolutions, attention; a multiply-add counts 2) and its median time. Recipe flags after the options override
the config, e.g. a wider tower:

    python benchmarks/roofline.py
    python benchmarks/roofline.py \\
        --vision_config '{model_type: qwen2_vl_vision, depth: 4, embed_dim: 768, num_heads: 12, hidden_size: 1536}' \\
        --head_config '{depth_layer_indices: [2, 3, 4]}'
"""

import argparse
import tempfile

import torch
from common import batch_images, count_flops, default_run, first_batch, gemm_peak, measure

from versavit_trainer import MultiTaskTrainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gemm_size", type=int, default=2048)
    args, recipe_flags = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as out:
        model, _, specs, _, training_args = default_run(["--output_dir", out, "--report_to", "none", *recipe_flags])
        MultiTaskTrainer(model, training_args, specs)  # freezes what the run freezes
        model.train()
        peak = gemm_peak(args.gemm_size)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GEMM peak ({args.gemm_size}^2 fp32): "
              f"{peak / 1e9:.1f} GFLOP/s")
        print(f"{'task':<14}{'images':>7}{'GFLOP':>9}{'ms':>9}{'GFLOP/s':>10}{'of peak':>9}")
        total_flops = total_seconds = 0.0
        for spec in specs:
            batch = first_batch(spec)

            def step():
                model(task=spec.name, **batch).loss.backward()

            flops = count_flops(step)
            seconds = measure({"step": step}, args.repeats)["step"]
            model.zero_grad(set_to_none=True)
            total_flops += flops
            total_seconds += seconds
            print(f"{spec.name:<14}{batch_images(batch):>7}{flops / 1e9:>9.2f}{seconds * 1e3:>9.1f}"
                  f"{flops / seconds / 1e9:>10.1f}{flops / seconds / peak:>9.1%}")
            if spec.name == "captioning":
                every_position_logits(model, batch, args.repeats)
        print(f"{'multi-task':<14}{'':>7}{total_flops / 1e9:>9.2f}{total_seconds * 1e3:>9.1f}"
              f"{total_flops / total_seconds / 1e9:>10.1f}{total_flops / total_seconds / peak:>9.1%}")


def every_position_logits(model, inputs: dict, repeats: int) -> None:
    """Before: the LLM computed every position's vocabulary logits and its own loss. Timed against the selected
    logits on the same batch by hiding `logits_to_keep` from the captioning forward (its path for LLMs without it)."""

    def step():
        model(task="captioning", **inputs).loss.backward()

    selected = measure({"step": step}, repeats)["step"]
    forward = model.language_model.forward
    model.language_model.forward = lambda **kwargs: forward(**kwargs)  # signature without logits_to_keep
    try:
        flops = count_flops(step)
        every = measure({"step": step}, repeats)["step"]
    finally:
        del model.language_model.forward
    model.zero_grad(set_to_none=True)
    label = "  before: all logits"
    print(
        f"{label:<21}{flops / 1e9:>9.2f}{every * 1e3:>9.1f}   (every position; selected / all: {selected / every:.2f})"
    )


if __name__ == "__main__":
    main()
