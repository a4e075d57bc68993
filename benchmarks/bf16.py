#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""bf16 autocast on the CPU against fp32 (peer: fp32, same model, weights and batches, interleaved).

What `make reproduce` and the demo spend their time on, each task's training forward + backward of the embedded
default (`recipes/configs/default.yaml`: 4 x 192 tower, SmolLM2-135M frozen, the two dense heads) and the frozen
tower's feature pass the probes make, in fp32 and under `torch.autocast("cpu", torch.bfloat16)` (what
`--bf16 true` runs on a CPU), plus the frozen LLM stored in bf16. Prints ms per call and the ratio bf16 / fp32
(below 1: bf16 is faster), beside this machine's GEMM peak in both dtypes.

    python benchmarks/bf16.py [--repeats 5] [recipe flags, e.g. --num_scenes 24]
"""

import argparse
import contextlib
import tempfile

import torch
from common import default_run, first_batch, gemm_peak, measure

from versavit_trainer import MultiTaskTrainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args, recipe_flags = parser.parse_known_args()
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    with tempfile.TemporaryDirectory() as out:
        model, _, specs, _, training_args = default_run(["--output_dir", out, "--report_to", "none", *recipe_flags])
        MultiTaskTrainer(model, training_args, specs)  # freezes what the run freezes (the LLM)
        model.train()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GEMM peak (1024^2): fp32 "
              f"{gemm_peak(1024) / 1e9:.0f} GFLOP/s, bf16 {gemm_peak(1024, dtype=torch.bfloat16) / 1e9:.0f} GFLOP/s")
        print(f"{'training forward + backward':<34}{'fp32 ms':>9}{'bf16 ms':>9}{'bf16 / fp32':>12}")
        totals = {"fp32": 0.0, "bf16": 0.0}
        batches = {spec.name: first_batch(spec) for spec in specs}
        for name, batch in batches.items():
            def step(context):
                def run():
                    with context():
                        loss = model(task=name, **batch).loss
                    loss.backward()
                    model.zero_grad(set_to_none=True)
                return run

            times = measure({"fp32": step(contextlib.nullcontext), "bf16": step(autocast)}, args.repeats)
            totals = {k: totals[k] + times[k] for k in totals}
            print(f"  {name:<32}{times['fp32'] * 1e3:>9.1f}{times['bf16'] * 1e3:>9.1f}"
                  f"{times['bf16'] / times['fp32']:>12.2f}")
        print(f"  {'multi-task round':<32}{totals['fp32'] * 1e3:>9.1f}{totals['bf16'] * 1e3:>9.1f}"
              f"{totals['bf16'] / totals['fp32']:>12.2f}")
        if "captioning" in batches:
            batch = batches["captioning"]
            llm = model.language_model

            def bf16_weights():
                with autocast():
                    loss = model(task="captioning", **batch).loss
                loss.backward()
                model.zero_grad(set_to_none=True)

            def fp32_step():
                model(task="captioning", **batch).loss.backward()
                model.zero_grad(set_to_none=True)

            fp32 = measure({"fp32": fp32_step}, args.repeats)["fp32"]
            llm.to(torch.bfloat16)  # frozen: stored in bf16 once, no per-call weight casts
            stored = measure({"bf16": bf16_weights}, args.repeats)["bf16"]
            llm.to(torch.float32)
            label = "captioning, LLM stored in bf16"
            print(f"  {label:<32}{fp32 * 1e3:>9.1f}{stored * 1e3:>9.1f}{stored / fp32:>12.2f}")
        tower = model.visual
        images = batches.get("depth") or next(iter(batches.values()))

        def features(context):
            def run():
                with torch.no_grad(), context():
                    tower(images["pixel_values"], grid_thw=images["image_grid_thw"])
            return run

        times = measure({"fp32": features(contextlib.nullcontext), "bf16": features(autocast)}, args.repeats)
        print(f"{'frozen tower (probe features)':<34}{times['fp32'] * 1e3:>9.1f}{times['bf16'] * 1e3:>9.1f}"
              f"{times['bf16'] / times['fp32']:>12.2f}")


if __name__ == "__main__":
    main()
