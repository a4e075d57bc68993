# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Frozen expert vision models whose embeddings VisPer-LM distils into the LLM (arXiv 2412.09585, §3): what an
expert is (`ExpertSpec`, one entry of the run's `distillation_experts`), how it turns images into the target tokens
(`EmbeddingExpert`), and how a dataset gets them (`add_expert_embeddings`, shared by the in-run ("online") mode and
the offline cache of `recipes/data/embed_experts.py`).

An expert is any local transformers vision model folder (its class from `config.architectures`); `output` names
what to distil: any field of its output (a tuple, e.g. `hidden_states` or OneFormer's `encoder_hidden_states`: the
mean of its `output_layers`), or, for the library's own models, one of:

| `output`                  | from                                                          | tokens         |
|---------------------------|---------------------------------------------------------------|----------------|
| `hidden_states`           | the mean of `output_layers` of the tower's hidden states      | the patch grid |
| `last_hidden_state`       | the tower's last layer                                        | the patch grid |
| `depth_features`          | a VersaViT depth model: its DPT neck's finest fused map       | its map        |
| `segmentation_embeddings` | a VersaViT referring model: its SAM neck's image embeddings   | the patch grid |

Common transformers choices: `hidden_states` of a Depth Anything (its DINOv2 layers the DPT head reads, CLS dropped:
VisPer-LM's depth target), `encoder_hidden_states` of a OneFormer (its Swin backbone's last stage: the segmentation
target), `image_embeds` of a CLIP-style image encoder (one token: the "generation" target, unCLIP's image encoder).

Token outputs `(B, N, D)` lose their first `prefix_tokens` (a CLS token: 1); feature maps `(B, C, H, W)` become
`(B, H*W, C)`; `grid` average-pools a square token grid to `grid x grid` tokens (the cache's size and the
predictor's number of queries). Experts run in eval mode under `torch.no_grad()`, never inside a training step.
"""

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ConfigError, check_mapping_keys
from ..parts import PART_MODULES, require_weights

VERSAVIT_OUTPUTS = ("hidden_states", "last_hidden_state", "depth_features", "segmentation_embeddings")
VERSAVIT_ONLY = ("depth_features", "segmentation_embeddings")
POOLED = ("image_embeds", "pooler_output", "text_embeds")  # one embedding per image


def embeds_column(expert: str) -> str:
    """The dataset column holding `expert`'s target tokens, `(tokens, width)` per row."""
    return f"{expert}_embeds"


@dataclass
class ExpertSpec:
    """One expert of `distillation_experts` (the option `distillation_experts.<name>`).

    Args:
        name: the expert's name (task tokens, logs `distillation/<name>/...`, the dataset column `<name>_embeds`).
        llm_layers: the LLM layers whose outputs predict its embeddings (1 = after the first decoder layer).
        weight: its loss weight (VisPer-LM: 0.5 for each of depth, segmentation and generation).
        queries: learnable queries of its embedding predictors, which are its task tokens too (a multiple of
            `distillation_num_task_tokens`). The predictors output `queries` tokens: the target has as many tokens
            (`grid x grid`), or one (a pooled embedding, predicted as the mean of the outputs).
        model: its local model folder (the in-run mode and the offline recipe read it).
        output, output_layers, prefix_tokens, grid: what of its output is the target (module docstring).
        size: its input size in pixels (square; default: its image processor's own).
        width: its embedding width, when known before the data are read (checked against them; the run's plan
            sizes the predictors with it).
    """

    name: str
    llm_layers: list[int]
    weight: float = 0.5
    queries: int = 64
    model: str | None = None
    output: str = "hidden_states"
    output_layers: list[int] = field(default_factory=lambda: [-1])
    prefix_tokens: int = 0
    grid: int | None = 8
    size: int | None = None
    width: int | None = None

    @classmethod
    def parse(cls, name: str, value: dict, num_task_tokens: int, option: str = "distillation_experts") -> "ExpertSpec":
        """The spec of `option.<name>`, every key and value checked (a `ConfigError` names the full path)."""
        path = f"{option}.{name}"
        if not str(name).isidentifier():
            raise ConfigError(f"{option}: expert names must be identifiers, got {name!r}.")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}.")
        allowed = [f.name for f in cls.__dataclass_fields__.values() if f.name != "name"]
        check_mapping_keys(value, allowed, path)
        if "llm_layers" not in value:
            raise ConfigError(f"{path}.llm_layers: missing (the LLM layers that predict this expert's embeddings).")
        spec = cls(name=name, **value)
        layers = spec.llm_layers if isinstance(spec.llm_layers, list) else [spec.llm_layers]
        if not layers or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in layers):
            raise ConfigError(f"{path}.llm_layers: expected LLM layer numbers >= 1, got {spec.llm_layers!r}.")
        spec.llm_layers = sorted(set(layers))
        weight = spec.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{path}.weight: must be a finite value >= 0, got {spec.weight!r}.")
        if isinstance(spec.queries, bool) or not isinstance(spec.queries, int) or spec.queries < 1 \
                or spec.queries % num_task_tokens:
            raise ConfigError(f"{path}.queries: must be a positive multiple of distillation_num_task_tokens "
                              f"({num_task_tokens}), got {spec.queries!r}.")
        if not isinstance(spec.output, str) or not spec.output.isidentifier():
            raise ConfigError(f"{path}.output: expected the name of a field of the expert's output (e.g. "
                              f"{VERSAVIT_OUTPUTS + POOLED}), got {spec.output!r}.")
        if not isinstance(spec.output_layers, list) or not spec.output_layers or \
                any(isinstance(i, bool) or not isinstance(i, int) for i in spec.output_layers):
            raise ConfigError(f"{path}.output_layers: expected a list of layer indices, got {spec.output_layers!r}.")
        for key, low in (("prefix_tokens", 0), ("grid", 1), ("size", 1), ("width", 1)):
            number = getattr(spec, key)
            if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < low):
                raise ConfigError(f"{path}.{key}: must be an integer >= {low}, got {number!r}.")
        if spec.output in POOLED:
            spec.grid = None
        if spec.grid is not None and spec.grid**2 != spec.queries:
            raise ConfigError(f"{path}.queries: the predictors output one token per query and the target is pooled to "
                              f"grid x grid = {spec.grid**2} tokens; set queries to {spec.grid**2} (got "
                              f"{spec.queries}).")
        return spec


def parse_experts(value, num_task_tokens: int, option: str = "distillation_experts") -> list[ExpertSpec]:
    """The experts of the option (a mapping name -> settings), in its order."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{option}: expected a mapping of experts (name -> settings), got {value!r}.")
    return [ExpertSpec.parse(name, settings, num_task_tokens, option) for name, settings in value.items()]


def read_experts(path, num_task_tokens: int = 1) -> list[ExpertSpec]:
    """The experts of a YAML file: a run config (its `distillation_experts`) or the mapping itself."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"experts: {file} is not a file.")
    content = yaml.safe_load(file.read_text()) or {}
    mapping = content.get("distillation_experts", content) if isinstance(content, dict) else content
    return parse_experts(mapping, num_task_tokens, "experts" if mapping is content else "distillation_experts")


def pool_tokens(tokens: torch.Tensor, grid: int | None) -> torch.Tensor:
    """`(B, N, D)` tokens of a square grid, average-pooled to `grid x grid` (`(B, grid**2, D)`); as they are with
    `grid` None. A token count that is not a square is a `ValueError`."""
    if grid is None or tokens.shape[1] == grid * grid:
        return tokens
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(f"expert output: {tokens.shape[1]} tokens are not a square grid to pool to {grid}x{grid}; "
                         "set prefix_tokens (a CLS token) or grid: null.")
    maps = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    return F.adaptive_avg_pool2d(maps, grid).flatten(2).transpose(1, 2)


class EmbeddingExpert:
    """A frozen expert of `spec`: `expert(images)` -> `(B, tokens, width)` float32 target embeddings (on the CPU)."""

    def __init__(self, spec: ExpertSpec, device: str = "cpu"):
        import transformers
        from transformers import AutoConfig, AutoImageProcessor

        if spec.model is None:
            raise ConfigError(f"distillation_experts.{spec.name}.model: needed to compute its embeddings (in-run mode "
                              "or recipes/data/embed_experts.py); give the expert's model folder.")
        if not Path(spec.model).is_dir():
            raise FileNotFoundError(f"distillation_experts.{spec.name}.model: {spec.model} is not a folder (experts "
                                    "load from local folders; nothing is downloaded).")
        self.spec, self.device = spec, device
        config = AutoConfig.from_pretrained(spec.model)
        self.versavit = config.model_type == "versavit"
        if spec.output in VERSAVIT_ONLY and not self.versavit:
            raise ConfigError(f"distillation_experts.{spec.name}.output: {spec.output!r} reads a VersaViT model's "
                              f"head, but {spec.model} is a {config.model_type!r} model.")
        if self.versavit and spec.output not in VERSAVIT_OUTPUTS:
            raise ConfigError(f"distillation_experts.{spec.name}.output: a VersaViT expert gives one of "
                              f"{VERSAVIT_OUTPUTS}, got {spec.output!r}.")
        if self.versavit:
            from modeling_versavit import VersaViTForMultiTask, VersaViTImageProcessor

            head = {"depth_features": "depth_head", "segmentation_embeddings": "segmentation_head"}.get(spec.output)
            if head is not None:  # trained weights, not a head that from_pretrained would start at random
                require_weights(spec.model, (f"{PART_MODULES[head]}.",), head.replace("_head", ""))
            config.tasks = [task for task in config.tasks if task != "captioning"]  # the LLM is not an expert
            verbosity = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()  # the checkpoint's LLM weights are left out on purpose
            try:
                self.model = VersaViTForMultiTask.from_pretrained(spec.model, config=config)
            finally:
                transformers.logging.set_verbosity(verbosity)
            self.processor = VersaViTImageProcessor.from_pretrained(spec.model)
        else:
            architecture = (config.architectures or ["AutoModel"])[0]
            model_class = getattr(transformers, architecture, transformers.AutoModel)
            self.model = model_class.from_pretrained(spec.model)
            self.processor = AutoImageProcessor.from_pretrained(spec.model)
        self.model.to(device).eval().requires_grad_(False)

    def _inputs(self, images) -> dict:
        size = self.spec.size
        if self.versavit:  # the dense heads' input: resized to exactly size x size (default: the processor's largest)
            from modeling_versavit import fixed_size_pixels

            multiple = self.model.config.input_size_multiple
            size = size or math.isqrt(self.processor.size["longest_edge"]) // multiple * multiple
            return fixed_size_pixels(list(images), size, self.processor)
        kwargs = {} if size is None else {"size": {"height": size, "width": size}}
        return self.processor(images=list(images), return_tensors="pt", **kwargs)

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        spec = self.spec
        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self._inputs(images).items()}
        if self.versavit:
            tokens = self._versavit_tokens(inputs)
        else:
            output = self.model(**inputs, output_hidden_states=True)
            value = output.get(spec.output)
            if value is None:
                raise ConfigError(f"distillation_experts.{spec.name}.output: {type(self.model).__name__} returns no "
                                  f"{spec.output!r}; it returns {[k for k, v in output.items() if v is not None]}.")
            if isinstance(value, (tuple, list)):  # per-layer outputs: the mean of the chosen ones
                value = torch.stack([value[i] for i in spec.output_layers]).mean(0)
            if value.ndim == 2:  # a pooled embedding: one token
                value = value[:, None]
            elif value.ndim == 4:  # a feature map (B, C, H, W)
                value = value.flatten(2).transpose(1, 2)
            tokens = value
            tokens = tokens[:, spec.prefix_tokens:]
        return pool_tokens(tokens.float(), spec.grid).cpu()  # NaN / inf kept: the row is skipped and counted later

    def _versavit_tokens(self, inputs: dict) -> torch.Tensor:
        model, spec = self.model, self.spec
        pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
        if spec.output == "depth_features":
            maps = model.get_dense_features(pixels, grid, model.config.depth_layer_indices)
            value = model.depth_head.fused_features(maps)
        elif spec.output == "segmentation_embeddings":
            (value,) = model.get_dense_features(pixels, grid, [model.config.segmentation_layer_index])
            value = model.segmentation_head.neck(value.permute(0, 2, 3, 1))
        else:
            layers = spec.output_layers if spec.output == "hidden_states" else [-1]
            value = torch.stack(model.get_dense_features(pixels, grid, layers)).mean(0)
        return value.flatten(2).transpose(1, 2)


def expert_digest(folder: str | None) -> str:
    """sha256 of an expert folder's weights and settings (`*.safetensors`, `*.bin`, `*.json`, by relative path):
    what its targets are a function of. Read in full, once per run (about a second per GB)."""
    if folder is None:
        return "none"
    root, digest = Path(folder), hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def add_expert_embeddings(dataset, experts: list[ExpertSpec], batch_size: int = 16, device: str = "cpu"):
    """`dataset` (rows with an `image`) with a `<name>_embeds` column per expert, computed by the frozen experts
    in batches (the in-run mode; the offline recipe writes the same columns). A row whose embedding holds NaN / inf
    keeps it: the training collator refuses the row, and the trainer skips and counts it."""
    from datasets import Array2D

    for spec in experts:
        expert = EmbeddingExpert(spec, device)
        column = embeds_column(spec.name)
        first = expert([dataset[0]["image"]])
        feature = Array2D(shape=tuple(first.shape[1:]), dtype="float32")

        def embed(batch, expert=expert, column=column):
            return {column: expert(batch["image"]).numpy()}

        features = dataset.features.copy()
        features[column] = feature
        # keyed on what the targets are a function of: the rows, the settings and the expert's files themselves (a
        # replaced expert folder under the same path must not reuse the old expert's cached targets)
        fingerprint = hashlib.sha256(f"{dataset._fingerprint} {spec} {expert_digest(spec.model)}".encode()
                                     ).hexdigest()[:16]
        dataset = dataset.map(embed, batched=True, batch_size=batch_size, features=features,
                              desc=f"expert {spec.name}", new_fingerprint=fingerprint)
        del expert
    return dataset


__all__ = [
    "VERSAVIT_OUTPUTS",
    "EmbeddingExpert",
    "ExpertSpec",
    "add_expert_embeddings",
    "embeds_column",
    "expert_digest",
    "parse_experts",
    "pool_tokens",
    "read_experts",
]
