#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Precompute the expert embeddings of VisPer-LM's distillation objective, offline, so that training never runs an
expert (versavit_trainer.objectives.distillation).

    python recipes/data/embed_experts.py --experts recipes/configs/visper_default.yaml \\
        --data captions_ds/ --output_dir distill_ds/
    python recipes/data/embed_experts.py --experts recipes/configs/visper_default.yaml \\
        --num_scenes 300 --output_dir distill_ds/                       # the generated scenes' conversations

`--experts` is a YAML file: a run config (its `distillation_experts`) or the mapping itself (name -> {model, output,
output_layers, prefix_tokens, grid, size, llm_layers, queries, ...}, `versavit_trainer.data.experts.ExpertSpec`).
Writes the captioning rows (image, texts or caption) with one `<name>_embeds` column per expert, `(tokens, width)`
float32, as a sharded dataset: the run reads it with `distillation_data: distill_ds/`. Resumable: a rerun skips the
finished shards; under `torchrun` / `accelerate launch` each process embeds its own shards. Unreadable images and
embeddings with NaN / inf are skipped and counted.
"""

import sys
from dataclasses import dataclass, field

import torch
from datasets import Array2D, Features
from transformers import HfArgumentParser

from modeling_versavit import to_rgb
from versavit_trainer.data.experts import EmbeddingExpert, embeds_column, read_experts
from versavit_trainer.data.labelling import Skip, process_device, run_sharded


@dataclass
class EmbedExpertsArguments:
    experts: str = field(metadata={"help": "YAML file with the experts: a run config (distillation_experts) or the "
                                           "mapping name -> settings itself."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    data: str | None = field(default=None, metadata={"help": "Captioning dataset folder (image + texts or caption). "
                                                             "Default: generated scenes."})
    num_scenes: int = field(default=300, metadata={"help": "Generated scenes, without --data."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the first generated scene."})
    texts: str = field(default="default", metadata={"help": "The scenes' conversations (data.scenes.SCENE_TEXTS)."})
    num_task_tokens: int = field(default=8, metadata={"help": "The run's distillation_num_task_tokens (checks the "
                                                              "experts' queries)."})
    batch_size: int = field(default=8, metadata={"help": "Images per expert forward pass."})
    shard_size: int = field(default=256, metadata={"help": "Rows per saved (and resumable) shard."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Torch device."})


def source_rows(args):
    """The captioning rows to embed: a folder, or the generated scenes."""
    from versavit_trainer.data.labelling import dataset_folder

    if args.data is not None:
        return dataset_folder(args.data, "captioning")
    from versavit_trainer.data.scene_tables import scene_datasets

    return scene_datasets(args.num_scenes, None, seed=args.scene_seed, texts=args.texts)["captioning"]


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EmbedExpertsArguments).parse_args_into_dataclasses(args=argv)
    args.device = process_device(args.device)  # this process's GPU under a launcher
    specs = read_experts(args.experts, args.num_task_tokens)
    rows = source_rows(args)
    experts = [EmbeddingExpert(spec, args.device) for spec in specs]
    first = to_rgb(rows[0]["image"])
    features = Features({**rows.features, **{
        embeds_column(spec.name): Array2D(shape=tuple(expert([first]).shape[1:]), dtype="float32")
        for spec, expert in zip(specs, experts)}})

    def embed(indices):
        results, loaded = [None] * len(indices), []
        for k, index in enumerate(indices):
            try:
                row = rows[index]
                loaded.append((k, row, to_rgb(row["image"])))
            except (OSError, ValueError) as err:
                results[k] = Skip("unreadable image", str(err))
        if loaded:
            images = [image for _, _, image in loaded]
            outputs = {spec.name: expert(images) for spec, expert in zip(specs, experts)}
            for position, (k, row, _) in enumerate(loaded):
                values = {name: out[position] for name, out in outputs.items()}
                bad = [name for name, value in values.items() if not torch.isfinite(value).all()]
                results[k] = Skip("non-finite embedding", f"expert {bad[0]}") if bad else {
                    **row, **{embeds_column(name): value.numpy() for name, value in values.items()}}
        return results

    return run_sharded(list(range(len(rows))), embed, args.output_dir, features, args.shard_size, args.batch_size,
                       "experts", settings={**vars(args), "input_fingerprint": rows._fingerprint})


if __name__ == "__main__":
    main(sys.argv[1:])
