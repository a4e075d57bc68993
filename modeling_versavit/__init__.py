# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT: post-trained MLLM vision encoders as Hugging Face models.

Importing this package registers the VersaViT classes with `AutoConfig`, `AutoModel`,
`AutoModelForDepthEstimation` and `AutoImageProcessor`, and its pipelines (`pipelines_versavit.PIPELINES`) with
transformers' `PIPELINE_REGISTRY`; the models are marked for `auto_map`, so `save_pretrained` writes a folder that
also loads, pipelines included, with `trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForDepthEstimation
from transformers.pipelines import PIPELINE_REGISTRY

from .checkpoint_files import read_safetensors, safetensors_weight_map
from .configuration_versavit import TASKS, VersaViTConfig, uniform_layer_indices
from .image_processing_versavit import VersaViTImageProcessor, fixed_size_pixels, load_image, to_rgb
from .losses_versavit import (
    contrastive_loss,
    depth_loss,
    gradient_matching_loss,
    mask_loss,
    normalize_depth,
    ssi_loss,
)
from .modeling_versavit import (
    VersaViTCaptioningOutput,
    VersaViTDepthEstimatorOutput,
    VersaViTForCaptioning,
    VersaViTForDepthEstimation,
    VersaViTForImageTextRetrieval,
    VersaViTForMultiTask,
    VersaViTForReferringSegmentation,
    VersaViTImageTextRetrievalOutput,
    VersaViTModel,
    VersaViTModelOutput,
    VersaViTPreTrainedModel,
    VersaViTReferringSegmentationOutput,
    captioning_config,
    check_vision_inputs,
    mllm_captioning_config,
    mllm_language_state,
    tokens_to_feature_maps,
)
from .pipelines_versavit import (
    PIPELINES,
    VersaViTCaptioningPipeline,
    VersaViTReferringSegmentationPipeline,
    VersaViTZeroShotImageClassificationPipeline,
)
from .processing_versavit import IGNORE_INDEX, VersaViTCaptioningProcessor
from .text_embedding_versavit import SentenceEmbedder

__version__ = "0.1.0"

AutoConfig.register(VersaViTConfig.model_type, VersaViTConfig, exist_ok=True)
AutoModel.register(VersaViTConfig, VersaViTModel, exist_ok=True)
AutoModelForDepthEstimation.register(VersaViTConfig, VersaViTForDepthEstimation, exist_ok=True)
AutoImageProcessor.register(VersaViTConfig, image_processor_classes={"pil": VersaViTImageProcessor}, exist_ok=True)
VersaViTConfig.register_for_auto_class()
VersaViTModel.register_for_auto_class("AutoModel")
VersaViTForDepthEstimation.register_for_auto_class("AutoModelForDepthEstimation")
# No Auto class has these tasks: a saved folder of one of them loads with AutoModel (+ trust_remote_code) as itself.
VersaViTForReferringSegmentation.register_for_auto_class("AutoModel")
VersaViTForCaptioning.register_for_auto_class("AutoModel")
VersaViTForMultiTask.register_for_auto_class("AutoModel")
VersaViTForImageTextRetrieval.register_for_auto_class("AutoModel")
# The image processor is mapped in the model's config.json, not its own file (see VersaViTImageProcessor.to_dict).
# The pipelines load the task model of their head, from a task folder or the multi-task one.
_PIPELINE_MODELS = {
    "referring-segmentation": VersaViTForReferringSegmentation,
    "versavit-captioning": VersaViTForCaptioning,
    "versavit-zero-shot-image-classification": VersaViTForImageTextRetrieval,
}
for _task, (_pipeline_class, _) in PIPELINES.items():
    PIPELINE_REGISTRY.register_pipeline(_task, pipeline_class=_pipeline_class, pt_model=_PIPELINE_MODELS[_task],
                                        type="multimodal")

__all__ = [
    "IGNORE_INDEX",
    "PIPELINES",
    "SentenceEmbedder",
    "VersaViTCaptioningPipeline",
    "VersaViTReferringSegmentationPipeline",
    "VersaViTZeroShotImageClassificationPipeline",
    "TASKS",
    "VersaViTForMultiTask",
    "captioning_config",
    "mllm_captioning_config",
    "mllm_language_state",
    "VersaViTCaptioningOutput",
    "VersaViTCaptioningProcessor",
    "VersaViTConfig",
    "VersaViTDepthEstimatorOutput",
    "VersaViTForCaptioning",
    "VersaViTForDepthEstimation",
    "VersaViTForReferringSegmentation",
    "VersaViTForImageTextRetrieval",
    "VersaViTImageTextRetrievalOutput",
    "VersaViTImageProcessor",
    "VersaViTModel",
    "VersaViTModelOutput",
    "VersaViTPreTrainedModel",
    "VersaViTReferringSegmentationOutput",
    "check_vision_inputs",
    "fixed_size_pixels",
    "depth_loss",
    "gradient_matching_loss",
    "mask_loss",
    "contrastive_loss",
    "normalize_depth",
    "ssi_loss",
    "load_image",
    "read_safetensors",
    "safetensors_weight_map",
    "to_rgb",
    "tokens_to_feature_maps",
    "uniform_layer_indices",
]
