"""Shared fixtures: tiny random configs of every tower family and processor-shaped inputs."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

# Tests never reach the Hub: anything that tries fails fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modeling_versavit import VersaViTConfig  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """transformers' common tests that its own decorators have already skipped on this machine ("test requires
    accelerator", "... Flash Attention", "test is slow": about 300 of them here) are deselected rather than reported
    one by one; on a machine that can run them they are collected as usual. Skips of our own, with their reasons,
    stay in the report. So are the common tests of what a vision tower does not have (a module's `NOT_APPLICABLE`:
    test_transformers_common.py lists them with the reason)."""
    cannot_run_here, kept = [], []
    for item in items:
        reason = getattr(getattr(item, "obj", None), "__unittest_skip_why__", "")
        machine = getattr(getattr(item, "obj", None), "__unittest_skip__", False) and (
            reason.startswith("test requires") or reason == "test is slow")
        absent = item.name in getattr(getattr(item, "module", None), "NOT_APPLICABLE", ())
        (cannot_run_here if machine or absent else kept).append(item)
    if cannot_run_here:
        config.hook.pytest_deselected(items=cannot_run_here)
        items[:] = kept


QWEN2_VISION = {"model_type": "qwen2_vl_vision", "depth": 3, "embed_dim": 32, "num_heads": 4, "hidden_size": 48}
# window_size 112 with 14-px patches and 2x2 merging = windows of 4x4 merge units (8x8 patches): grids larger than
# that are really permuted into several windows. Block 1 attends globally, blocks 0 and 2 within windows.
QWEN25_VISION = {
    "model_type": "qwen2_5_vl_vision",
    "depth": 3,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 4,
    "out_hidden_size": 48,
    "window_size": 112,
    "fullatt_block_indexes": [1],
}
# Qwen3-VL: patch 16, a learned 8x8 position grid resampled to each image, DeepStack mergers after blocks 0 and 1.
QWEN3VL_VISION = {
    "model_type": "qwen3_vl_vision",
    "depth": 3,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 4,
    "out_hidden_size": 48,
    "patch_size": 16,
    "num_position_embeddings": 64,
    "deepstack_visual_indexes": [0, 1],
}
# Qwen3.5: Qwen3-VL's tower without DeepStack.
QWEN35_VISION = {k: v for k, v in QWEN3VL_VISION.items() if k != "deepstack_visual_indexes"}
QWEN35_VISION["model_type"] = "qwen3_5_vision"
# SigLIP2 (NaFlex): patch 16, an 8x8 learned position grid resized per image, the attention-pooling head.
SIGLIP2_VISION = {
    "model_type": "siglip2_vision_model",
    "num_hidden_layers": 3,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "patch_size": 16,
    "num_patches": 64,
}
# Fixed-resolution SigLIP (SiglipVisionModel, e.g. SigLIP2-so400m-patch16-512): a 4x4 position grid (64 px).
SIGLIP_VISION = {**SIGLIP2_VISION, "model_type": "siglip_vision_model", "image_size": 64}
del SIGLIP_VISION["num_patches"]
# InternViT (InternVL's tower): a CLS token, a 4x4 learned position grid (64 px) resized per image, the final LayerNorm.
INTERNVIT_VISION = {"model_type": "internvl_vision", "num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 64,
                    "num_attention_heads": 4, "patch_size": 16, "image_size": 64, "use_mean_pooling": False}
# AIMv2, native resolution (a sine-cosine position table per image size), with its attention-pooling head.
AIMV2_VISION = {"model_type": "aimv2_vision_model", "num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 64,
                "num_attention_heads": 4, "patch_size": 16, "image_size": 64, "is_native": True}
VISION_CONFIGS = {"qwen2_vl": QWEN2_VISION, "qwen2_5_vl": QWEN25_VISION, "qwen3_vl": QWEN3VL_VISION,
                  "qwen3_5": QWEN35_VISION, "siglip2": SIGLIP2_VISION, "siglip": SIGLIP_VISION,
                  "internvit": INTERNVIT_VISION, "aimv2": AIMV2_VISION}
# Small heads of the same structure as the paper's.
TINY_HEADS = {
    "depth_neck_hidden_sizes": [8, 16, 32],
    "depth_fusion_hidden_size": 16,
    "depth_head_hidden_size": 8,
    "text_embed_dim": 24,
    "segmentation_hidden_size": 32,
    "segmentation_num_prompt_tokens": 2,
    "segmentation_decoder_heads": 2,
    "segmentation_decoder_mlp_dim": 64,
}


# The packed Qwen towers (Conv3d patch embedding, `blocks` with `attn`, a merger into the LLM): tests of those
# internals.
QWEN_FAMILIES = sorted(family for family in VISION_CONFIGS if family.startswith("qwen"))


@pytest.fixture(params=sorted(VISION_CONFIGS))
def family(request) -> str:
    return request.param


@pytest.fixture(params=QWEN_FAMILIES)
def qwen_family(request) -> str:
    return request.param


def tiny_config(family: str = "qwen2_vl", **kwargs) -> VersaViTConfig:
    vision_config = kwargs.pop("vision_config", VISION_CONFIGS[family])
    return VersaViTConfig(vision_config=dict(vision_config), **{**TINY_HEADS, **kwargs})


def random_inputs(config: VersaViTConfig, grids, seed: int = 0) -> dict[str, torch.Tensor]:
    """`pixel_values` / `image_grid_thw` as the image processor lays them out, for the given (h, w) patch grids."""
    grid = torch.tensor([[1, h, w] for h, w in grids])
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(int(grid.prod(-1).sum()), config.patch_dim, generator=generator)
    return {"pixel_values": pixel_values, "image_grid_thw": grid}


def photo(name: str = "astronaut") -> np.ndarray:
    """A real photo that scikit-image ships (no download)."""
    import skimage.data

    return getattr(skimage.data, name)()


RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def recipe_path(name: str) -> Path:
    """recipes/<name>.py or recipes/<group>/<name>.py."""
    found = [path for path in (RECIPES / f"{name}.py", *RECIPES.glob(f"*/{name}.py")) if path.is_file()]
    assert len(found) == 1, (name, found)
    return found[0]


def load_recipe(name: str):
    """A script of recipes/ (or of its data/, evaluation/, export/ folders) imported as a module, so tests call its
    `main(argv)` in-process."""
    spec = importlib.util.spec_from_file_location(name, recipe_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- recipe runs: a tiny config, LLM and checkpoint
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> Path:
    """A 1-layer random Llama with SmolLM2's real tokenizer (and chat template)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from versavit_trainer.data.assets import smollm2_path

    folder = tmp_path_factory.mktemp("tiny_llm")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    llm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_run_config(folder: Path, tiny_llm: Path, **overrides) -> Path:
    heads = {k: v for k, v in TINY_HEADS.items() if k != "text_embed_dim"}  # set from the text encoder (MiniLM)
    config = {
        "output_dir": str(folder / "run"),
        "vision_config": QWEN2_VISION,
        "head_config": {**heads, "depth_layer_indices": [1, 2, 3]},
        "language_model": str(tiny_llm),
        "num_scenes": 10, "num_eval_scenes": 3, "depth_size": 56, "segmentation_size": 56,
        "caption_max_pixels": 56 * 56, "max_turns": 1, "max_expressions": 2,
        "captioning_batch_size": 2, "depth_batch_size": 2, "segmentation_batch_size": 2,
        "alignment_max_steps": 2, "max_steps": 4, "learning_rate": 1e-3, "backbone_learning_rate": 1e-4,
        "use_cpu": True, "logging_steps": 1, "save_strategy": "steps", "save_steps": 2, "report_to": "tensorboard",
        "panel_samples": 2, "caption_max_new_tokens": 4, "disable_tqdm": True, "seed": 0,
    }
    config.update(overrides)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pretrain_tiny_miniature(folder: Path, tiny_llm: Path) -> dict:
    """recipes/pretrain_miniature.py on the tiny config (room scenes, captioning only): the asset in `folder/asset`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_run_config(folder, tiny_llm, tasks=["captioning"], num_eval_scenes=0, panel_samples=0,
                             save_strategy="no", report_to="none", scene_style="room")
    return load_recipe("pretrain_miniature").main(["--config", str(config), "--asset_dir", str(folder / "asset")])


@pytest.fixture(scope="module")
def tiny_miniature(tmp_path_factory, tiny_llm) -> Path:
    """A tiny pre-trained miniature (the tiny tower and its projector for `tiny_llm`), as the recipe writes it."""
    folder = tmp_path_factory.mktemp("tiny_miniature")
    return Path(pretrain_tiny_miniature(folder, tiny_llm)["asset_dir"])


def tiny_baseline(miniature: Path) -> list[str]:
    """recipes/reproduce.py flags: baselines continued from the tiny miniature, as the default config's from the
    shipped one (whose tower and projector do not fit the tiny config)."""
    return ["--baseline", json.dumps({"model_name_or_path": str(miniature), "tasks": ["captioning"],
                                      "alignment_max_steps": 0, "max_steps": 60})]


@pytest.fixture(scope="module")
def dense_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained multi-task checkpoint with backbone, depth and segmentation heads (384-d MiniLM text)."""
    folder = tmp_path_factory.mktemp("multitask")
    load_recipe("multitask").main(["--config", str(tiny_run_config(
        folder, Path("unused"), tasks=["depth", "segmentation"], max_steps=4, save_strategy="no", report_to="none",
        panel_samples=0, num_eval_scenes=0,
    ))])
    return folder / "run" / "final"


# ---------------------------------------------------------------- real photos, tiny labelling checkpoints
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real photos (one in a subfolder, one JPEG) and one corrupt file."""
    folder = tmp_path_factory.mktemp("photos")
    PIL.Image.fromarray(photo("astronaut")).resize((128, 128)).save(folder / "astronaut.png")
    PIL.Image.fromarray(photo("chelsea")).save(folder / "chelsea.jpg", quality=90)
    (folder / "kitchen").mkdir()
    PIL.Image.fromarray(photo("coffee")).save(folder / "kitchen" / "coffee.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    return folder


@pytest.fixture(scope="module")
def tiny_depth_checkpoint(tmp_path_factory):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    folder = tmp_path_factory.mktemp("depth-anything-tiny")
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        model.head.conv3.bias.fill_(1.0)  # positive relative depth everywhere, as a trained model predicts
    model.save_pretrained(folder)
    DPTImageProcessorPil(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_sam_checkpoint(tmp_path_factory):
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    folder = tmp_path_factory.mktemp("sam-tiny")
    vision = SamVisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                             image_size=64, patch_size=16, mlp_dim=64, global_attn_indexes=[1], window_size=2,
                             num_pos_feats=16)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=8)
    decoder = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    torch.manual_seed(0)
    SamModel(
        SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    ).save_pretrained(folder)
    image_processor = SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                           mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_describer_checkpoint(tmp_path_factory):
    """A random tiny LLaVA (CLIP tower + 1-layer Llama) with SmolLM2's real tokenizer and a chat template: a local
    image-text-to-text model folder as the describers load it (AutoProcessor + AutoModelForImageTextToText)."""
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from versavit_trainer.data.assets import smollm2_path

    folder = tmp_path_factory.mktemp("describer-tiny")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for part in message['content'] %}"
                "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template, patch_size=14,
                   vision_feature_select_strategy="default", image_token="<image>",
                   num_additional_image_tokens=1).save_pretrained(folder)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=56, patch_size=14)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=vision.to_dict(),
            text_config=text.to_dict(),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
        )
    ).save_pretrained(folder)
    return folder
