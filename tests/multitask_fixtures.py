"""A tiny multi-task model and three synthetic task streams, shared by the trainer tests and their subprocess runs.

Everything is a function of its seed, so separate processes build identical models and data.
"""

import torch
from conftest import random_inputs, tiny_config
from transformers import LlamaConfig

from modeling_versavit import IGNORE_INDEX, VersaViTForMultiTask
from versavit_trainer import MultiTaskTrainingArguments, TaskSpec

VOCAB = 64
IMAGE_TOKEN = VOCAB - 1
GRID = (4, 4)  # 56x56 images: 16 patches, 4 merged visual tokens
SIDE = 14 * GRID[0]


def tiny_multitask_model(seed: int = 0, family: str = "qwen2_vl",
                         attention_dropout: float = 0.0) -> VersaViTForMultiTask:
    llm = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        attention_dropout=attention_dropout,
    )
    config = tiny_config(family, text_config=llm.to_dict(), image_token_id=IMAGE_TOKEN)
    torch.manual_seed(seed)
    return VersaViTForMultiTask(config)


def _image(config, seed):
    inputs = random_inputs(config, [GRID], seed=seed)
    return inputs["pixel_values"], inputs["image_grid_thw"][0]


def depth_samples(config, count=12, seed=100):
    samples = []
    for i in range(count):
        pixels, grid = _image(config, seed + i)
        generator = torch.Generator().manual_seed(seed + i)
        samples.append(
            {"pixel_values": pixels, "grid": grid, "labels": torch.rand(SIDE, SIDE, generator=generator) + 0.1}
        )
    return samples


def segmentation_samples(config, count=8, seed=200, expressions=2):
    samples = []
    for i in range(count):
        pixels, grid = _image(config, seed + i)
        generator = torch.Generator().manual_seed(seed + i)
        samples.append({
            "pixel_values": pixels,
            "grid": grid,
            "text_embeds": torch.randn(expressions, config.text_embed_dim, generator=generator),
            "labels": (torch.rand(expressions, SIDE, SIDE, generator=generator) < 0.3).float(),
        })
    return samples


def captioning_samples(config, count=6, seed=300, prompt=3, answer=5):
    """Prompt tokens, the 4 image tokens, then a fixed-length answer: every sample has `answer` label tokens."""
    samples = []
    for i in range(count):
        pixels, grid = _image(config, seed + i)
        generator = torch.Generator().manual_seed(seed + i)
        text = torch.randint(2, VOCAB - 1, (prompt + answer,), generator=generator)
        input_ids = torch.cat([text[:prompt], torch.full((4,), IMAGE_TOKEN), text[prompt:]])
        labels = input_ids.clone()
        labels[: prompt + 4] = IGNORE_INDEX
        samples.append({"pixel_values": pixels, "grid": grid, "input_ids": input_ids, "labels": labels})
    return samples


def collate_depth(samples):
    return {
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
        "image_grid_thw": torch.stack([s["grid"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
    }


def collate_segmentation(samples):
    return {
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
        "image_grid_thw": torch.stack([s["grid"] for s in samples]),
        "text_embeds": torch.cat([s["text_embeds"] for s in samples]),
        "expression_image_index": torch.cat([torch.full((len(s["text_embeds"]),), i) for i, s in enumerate(samples)]),
        "labels": torch.cat([s["labels"] for s in samples]),
    }


def collate_captioning(samples):
    return {
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
        "image_grid_thw": torch.stack([s["grid"] for s in samples]),
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "attention_mask": torch.ones(len(samples), samples[0]["input_ids"].shape[0], dtype=torch.long),
        "labels": torch.stack([s["labels"] for s in samples]),
    }


COLLATORS = {"captioning": collate_captioning, "depth": collate_depth, "segmentation": collate_segmentation}
WEIGHTS = {"captioning": 0.2, "depth": 0.5, "segmentation": 0.3}


def task_specs(config, batch_sizes=None, weights=None, order=("captioning", "depth", "segmentation")):
    batch_sizes = batch_sizes or {"captioning": 2, "depth": 2, "segmentation": 2}
    weights = weights or WEIGHTS
    data = {"captioning": captioning_samples(config), "depth": depth_samples(config),
            "segmentation": segmentation_samples(config)}
    return [TaskSpec(name, data[name], COLLATORS[name], batch_sizes[name], weights[name]) for name in order]


def training_args(tmp_path, **overrides) -> MultiTaskTrainingArguments:
    """Arguments of a short, exact (constant lr, no clipping), silent CPU run in `tmp_path / "run"`."""
    defaults = dict(
        output_dir=str(tmp_path / "run"), max_steps=1, learning_rate=1e-3, backbone_learning_rate=1e-4,
        weight_decay=0.01, lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
    )
    return MultiTaskTrainingArguments(**{**defaults, **overrides})
