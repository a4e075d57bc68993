# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Referring segmentation with the text encoder in the training loop (supplement §9.4): the expressions are embedded
by a transformers text-embedding model, adapted with LoRA (r = 8, α = 8 in the paper), instead of offline."""

from peft import LoraConfig
from peft.tuners.lora import LoraModel
from torch import nn

from modeling_versavit import SentenceEmbedder

from ..parts import training_parts

# BERT-style encoders (MiniLM): attention projections and both dense layers of each block (not the unused pooler).
TEXT_TARGETS = ("query", "key", "value", "output.dense", "intermediate.dense")


class OnlineTextSegmentation(nn.Module):
    """A VersaViT model with a segmentation head plus a trainable text encoder.

    `forward(task="segmentation", expressions=[...], ...)` embeds the expressions (pooled and normalised as the
    embedder prescribes) with gradients and runs the model's segmentation forward on them. Other tasks pass through.
    Its training parts are the VersaViT model's plus `text_encoder`, of which only the LoRA adapters train;
    `MultiTaskTrainer` gives the backbone its learning rate and the rest (head, text adapters) the heads' rate, as the
    paper does.
    """

    adapter_only_parts = ("text_encoder",)
    accepts_loss_kwargs = False  # as VersaViTForMultiTask: each task normalises its own loss

    def __init__(self, versavit, embedder: SentenceEmbedder, lora_rank: int = 8, lora_alpha: float = 8.0,
                 lora_dropout: float = 0.0, target_modules: list[str] | None = None):
        super().__init__()
        if embedder.dim != versavit.config.text_embed_dim:
            raise ValueError(f"text_embed_dim: the segmentation head reads {versavit.config.text_embed_dim}-d text "
                             f"embeddings, the text encoder gives {embedder.dim}-d.")
        if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank <= 0:
            raise ValueError(f"text_lora_rank: must be a positive integer, got {lora_rank!r}.")
        self.versavit = versavit
        self.embedder = embedder
        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            target_modules=target_modules or list(TEXT_TARGETS))
        try:
            self._tuner = [LoraModel(embedder.model, config, adapter_name="default")]  # a list: not a submodule
        except ValueError as err:
            raise ValueError(f"text_lora_target_modules: {config.target_modules} match no module of the text "
                             f"encoder ({err}).") from err
        self.text_encoder = embedder.model
        self.text_encoder.train()

    @property
    def config(self):
        return self.versavit.config

    @property
    def wrapped_model(self):
        return self.versavit

    def training_parts(self) -> dict[str, nn.Module]:
        return {**training_parts(self.versavit), "text_encoder": self.text_encoder}

    def forward(self, task: str, expressions: list[str] | None = None, **inputs):
        if task == "segmentation":
            if expressions is None:
                raise ValueError("expressions: the online text encoder needs the expressions (SegmentationCollator"
                                 "(online_text=True)).")
            inputs["text_embeds"] = self.embedder.embed(list(expressions))
        return self.versavit(task=task, **inputs)

    def merged_text_encoder(self):
        """The text encoder with its adapters merged (peft's merge_and_unload): a plain transformers model."""
        return self._tuner[0].merge_and_unload(safe_merge=True)


__all__ = ["OnlineTextSegmentation", "TEXT_TARGETS"]
