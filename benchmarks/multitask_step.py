#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Overhead of MultiTaskTrainer's step against the plain loop it replaces (peer: a hand-written loop).

Both sides use the same model, the same batches (the schedule's first rounds, collated beforehand, so data loading
is out of the comparison) and the same AdamW with two learning rates:

    plain loop:  for each task: forward, (λ · loss).backward();  optimizer.step(); zero_grad()
    trainer:     MultiTaskTrainer.train() over the same batches (its dataloader replaced by the pre-collated list)

Prints seconds per optimizer step of each and their ratio; the target is a ratio under 1.05.

    python benchmarks/multitask_step.py [--steps 20] [--depth 6] [--embed_dim 384] [--side 224]
"""

import argparse
import tempfile
import time

import torch
from common import task_batches, tower_config  # noqa: E402
from transformers import LlamaConfig

from modeling_versavit import VersaViTConfig, VersaViTForMultiTask  # noqa: E402
from versavit_trainer import MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec  # noqa: E402
from versavit_trainer.core.arguments import apply_stage
from versavit_trainer.parts import training_parts


def build(args):
    vision = tower_config(args.depth, args.embed_dim)
    llm = LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    config = VersaViTConfig(
        vision_config=vision, text_config=llm.to_dict(), image_token_id=1023, text_embed_dim=384,
        depth_neck_hidden_sizes=[64, 128, 256], depth_fusion_hidden_size=64,
    )
    torch.manual_seed(0)
    return VersaViTForMultiTask(config)


def plain_loop(model, data, weights, steps, warmup):
    apply_stage(model, dict.fromkeys(training_parts(model), 1.0))
    model.train()
    groups = [
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)], "lr": lr}
        for prefix, lr in (
            (("visual.", "projector.", "language_model."), 1e-5),
            (("depth_head.", "segmentation_head."), 1e-4),
        )
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)  # what the Trainer's default optim builds
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        for task, batch in data.items():
            (weights[task] * model(task=task, **batch).loss).backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - start) / steps


class _Batches(torch.utils.data.Dataset):
    def __init__(self, data, steps):
        self.items = [dict(batch, task=task, num_skipped=0) for _ in range(steps) for task, batch in data.items()]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


class _TimedTrainer(MultiTaskTrainer):
    """The trainer with its dataloader replaced by pre-collated batches, timing steps after the warm-up."""

    def __init__(self, *args, warmup, prepared, **kwargs):
        super().__init__(*args, **kwargs)
        self.warmup, self.prepared, self.step_times = warmup, prepared, []

    def get_train_dataloader(self):
        return torch.utils.data.DataLoader(self.prepared, batch_size=None, shuffle=False)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if inputs["task"] == self.tasks[0].name:
            self.step_times.append(time.perf_counter())
        return super().training_step(model, inputs, num_items_in_batch)


def trainer_loop(model, data, weights, steps, warmup):
    tasks = [TaskSpec(task, [None], lambda x: x, 1, weights[task]) for task in data]
    with tempfile.TemporaryDirectory() as out:
        args = MultiTaskTrainingArguments(
            output_dir=out, max_steps=warmup + steps, learning_rate=1e-4, backbone_learning_rate=1e-5,
            weight_decay=0.0, lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=10**9,
            save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        )
        trainer = _TimedTrainer(model, args, tasks, warmup=warmup, prepared=_Batches(data, warmup + steps))
        start = time.perf_counter()
        trainer.train()
        end = time.perf_counter()
    times = trainer.step_times[warmup:] + [end]
    return (times[-1] - times[0]) / steps if len(times) > 1 else (end - start) / (warmup + steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--embed_dim", type=int, default=384)
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    weights = {"captioning": 1 / 3, "depth": 1 / 3, "segmentation": 1 / 3}
    model = build(args)
    data = task_batches(model.config, args.side, args.batch, image_token=1023)
    # Alternate the two measurements so machine noise hits both alike.
    plain, ours = [], []
    for _ in range(2):
        plain.append(plain_loop(model, data, weights, args.steps, args.warmup))
        ours.append(trainer_loop(model, data, weights, args.steps, args.warmup))
    plain_s, ours_s = min(plain), min(ours)
    print(f"model: tower depth {args.depth}, width {args.embed_dim}, images {args.side}px, batch {args.batch} per task")
    print(f"plain loop (peer):  {plain_s * 1000:8.1f} ms / step")
    print(f"MultiTaskTrainer:   {ours_s * 1000:8.1f} ms / step")
    print(f"ratio trainer / plain loop: {ours_s / plain_s:.3f}  (target < 1.05)")


if __name__ == "__main__":
    main()
