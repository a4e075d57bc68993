# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Export a VersaViT model as a graph: `torch.export` (`.pt2`) or ONNX, through transformers' own exporters.

transformers' `DynamoExporter` / `OnnxExporter` trace the model with `torch.export` and write an `ExportedModel`
folder (the program, its metadata, the config) that `transformers.exporters.ExportedModel.from_pretrained` loads and
calls like the model. VersaViT's forward graphs keep their input checks as runtime asserts (`torch_compilable_check`),
so the export is one graph per model, with dynamic image sizes:

- the image size (the patch grid, and so the number of tokens) is dynamic, and every image of a call shares one size;
- the number of images per call is dynamic for the whole-image and NaFlex families (SigLIP, SigLIP2, InternViT,
  AIMv2: one batch of images) and fixed at export time for the Qwen towers
  (`VisionBackbone.export_fixed_image_count` says why);
- every family exports but Qwen2.5-VL (`VisionBackbone.export_blocker`: transformers' window attention splits the
  sequence with a Python list of window lengths, so a graph would keep the trace's number of windows).
"""

import numpy as np
import PIL.Image
import torch

from ..data.processors import check_size, image_processor_for, size_multiple

FORMATS = ("onnx", "dynamo")
# What each exported model returns and is checked on (a task model's loss needs labels, which an export drops).
OUTPUT_KEYS = {
    "VersaViTModel": ("last_hidden_state", "pooler_output"),
    "VersaViTForDepthEstimation": ("predicted_depth",),
    "VersaViTForReferringSegmentation": ("pred_masks",),
}


def sample_inputs(model, size: tuple[int, int], num_images: int = 1, num_expressions: int = 1, seed: int = 0) -> dict:
    """Processor-made inputs of `num_images` images of `size` (height, width) for `model`, plus random text
    embeddings (`num_expressions` per image) for a referring-segmentation model. Sizes must be whole merge blocks."""
    processor = image_processor_for(model.config)
    for side, name in zip(size, ("height", "width")):
        check_size(side, f"size ({name})", size_multiple(processor))
    rng = np.random.default_rng(seed)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(num_images)]
    inputs = dict(processor(images=images, return_tensors="pt"))
    if type(model).__name__ == "VersaViTForReferringSegmentation":
        generator = torch.Generator().manual_seed(seed)
        shape = (num_images, num_expressions, model.config.text_embed_dim)
        inputs["text_embeds"] = torch.randn(shape, generator=generator)
    return inputs


def export_graph(model, inputs: dict, format: str = "onnx", dynamic: bool = True):
    """`model` traced on `inputs` with transformers' exporter of `format` (`"onnx"` or `"dynamo"`): an
    `ExportedModel`, callable like the model, saved with `.save_pretrained(folder)`. `dynamic`: the image size (and
    the number of expressions per image) may change between calls, and the number of images too where the family
    allows it (`VisionBackbone.export_fixed_image_count` is None)."""
    from transformers.exporters import DynamoConfig, DynamoExporter, OnnxConfig, OnnxExporter

    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}.")
    blocker = model.config.backbone.export_blocker
    if blocker is not None:
        raise ValueError(f"model: a {model.config.backbone_family} tower does not export: {blocker}.")
    # Only what varies between calls is dynamic: the number of patches (the image size) and of expressions per image.
    shapes = {key: None for key in inputs}
    shapes["pixel_values"] = {0: torch.export.Dim.AUTO}
    images = model.config.backbone.export_fixed_image_count is None
    if images:
        shapes["image_grid_thw"] = {0: torch.export.Dim.AUTO}
    if "text_embeds" in inputs:
        shapes["text_embeds"] = {inputs["text_embeds"].ndim - 2: torch.export.Dim.AUTO} | ({0: torch.export.Dim.AUTO}
                                                                                          if images else {})
    settings = {"dynamic": dynamic, "dynamic_shapes": shapes if dynamic else None}
    if format == "onnx":
        return OnnxExporter().export(model.eval(), dict(inputs), OnnxConfig(**settings))
    return DynamoExporter().export(model.eval(), dict(inputs), DynamoConfig(**settings))


def compare_outputs(exported, model, inputs: dict) -> dict[str, float]:
    """The largest absolute difference between the exported graph's and the eager model's outputs, per output (those
    the model returns: InternViT has no pooled output)."""
    with torch.no_grad():
        eager = model(**inputs)
    ours = exported(**inputs)
    keys = [key for key in OUTPUT_KEYS[type(model).__name__] if eager.get(key) is not None]
    return {key: float((ours[key] - eager[key]).abs().max()) for key in keys}


__all__ = ["FORMATS", "OUTPUT_KEYS", "compare_outputs", "export_graph", "sample_inputs"]
