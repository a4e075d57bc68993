# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The generated scenes as the task datasets (`scene_datasets`): the embedded default data of every recipe."""

import functools
from collections.abc import Callable

import numpy as np
import PIL.Image
import torch
from datasets import Dataset

from .scenes import PLURALS, SCENE_TEXTS, Camera, Scene, generate_scene
from .schemas import CAPTIONING_FEATURES, CONTRASTIVE_FEATURES, DEPTH_FEATURES, SEGMENTATION_FEATURES, encode_depth

# What the segmentation rows' expressions refer to: "referring", each expression one object, unique in its scene (the
# paper's referring segmentation); "classes", one expression per shape class present ("all spheres") whose mask is
# every object of that class (semantic segmentation, posed as referring masks).
SCENE_EXPRESSIONS = ("referring", "classes")

# Scenes rendered for the tables, kept for the process: the proving ground runs dozens of recipes/multitask.py runs in
# one process on the same scenes (a room scene takes ~60 ms to render, 300 of them ~20 s a run). A scene is a pure
# function of its arguments; its arrays are made read-only, so no reader can change the kept copy.
SCENE_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=SCENE_CACHE_SIZE)
def _scene(seed: int, camera: Camera | None, style: str) -> Scene:
    scene = generate_scene(seed, camera, style=style)
    for array in (scene.image, scene.depth, scene.instances, *(mask for _, mask in scene.expressions)):
        array.flags.writeable = False
    return scene


def class_expressions(scene: Scene) -> list[tuple[str, np.ndarray]]:
    """One (text, mask) per shape class among the scene's objects, in order of first appearance: "all <plural>"
    and the mask of every object of that class (instance ids are the objects' places + 1)."""
    shapes = dict.fromkeys(obj.shape for obj in scene.objects)
    return [(f"all {PLURALS[shape]}",
             np.isin(scene.instances, [i + 1 for i, obj in enumerate(scene.objects) if obj.shape == shape]))
            for shape in shapes]


def scene_datasets(
    num_scenes: int, embed: Callable[[list[str]], torch.Tensor] | None, seed: int = 0, camera: Camera | None = None,
    style: str = "simple", texts: str = "default", extra_tables: tuple[str, ...] = (), expressions: str = "referring",
) -> dict[str, Dataset]:
    """The embedded default data: `num_scenes` generated scenes of `style` (seeds `seed ..`) as the task datasets.

    `embed` turns texts into text embeddings (e.g. a `SentenceEmbedder` on MiniLM). Captioning rows hold the scene's
    conversation of kind `texts` (`scenes.SCENE_TEXTS`; "default": the caption, the answer to "Describe the image.",
    and the question-answer pairs); contrastive rows pair each image with the caption of that kind (the short or
    detailed caption; the scene's caption for "default" and "instructions", which have no caption of their own) and
    the caption's embedding, built when `extra_tables` names "contrastive" (the captions are embedded
    only then). Segmentation rows hold the scene's expressions of kind `expressions` (`SCENE_EXPRESSIONS`: referring
    expressions, or one per shape class). Scenes without a describable object are left out of the segmentation data;
    the segmentation and contrastive data are empty when `embed` is None (no text encoder)."""
    if texts not in SCENE_TEXTS:
        raise ValueError(f"texts: expected one of {list(SCENE_TEXTS)}, got {texts!r}.")
    if expressions not in SCENE_EXPRESSIONS:
        raise ValueError(f"scene_expressions: expected one of {list(SCENE_EXPRESSIONS)}, got {expressions!r}.")
    unknown = [name for name in extra_tables if name != "contrastive"]
    if unknown:
        raise ValueError(f"extra_tables: unknown {unknown} (the scenes can add: ['contrastive']).")
    depth, segmentation, captioning, contrastive = [], [], [], []
    for index in range(num_scenes):
        scene = _scene(seed + index, camera, style)
        image = PIL.Image.fromarray(scene.image)
        stored, scale = encode_depth(scene.depth)
        depth.append({"image": image, "depth": stored, "depth_scale": scale})
        referred = scene.expressions if expressions == "referring" else class_expressions(scene)
        if referred and embed is not None:
            texts_of = [text for text, _ in referred]
            segmentation.append({
                "image": image,
                "expressions": texts_of,
                "masks": [PIL.Image.fromarray(mask) for _, mask in referred],
                "text_embeds": torch.as_tensor(embed(texts_of), dtype=torch.float32).tolist(),
            })
        turns = [{"user": question, "assistant": answer} for question, answer in scene.texts[texts]]
        captioning.append({"image": image, "texts": turns})
        if embed is not None and "contrastive" in extra_tables:
            caption = scene.texts[texts][0][1] if texts in ("short", "detailed") else scene.caption
            contrastive.append({"image": image, "caption": caption})
    if contrastive:  # one call: the text encoder batches the captions
        vectors = torch.as_tensor(embed([row["caption"] for row in contrastive]), dtype=torch.float32)
        for row, vector in zip(contrastive, vectors):
            row["text_embeds"] = vector.tolist()
    tables = {
        "depth": Dataset.from_list(depth, features=DEPTH_FEATURES),
        "segmentation": Dataset.from_dict(
            {column: [row[column] for row in segmentation] for column in SEGMENTATION_FEATURES},
            features=SEGMENTATION_FEATURES,
        ),
        "captioning": Dataset.from_list(captioning, features=CAPTIONING_FEATURES),
    }
    if "contrastive" in extra_tables:
        tables["contrastive"] = Dataset.from_dict(
            {column: [row[column] for row in contrastive] for column in CONTRASTIVE_FEATURES},
            features=CONTRASTIVE_FEATURES,
        )
    return tables


__all__ = ["SCENE_EXPRESSIONS", "class_expressions", "scene_datasets"]
