#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The GPU check, in one run: what the training path does on an accelerator, against that accelerator's own peers.

    python benchmarks/gpu.py            # CUDA: Qwen2-VL-7B's tower (32 x 1280), a frozen Qwen3-1.7B-sized LLM
    python benchmarks/gpu.py --smoke    # tiny sizes on whatever device there is (CI runs it on the CPU)
    make gpu-check                      # the same as the first line

Measures, printing each beside its peer:
  1. peak      the device's bf16 matmul throughput: the best of square GEMMs (the peer of every FLOP figure)
  2. step      one multi-task step (captioning through the frozen LLM, depth, segmentation; tower, projector and heads
               train) under bf16 autocast, for each attention implementation available (sdpa; flash_attention_2 where
               flash-attn is installed): seconds, model FLOPs (torch.utils.flop_counter, forward + backward) and
               model FLOPs utilisation = FLOPs / (seconds x peak)
  3. memory    peak allocated memory of that step (CUDA) against the plan's estimate for the same batches
               (`memory_estimate`, one process)
  4. agreement a 3-step multi-task run of a tiny model on the device in bf16 against the CPU in float32: the per-task
               losses of every step agree within bf16 tolerance (exit code 1 when they do not)

The step is a hand-written loop over pre-built random batches (no data loading), with the trainer's optimizer
groups; random weights (nothing is downloaded), so only speed, memory and agreement are read, never loss values.
"""

import argparse
import importlib.util
import sys
import time

import torch
from common import count_flops, task_batches, tower_config
from transformers import LlamaConfig

from modeling_versavit import VersaViTConfig, VersaViTForMultiTask
from versavit_trainer.core.arguments import apply_stage
from versavit_trainer.parts import training_parts

BF16_TOLERANCE = 3e-2  # relative, per task loss: bf16 keeps 8 bits of mantissa (~4e-3 per rounding)
TASKS = ("captioning", "depth", "segmentation")
IMAGE_TOKEN = 1023  # the last row of the benchmark LLM's 1024-token vocabulary


def sizes(smoke: bool) -> dict:
    if smoke:
        return {"tower": tower_config(3, 64), "llm": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                          num_attention_heads=4, num_key_value_heads=2),
                "side": 56, "batch": 1, "gemm": 256, "neck": [16, 32, 64], "fusion": 16}
    return {"tower": tower_config(32, 1280, 16),  # Qwen2-VL-7B's tower
            "llm": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                        num_key_value_heads=8, head_dim=128),  # Qwen3-1.7B's sizes
            "side": 448, "batch": 4, "gemm": 8192, "neck": [256, 512, 1024], "fusion": 256}


def build(size: dict, attn_implementation: str = "sdpa", vocab: int = 1024) -> VersaViTForMultiTask:
    llm = LlamaConfig(vocab_size=vocab, tie_word_embeddings=False, **size["llm"])
    depth = size["tower"]["depth"]
    config = VersaViTConfig(
        vision_config=size["tower"], text_config=llm.to_dict(), image_token_id=IMAGE_TOKEN, text_embed_dim=384,
        depth_layer_indices=[depth // 3, 2 * depth // 3, depth], depth_neck_hidden_sizes=size["neck"],
        depth_fusion_hidden_size=size["fusion"],
    )
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    return VersaViTForMultiTask(config)


def optimizer_for(model) -> torch.optim.Optimizer:
    """AdamW over what the multi-task stage trains with the LLM frozen (the trainer's groups: tower + projector at
    the backbone rate, heads at the base rate)."""
    rates = dict.fromkeys(training_parts(model), 1e-4) | {"backbone": 1e-5, "projector": 1e-5, "language_model": None}
    apply_stage(model, rates)
    groups = [{"params": [p for p in module.parameters() if p.requires_grad], "lr": rates[part]}
              for part, module in training_parts(model).items() if rates[part] is not None]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)


def step(model, optimizer, data, autocast: bool) -> dict[str, float]:
    """One optimizer step over one batch of each task (λ = 1/3 each); the per-task losses."""
    losses = {}
    for task, batch in data.items():
        with torch.autocast(batch["pixel_values"].device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(task=task, **batch).loss
        (loss / len(data)).backward()
        losses[task] = loss.item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return losses


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_peak(device, size: int, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def measure_step(size, attn_implementation, device, repeats: int) -> dict:
    model = build(size, attn_implementation).to(device)
    model.activation_checkpointing_enable() if device.type == "cuda" else None
    model.train()
    optimizer = optimizer_for(model)
    data = task_batches(model.config, size["side"], size["batch"], IMAGE_TOKEN, device)
    step(model, optimizer, data, autocast=True)  # warm-up: kernels, optimizer state
    flops = count_flops(lambda: step(model, optimizer, data, autocast=True))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step(model, optimizer, data, autocast=True)
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None
    return {"seconds": sorted(times)[len(times) // 2], "flops": flops, "peak_gib": peak, "model": model}


def planned_memory(model, size, checkpointing: bool) -> float:
    from versavit_trainer.core.options import DataArguments
    from versavit_trainer.core.plan import memory_estimate

    side = size["side"]
    data_args = DataArguments(tasks=list(TASKS), depth_size=side, segmentation_size=side,
                              caption_max_pixels=max(side * side, 56 * 56), num_eval_scenes=0)
    return memory_estimate(model, data_args, 1, True, "ddp", checkpointing, list(TASKS),
                           dict.fromkeys(TASKS, size["batch"]))["total_gib"]


def agreement(device, steps: int = 3) -> float:
    """The largest relative difference between the per-task losses of `steps` steps of a tiny model in bf16 on
    `device` and in float32 on the CPU."""
    tiny = sizes(smoke=True)
    runs = []
    for where, autocast in ((torch.device("cpu"), False), (device, True)):
        model = build(tiny).to(where)
        model.train()
        optimizer = optimizer_for(model)
        data = task_batches(model.config, tiny["side"], 2, IMAGE_TOKEN, where)
        runs.append([step(model, optimizer, data, autocast) for _ in range(steps)])
    return max(abs(b[t] - a[t]) / abs(a[t]) for a, b in zip(*runs) for t in TASKS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU check CI runs)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", type=int, default=None, help="image side in pixels (a multiple of 28)")
    parser.add_argument("--batch", type=int, default=None, help="images per task batch")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        print("No CUDA device: running the smoke sizes on the CPU (--smoke). The GPU numbers need a GPU.")
        args.smoke = True
    size = sizes(args.smoke)
    size.update({k: v for k, v in (("side", args.side), ("batch", args.batch)) if v is not None})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    tower = size["tower"]
    print(f"device {name}; tower {tower['depth']} x {tower['embed_dim']}, LLM {size['llm']['num_hidden_layers']} x "
          f"{size['llm']['hidden_size']} (frozen), {size['side']} px, batch {size['batch']} per task, torch "
          f"{torch.__version__}")

    peak = bf16_peak(device, size["gemm"])
    print(f"\n1. peak      bf16 GEMM {size['gemm']}^2: {peak / 1e12:.2f} TFLOP/s (the peer of the MFU below)")
    implementations = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    print("2. step      (multi-task step, bf16 autocast; model FLOPs utilisation against the peak above)")
    measured = {}
    for implementation in implementations:
        result = measure_step(size, implementation, device, args.repeats)
        measured[implementation] = result
        mfu = result["flops"] / (result["seconds"] * peak)
        print(f"   {implementation:<18} {result['seconds'] * 1e3:9.1f} ms/step  {result['flops'] / 1e12:8.3f} TFLOP  "
              f"MFU {mfu:.1%}")
    if len(implementations) == 1:
        print("   flash_attention_2  not installed (pip install flash-attn): sdpa only")
    else:
        ratio = measured["flash_attention_2"]["seconds"] / measured["sdpa"]["seconds"]
        print(f"   ratio flash_attention_2 / sdpa: {ratio:.2f}")

    sdpa = measured["sdpa"]
    plan = planned_memory(sdpa["model"], size, checkpointing=device.type == "cuda")
    if sdpa["peak_gib"] is not None:
        print(f"3. memory    peak allocated {sdpa['peak_gib']:.2f} GiB; the plan's estimate {plan:.2f} GiB "
              f"(ratio {sdpa['peak_gib'] / plan:.2f})")
    else:
        print(f"3. memory    the plan's estimate {plan:.2f} GiB; peak allocated is measured on CUDA only")

    worst = agreement(device)
    verdict = "within" if worst <= BF16_TOLERANCE else "OUTSIDE"
    print(f"4. agreement tiny model, 3 steps, bf16 on {device.type} vs float32 on the CPU: largest relative loss "
          f"difference {worst:.2e}, {verdict} the bf16 tolerance {BF16_TOLERANCE:g}")
    return 0 if worst <= BF16_TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
