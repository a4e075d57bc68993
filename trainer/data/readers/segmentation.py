# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Semantic segmentation benchmarks (`SegmentationSource`): ADE20k, Pascal VOC 2012, Cityscapes and the generated
scenes; SA-1B's masks."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from modeling_versavit import load_image

from ..scenes import SHAPES, Camera, generate_scene, scene_style
from .common import check_pairs, require_path

SCENE_CLASSES = ("sky", "ground", *SHAPES)


@dataclass
class SegmentationSource:
    name: str
    num_classes: int
    items: list  # (image path, label path) pairs, or (image array, label array) pairs in memory
    ignore_index: int = 255
    reduce_zero_label: bool = False
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, np.ndarray]:
        """The RGB image and its `(H, W)` int64 label map (the dataset's own ids)."""
        image, label = self.items[index]
        if isinstance(image, np.ndarray):
            return PIL.Image.fromarray(image), np.asarray(label, dtype=np.int64)
        picture = load_image(image)
        with PIL.Image.open(label) as handle:
            labels = np.asarray(handle, dtype=np.int64)  # palette PNGs give their indices, not colours
        if labels.ndim != 2 or labels.shape != (picture.height, picture.width):
            raise ValueError(f"{label}: label map of shape {labels.shape} does not match its image "
                             f"{picture.height}x{picture.width}.")
        return picture, labels


def sa1b(root) -> list[tuple[Path, Path]]:
    """SA-1B's layout: `root/<name>.jpg` beside its `root/<name>.json` (the masks), sorted; an image without its JSON is
    a `FileNotFoundError` naming it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"images: {root} is not a folder.")
    images = sorted(p for p in root.rglob("*.jpg") if p.is_file())
    return check_pairs([(image, image.with_suffix(".json")) for image in images], f"SA-1B folder {root}")


def sa1b_masks(path, min_area: float = 0.0, max_masks: int | None = None) -> list[np.ndarray]:
    """The masks of one SA-1B annotation file (COCO RLE, decoded with pycocotools) as `(H, W)` bool arrays, largest
    first: those covering at least `min_area` of the image, at most `max_masks`. A malformed file is a `ValueError`
    naming it and the annotation."""
    from pycocotools import mask as mask_utils

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise ValueError(f"{path}: expected SA-1B's {{'image': ..., 'annotations': [...]}}.")
    masks = []
    for number, annotation in enumerate(annotations):
        rle = annotation.get("segmentation") if isinstance(annotation, dict) else None
        if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str) and isinstance(rle.get("size"), list)
                and len(rle["size"]) == 2):
            raise ValueError(f"{path}: annotation {number} needs a COCO RLE segmentation {{'size': [h, w], "
                             f"'counts': str}}, got {rle!r:.120}.")
        size = rle["size"]
        if not all(isinstance(side, int) and not isinstance(side, bool) and 0 < side <= 1 << 16 for side in size):
            raise ValueError(f"{path}: annotation {number} has the size {size!r}; expected [height, width], two "
                             "positive integers (at most 65536).")
        try:
            mask = mask_utils.decode({"size": size, "counts": rle["counts"].encode()}).astype(bool)
        except Exception as err:  # pycocotools raises what its C code meets (OverflowError, MemoryError, ...)
            raise ValueError(
                f"{path}: annotation {number}'s RLE does not decode ({type(err).__name__}: {err})."
            ) from None
        if mask.any() and mask.mean() >= min_area:
            masks.append(mask)
    masks.sort(key=lambda m: -int(m.sum()))
    return masks[:max_masks] if max_masks is not None else masks


def ade20k(root, split: str = "validation") -> SegmentationSource:
    root = Path(root)
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    images = require_path(base / "images" / split, f"ADE20k {split} images")
    pairs = [(p, base / "annotations" / split / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
    return SegmentationSource("ade20k", 150, check_pairs(pairs, f"ADE20k {split}"), reduce_zero_label=True)


def pascal_voc(root, split: str = "val") -> SegmentationSource:
    root = Path(root)
    base = root / "VOC2012" if (root / "VOC2012").is_dir() else root
    split_file = require_path(base / "ImageSets" / "Segmentation" / f"{split}.txt", f"VOC {split} split file")
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    pairs = [(base / "JPEGImages" / f"{i}.jpg", base / "SegmentationClass" / f"{i}.png") for i in ids]
    return SegmentationSource("voc", 21, check_pairs(pairs, f"VOC {split}"))


def cityscapes(root, split: str = "val") -> SegmentationSource:
    root = Path(root)
    images = require_path(root / "leftImg8bit" / split, f"Cityscapes {split} images")
    pairs = []
    for image in sorted(images.glob("*/*_leftImg8bit.png")):
        stem = image.name.removesuffix("_leftImg8bit.png")
        pairs.append((image, root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"))
    return SegmentationSource("cityscapes", 19, check_pairs(pairs, f"Cityscapes {split}"))


def scene_segmentation(num_scenes: int, seed: int = 0, camera: Camera | None = None,
                       style: str = "simple") -> SegmentationSource:
    """Generated scenes of `style` as semantic segmentation: the background (sky, or a room's walls), ground and the
    style's primitive types (5 classes for the simple style, 6 for the cluttered and room ones)."""
    classes = (scene_style(style).background, "ground", *scene_style(style).shapes)
    items = []
    for index in range(num_scenes):
        scene = generate_scene(seed + index, camera, style=style)
        kinds = np.array([classes.index(o.shape) for o in scene.objects] or [0], dtype=np.int64)
        labels = np.where(scene.instances < 0, 0, np.where(scene.instances == 0, 1, 0)).astype(np.int64)
        objects = scene.instances > 0
        labels[objects] = kinds[scene.instances[objects] - 1]
        items.append((scene.image, labels))
    return SegmentationSource("scenes", len(classes), items, class_names=classes)


__all__ = [
    "SCENE_CLASSES",
    "SegmentationSource",
    "ade20k",
    "cityscapes",
    "pascal_voc",
    "sa1b",
    "sa1b_masks",
    "scene_segmentation",
]
