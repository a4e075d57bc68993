"""Shared fixtures: tiny random configs of both tower families and processor-shaped inputs."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never reach the Hub: anything that tries fails fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modeling_versavit import VersaViTConfig  # noqa: E402

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
VISION_CONFIGS = {"qwen2_vl": QWEN2_VISION, "qwen2_5_vl": QWEN25_VISION}
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


@pytest.fixture(params=sorted(VISION_CONFIGS))
def family(request) -> str:
    return request.param


def tiny_config(family: str = "qwen2_vl", **kwargs) -> VersaViTConfig:
    return VersaViTConfig(vision_config=dict(VISION_CONFIGS[family]), **{**TINY_HEADS, **kwargs})


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


def load_recipe(name: str):
    """A script of recipes/ imported as a module, so tests call its `main(argv)` in-process."""
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
