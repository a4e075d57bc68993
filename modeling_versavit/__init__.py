# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT: post-trained MLLM vision encoders as Hugging Face models.

Importing this package registers the VersaViT classes with `AutoConfig`, `AutoModel` and `AutoImageProcessor`,
and marks them for `auto_map`, so `save_pretrained` writes a folder that also loads with
`trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .configuration_versavit import VersaViTConfig, uniform_layer_indices
from .image_processing_versavit import VersaViTImageProcessor, load_image, to_rgb
from .modeling_versavit import (
    VersaViTModel,
    VersaViTModelOutput,
    VersaViTPreTrainedModel,
    check_vision_inputs,
    tokens_to_feature_maps,
)

__version__ = "0.1.0"

AutoConfig.register(VersaViTConfig.model_type, VersaViTConfig, exist_ok=True)
AutoModel.register(VersaViTConfig, VersaViTModel, exist_ok=True)
AutoImageProcessor.register(VersaViTConfig, image_processor_classes={"pil": VersaViTImageProcessor}, exist_ok=True)
VersaViTConfig.register_for_auto_class()
VersaViTModel.register_for_auto_class("AutoModel")
VersaViTImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "VersaViTConfig",
    "VersaViTImageProcessor",
    "VersaViTModel",
    "VersaViTModelOutput",
    "VersaViTPreTrainedModel",
    "check_vision_inputs",
    "load_image",
    "to_rgb",
    "tokens_to_feature_maps",
    "uniform_layer_indices",
]
