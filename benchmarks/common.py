# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What the benchmark scripts share: interleaved timing, the embedded default run's model and data, the CPU's
measured GEMM peak and a FLOP count of a training step.

Every script times VersaViT against a named peer in the same process and prints the ratio, so the figures hold on
a noisy machine.
"""

import statistics
import time
from pathlib import Path

import torch

from modeling_versavit import VersaViTConfig

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "recipes" / "configs" / "default.yaml"


def measure(functions: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable; the callables run interleaved, so machine noise hits all of them alike."""
    times = {name: [] for name in functions}
    for _ in range(warmup):
        for function in functions.values():
            function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def default_run(extra_args: list[str] = ()):
    """The embedded default run (`recipes/configs/default.yaml`): model, tokenizer, task specs and arguments, built
    by the same functions as `recipes/multitask.py`. `extra_args` are recipe flags that override the file."""
    from transformers import set_seed

    from versavit_trainer.config import parse_config
    from versavit_trainer.core.models import build_model
    from versavit_trainer.core.options import run_argument_types
    from versavit_trainer.core.sources import load_data, task_specs

    model_args, _lora_args, data_args, run_args, training_args = parse_config(
        run_argument_types(), ["--config", str(DEFAULT_CONFIG), "--output_dir", "/tmp/versavit-bench", *extra_args]
    )
    set_seed(training_args.seed)
    data = load_data(data_args, with_eval=False)
    model, tokenizer = build_model(model_args, data_args.curriculum_tasks, data.text_embed_dim)
    specs = task_specs(data_args, data.train, tokenizer, training_args.seed)
    return model, tokenizer, specs, data_args, training_args


def tower_config(depth: int, embed_dim: int, num_heads: int | None = None) -> dict:
    """A Qwen2-VL vision tower of `depth` blocks of width `embed_dim` (64-d heads unless `num_heads` is given)."""
    return {"model_type": "qwen2_vl_vision", "depth": depth, "embed_dim": embed_dim,
            "num_heads": num_heads or embed_dim // 64, "hidden_size": 2 * embed_dim}


def task_batches(config, side: int, batch: int, image_token: int, device="cpu") -> dict[str, dict]:
    """One random batch per multi-task objective at `side` pixels, as the collators give them: captioning (16 prompt
    tokens, the image's `image_token`s, 32 answer tokens; token ids below `image_token`), depth, and segmentation
    (two 384-d expressions per image)."""
    grid = side // config.patch_size
    generator = torch.Generator().manual_seed(0)

    def images():
        return {"pixel_values": torch.randn(batch * grid * grid, config.patch_dim, generator=generator),
                "image_grid_thw": torch.tensor([[1, grid, grid]] * batch)}

    prompt, answer, visual = 16, 32, grid * grid // config.spatial_merge_size**2
    ids = torch.randint(2, image_token, (batch, prompt + visual + answer), generator=generator)
    ids[:, prompt:prompt + visual] = image_token
    labels = ids.clone()
    labels[:, :prompt + visual] = -100
    side = grid * config.patch_size
    data = {
        "captioning": {**images(), "input_ids": ids, "labels": labels},
        "depth": {**images(), "labels": torch.rand(batch, side, side, generator=generator) + 0.1},
        "segmentation": {**images(), "text_embeds": torch.randn(2 * batch, 384, generator=generator),
                         "expression_image_index": torch.arange(batch).repeat_interleave(2),
                         "labels": (torch.rand(2 * batch, side, side, generator=generator) < 0.3).float()},
    }
    return {task: {k: v.to(device) for k, v in values.items()} for task, values in data.items()}


# Depth Anything (V2) Small's first three neck widths, fusion 64, head 32: the dense benchmarks' DPT head.
DPT_NECK = [48, 96, 192]
DPT_FACTORS = [4, 2, 1]


def dense_size_arguments(parser, depth: int = 6, embed_dim: int = 384, side: int = 224, batch: int = 2) -> None:
    """The options of the dense-head benchmarks: tower size, image side and images per batch."""
    parser.add_argument("--depth", type=int, default=depth, help="tower blocks (at least 3: the DPT reads three)")
    parser.add_argument("--embed_dim", type=int, default=embed_dim, help="tower width (64-d heads)")
    parser.add_argument("--side", type=int, default=side, help="image side in pixels (a multiple of 28)")
    parser.add_argument("--batch", type=int, default=batch, help="images per batch")


def dense_config(args) -> VersaViTConfig:
    """A VersaViT config with `args.depth` x `args.embed_dim` tower, a Depth-Anything-Small-sized DPT head on three
    uniformly spaced layers, and 384-d text embeddings (MiniLM's width) for the segmentation head."""
    if args.depth < 3:
        raise SystemExit(
            f"--depth: the DPT head reads three distinct layers, so the tower needs at least 3 blocks, got {args.depth}"
        )
    return VersaViTConfig(
        vision_config=tower_config(args.depth, args.embed_dim),
        depth_layer_indices=[args.depth // 3, 2 * args.depth // 3, args.depth], depth_neck_hidden_sizes=DPT_NECK,
        depth_reassemble_factors=DPT_FACTORS, depth_fusion_hidden_size=64, depth_head_hidden_size=32,
        text_embed_dim=384,
    )


def dense_inputs(config, args) -> dict:
    """`args.batch` random images of `args.side` pixels as the model takes them."""
    grid = args.side // config.patch_size
    return {"pixel_values": torch.randn(args.batch * grid * grid, config.patch_dim),
            "image_grid_thw": torch.tensor([[1, grid, grid]] * args.batch)}


def dense_run(description: str, repeats: int = 5, models: bool = False):
    """Parse the dense benchmarks' options (sizes, `--repeats`, and with `models` the choice `--models both|backbone`),
    seed, and build their config and inputs: `(args, config, inputs)`."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    dense_size_arguments(parser)
    parser.add_argument("--repeats", type=int, default=repeats)
    if models:
        parser.add_argument("--models", choices=("both", "backbone"), default="both",
                            help="the backbone and the depth model, or the backbone only")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = dense_config(args)
    return args, config, dense_inputs(config, args)


def first_batch(spec) -> dict:
    """The first training batch of a task stream, collated by the task's collator (the model's forward arguments)."""
    return spec.collator([spec.dataset[i] for i in range(spec.batch_size)])


def batch_images(batch: dict) -> int:
    return int(batch["image_grid_thw"].shape[0])


def gemm_peak(size: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """This machine's measured matmul throughput (FLOP/s): the best of `repeats` square `size` GEMMs."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def count_flops(function) -> int:
    """FLOPs of the matmuls, convolutions and attention `function` runs, forward and backward
    (`torch.utils.flop_counter`, which counts a multiply-add as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()
