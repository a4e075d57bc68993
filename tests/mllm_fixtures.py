"""Tiny MLLMs of every tower family that one ships in (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, LFM2-VL, PaliGemma,
InternVL; AIMv2 ships as a dual encoder, not an MLLM) saved to disk, shared by the from_mllm and export tests."""

import json

import torch
from conftest import (
    INTERNVIT_VISION,
    QWEN2_VISION,
    QWEN3VL_VISION,
    QWEN25_VISION,
    QWEN35_VISION,
    SIGLIP2_VISION,
    SIGLIP_VISION,
)
from safetensors.torch import load_file, save_file
from transformers import (
    InternVLConfig,
    InternVLForConditionalGeneration,
    Lfm2VlConfig,
    Lfm2VlForConditionalGeneration,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
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
# Qwen3-VL / Qwen3.5 LLMs: explicit head_dim; Qwen3.5's are hybrid (gated-delta-net linear attention layers).
QWEN3_TEXT = {**TINY_TEXT, "head_dim": 24}
QWEN35_TEXT = {
    **QWEN3_TEXT,
    "num_hidden_layers": 2,
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 8,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 2,
    "layer_types": ["linear_attention", "full_attention"],
    "rope_parameters": {**TINY_TEXT["rope_parameters"], "partial_rotary_factor": 0.5},
}
# LFM2-VL (a SigLIP2 NaFlex tower without its pooling head, a pixel-unshuffle projector, a hybrid conv / attention
# LLM): the MLLM of the SigLIP2 family.
LFM2_TEXT = {"vocab_size": 128, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "layer_types": ["conv", "full_attention"],
             "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
# PaliGemma (a fixed-resolution SigLIP tower, 64 px here: 16 image tokens; a Gemma LLM): the MLLM of the SigLIP family.
GEMMA_TEXT = {"model_type": "gemma", "vocab_size": 128, "hidden_size": 48, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 24,
              "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
# InternVL (an InternViT tower, 64 px here: 16 patches pixel-shuffled into 4 image tokens; a Qwen2 LLM).
QWEN2_TEXT = {"model_type": "qwen2", "vocab_size": 128, "hidden_size": 48, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "bos_token_id": 0,
              "eos_token_id": 1}
# family: (MLLM config class, MLLM class, tower config, LLM config)
MLLMS = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration, QWEN2_VISION, TINY_TEXT),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, QWEN25_VISION, TINY_TEXT),
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration, QWEN3VL_VISION, QWEN3_TEXT),
    "qwen3_5": (Qwen3_5Config, Qwen3_5ForConditionalGeneration, QWEN35_VISION, QWEN35_TEXT),
    "siglip2": (Lfm2VlConfig, Lfm2VlForConditionalGeneration, {**SIGLIP2_VISION, "vision_use_head": False}, LFM2_TEXT),
    "siglip": (PaliGemmaConfig, PaliGemmaForConditionalGeneration, {**SIGLIP_VISION, "vision_use_head": False},
               GEMMA_TEXT),
    "internvit": (InternVLConfig, InternVLForConditionalGeneration, INTERNVIT_VISION, QWEN2_TEXT),
}
QWEN_MLLMS = sorted(family for family in MLLMS if family.startswith("qwen"))


# Special tokens inside the tiny vocabulary, so that generate() can run with an image (LFM2-VL: the image token only).
IMAGE_TOKENS = {"image_token_id": 127, "video_token_id": 126, "vision_start_token_id": 125, "vision_end_token_id": 124}
MLLM_TOKENS = {family: IMAGE_TOKENS for family in MLLMS} | {
    "siglip2": {"image_token_id": 127, "projector_hidden_size": 32},
    "siglip": {"image_token_index": 127, "projection_dim": 48},
    "internvit": {"image_token_id": 127},
}


def save_tiny_mllm(family, folder, shard_size="100KB", vision=None, **text):
    """A random tiny MLLM of `family` saved (sharded) to `folder`; `vision` / `text` override the tower's / LLM's
    config."""
    config_class, model_class, tower, llm = MLLMS[family]
    torch.manual_seed(0)
    config = config_class(text_config={**llm, **text}, vision_config={**tower, **(vision or {})}, **MLLM_TOKENS[family])
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


def other_naming(key: str) -> str:
    """A key of a saved MLLM in the other one of the two namings MLLM checkpoints use: transformers v5's
    (`model.visual.*`, `model.language_model.*`; what Qwen3-VL / Qwen3.5 are released and saved with) and the original
    one (`visual.*`, `model.*`; Qwen2-VL / Qwen2.5-VL releases, and what transformers saves them as)."""
    if key.startswith("model.visual."):
        return key.removeprefix("model.")
    if key.startswith("model.vision_tower."):  # LFM2-VL: SigLIP2's inner `vision_model.` of its original release
        return "model.vision_tower.vision_model." + key.removeprefix("model.vision_tower.")
    if key.startswith("model.language_model."):
        return "model." + key.removeprefix("model.language_model.")
    return v5_naming(key)


def whole_image_mllm_inputs(family: str, encoder_config) -> tuple[dict, dict, dict, list[tuple[int, int]]]:
    """For the MLLMs of the whole-image families (LFM2-VL, PaliGemma, InternVL): the MLLM tower's own inputs (from
    transformers' own processor), VersaViT's inputs of the same photos, `generate`'s inputs, and the photos' patch
    grids."""
    if family == "siglip2":
        theirs, ours = lfm2_vl_inputs(encoder_config)
        tower = {key: theirs[key] for key in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
        return tower, ours, theirs, [(4, 6), (4, 4)]
    import PIL.Image
    from conftest import photo
    from transformers import GotOcr2ImageProcessor, SiglipImageProcessor

    from modeling_versavit import VersaViTImageProcessor

    images = [PIL.Image.fromarray(photo("astronaut")).resize((64, 64))]
    size = {"height": 64, "width": 64}
    if family == "internvit":  # InternVL's processor as its -hf checkpoints configure it, without tiling
        processor = GotOcr2ImageProcessor(size=size, crop_to_patches=False, image_mean=[0.485, 0.456, 0.406],
                                          image_std=[0.229, 0.224, 0.225])
        input_ids = torch.tensor([[5] + [127] * 4 + [6, 7]])  # 16 patches, pixel-shuffled: 4 image tokens
    else:
        processor = SiglipImageProcessor(size=size)
        input_ids = torch.tensor([[127] * 16 + [0, 5, 6]])  # PaliGemma: the image tokens, then the prompt
    tower = {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}
    kwargs = encoder_config.backbone.image_processor_kwargs(encoder_config.vision_config)
    ours = dict(VersaViTImageProcessor(**kwargs)(images=images, return_tensors="pt"))
    generate = {**tower, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    return tower, ours, generate, [(4, 4)]


def lfm2_vl_inputs(encoder_config, seed: int = 0) -> tuple[dict, dict]:
    """Two photos of 4x6 and 4x4 patches as LFM2-VL's own SigLIP2 processor lays them out (a padded NaFlex batch) and
    as VersaViT's image processor does, and a prompt with each image's tokens (one per 2x2 block)."""
    import PIL.Image
    from conftest import photo
    from transformers import Siglip2ImageProcessor

    from modeling_versavit import VersaViTImageProcessor

    images = [PIL.Image.fromarray(photo("astronaut")).resize((96, 64)),
              PIL.Image.fromarray(photo("chelsea")).resize((64, 64))]
    theirs = dict(Siglip2ImageProcessor(max_num_patches=24)(images=images, return_tensors="pt"))
    kwargs = encoder_config.backbone.image_processor_kwargs(encoder_config.vision_config)
    ours = dict(VersaViTImageProcessor(**kwargs)(images=images, return_tensors="pt"))
    tokens = [5] + [127] * 6 + [6] + [127] * 4 + [7]
    theirs["input_ids"] = torch.tensor([tokens])
    return theirs, ours


def v5_naming(key: str) -> str:
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model."):
        return "model.language_model." + key.removeprefix("model.")
    return key


def save_tiny_mllm_with_tokenizer(family, folder, **text):
    """A random tiny Qwen-family MLLM of `family` saved to `folder` with a real tokenizer (SmolLM2's, plus the Qwen
    MLLMs' image and vision start / end tokens, its chat template kept), as a `--mllm` folder whose own LLM a run
    captions through; `text` overrides the LLM's config."""
    from transformers import AutoTokenizer

    from versavit_trainer.data.assets import smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    start, end, image, video = tokenizer.convert_tokens_to_ids(specials)
    config_class, model_class, tower, llm = MLLMS[family]
    llm = {**llm, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, **text}
    torch.manual_seed(0)
    config = config_class(text_config=llm, vision_config=tower, image_token_id=image, video_token_id=video,
                          vision_start_token_id=start, vision_end_token_id=end)
    mllm = model_class(config).eval()
    mllm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return mllm, tokenizer
