"""Tiny Qwen2-VL / Qwen2.5-VL MLLMs saved to disk, shared by the from_mllm and export tests."""

import json

import torch
from conftest import QWEN2_VISION, QWEN25_VISION
from safetensors.torch import load_file, save_file
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

TINY_TEXT = {
    "vocab_size": 128,
    "hidden_size": 48,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "rope_parameters": {"rope_type": "default", "mrope_section": [4, 4, 4], "rope_theta": 10000.0},
}
MLLMS = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration, QWEN2_VISION),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, QWEN25_VISION),
}


# Special tokens inside the tiny vocabulary, so that generate() can run with an image.
IMAGE_TOKENS = {"image_token_id": 127, "video_token_id": 126, "vision_start_token_id": 125, "vision_end_token_id": 124}


def save_tiny_mllm(family, folder, shard_size="100KB", vision=None, **text):
    """A random tiny MLLM of `family` saved (sharded) to `folder`; `vision` / `text` override the tower's / LLM's
    config."""
    config_class, model_class, tower = MLLMS[family]
    torch.manual_seed(0)
    config = config_class(text_config={**TINY_TEXT, **text}, vision_config={**tower, **(vision or {})}, **IMAGE_TOKENS)
    mllm = model_class(config).eval()
    mllm.save_pretrained(folder, max_shard_size=shard_size)
    return mllm


def rename_keys(folder, rename):
    """Rewrite every shard and the index of a saved checkpoint with `rename(key)` applied to each tensor name."""
    index_file = folder / "model.safetensors.index.json"
    shards = sorted(folder.glob("*.safetensors"))
    for shard in shards:
        save_file({rename(k): v for k, v in load_file(shard).items()}, shard, metadata={"format": "pt"})
    if index_file.exists():
        index = json.loads(index_file.read_text())
        index["weight_map"] = {rename(k): v for k, v in index["weight_map"].items()}
        index_file.write_text(json.dumps(index))


def v5_naming(key: str) -> str:
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model."):
        return "model.language_model." + key.removeprefix("model.")
    return key
