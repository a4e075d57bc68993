# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VisPer-LM's embedding distillation (arXiv 2412.09585, §3; code: SHI-Labs/VisPer-LM, formerly OLA-VLM): selected
LLM layers learn to *predict* the embeddings of frozen expert vision models, coupled with next-token prediction.

Per expert (`distillation_experts`, `data.experts.ExpertSpec`) the captioning branch carries task tokens
(`VersaViTTaskTokens`: `queries` learnable queries in the LLM's width; the means of `distillation_num_task_tokens`
groups of them follow every image in the sequence). For each of its `llm_layers` an embedding predictor, a perceiver
resampler, reads that layer's hidden states (every position but the other experts' task tokens) with the expert's
queries as its latents and outputs `queries` tokens of the expert's width. The loss of a forward is

    L = L_ntp + sum_e w_e sum_(l in layers_e) [ smoothL1(P_e^l, E_e) + c * InfoNCE(P_e^l, E_e) ]

with `E_e` the expert's target tokens, `InfoNCE` the cross-entropy of the cosine similarities of flattened
predictions and targets (the other images of the batch are the negatives: of every process's batch under
multi-process training, as VisPer-LM gathers them) at a learnable temperature per expert (init e^2, clamped at
100), `w_e = 0.5`, `c = distillation_contrastive_weight = 0.3` (VisPer-LM's code; the paper states neither).
Logged: `loss_distillation`, `distillation/ntp`, `distillation/embedding`,
`distillation/<expert>/layer<l>/{smooth_l1,contrastive}`, `distillation/<expert>/logit_scale`. The targets come with
the data (`<expert>_embeds`): written offline by `recipes/data/embed_experts.py`, or computed by the experts when the
run starts; a training step never runs an expert.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ..parts import unwrap_versavit
from .base import Objective, register_objective

INITIAL_LOGIT_SCALE = 2.0  # log of the temperature's inverse, as VisPer-LM's code starts it
MAX_LOGIT_SCALE = 100.0


class PerceiverAttention(nn.Module):
    """Cross-attention of latents over `[inputs; latents]` (Flamingo's perceiver resampler, as VisPer-LM uses it),
    with a key mask for the inputs."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm_inputs, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, inputs: torch.Tensor, latents: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """`inputs` (B, N, dim), `latents` (B, Q, dim), `keep` (B, N) bool: the input positions attended to."""
        batch, queries, _ = latents.shape
        inputs, latents = self.norm_inputs(inputs), self.norm_latents(latents)
        split = lambda t: t.view(batch, t.shape[1], self.heads, self.dim_head).transpose(1, 2)  # noqa: E731
        q = split(self.to_q(latents))
        k, v = (split(t) for t in self.to_kv(torch.cat([inputs, latents], dim=1)).chunk(2, dim=-1))
        mask = torch.cat([keep, keep.new_ones(batch, queries)], dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(batch, queries, -1))


class EmbeddingPredictor(nn.Module):
    """One (expert, layer) predictor: a perceiver resampler from the LLM's hidden states to `(queries, width)`
    predicted expert tokens. Its latents are the expert's task-token queries (given at call time), projected by the
    same input projection as the hidden states; `depth` blocks of attention + feed-forward (both residual); then an
    output projection and layer norm."""

    def __init__(self, hidden: int, width: int, depth: int = 1, heads: int = 4, dim_head: int = 32, ff_mult: int = 1):
        super().__init__()
        self.proj_in = nn.Linear(hidden, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleList([
                PerceiverAttention(hidden, heads, dim_head),
                nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden * ff_mult, bias=False), nn.GELU(),
                              nn.Linear(hidden * ff_mult, hidden, bias=False)),
            ])
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(hidden, width)
        self.norm_out = nn.LayerNorm(width)

    def forward(self, hidden_states: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """`hidden_states` (B, N, hidden), `queries` (Q, hidden), `keep` (B, N) bool -> `(B, Q, width)`."""
        inputs = self.proj_in(hidden_states)
        latents = self.proj_in(queries.to(inputs.dtype)).unsqueeze(0).expand(inputs.shape[0], -1, -1)
        for attention, feed_forward in self.blocks:
            latents = attention(inputs, latents, keep) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))


class EmbeddingPredictors(nn.Module):
    """The trainable part `embedding_predictors`: a predictor per (expert, LLM layer), named `<expert>_layer<l>`,
    and each expert's contrastive temperature (`logit_scale.<expert>`)."""

    def __init__(self, experts, widths: dict[str, int], hidden: int, depth: int = 1, heads: int = 4):
        super().__init__()
        self.predictors = nn.ModuleDict({
            f"{spec.name}_layer{layer}": EmbeddingPredictor(hidden, widths[spec.name], depth, heads)
            for spec in experts for layer in spec.llm_layers
        })
        self.logit_scale = nn.ParameterDict(
            {spec.name: nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE)) for spec in experts})


def gather_targets(target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's targets, concatenated in rank order, and where this process's start (its batch alone, at 0,
    outside multi-process training). Batches may differ in size (skipped samples); targets carry no gradient."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
            torch.distributed.get_world_size() == 1:
        return target, 0
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=target.device) for _ in range(world)]
    torch.distributed.all_gather(sizes, torch.tensor([target.shape[0]], device=target.device))
    sizes = [int(size) for size in sizes]
    padded = target.new_zeros((max(sizes), *target.shape[1:]))
    padded[: target.shape[0]] = target
    gathered = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded.contiguous())
    return torch.cat([chunk[:size] for chunk, size in zip(gathered, sizes)]), sum(sizes[:rank])


def embedding_loss(predicted: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor,
                   contrastive_weight: float, negatives: torch.Tensor | None = None,
                   offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VisPer-LM's embedding loss of `(B, T, D)` predictions against their targets: (total, smooth-L1, contrastive),
    with total = smooth-L1 (mean over every entry) + `contrastive_weight` x the cross-entropy of `exp(logit_scale)`
    (clamped at 100) times the cosine similarities of each flattened prediction with the flattened targets of
    `negatives` (default: the batch's targets; under multi-process training every process's, `gather_targets`),
    its own target (row `offset + i`) the positive, averaged over the batch. A one-token target is compared with the
    mean of the predictions."""
    if target.shape[1] == 1 and predicted.shape[1] != 1:
        predicted = predicted.mean(1, keepdim=True)
    negatives = target if negatives is None else negatives
    smooth_l1 = F.smooth_l1_loss(predicted.float(), target.float())
    logits = F.normalize(predicted.flatten(1).float(), dim=-1) @ F.normalize(negatives.flatten(1).float(), dim=-1).T
    scale = logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)
    positives = torch.arange(offset, offset + logits.shape[0], device=logits.device)
    contrastive = F.cross_entropy(scale * logits, positives)
    return smooth_l1 + contrastive_weight * contrastive, smooth_l1, contrastive


def predictor_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_grid_thw: torch.Tensor,
                     image_token_id: int, merge: int, num_task_tokens: int, expert_index: int) -> torch.Tensor:
    """`(B, L)` bool: the positions expert `expert_index`'s predictors read: every token of the sequence (padding
    excluded) but the other experts' task tokens (one image per sequence, its visual tokens followed by the task
    tokens, expert after expert)."""
    if image_grid_thw.shape[0] != input_ids.shape[0]:
        raise ValueError(f"embedding distillation: one image per sequence, got {image_grid_thw.shape[0]} images for "
                         f"{input_ids.shape[0]} sequences.")
    image = input_ids == image_token_id
    rank = image.long().cumsum(1) - 1
    slot = rank - (image_grid_thw.prod(-1) // merge).to(rank.device)[:, None]
    other = image & (slot >= 0) & (torch.div(slot, num_task_tokens, rounding_mode="floor") != expert_index)
    keep = torch.ones_like(image) if attention_mask is None else attention_mask.bool()
    return keep & ~other


@dataclass
class DistillationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    loss_terms: dict | None = None
    embedding_loss: torch.Tensor | None = None  # the experts' weighted sum, without the next-token loss
    predictions: dict | None = None  # "<expert>_layer<l>" -> (B, T, width)


class DistillationCollator:
    """Captioning inputs (the run's captioning collator) plus `expert_embeds`: per expert a `(B, tokens, width)`
    tensor of the rows' `<expert>_embeds`. A row without one, of another shape than the expert's, or holding NaN / inf
    is a `ValueError` naming the expert and the value (the trainer skips and counts such a row)."""

    def __init__(self, captioning, shapes: dict[str, tuple[int, int]]):
        self.captioning, self.shapes = captioning, shapes

    def at_position(self, position: int) -> None:
        self.captioning.at_position(position)

    def _embeds(self, sample: dict, expert: str) -> torch.Tensor:
        from ..data.experts import embeds_column

        column = embeds_column(expert)
        if sample.get(column) is None:
            raise ValueError(f"distillation sample: no {column!r} (the targets of expert {expert!r}).")
        value = torch.as_tensor(sample[column], dtype=torch.float32)
        if tuple(value.shape) != tuple(self.shapes[expert]):
            raise ValueError(f"distillation sample: {column} has shape {tuple(value.shape)}, expected "
                             f"{tuple(self.shapes[expert])} (expert {expert!r}).")
        if not torch.isfinite(value).all():
            raise ValueError(f"distillation sample: {column} holds NaN or inf values (expert {expert!r}).")
        return value

    def validate(self, sample: dict) -> None:
        self.captioning.validate(sample)
        for expert in self.shapes:
            self._embeds(sample, expert)

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.captioning(samples)
        batch["expert_embeds"] = {e: torch.stack([self._embeds(s, e) for s in samples]) for e in self.shapes}
        return batch


@register_objective
class EmbeddingDistillationObjective(Objective):
    """VisPer-LM's coupled objective (module docstring): next-token prediction on the captioning data plus, per
    expert and distilled LLM layer, the embedding loss of a perceiver predictor against the expert's embeddings.
    Parts: the captioning branch, the task tokens (`task_tokens`, the model's own: they stay in the sequence at
    inference) and `embedding_predictors` (training only)."""

    name = "distillation"
    parts = ("projector", "language_model", "task_tokens")
    model_task = "captioning"
    default_batch_size = 8

    def experts(self, data_args):
        from ..config import ConfigError
        from ..data.experts import parse_experts

        if not data_args.distillation_experts:
            raise ConfigError("distillation_experts: the embedding-distillation objective needs its experts (a mapping "
                              "name -> {llm_layers, model, output, ...}).")
        return parse_experts(data_args.distillation_experts, data_args.distillation_num_task_tokens)

    # ------------------------------------------------------------------------------------------------ data
    def from_scenes(self, tables):
        return tables["captioning"]

    def load_folder(self, path):
        from ..data.labelling import dataset_folder

        return dataset_folder(path, "captioning")

    def prepare_data(self, dataset, data_args):
        """The rows with every expert's `<expert>_embeds`: those a folder holds, the others computed now by the
        expert's model (in-run mode)."""
        from ..data.experts import add_expert_embeddings, embeds_column

        missing = [spec for spec in self.experts(data_args) if embeds_column(spec.name) not in dataset.column_names]
        return add_expert_embeddings(dataset, missing) if missing else dataset

    def configure(self, config, context):
        from ..data.experts import embeds_column

        data_args = context.data_args
        self._experts = self.experts(data_args)
        self._num_task_tokens = data_args.distillation_num_task_tokens
        self._contrastive_weight = data_args.distillation_contrastive_weight
        self._predictor = (data_args.distillation_predictor_depth, data_args.distillation_predictor_heads)
        datasets = (context.datasets or {}).get(self.name) or []
        self._shapes = {}
        for spec in self._experts:
            # before the data are read (the run's plan), the spec's width, else the LLM's as a stand-in
            shapes = {tuple(d.features[embeds_column(spec.name)].shape) for d in datasets} or {
                (spec.queries if spec.grid is not None else 1, spec.width or config.text_config.hidden_size)}
            if len(shapes) != 1:
                raise ValueError(f"distillation_experts.{spec.name}: the stages' data hold targets of different shapes "
                                 f"{sorted(shapes)}.")
            (tokens, width), = shapes
            if spec.width is not None and width != spec.width:
                raise ValueError(f"distillation_experts.{spec.name}.width: {spec.width}, but its targets are {width} "
                                 "wide.")
            if tokens not in (1, spec.queries):
                raise ValueError(f"distillation_experts.{spec.name}.queries: {spec.queries}, but its targets have "
                                 f"{tokens} tokens (the predictors output one per query; a 1-token target is "
                                 "predicted by their mean).")
            self._shapes[spec.name] = (tokens, width)
        layers = config.text_config.num_hidden_layers
        for spec in self._experts:
            if max(spec.llm_layers) > layers:
                raise ValueError(f"distillation_experts.{spec.name}.llm_layers: {spec.llm_layers}, but the LLM has "
                                 f"{layers} layers.")

    def modules(self, model):
        if not hasattr(self, "_shapes"):
            raise RuntimeError("distillation: configure(config, context) must run before modules() (ObjectivesModel "
                               "does both).")
        model.add_task_tokens({spec.name: spec.queries for spec in self._experts}, self._num_task_tokens)
        depth, heads = self._predictor
        widths = {name: width for name, (_, width) in self._shapes.items()}
        predictors = EmbeddingPredictors(self._experts, widths, model.config.text_config.hidden_size, depth, heads)
        return {"embedding_predictors": predictors}

    def collator(self, context):
        from .base import get_objective

        self.configure(context.config, context)  # the run's experts and target shapes (the context's data)
        return DistillationCollator(get_objective("captioning").collator(context), self._shapes)

    def input_pixels(self, data_args):
        return data_args.caption_max_pixels

    # ------------------------------------------------------------------------------------------------ loss
    def forward(self, model, modules, batch):

        targets = batch.pop("expert_embeds")
        inner = unwrap_versavit(model)
        out = model(task="captioning", **batch, output_hidden_states=True)
        predictors = modules["embedding_predictors"]
        config = inner.config
        terms = {"ntp": out.loss.detach()}
        embedding = out.loss.new_zeros(())
        predictions = {}
        order = inner.task_tokens.experts  # the experts' task tokens follow each image in this order
        for spec in self._experts:
            keep = predictor_inputs(batch["input_ids"], batch.get("attention_mask"), batch["image_grid_thw"],
                                    config.image_token_id, config.spatial_merge_size**2, config.num_task_tokens,
                                    order.index(spec.name))
            queries = inner.task_tokens.queries[spec.name]
            target = targets[spec.name].to(out.loss.device)
            negatives, offset = gather_targets(target)
            scale = predictors.logit_scale[spec.name]
            for layer in spec.llm_layers:
                key = f"{spec.name}_layer{layer}"
                predicted = predictors.predictors[key](out.hidden_states[layer], queries, keep.to(out.loss.device))
                total, smooth_l1, contrastive = embedding_loss(predicted, target, scale, self._contrastive_weight,
                                                               negatives, offset)
                embedding = embedding + spec.weight * total
                terms[f"{spec.name}/layer{layer}/smooth_l1"] = smooth_l1.detach()
                terms[f"{spec.name}/layer{layer}/contrastive"] = contrastive.detach()
                predictions[key] = predicted.detach()
            terms[f"{spec.name}/logit_scale"] = scale.detach().exp().clamp(max=MAX_LOGIT_SCALE)
        terms["embedding"] = embedding.detach()
        return DistillationOutput(loss=out.loss + embedding, loss_terms=terms, embedding_loss=embedding,
                                  predictions=predictions)


__all__ = [
    "DistillationCollator",
    "EmbeddingDistillationObjective",
    "EmbeddingPredictor",
    "EmbeddingPredictors",
    "PerceiverAttention",
    "embedding_loss",
    "gather_targets",
    "predictor_inputs",
]
