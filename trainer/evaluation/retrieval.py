# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Image-text retrieval of a tower (the paper's out-of-task evaluation, Table 11; supplement §9.5).

The tower gets `VersaViTForImageTextRetrieval`'s head: attention pooling over its last-layer tokens and a projection
of offline text embeddings into a shared space, trained with a contrastive loss on image-caption pairs, either with
the tower frozen (the paper's first setting: head only) or training too at its own learning rate (the second). Then
Recall@1/5/10 in both directions on held-out images (`retrieval_recall`: several captions per image; ties count
against the positive).

With the tower frozen, each training image's last-layer tokens are computed once and kept (`cache_features`): the
pooling head then trains on the cached tokens, the same computation as a full forward.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from modeling_versavit import VersaViTConfig, VersaViTForImageTextRetrieval, VersaViTModel, fixed_size_pixels

from ..data.processors import image_processor_for
from ..data.readers import CaptionSource, ClassificationSource, StatementPairSource
from ..metrics import retrieval_recall


@dataclass
class RetrievalSettings:
    """How the retrieval head trains (the recipe's options of the same names; the paper's values in the help)."""

    size: int = field(default=224, metadata={"help": "Square input side, a multiple of the tower's patch x merge."})
    steps: int = field(default=300, metadata={"help": "Optimizer steps (the paper: 10 epochs of 30M pairs)."})
    batch_size: int = field(default=32, metadata={"help": "Image-caption pairs per step, distinct images (the paper: "
                                                          "128 per GPU x 128 GPUs)."})
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate of the head (the paper: 5e-4 "
                                                                 "head only, 1e-4 with the tower training)."})
    backbone_learning_rate: float = field(default=0.0, metadata={"help": "The tower's learning rate; 0 keeps it "
                                                                         "frozen (the paper's second setting: 1e-5)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warmup steps, then cosine decay."})
    loss: str = field(default="sigmoid", metadata={"help": "sigmoid (SigLIP) or softmax (CLIP) contrastive loss."})
    embed_dim: int = field(default=1280, metadata={"help": "Shared embedding width (the paper: 1280)."})
    pooling_heads: int = field(default=16, metadata={"help": "Attention-pooling heads (must divide the tower width)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head, the batches and the caption drawn per image."})
    cache_features: bool = field(default=True, metadata={"help": "With a frozen tower, compute each training image's "
                                                                 "tokens once and keep them (small runs)."})

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"steps / batch_size: need at least 1 step and 2 pairs per batch (a contrastive loss "
                             f"needs negatives), got {self.steps} / {self.batch_size}.")
        if self.backbone_learning_rate < 0 or self.learning_rate <= 0:
            raise ValueError(f"learning_rate / backbone_learning_rate: must be > 0 / >= 0, got {self.learning_rate} "
                             f"/ {self.backbone_learning_rate}.")


def retrieval_model(
    backbone: VersaViTModel, text_dim: int, settings: RetrievalSettings
) -> VersaViTForImageTextRetrieval:
    """`backbone`'s tower (its weights) under a fresh retrieval head for `text_dim`-wide text embeddings."""
    config = VersaViTConfig(**{
        **backbone.config.to_dict(), "retrieval_embed_dim": settings.embed_dim,
        "retrieval_pooling_heads": settings.pooling_heads, "retrieval_text_embed_dim": text_dim,
        "retrieval_loss": settings.loss,
    })
    torch.manual_seed(settings.seed)
    model = VersaViTForImageTextRetrieval(config).to(backbone.dtype)
    model.visual.load_state_dict(backbone.visual.state_dict())
    return model


def _check_size(model: VersaViTForImageTextRetrieval, size: int) -> None:
    multiple = model.config.input_size_multiple
    if size <= 0 or size % multiple:
        raise ValueError(f"size: must be a positive multiple of {multiple} (the tower's patch x merge), got {size}.")


class _Inputs:
    """Fixed-size processor inputs of a source's images (and, with a frozen tower, their cached tokens)."""

    def __init__(self, model: VersaViTForImageTextRetrieval, source: CaptionSource, size: int):
        _check_size(model, size)
        self.model, self.source, self.size = model, source, size
        self.processor = image_processor_for(model.config)
        self.tokens: dict[int, torch.Tensor] = {}

    def pixels(self, indices: list[int]) -> dict:
        return fixed_size_pixels([self.source.load(i)[0] for i in indices], self.size, self.processor)

    @torch.no_grad()
    def cached_tokens(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [i for i in indices if i not in self.tokens]
        if missing:
            inputs = self.pixels(missing)
            tokens = self.model.get_image_features(**inputs).last_hidden_state  # the tower's last-layer tokens
            for i, chunk in zip(missing, tokens.split(inputs["image_grid_thw"].prod(-1).tolist())):
                self.tokens[i] = chunk
        grid = self.size // self.model.config.patch_size
        return torch.cat([self.tokens[i] for i in indices]), torch.tensor([[1, grid, grid]] * len(indices))


def embed_captions(embedder, source: CaptionSource) -> tuple[torch.Tensor, torch.Tensor]:
    """Every caption's offline embedding `(num_captions, dim)` and the index of its image."""
    captions, owners = [], []
    for index, (_, texts) in enumerate(source.items):
        captions += list(texts)
        owners += [index] * len(texts)
    return embedder(captions), torch.tensor(owners)


def train_retrieval(model: VersaViTForImageTextRetrieval, source: CaptionSource, text_embeds: torch.Tensor,
                    text_image: torch.Tensor, settings: RetrievalSettings) -> list[float]:
    """Train the head (and the tower when `backbone_learning_rate` > 0) on `source`'s pairs; the losses per step.
    Each batch draws distinct images and one of each image's captions."""
    frozen = settings.backbone_learning_rate == 0
    model.train()
    model.visual.requires_grad_(not frozen)
    for parameter in model.frozen_by_design():
        parameter.requires_grad_(False)
    groups = [{"params": list(model.retrieval_head.parameters()), "lr": settings.learning_rate}]
    if not frozen:
        groups.append({"params": [p for p in model.visual.parameters() if p.requires_grad],
                       "lr": settings.backbone_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    peaks = [group["lr"] for group in optimizer.param_groups]
    inputs = _Inputs(model, source, settings.size)
    captions_of = [torch.nonzero(text_image == i).flatten() for i in range(len(source))]
    rng = np.random.default_rng(settings.seed)
    batch = min(settings.batch_size, len(source))
    losses = []
    for step in range(settings.steps):
        warm = (step + 1) / settings.warmup_steps if step < settings.warmup_steps else 1.0
        progress = max(0, step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * min(warm, 0.5 * (1 + math.cos(math.pi * progress)))
        images = rng.choice(len(source), size=batch, replace=False).tolist()
        texts = text_embeds[[int(rng.choice(captions_of[i])) for i in images]]
        if frozen and settings.cache_features:
            tokens, grid = inputs.cached_tokens(images)
            image_embeds = model.pool_tokens(tokens, grid)
            loss, _ = model.retrieval_loss(image_embeds, model.project_text(texts))
        else:
            loss = model(**inputs.pixels(images), text_embeds=texts, return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def evaluate_retrieval(model: VersaViTForImageTextRetrieval, source: CaptionSource, text_embeds: torch.Tensor,
                       text_image: torch.Tensor, size: int, batch_size: int = 32) -> dict:
    """Recall@1/5/10 both ways of `source`'s images against all its captions."""
    model.eval()
    inputs = _Inputs(model, source, size)
    batches = [list(range(start, min(start + batch_size, len(source)))) for start in range(0, len(source), batch_size)]
    images = torch.cat([model.get_image_features(**inputs.pixels(batch)).pooler_output for batch in batches])
    texts = model.project_text(text_embeds)
    return retrieval_recall(images.float() @ texts.float().t(), text_image)


@torch.no_grad()
def zero_shot_accuracy(model: VersaViTForImageTextRetrieval, source: ClassificationSource, embedder, size: int,
                       template: str = "a photo of a {}.", batch_size: int = 32) -> dict:
    """Zero-shot classification through the trained text side (the paper's Table 15 setting): each class name in
    `template`, embedded and projected; an image's class is the prompt it scores highest with. Top-1 (and top-5
    with more than 5 classes) accuracy, ties counting against the right class as in `retrieval_recall`, and the
    share of the most frequent class (what always answering it would score)."""
    if "{}" not in template:
        raise ValueError(f"template: needs a {{}} where the class name goes, got {template!r}.")
    model.eval()
    prompts = model.project_text(embedder([template.format(name) for name in source.class_names]))
    inputs = _Inputs(model, source, size)
    correct = {1: 0, 5: 0}
    for start in range(0, len(source), batch_size):
        indices = list(range(start, min(start + batch_size, len(source))))
        scores = model.get_image_features(**inputs.pixels(indices)).pooler_output.float() @ prompts.float().t()
        labels = torch.tensor([source.items[i][1] for i in indices])
        rank = (scores > scores[torch.arange(len(indices)), labels][:, None]).sum(1)
        rank += (scores == scores[torch.arange(len(indices)), labels][:, None]).sum(1) - 1  # ties count against
        for k in correct:
            correct[k] += int((rank < k).sum())
    counts = np.bincount([label for _, label in source.items], minlength=len(source.class_names))
    result = {"top1_accuracy": correct[1] / len(source), "num_classes": len(source.class_names),
              "majority": float(counts.max() / len(source))}
    if len(source.class_names) > 5:
        result["top5_accuracy"] = correct[5] / len(source)
    return result


def statement_pairs_passed(similarities: torch.Tensor) -> torch.Tensor:
    """Per pair, from its `(2, 2)` statement x image similarities: does each statement score strictly higher with its
    own image (the diagonal) than with the other one? A tie counts against, as in `zero_shot_accuracy`."""
    if similarities.ndim != 3 or similarities.shape[1:] != (2, 2):
        raise ValueError(f"similarities: expected (pairs, 2, 2), got {tuple(similarities.shape)}.")
    return (similarities[:, 0, 0] > similarities[:, 0, 1]) & (similarities[:, 1, 1] > similarities[:, 1, 0])


@torch.no_grad()
def statement_pair_accuracy(model: VersaViTForImageTextRetrieval, source: StatementPairSource, embedder, size: int,
                            template: str = "a photo of {}") -> dict:
    """MMVP-VLM's score through the trained text side: a pair passes when each of its statements (in `template`,
    as MMVP's own evaluation writes "a photo of <statement>") is closer to its own image than to the other one.
    The share of pairs passed, overall and per category (chance: 0.25)."""
    if "{}" not in template:
        raise ValueError(f"template: needs a {{}} where the statement goes, got {template!r}.")
    _check_size(model, size)
    model.eval()
    processor = image_processor_for(model.config)
    passed, categories = [], []
    for index in range(len(source)):
        first, second, statement_1, statement_2, category = source.load(index)
        images = model.get_image_features(**fixed_size_pixels([first, second], size, processor)).pooler_output
        texts = model.project_text(embedder([template.format(statement_1), template.format(statement_2)]))
        passed.append(bool(statement_pairs_passed((texts.float() @ images.float().t())[None])[0]))
        categories.append(category)
    per_category = {name: float(np.mean([p for p, c in zip(passed, categories) if c == name]))
                    for name in dict.fromkeys(categories)}
    return {"pair_accuracy": float(np.mean(passed)), "per_category": per_category, "num_pairs": len(passed)}


__all__ = ["RetrievalSettings", "embed_captions", "evaluate_retrieval", "retrieval_model", "statement_pair_accuracy",
           "statement_pairs_passed", "train_retrieval", "zero_shot_accuracy"]
