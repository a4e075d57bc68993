# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Cross-modal contrastive alignment (SAILViT's image-text contrastive component; the retrieval head of the paper's
supplement §9.5): a small attention-pooling head pools the tower's last-layer tokens, a projection takes offline
text embeddings of the captions into the same space, and a sigmoid (SigLIP) or softmax (CLIP) contrastive loss with
a learnable temperature (and bias) pulls each image towards its own caption. Usable in any stage of any method."""

import logging
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from modeling_versavit import VersaViTForImageTextRetrieval
from modeling_versavit.modeling_versavit import VersaViTRetrievalHead

from ..parts import unwrap_versavit
from .base import Objective, register_objective

logger = logging.getLogger(__name__)


@dataclass
class ContrastiveOutput(ModelOutput):
    loss: torch.Tensor | None = None
    loss_terms: dict | None = None
    logits_per_image: torch.Tensor | None = None


class ContrastiveCollator:
    """Contrastive rows (`image`, `caption`, `text_embeds`) -> the tower's inputs at the fixed `size` plus the
    `(B, width)` text embeddings; a row whose embedding is not `width` wide or holds NaN / inf is a `ValueError`
    naming it."""

    def __init__(self, size: int, width: int | None, image_processor=None):
        self.size, self.width, self.image_processor = size, width, image_processor

    def validate(self, sample: dict) -> None:
        self._embedding(sample)

    def _embedding(self, sample: dict) -> torch.Tensor:
        embeds = torch.as_tensor(sample["text_embeds"], dtype=torch.float32)
        caption = str(sample.get("caption", ""))[:60]
        if embeds.ndim != 1 or (self.width is not None and embeds.shape[0] != self.width):
            raise ValueError(f"contrastive sample ({caption!r}): text_embeds has shape {tuple(embeds.shape)}, "
                             f"expected ({self.width},): the retrieval head's text width (retrieval_text_embed_dim, "
                             "set from the run's text encoder or first text embedding).")
        if not torch.isfinite(embeds).all():
            raise ValueError(f"contrastive sample ({caption!r}): text_embeds contains NaN or inf values.")
        return embeds

    def __call__(self, samples: list[dict]) -> dict:
        from modeling_versavit import fixed_size_pixels

        if len(samples) < 2:
            raise ValueError(f"contrastive batch: needs at least 2 pairs (the other pairs are the negatives), got "
                             f"{len(samples)}; raise contrastive_batch_size.")
        batch = fixed_size_pixels([s["image"] for s in samples], self.size, self.image_processor)
        return {**batch, "text_embeds": torch.stack([self._embedding(s) for s in samples])}


@register_objective
class ContrastiveObjective(Objective):
    """Image-text contrastive alignment: `VersaViTRetrievalHead` (attention pooling over the last layer's
    pre-merger tokens, a text projection, learnable scale and bias) trained with `config.retrieval_loss` (sigmoid
    by default) on image-caption pairs; the other pairs of a batch are the negatives. Its part, `retrieval_head`, has
    the weight names of `VersaViTForImageTextRetrieval`, so its trained head loads there (Hub export)."""

    name = "contrastive"
    default_batch_size = 8
    min_batch_size = 2
    needs_text_embeddings = True
    scene_tables = ("contrastive",)
    task_class = VersaViTForImageTextRetrieval
    checkpoint_prefixes = ("retrieval_head.",)

    def configure(self, config, context):
        if context.text_embed_dim is not None:
            config.retrieval_text_embed_dim = context.text_embed_dim

    def modules(self, model):
        head = VersaViTRetrievalHead(model.config)
        head.apply(model._init_weights)  # as VersaViTForImageTextRetrieval initialises it (scale, bias, probe)
        return {"retrieval_head": head}

    def data_folder(self, data_args):
        return getattr(data_args, "contrastive_data", None)

    def prepare_data(self, dataset, data_args):
        """The pairs as they are; a warning when captions repeat: a pair whose caption repeats in its batch meets an
        identical caption among its negatives, and the loss scores that match as wrong."""
        if "caption" in getattr(dataset, "column_names", ()):
            captions = dataset["caption"]
            distinct = len(set(captions))
            if distinct < len(captions):
                logger.warning(
                    "contrastive data: %d distinct captions among %d pairs; a repeated caption in a batch is "
                    "one of its pair's negatives, scored as a mismatch. Deduplicate the captions, or use "
                    "more specific ones (for generated scenes, texts: default rather than short).",
                    distinct,
                    len(captions),
                )
        return dataset

    def input_pixels(self, data_args):
        return data_args.contrastive_size ** 2

    def input_description(self, data_args):
        return f" x {data_args.contrastive_size}px"

    def collator(self, context):
        width = context.config.retrieval_text_embed_dim if context.config is not None else context.text_embed_dim
        return ContrastiveCollator(context.data_args.contrastive_size, width, context.image_processor)

    def forward(self, model, modules, batch):
        head = modules["retrieval_head"]
        grid = batch["image_grid_thw"]
        tokens = unwrap_versavit(model).get_last_hidden_state(batch["pixel_values"], grid)
        image_embeds = head.embed_images(tokens, grid)
        text_embeds = head.embed_texts(batch["text_embeds"].to(image_embeds.device))
        loss, logits = head.loss(image_embeds, text_embeds)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == torch.arange(logits.shape[0], device=logits.device)).float().mean()
        terms = {"loss": loss.detach(), "logit_scale": head.logit_scale.detach().exp(), "accuracy": accuracy}
        if head.logit_bias is not None:
            terms["logit_bias"] = head.logit_bias.detach()
        return ContrastiveOutput(loss=loss, loss_terms=terms, logits_per_image=logits.detach())


__all__ = ["ContrastiveCollator", "ContrastiveObjective"]
