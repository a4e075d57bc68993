"""VersaViTConfig: defaults, the tower families, serialisation and construction-time validation."""

import math
import re

import pytest
from conftest import QWEN25_VISION, tiny_config
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, Qwen2_5_VLVisionConfig, Qwen2VLVisionConfig

from modeling_versavit import VersaViTConfig, uniform_layer_indices


def test_default_is_the_qwen2_vl_7b_tower():
    config = VersaViTConfig()
    assert isinstance(config.vision_config, Qwen2VLVisionConfig)
    assert (config.num_hidden_layers, config.embed_dim, config.merged_dim) == (32, 1280, 3584)
    assert config.backbone_family == "qwen2_vl"
    assert config.patch_dim == 3 * 2 * 14 * 14
    assert config.depth_layer_indices == [11, 21, 32]
    assert config.segmentation_layer_index == 32
    assert (config.depth_ssi_weight, config.depth_gm_weight) == (1.0, 0.5)
    assert (config.segmentation_bce_weight, config.segmentation_dice_weight) == (2.0, 0.5)


def test_qwen2_5_vl_tower_is_accepted():
    config = tiny_config("qwen2_5_vl")
    assert isinstance(config.vision_config, Qwen2_5_VLVisionConfig)
    assert config.backbone_family == "qwen2_5_vl"
    assert (config.embed_dim, config.merged_dim) == (QWEN25_VISION["hidden_size"], QWEN25_VISION["out_hidden_size"])


def test_legacy_vision_model_type_of_mllm_checkpoints_is_mapped():
    # Released Qwen2.5-VL config.json files carry vision_config.model_type = "qwen2_5_vl".
    config = VersaViTConfig(vision_config={**QWEN25_VISION, "model_type": "qwen2_5_vl"})
    assert config.vision_config.model_type == "qwen2_5_vl_vision"


@pytest.mark.parametrize(
    "depth,expected", [(32, [11, 21, 32]), (24, [8, 16, 24]), (12, [4, 8, 12]), (3, [1, 2, 3]), (1, [1, 1, 1])]
)
def test_uniform_layer_indices(depth, expected):
    assert uniform_layer_indices(depth) == expected
    assert all(1 <= i <= depth for i in expected) and expected[-1] == depth


def test_negative_layer_indices_are_normalised():
    config = tiny_config(depth_layer_indices=[-1, 0, 2], segmentation_layer_index=-2)
    assert config.depth_layer_indices == [3, 0, 2]
    assert config.segmentation_layer_index == 2


def test_save_and_reload_round_trip(tmp_path, family):
    config = tiny_config(family, depth_layer_indices=[1, 2, 3], text_embed_dim=384, depth_gm_weight=0.25)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, VersaViTConfig)
    assert {**reloaded.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
    assert type(reloaded.vision_config) is type(config.vision_config)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"depth_layer_indices": [1, 4]}, "depth_layer_indices"),
        ({"depth_layer_indices": [-5]}, "depth_layer_indices"),
        ({"depth_layer_indices": []}, "depth_layer_indices"),
        ({"depth_layer_indices": [1.5]}, "depth_layer_indices"),
        ({"segmentation_layer_index": 7}, "segmentation_layer_index"),
        ({"text_embed_dim": 0}, "text_embed_dim"),
        ({"depth_ssi_weight": -1.0}, "depth_ssi_weight"),
        ({"depth_gm_weight": math.nan}, "depth_gm_weight"),
        ({"segmentation_bce_weight": math.inf}, "segmentation_bce_weight"),
        ({"segmentation_dice_weight": -0.5}, "segmentation_dice_weight"),
        ({"initializer_range": 0.0}, "initializer_range"),
        ({"segmentation_normalize_text": "yes"}, "segmentation_normalize_text"),
    ],
)
def test_invalid_values_fail_at_construction_naming_the_field(kwargs, field):
    # Range errors are ValueErrors from VersaViTConfig; type errors come from the strict dataclass validation.
    with pytest.raises((ValueError, StrictDataclassError), match=field):
        tiny_config(**kwargs)


@pytest.mark.parametrize("key, hint", [
    ("depth_fusion_hiden_size", " (did you mean 'depth_fusion_hidden_size'?)"),
    ("text_embed_dims", " (did you mean 'text_embed_dim'?)"),
    ("segmentation_layers", ""),  # a head's namespace, no field close to it
])
def test_a_misspelt_option_is_refused_naming_it(key, hint):
    with pytest.raises(ValueError, match=re.escape(f"VersaViTConfig: unknown option '{key}'{hint};")):
        VersaViTConfig(**{key: 3})
    VersaViTConfig(use_cache=False)  # what transformers itself sets at run time is no error


def test_another_model_s_folder_is_refused_naming_its_model_type(tmp_path):
    from transformers import LlamaConfig

    from modeling_versavit import VersaViTModel

    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    for load in (VersaViTConfig.from_pretrained, VersaViTModel.from_pretrained):
        with pytest.raises(
            ValueError,
            match=r"its config.json is a 'llama' model's, not a VersaViT one. For the vision "
            r"tower of an MLLM folder use VersaViTModel.from_mllm",
        ):
            load(tmp_path)


def test_unsupported_tower_is_rejected_by_name():
    with pytest.raises(ValueError, match="vision_config: model_type 'clip_vision_model'"):
        VersaViTConfig(vision_config={"model_type": "clip_vision_model"})


def test_depth_label_space_is_checked_and_saved(tmp_path):
    config = VersaViTConfig(depth_label_space="disparity")
    config.save_pretrained(tmp_path)
    assert VersaViTConfig.from_pretrained(tmp_path).depth_label_space == "disparity"
    assert VersaViTConfig().depth_label_space == "depth"
    with pytest.raises(ValueError, match="VersaViTConfig.depth_label_space: expected one of"):
        VersaViTConfig(depth_label_space="inverse-depth")


def test_every_family_is_registered_once_under_its_vision_model_type():
    """backbones.py's one import per family file registers its classes (`@register_backbone`); a registration
    without a name or a vision config type is refused."""
    from modeling_versavit.backbones import BACKBONES, register_backbone

    assert {family.name: model_type for model_type, family in BACKBONES.items()} == {
        "qwen2_vl": "qwen2_vl_vision", "qwen2_5_vl": "qwen2_5_vl_vision", "qwen3_vl": "qwen3_vl_vision",
        "qwen3_5": "qwen3_5_vision", "siglip2": "siglip2_vision_model", "siglip": "siglip_vision_model",
        "internvit": "internvl_vision", "aimv2": "aimv2_vision_model"}
    with pytest.raises(ValueError, match="register_backbone: expected a VisionBackbone with a name"):
        register_backbone(object())
    with pytest.raises(ValueError, match=r"vision_config: model_type 'vit' is not supported"):
        VersaViTConfig(vision_config={"model_type": "vit"})
