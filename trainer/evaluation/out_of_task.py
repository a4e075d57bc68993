# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The out-of-task measurements of a frozen tower on generated scenes, one number each (the columns `compare.py`
and the proving ground add to their tables):

- `correspondence`: keypoint correspondence between two views of each held-out scene (`correspondence.py`), recall
  within a tenth of the image's longer side;
- `retrieval`: image-text retrieval after training `eval_retrieval.py`'s head (its embedded default settings) on the
  training scenes' captions, tower frozen: the mean of R@1/5/10 in both directions on the held-out scenes;
- `classification`: zero-shot classification of held-out scenes by their largest object's shape through that head
  (top-1).
"""

from pathlib import Path

import yaml

from ..data import readers
from .correspondence import correspondence_recall
from .probes import FrozenFeatures

OUT_OF_TASK = ("correspondence", "retrieval", "classification")
RETRIEVAL_CONFIG = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "retrieval_default.yaml"
# Scene seeds, as the evaluation recipes draw them: training captions, then held-out pairs, captions and classes.
TRAIN_SEED, EVAL_SEED, CLASSIFY_SEED = 5000, 9000, 13000


def scene_out_of_task(encoder, kinds, size: int, seed: int, num_scenes: int, num_eval_scenes: int,
                      style: str = "simple") -> dict[str, float]:
    """The measurements of `kinds` (among `OUT_OF_TASK`) for one frozen encoder: `num_scenes` training scenes for
    the retrieval head, `num_eval_scenes` held-out scenes (pairs, captions, classified images) of `style`, images at
    `size`, the head initialised and its batches drawn from `seed`."""
    unknown = [kind for kind in kinds if kind not in OUT_OF_TASK]
    if unknown:
        raise ValueError(f"out_of_task: {unknown} (choose among {OUT_OF_TASK}).")
    results = {}
    if "correspondence" in kinds:
        source = readers.scene_correspondences(num_eval_scenes, EVAL_SEED, camera=None, second=None, style=style)
        results["correspondence"] = correspondence_recall(FrozenFeatures(encoder, size), source)["recall@0.1"]
    if "retrieval" in kinds or "classification" in kinds:
        from modeling_versavit import SentenceEmbedder

        from ..data.assets import minilm_path
        from .retrieval import (
            RetrievalSettings,
            embed_captions,
            evaluate_retrieval,
            retrieval_model,
            train_retrieval,
            zero_shot_accuracy,
        )

        embedder = SentenceEmbedder(minilm_path())
        defaults = yaml.safe_load(RETRIEVAL_CONFIG.read_text())
        settings = RetrievalSettings(**{
            **{key: value for key, value in defaults.items() if key in RetrievalSettings.__dataclass_fields__},
            "size": size, "seed": seed,
            "pooling_heads": encoder.config.backbone.num_heads(encoder.config.vision_config),
        })
        model = retrieval_model(encoder, embedder.dim, settings)
        train = readers.scene_captions(num_scenes, TRAIN_SEED, camera=None, style=style)
        train_retrieval(model, train, *embed_captions(embedder, train), settings)
        if "retrieval" in kinds:
            held_out = readers.scene_captions(max(num_eval_scenes, 2), EVAL_SEED, camera=None, style=style)
            results["retrieval"] = evaluate_retrieval(model, held_out, *embed_captions(embedder, held_out),
                                                      size)["mean_recall"]
        if "classification" in kinds:
            classes = readers.scene_classes(num_eval_scenes, CLASSIFY_SEED, camera=None, style=style)
            results["classification"] = zero_shot_accuracy(model, classes, embedder, size,
                                                           readers.SCENE_PROMPT)["top1_accuracy"]
    return results


__all__ = ["OUT_OF_TASK", "scene_out_of_task"]
