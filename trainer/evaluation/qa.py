# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Question-answer accuracy of a captioning model: the language-grounding score of the proving ground.

The paper scores how much language grounding an encoder keeps on VQA benchmarks (OpenCompass) after training an
MLLM around the frozen encoder (§5.1(i)). On the generated scenes the questions have exact answers ("How many boxes
are there?" - "two"), so the score is exact-match accuracy of greedy answers, after lower-casing and stripping
punctuation and articles (VQA-style answer normalisation), next to the majority answer per question kind (what an
MLLM that ignores the image scores).
"""

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..data.scenes import SPATIAL_DEPTH, SPATIAL_RELATION, generate_scene

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces: `"Two."` and `"two"` are the same answer."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def question_kind(question: str) -> str:
    """The template of a scene question: its words up to the first attribute (`"How many"`, `"What color is"`,
    `"Is there anything"`, the spatial questions' `"Which is closer to the camera"` and `"Left or right"`), so the
    majority answer is taken per kind of question."""
    for prefix in ("How many", "What color is", "Is there anything", SPATIAL_DEPTH, SPATIAL_RELATION):
        if question.startswith(prefix):
            return prefix
    return question


@dataclass(frozen=True)
class QAItem:
    image: np.ndarray  # (H, W, 3) uint8
    question: str
    answer: str


def scene_questions(num_scenes: int, seed: int, texts: str | None = None, **scene_options) -> list[QAItem]:
    """Every question-answer pair of `num_scenes` generated scenes from `seed`: the scenes' own `qa`, or their
    conversation turns of kind `texts` (e.g. "spatial": depth order, left / right and counts)."""
    items = []
    for index in range(num_scenes):
        scene = generate_scene(seed + index, **scene_options)
        pairs = scene.qa if texts is None else scene.texts[texts]
        items += [QAItem(scene.image, question, answer) for question, answer in pairs]
    return items


def majority_accuracy(train: list[QAItem], held_out: list[QAItem]) -> float:
    """Accuracy of answering each held-out question with the most frequent training answer of its kind."""
    answers = defaultdict(Counter)
    for item in train:
        answers[question_kind(item.question)][normalize_answer(item.answer)] += 1
    hits = [bool(answers[question_kind(i.question)]) and
            answers[question_kind(i.question)].most_common(1)[0][0] == normalize_answer(i.answer) for i in held_out]
    return float(np.mean(hits)) if hits else 0.0


@torch.no_grad()
def qa_accuracy(model, processor, items: list[QAItem], batch_size: int = 16, max_new_tokens: int = 6) -> dict:
    """Exact-match accuracy of `model`'s greedy answers (a `VersaViTForCaptioning` and its
    `VersaViTCaptioningProcessor`) to `items`, overall and per question kind; `answers` lists what it said."""
    if not items:
        raise ValueError("qa_accuracy: no questions to ask.")
    was_training = model.training
    model.eval()
    said = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        inputs = processor([i.image for i in batch], prompts=[i.question for i in batch])
        tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=processor.pad_token_id)
        said += processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    model.train(was_training)
    hits = [normalize_answer(text) == normalize_answer(item.answer) for text, item in zip(said, items)]
    kinds = defaultdict(list)
    for hit, item in zip(hits, items):
        kinds[question_kind(item.question)].append(hit)
    return {"accuracy": float(np.mean(hits)), "count": len(items),
            "per_kind": {kind: float(np.mean(values)) for kind, values in sorted(kinds.items())},
            "answers": [{"question": i.question, "answer": i.answer, "said": text.strip()}
                        for i, text in zip(items, said)]}


__all__ = ["QAItem", "majority_accuracy", "normalize_answer", "qa_accuracy", "question_kind", "scene_questions"]
