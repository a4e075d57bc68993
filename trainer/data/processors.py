# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The image processors of a tower (`image_processor_for`: its patch and merge sizes; the captioning branch's, capped at
`CAPTION_MAX_PIXELS`) and the input sizes a tower takes: whole merge blocks (`check_size`, `parse_resolutions`). The
dense heads' fixed-size pixels are `modeling_versavit.fixed_size_pixels` (the pipelines make them too)."""

from modeling_versavit import VersaViTCaptioningProcessor, VersaViTImageProcessor

CAPTION_MAX_PIXELS = 896 * 896  # the captioning branch's largest input (supplement §8.1)


def caption_image_processor(max_pixels: int = CAPTION_MAX_PIXELS, config=None) -> VersaViTImageProcessor:
    """Qwen2-VL's dynamic-resolution processing, capped at `max_pixels` (896x896 in the paper), at least 2 x 2 merge
    blocks; with the tower's `config` (`VersaViTConfig`), its patch, merge and temporal patch sizes and normalisation
    (default Qwen2-VL's)."""
    towers = {} if config is None else config.backbone.image_processor_kwargs(config.vision_config)
    smallest = 2 * (config.input_size_multiple if config is not None else QWEN2_VL_SIZE_MULTIPLE)
    return VersaViTImageProcessor(size={"shortest_edge": smallest**2, "longest_edge": max_pixels}, **towers)


def captioning_processor(tokenizer, max_pixels: int = CAPTION_MAX_PIXELS, config=None) -> VersaViTCaptioningProcessor:
    """The captioning processor of a model with `config` (`caption_image_processor`, and as many task-token
    positions after each image as the model fills: VisPer-LM's `config.task_tokens`)."""
    return VersaViTCaptioningProcessor.for_model(caption_image_processor(max_pixels, config), tokenizer, config)


# The side multiple of the Qwen2-VL / Qwen2.5-VL towers (patch 14 x merge 2): the default of the collators and
# helpers below when used alone. A run passes its tower's own (`VersaViTConfig.input_size_multiple`).
QWEN2_VL_SIZE_MULTIPLE = 28


def image_processor_for(config) -> VersaViTImageProcessor:
    """The image processor of a tower (`VersaViTConfig`): its patch, merge and temporal patch sizes and the
    normalisation its MLLM uses (`VisionBackbone.image_processor_kwargs`)."""
    return VersaViTImageProcessor(**config.backbone.image_processor_kwargs(config.vision_config))


def size_multiple(image_processor: VersaViTImageProcessor) -> int:
    """The side multiple of a fixed-size input to `image_processor`'s tower: whole merge blocks (patch x merge)."""
    return image_processor.patch_size * image_processor.merge_size


def check_size(size: int, name: str, multiple: int) -> None:
    """`ValueError` naming `name` unless `size` is a positive multiple of `multiple` (the tower's patch x merge)."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % multiple:
        raise ValueError(f"{name}: must be a positive multiple of {multiple} (the tower's patch x merge), got {size}.")


def parse_resolutions(values, name: str, multiple: int = QWEN2_VL_SIZE_MULTIPLE) -> list[tuple[int, int]] | None:
    """`(height, width)` pairs of a resolution set given as `"HxW"` strings, `[H, W]` pairs or square sides; each side
    a positive multiple of `multiple` (the tower's patch x merge). None or empty is None (no dynamic resolution);
    anything else is a `ValueError` naming `name` and the value."""
    if not values:
        return None
    pairs = []
    for value in values:
        try:
            if isinstance(value, str):
                parts = value.lower().split("x")
                pair = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else None
            elif isinstance(value, int) and not isinstance(value, bool):
                pair = (value, value)
            else:
                pair = tuple(int(v) for v in value) if len(value) == 2 else None
        except (TypeError, ValueError):
            pair = None
        if pair is None or any(side <= 0 for side in pair):
            raise ValueError(f"{name}: {value!r} is not a resolution: expected HEIGHTxWIDTH (or [HEIGHT, WIDTH], or "
                             "one side for a square) of positive integers, e.g. 448x644.")
        if any(side % multiple for side in pair):
            raise ValueError(f"{name}: {value!r} has a side that is not a multiple of {multiple} (the tower's patch x "
                             f"merge), e.g. {16 * multiple}x{23 * multiple}.")
        pairs.append(pair)
    return pairs


__all__ = [
    "CAPTION_MAX_PIXELS",
    "QWEN2_VL_SIZE_MULTIPLE",
    "caption_image_processor",
    "captioning_processor",
    "check_size",
    "image_processor_for",
    "parse_resolutions",
    "size_multiple",
]
