# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The three task datasets' schemas (on `datasets`), checked when a folder is read (`check_schema`), and how depth is
stored (`encode_depth` / `decode_depth`: 16-bit PNG times a per-row scale).

Schemas (columns of a `datasets.Dataset`; extra columns are allowed and ignored):

| task | column | feature | meaning |
|---|---|---|---|
| depth | `image` | `Image()` | the photo |
| | `depth` | `Image()` (16-bit) | relative depth or disparity x `depth_scale`; 0 = no label |
| | `depth_scale` | `Value("float32")` | the stored value per unit of depth |
| | `depth_space` (optional) | `Value("string")` | `"depth"` or `"disparity"` (0 = far, valid); the run's label space |
| segmentation | `image` | `Image()` | the photo |
| | `expressions` | `List(Value("string"))` | referring expressions |
| | `masks` | `List(Image())` | one binary mask per expression, the image's size |
| | `text_embeds` | `List(List(Value("float32")))` | one embedding per expression, computed offline |
| captioning | `image` | `Image()` | the photo |
| | `texts` | `List({"user": string, "assistant": string})` | conversation turns (FineVision style) |
| | *or* `caption` | `Value("string")` | a plain caption |"""

import numpy as np
import PIL.Image
import torch
from datasets import Dataset, Features, Image, List, Value

from modeling_versavit.losses_versavit import depth_validity

DEPTH_FEATURES = Features({"image": Image(), "depth": Image(), "depth_scale": Value("float32")})


# The label space of a depth dataset ("depth" or "disparity"), an optional column; label_depth.py writes it.
DEPTH_SPACE_COLUMN = "depth_space"


SEGMENTATION_FEATURES = Features(
    {
        "image": Image(),
        "expressions": List(Value("string")),
        "masks": List(Image()),
        "text_embeds": List(List(Value("float32"))),
    }
)


# Referring rows before their text embeddings: what the mask labeller and the RefCOCO converter write.
REFERRING_FEATURES = Features(
    {"image": Image(), "expressions": List(Value("string")), "masks": List(Image()), "source": Value("string")}
)


TURNS = List({"user": Value("string"), "assistant": Value("string")})


CAPTIONING_FEATURES = Features({"image": Image(), "texts": TURNS})


# Image-text pairs for a contrastive objective: a caption per image and its offline text embedding.
CONTRASTIVE_FEATURES = Features({"image": Image(), "caption": Value("string"), "text_embeds": List(Value("float32"))})


SCHEMAS = {"depth": DEPTH_FEATURES, "segmentation": SEGMENTATION_FEATURES, "captioning": CAPTIONING_FEATURES,
           "contrastive": CONTRASTIVE_FEATURES}


def check_schema(dataset: Dataset, task: str) -> Dataset:
    """Return `dataset` if it has the task's columns with the task's features, else a `ValueError` naming the
    missing or mistyped column (checked up front, not at the first bad batch)."""
    if task not in SCHEMAS:
        raise ValueError(f"task: expected one of {sorted(SCHEMAS)}, got {task!r}.")
    features = dataset.features
    expected = dict(SCHEMAS[task])
    if task == "captioning" and "texts" not in features and "caption" in features:
        expected = {"image": Image(), "caption": Value("string")}
    for column, feature in expected.items():
        if column not in features:
            raise ValueError(
                f"{task} dataset: missing column {column!r} (has {sorted(features)}); expected {feature}."
            )
        if not _same_feature(features[column], feature):
            raise ValueError(f"{task} dataset: column {column!r} is {features[column]}, expected {feature}.")
    return dataset


def _same_feature(found, expected) -> bool:
    if isinstance(expected, Image):
        return isinstance(found, Image)
    if isinstance(expected, Value):
        return isinstance(found, Value) and found.dtype == expected.dtype
    if isinstance(expected, List):
        inner = getattr(found, "feature", None)
        return isinstance(found, List) and inner is not None and _same_feature(inner, expected.feature)
    if isinstance(expected, dict):
        return isinstance(found, dict) and found.keys() == expected.keys() and all(
            _same_feature(found[k], v) for k, v in expected.items()
        )
    return found == expected


def encode_depth(depth: np.ndarray, space: str = "depth") -> tuple[PIL.Image.Image, float]:
    """Store a float depth (or disparity) map as a 16-bit image and its scale: valid values are mapped so the
    largest becomes 65535; holes store 0, so a valid value stores at least 1. Valid: finite and > 0 for depth;
    finite and >= 0 for disparity, where 0 is the sky / far field (Depth Anything's ReLU output), which then
    decodes to the smallest storable disparity (one storage step, largest / 65535) instead of being dropped."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = depth_validity(torch.from_numpy(depth), label_space=space).numpy()  # the loss's rule, one place
    top = float(depth[valid].max()) if valid.any() else 1.0
    top = top if top > 0 else 1.0  # an all-zero disparity map (all sky)
    scale = 65535.0 / top
    stored = np.where(valid, np.clip(np.rint(depth * scale), 1, 65535), 0).astype(np.uint16)
    return PIL.Image.fromarray(stored), scale


def decode_depth(image: PIL.Image.Image, scale: float) -> np.ndarray:
    """The float32 depth of a stored 16-bit map; unlabelled pixels come back as NaN."""
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"depth_scale: must be a finite value > 0, got {scale!r}.")
    stored = np.asarray(image, dtype=np.float64)
    if stored.ndim != 2:
        raise ValueError(f"depth: expected a single-channel 16-bit map, got an image of mode {image.mode!r}.")
    return np.where(stored > 0, stored / scale, np.nan).astype(np.float32)


__all__ = [
    "CAPTIONING_FEATURES",
    "CONTRASTIVE_FEATURES",
    "DEPTH_FEATURES",
    "DEPTH_SPACE_COLUMN",
    "REFERRING_FEATURES",
    "SCHEMAS",
    "SEGMENTATION_FEATURES",
    "TURNS",
    "check_schema",
    "decode_depth",
    "encode_depth",
]
