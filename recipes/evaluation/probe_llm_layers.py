#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Probe every LLM layer of one or more MLLMs for the experts' embeddings, as VisPer-LM does (Fig. 3): a probe per
(layer, expert) on the frozen MLLM's hidden states, its held-out cosine similarity to the expert's tokens, plotted by
layer with a line per model (versavit_trainer.evaluation.llm_probes).

    python recipes/evaluation/probe_llm_layers.py --experts recipes/configs/visper_default.yaml \\
        --models visper=outputs/visper/final ntp=outputs/visper_ntp/final --output_dir outputs/llm_probes

`--models`: NAME=FOLDER pairs, each a captioning checkpoint (`final/` of a run; with or without task tokens).
`--experts`: a YAML file with the experts (a run config's `distillation_experts`, or the mapping itself); their
targets are computed once on generated scenes (`--train_scenes` for the probes, `--eval_scenes` held out, far from
the training seeds). Writes probes.json ({model: {expert: {layer: cosine}}}) and layer_probes.png.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling_versavit import VersaViTCaptioningProcessor, VersaViTForCaptioning
from versavit_trainer.core.sources import EVAL_SCENE_SEED_OFFSET
from versavit_trainer.data.experts import read_experts
from versavit_trainer.evaluation.llm_probes import (
    LayerProbeSettings,
    plot_layer_probes,
    probe_llm_layers,
    scene_probe_data,
)


@dataclass
class ProbeLayersArguments:
    experts: str = field(metadata={"help": "YAML file with the experts (a run config or the mapping itself)."})
    models: list[str] = field(metadata={"help": "NAME=FOLDER of each captioning checkpoint to probe."})
    output_dir: str = field(default="outputs/llm_probes", metadata={"help": "Where probes.json and the plot go."})
    layers: list[int] | None = field(default=None, metadata={"help": "LLM layers to probe (1 = after the first "
                                                                     "decoder layer). Default: every layer."})
    train_scenes: int = field(default=128, metadata={"help": "Generated scenes the probes train on."})
    eval_scenes: int = field(default=32, metadata={"help": "Held-out generated scenes they are scored on."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the first training scene."})
    scene_style: str = field(default="simple", metadata={"help": "Style of the generated scenes."})
    steps: int = field(default=150, metadata={"help": "Optimizer steps per probe."})
    batch_size: int = field(default=16, metadata={"help": "Images per probe step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the probes."})
    seed: int = field(default=0, metadata={"help": "Seed of every probe's init and batches."})


def parse_models(values: list[str]) -> dict[str, Path]:
    models = {}
    for value in values:
        name, _, folder = value.partition("=")
        if not name or not folder:
            raise ValueError(f"models: expected NAME=FOLDER, got {value!r}.")
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"models: {folder} (model {name!r}) is not a folder.")
        models[name] = Path(folder)
    return models


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ProbeLayersArguments).parse_args_into_dataclasses(args=argv)
    models = parse_models(args.models)
    specs = read_experts(args.experts, 1)
    train, train_targets, held_out, eval_targets = scene_probe_data(
        specs, args.scene_seed, args.train_scenes, args.scene_seed + EVAL_SCENE_SEED_OFFSET, args.eval_scenes,
        args.scene_style)
    settings = LayerProbeSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                  seed=args.seed)
    results = {}
    for name, folder in models.items():
        model = VersaViTForCaptioning.from_pretrained(folder).eval().requires_grad_(False)
        processor = VersaViTCaptioningProcessor.from_pretrained(folder)
        depth = model.config.text_config.num_hidden_layers
        layers = args.layers or list(range(1, depth + 1))
        if any(not 1 <= layer <= depth for layer in layers):
            raise ValueError(f"layers: {layers} outside 1..{depth}, the layers of {name}'s LLM.")
        results[name] = probe_llm_layers(model, processor, train, train_targets, held_out, eval_targets, layers,
                                         settings)
        for expert, by_layer in results[name].items():
            best = max(by_layer, key=by_layer.get)
            print(f"{name:<16} {expert:<14} best layer {best}: {by_layer[best]:.3f}   "
                  + " ".join(f"{layer}:{value:.3f}" for layer, value in by_layer.items()))
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "probes.json").write_text(json.dumps(results, indent=2))
    plot = plot_layer_probes(results, output / "layer_probes.png")
    print(f"probes.json and {plot.name} in {output}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
