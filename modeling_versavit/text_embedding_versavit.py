# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Offline text embeddings of referring expressions (paper §4.2.3), from a sentence-embedding model folder.

The pooling and normalisation follow the model's own sentence-transformers description (`modules.json`,
`1_Pooling/config.json`) when the folder has one: mean pooling + L2 normalisation for all-MiniLM-L6-v2, last-token
pooling + normalisation for Qwen3-Embedding. A SigLIP-family folder (a SigLIP / SigLIP2 model or its text tower: the
paper's retrieval text encoder) embeds as SigLIP does: its own pooled text embedding (`pooler` mode: the text head's
output, from `get_text_features` for a two-tower model), texts padded to the model's full length and no attention
mask, as SigLIP was trained. Shipped as Hub remote code (the pipelines embed with it): imports only torch and
transformers.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from huggingface_hub import snapshot_download
from transformers import AutoModel, AutoTokenizer

# The files a sentence encoder's Hub repository needs here: configs (the sentence-transformers description and its
# pooling folder included), tokenizer files and safetensors weights.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.jinja"]
POOLING_MODES = ("mean", "cls", "lasttoken", "pooler")
# Text models that pool themselves (the "pooler" mode), by config `model_type`.
SIGLIP_TYPES = ("siglip", "siglip2", "siglip_text_model", "siglip2_text_model")
# Text towers saved on their own, which AutoModel does not map: their transformers classes.
TEXT_TOWER_CLASSES = {"siglip_text_model": "SiglipTextModel", "siglip2_text_model": "Siglip2TextModel"}


def _read_pooling(folder: Path) -> tuple[str, bool]:
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean", True
    modules = json.loads(modules_file.read_text())
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    pooling = next((m for m in modules if m.get("type", "").endswith("Pooling")), None)
    mode = "mean"
    if pooling is not None and (folder / pooling["path"] / "config.json").is_file():
        config = json.loads((folder / pooling["path"] / "config.json").read_text())
        keys = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                "lasttoken": "pooling_mode_lasttoken"}  # sentence-transformers' names of the modes it can describe
        for name, key in keys.items():
            if config.get(key):
                mode = name
    return mode, normalize


class SentenceEmbedder:
    """Embeds sentences with a transformers encoder, pooled and normalised as the model prescribes.

    Args:
        folder: a local model folder (e.g. `versavit_trainer.data.assets.minilm_path()`) or a Hub id (its files
            are fetched with `huggingface_hub.snapshot_download`, or read from the cache when offline).
        pooling: `"mean"`, `"cls"`, `"lasttoken"` or `"pooler"` (the model's own pooled output); by default read
            from the folder (SigLIP-family models: pooler; otherwise mean if it says nothing).
        normalize: L2-normalise the embeddings; by default read from the folder (True if it says nothing).
        max_length: longest tokenised input.
    """

    def __init__(self, folder, pooling: str | None = None, normalize: bool | None = None, max_length: int = 128,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.source = str(folder)  # as given: what a model's config.text_encoder records
        if not Path(folder).is_dir():  # a Hub id: its files (the cached copy when offline), read as a folder
            folder = snapshot_download(str(folder), allow_patterns=HUB_PATTERNS)
        folder = Path(folder)
        self.folder = folder
        default_pooling, default_normalize = _read_pooling(folder)
        config_file = folder / "config.json"
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
        if model_type in SIGLIP_TYPES and not (folder / "modules.json").is_file():
            default_pooling = "pooler"
        self.pooling = pooling or default_pooling
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling: expected one of {POOLING_MODES}, got {self.pooling!r}.")
        self.normalize = default_normalize if normalize is None else normalize
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        model_class = getattr(transformers, TEXT_TOWER_CLASSES[model_type]) if model_type in TEXT_TOWER_CLASSES \
            else AutoModel
        self.model = model_class.from_pretrained(folder, dtype=dtype).to(device).eval()
        self.max_length = max_length
        self.siglip = model_type in SIGLIP_TYPES
        text_config = getattr(self.model.config, "text_config", None) or self.model.config
        self.dim = text_config.hidden_size
        if self.siglip:  # SigLIP pads every text to its full length (64) and reads no mask; its head sets the width
            self.max_length = text_config.max_position_embeddings
            self.dim = getattr(self.model, "text_model", self.model).head.out_features

    @torch.inference_mode()
    def __call__(self, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
        """`(len(sentences), dim)` float32 embeddings. Empty strings are an error (they embed to noise)."""
        chunks = [self.embed(sentences[start : start + batch_size]) for start in range(0, len(sentences), batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)

    def embed(self, sentences: list[str]) -> torch.Tensor:
        """Embeddings of one batch, with autograd (the online text encoder of referring segmentation trains
        through it)."""
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(f"sentences[{index}]: expected a non-empty string, got {sentence!r}.")
        if self.pooling == "pooler" and self.siglip:
            ids = self.tokenizer(sentences, padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")["input_ids"].to(self.model.device)
            text = getattr(self.model, "get_text_features", None)
            pooled = (text(input_ids=ids) if text is not None else self.model(input_ids=ids)).pooler_output.float()
            return F.normalize(pooled, dim=-1) if self.normalize else pooled
        batch = self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.model.device)
        outputs = self.model(**batch)
        if self.pooling == "pooler":
            pooled = outputs.pooler_output.float()
            return F.normalize(pooled, dim=-1) if self.normalize else pooled
        hidden = outputs.last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # last non-padding token, whichever side the tokenizer pads
            last = batch["attention_mask"].sum(1) - 1
            if self.tokenizer.padding_side == "left":
                last = torch.full_like(last, hidden.shape[1] - 1)
            pooled = hidden[torch.arange(hidden.shape[0]), last]
        pooled = pooled.float()
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


__all__ = ["SentenceEmbedder"]
