# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Probing an MLLM's LLM layers for expert embeddings, as VisPer-LM does (arXiv 2412.09585, §3.1 and Fig. 3): for
each LLM layer and each expert, a probe — an embedding predictor (`objectives.distillation.EmbeddingPredictor`: a
perceiver resampler with learnable queries of its own) — learns to predict the expert's target tokens from that
layer's hidden states of the frozen MLLM; its quality is the mean cosine similarity between predicted and target
tokens on held-out images (higher: the layer holds more of what the expert sees).

The MLLM sees each image with the captioning prompt ("Describe the image.", generation prompt, no answer) and, when
it has them, its task tokens; the probes read every position. Hidden states are computed once per image (fp16 in
memory) and every probe trains on them with the distillation loss (smooth-L1 + InfoNCE), so a model's 30 layers x 2
experts train in about a minute. The same probes, data and seed for every model make the curves comparable.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LayerProbeSettings:
    steps: int = 150
    batch_size: int = 16
    learning_rate: float = 1e-3
    contrastive_weight: float = 0.3
    heads: int = 4
    seed: int = 0


@torch.no_grad()
def llm_hidden_states(model, processor, images, layers: list[int], batch_size: int = 8) -> dict:
    """Per layer of `layers` (1 = after the first decoder layer), a list of `(length, hidden)` fp16 states, one per
    image (padding removed), of `model` (a `VersaViTForCaptioning`) on the captioning prompt."""
    from ..data.scenes import CAPTION_PROMPT

    states = {layer: [] for layer in layers}
    model.eval()
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        inputs = processor(chunk, prompts=[CAPTION_PROMPT] * len(chunk))
        llm_inputs, _ = model._llm_inputs(inputs["input_ids"], inputs["pixel_values"], inputs["image_grid_thw"])
        out = model.language_model(**llm_inputs, attention_mask=inputs["attention_mask"], output_hidden_states=True)
        keep = inputs["attention_mask"].bool()
        for layer in layers:
            hidden = out.hidden_states[layer]
            states[layer] += [hidden[row][keep[row]].half() for row in range(hidden.shape[0])]
    return states


def _padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(row.shape[0] for row in rows)
    batch = rows[0].new_zeros((len(rows), length, rows[0].shape[-1]), dtype=torch.float32)
    keep = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        batch[i, : row.shape[0]], keep[i, : row.shape[0]] = row.float(), True
    return batch, keep


def train_probe(train_states: list[torch.Tensor], train_targets: torch.Tensor, eval_states: list[torch.Tensor],
                eval_targets: torch.Tensor, settings: LayerProbeSettings) -> float:
    """Train one probe on (states, targets) and return its held-out mean cosine similarity."""
    from ..objectives.distillation import EmbeddingPredictor, embedding_loss

    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    hidden, (tokens, width) = train_states[0].shape[-1], train_targets.shape[1:]
    probe = EmbeddingPredictor(hidden, width, depth=1, heads=settings.heads)
    queries = torch.nn.Parameter(torch.randn(tokens, hidden, generator=generator) * hidden**-0.5)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    optimizer = torch.optim.AdamW([*probe.parameters(), queries, scale], lr=settings.learning_rate)
    for _ in range(settings.steps):
        picked = torch.randint(len(train_states), (min(settings.batch_size, len(train_states)),), generator=generator)
        states, keep = _padded([train_states[i] for i in picked])
        predicted = probe(states, queries, keep)
        loss = embedding_loss(predicted, train_targets[picked], scale, settings.contrastive_weight)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        states, keep = _padded(eval_states)
        predicted = probe(states, queries, keep)
        return F.cosine_similarity(predicted.flatten(1), eval_targets.flatten(1), dim=-1).mean().item()


def scene_probe_data(specs, train_seed: int, num_train: int, eval_seed: int, num_eval: int,
                     style: str = "simple") -> tuple[list, dict, list, dict]:
    """Probe data on generated scenes: (training images, their targets per expert, held-out images, theirs), each
    expert of `specs` (`data.experts.ExpertSpec`) run once over the images, 16 at a time."""
    import PIL.Image

    from ..data.experts import EmbeddingExpert
    from ..data.scenes import generate_scene

    def scenes(seed, count):
        return [PIL.Image.fromarray(generate_scene(seed + i, style=style).image) for i in range(count)]

    train, held_out = scenes(train_seed, num_train), scenes(eval_seed, num_eval)
    train_targets, eval_targets = {}, {}
    for spec in specs:
        expert = EmbeddingExpert(spec)
        train_targets[spec.name] = torch.cat([expert(train[i:i + 16]) for i in range(0, len(train), 16)])
        eval_targets[spec.name] = torch.cat([expert(held_out[i:i + 16]) for i in range(0, len(held_out), 16)])
    return train, train_targets, held_out, eval_targets


def probe_llm_layers(model, processor, train_images, train_targets: dict, eval_images, eval_targets: dict,
                     layers: list[int], settings: LayerProbeSettings | None = None) -> dict:
    """`{expert: {layer: held-out cosine similarity}}` of a probe per LLM layer and expert (`*_targets`: per expert
    `(num_images, tokens, width)`)."""
    settings = settings or LayerProbeSettings()
    train_states = llm_hidden_states(model, processor, train_images, layers)
    eval_states = llm_hidden_states(model, processor, eval_images, layers)
    return {expert: {layer: train_probe(train_states[layer], train_targets[expert], eval_states[layer],
                                        eval_targets[expert], settings) for layer in layers}
            for expert in train_targets}


def plot_layer_probes(results: dict, path, title: str = "Probing the LLM's layers for expert embeddings"):
    """One panel per expert: held-out cosine similarity by LLM layer, one line per model (`results`: model name ->
    `probe_llm_layers` output). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experts = list(next(iter(results.values())))
    figure, axes = plt.subplots(1, len(experts), figsize=(5 * len(experts), 3.6), squeeze=False)
    for axis, expert in zip(axes[0], experts):
        for name, result in results.items():
            layers = sorted(result[expert], key=int)
            axis.plot([int(layer) for layer in layers], [result[expert][layer] for layer in layers], marker="o",
                      markersize=3, label=name)
        axis.set_title(expert)
        axis.set_xlabel("LLM layer")
        axis.set_ylabel("held-out cosine similarity")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


__all__ = ["LayerProbeSettings", "llm_hidden_states", "plot_layer_probes", "probe_llm_layers", "scene_probe_data",
           "train_probe"]
