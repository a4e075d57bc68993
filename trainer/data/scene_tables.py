# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The generated scenes as the task datasets (`scene_datasets`): the embedded default data of every recipe."""

from collections.abc import Callable

import PIL.Image
import torch
from datasets import Dataset

from .scenes import SCENE_TEXTS, Camera, generate_scene
from .schemas import CAPTIONING_FEATURES, CONTRASTIVE_FEATURES, DEPTH_FEATURES, SEGMENTATION_FEATURES, encode_depth


def scene_datasets(
    num_scenes: int, embed: Callable[[list[str]], torch.Tensor] | None, seed: int = 0, camera: Camera | None = None,
    style: str = "simple", texts: str = "default", extra_tables: tuple[str, ...] = (),
) -> dict[str, Dataset]:
    """The embedded default data: `num_scenes` generated scenes of `style` (seeds `seed ..`) as the task datasets.

    `embed` turns texts into text embeddings (e.g. a `SentenceEmbedder` on MiniLM). Captioning rows hold the scene's
    conversation of kind `texts` (`scenes.SCENE_TEXTS`; "default": the caption, the answer to "Describe the image.",
    and the question-answer pairs); contrastive rows pair each image with the caption of that kind (the short or
    detailed caption; the scene's caption for "default" and "instructions", which have no caption of their own) and
    the caption's embedding, built when `extra_tables` names "contrastive" (the captions are embedded
    only then). Scenes without a describable object are left out of the segmentation data; the segmentation and
    contrastive data are empty when `embed` is None (no text encoder)."""
    if texts not in SCENE_TEXTS:
        raise ValueError(f"texts: expected one of {list(SCENE_TEXTS)}, got {texts!r}.")
    unknown = [name for name in extra_tables if name != "contrastive"]
    if unknown:
        raise ValueError(f"extra_tables: unknown {unknown} (the scenes can add: ['contrastive']).")
    depth, segmentation, captioning, contrastive = [], [], [], []
    for index in range(num_scenes):
        scene = generate_scene(seed + index, camera, style=style)
        image = PIL.Image.fromarray(scene.image)
        stored, scale = encode_depth(scene.depth)
        depth.append({"image": image, "depth": stored, "depth_scale": scale})
        if scene.expressions and embed is not None:
            expressions = [text for text, _ in scene.expressions]
            segmentation.append({
                "image": image,
                "expressions": expressions,
                "masks": [PIL.Image.fromarray(mask) for _, mask in scene.expressions],
                "text_embeds": torch.as_tensor(embed(expressions), dtype=torch.float32).tolist(),
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


__all__ = ["scene_datasets"]
