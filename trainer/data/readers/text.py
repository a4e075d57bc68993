# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Images with text: retrieval (`CaptionSource`: Karpathy splits, the scenes' captions), zero-shot classification
(`ClassificationSource`: class folders, the scenes by their largest shape) and MMVP-VLM's statement pairs."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from modeling_versavit import load_image

from ..scenes import Camera, generate_scene, scene_style
from .common import IMAGE_SUFFIXES, inside, require_path, scenes_name


@dataclass
class CaptionSource:
    """Images with their captions (one or several each), for image-text retrieval."""

    name: str
    items: list  # (image path or HxWx3 uint8 array, [caption, ...])

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, list[str]]:
        image, captions = self.items[index]
        return (PIL.Image.fromarray(image) if isinstance(image, np.ndarray) else load_image(image)), list(captions)


def karpathy(split_json, image_root, split: str = "test") -> CaptionSource:
    """A Karpathy split of COCO or Flickr30k (`dataset_coco.json` / `dataset_flickr30k.json`: `images` entries with
    `filename`, optional `filepath` under `image_root`, `split` and `sentences[].raw`), the retrieval benchmarks'
    layout (5k / 1k test images, 5 captions each). `restval` counts as `train`."""
    path = require_path(Path(split_json), "split_json")
    root = require_path(Path(image_root), "image_root")
    try:
        entries = json.loads(path.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a Karpathy split file (a JSON object with an 'images' list): {err}.") from err
    items = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "filename" not in entry or "sentences" not in entry:
            raise ValueError(f"{path}: images[{index}] lacks 'filename' or 'sentences'.")
        if {"restval": "train"}.get(entry.get("split"), entry.get("split")) != split:
            continue
        captions = [s.get("raw", "").strip() for s in entry["sentences"] if isinstance(s, dict)]
        captions = [c for c in captions if c]
        if not captions:
            raise ValueError(f"{path}: images[{index}] ({entry['filename']}) has no caption.")
        items.append((inside(root, Path(entry.get("filepath", "")) / entry["filename"], f"{path}: filename"),
                      captions))
    if not items:
        raise ValueError(f"{path}: no image in split {split!r}.")
    return CaptionSource(path.stem.removeprefix("dataset_"), items)


def scene_captions(num_scenes: int, seed: int = 0, camera: Camera | None = Camera(),
                   style: str = "simple") -> CaptionSource:
    """Generated scenes with their captions (the objects they show, by colour, shape and position); `camera=None`
    takes the style's own camera."""
    scenes = (generate_scene(seed + i, camera, style=style) for i in range(num_scenes))
    return CaptionSource(scenes_name(style), [(scene.image, [scene.caption]) for scene in scenes])


@dataclass
class ClassificationSource:
    """Images with a class index each, and the class names prompts are made from."""

    name: str
    items: list  # (image path or HxWx3 uint8 array, class index)
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, int]:
        image, label = self.items[index]
        return (PIL.Image.fromarray(image) if isinstance(image, np.ndarray) else load_image(image)), int(label)


def image_folder_classes(root, class_names=None) -> ClassificationSource:
    """An ImageNet-style folder: one sub-folder of images per class (`val/n01440764/*.JPEG`), classes in sorted
    folder order. `class_names` (a JSON file: a list in that order, or a {folder: name} map) gives the names the
    prompts use; by default the folder names, with `_` read as a space."""
    root = require_path(Path(root), "classification root")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root}: no class folders (expected <root>/<class>/<image>).")
    names = [folder.name.replace("_", " ") for folder in folders]
    if class_names is not None:
        path = require_path(Path(class_names), "class_names")
        given = json.loads(path.read_text())
        if isinstance(given, dict):
            missing = [folder.name for folder in folders if folder.name not in given]
            if missing:
                raise ValueError(f"{path}: no name for class folders {missing[:5]}.")
            names = [str(given[folder.name]) for folder in folders]
        elif isinstance(given, list) and len(given) == len(folders):
            names = [str(name) for name in given]
        else:
            raise ValueError(f"{path}: expected a list of {len(folders)} names or a {{folder: name}} map.")
    items = [(image, label) for label, folder in enumerate(folders)
             for image in sorted(folder.iterdir()) if image.suffix in IMAGE_SUFFIXES]
    if not items:
        raise ValueError(f"{root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES[:5])}, ...).")
    return ClassificationSource(root.name, items, tuple(names))


@dataclass
class StatementPairSource:
    """MMVP-style pairs: two images and two statements, statement k describing image k (and not the other); a
    model passes a pair when each statement scores higher with its own image than with the other one."""

    name: str
    items: list  # (image path 1, image path 2, statement 1, statement 2, category)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, PIL.Image.Image, str, str, str]:
        first, second, statement_1, statement_2, category = self.items[index]
        return load_image(first), load_image(second), statement_1, statement_2, category


MMVP_COLUMNS = ("Question ID", "Type", "Statement")


def mmvp_vlm(root) -> StatementPairSource:
    """MMVP-VLM (the paper's Table 15): `Questions.csv` with the columns `Question ID`, `Type`, `Statement`, its rows
    in pairs (the two images of a CLIP-blind pair, one after the other, of the same `Type`), and the images under
    `MLLM_VLM Images/<Type>/<Question ID>.jpg`. Each statement describes the image of its own row."""
    import csv

    root = require_path(Path(root), "MMVP-VLM root")
    table = require_path(root / "Questions.csv", "MMVP-VLM Questions.csv")
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in MMVP_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{table}: missing columns {missing} (MMVP-VLM has {list(MMVP_COLUMNS)}).")
        rows = [row for row in reader if any((value or "").strip() for value in row.values())]
    if len(rows) % 2:
        raise ValueError(f"{table}: {len(rows)} rows; MMVP-VLM's rows come in pairs.")
    items = []
    for first in range(0, len(rows), 2):
        pair = rows[first:first + 2]
        line = first + 2  # the header is line 1
        if pair[0]["Type"] != pair[1]["Type"]:
            raise ValueError(f"{table}:{line}-{line + 1}: a pair's two rows have different Types "
                             f"({pair[0]['Type']!r}, {pair[1]['Type']!r}).")
        images = []
        for offset, row in enumerate(pair):
            qid, statement = row["Question ID"].strip(), row["Statement"].strip()
            if not qid or not statement:
                raise ValueError(f"{table}:{line + offset}: empty Question ID or Statement.")
            image = inside(root / "MLLM_VLM Images", Path(row["Type"]) / f"{qid}.jpg", f"{table}:{line + offset}")
            images.append(require_path(image, "MMVP-VLM image"))
        items.append((*images, pair[0]["Statement"].strip(), pair[1]["Statement"].strip(), pair[0]["Type"]))
    if not items:
        raise ValueError(f"{table}: no pairs.")
    return StatementPairSource("mmvp-vlm", items)


# The zero-shot prompt of a scene class, in the words of the scenes' captions.
SCENE_PROMPT = "A checkered floor with a {}."


def scene_classes(num_scenes: int, seed: int = 0, camera: Camera | None = Camera(),
                  style: str = "simple") -> ClassificationSource:
    """Generated scenes labelled with the shape of their largest visible object (the style's shapes); prompt them
    with `SCENE_PROMPT`; `camera=None` takes the style's own camera."""
    shapes = scene_style(style).shapes
    items = []
    for index in range(num_scenes):
        scene = generate_scene(seed + index, camera, style=style)
        areas = [(scene.instances == i + 1).sum() for i in range(len(scene.objects))]
        if areas:
            items.append((scene.image, shapes.index(scene.objects[int(np.argmax(areas))].shape)))
    return ClassificationSource(scenes_name(style), items, shapes)


__all__ = [
    "CaptionSource",
    "ClassificationSource",
    "MMVP_COLUMNS",
    "SCENE_PROMPT",
    "StatementPairSource",
    "image_folder_classes",
    "karpathy",
    "mmvp_vlm",
    "scene_captions",
    "scene_classes",
]
