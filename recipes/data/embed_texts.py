#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Offline text embeddings of referring expressions (paper §4.2.3: Qwen3-Embedding-8B; here MiniLM by default) or
of captions (the contrastive objective's image-caption pairs).

    python recipes/data/embed_texts.py --input_dir refs/ --output_dir refs_embedded/ \\
        [--model path/to/Qwen3-Embedding-8B]
    python recipes/data/embed_texts.py --captions --input_dir captions/ --output_dir contrastive/

Reads a dataset with an `expressions` column (the output of label_masks.py or convert_refcoco.py, or a `datasets`
folder) and writes it with `text_embeds` added, one embedding per expression, pooled and normalised as the model
prescribes. The result is the segmentation task dataset. With `--captions` it reads a captioning dataset
(convert_captions.py: a `caption` column, or `texts` turns whose first answer is the caption) and writes the
contrastive dataset: `image`, `caption`, `text_embeds` (one embedding). Rows without a caption are skipped and
counted. Resumable: rerunning with the same settings skips finished shards (other settings are refused).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Features, Image, List, Value, load_from_disk
from transformers import HfArgumentParser

from modeling_versavit import SentenceEmbedder
from versavit_trainer.data.labelling import Skip, load_labelled, run_sharded


@dataclass
class EmbedTextsArguments:
    input_dir: str = field(
        metadata={"help": "A labelling-run folder (shard-*) or a datasets folder, with 'expressions'."}
    )
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    model: str | None = field(
        default=None, metadata={"help": "Sentence-embedding model folder (default: packaged MiniLM)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Rows per embedding batch."})
    shard_size: int = field(default=1024, metadata={"help": "Rows per saved (and resumable) shard."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Torch device."})
    captions: bool = field(default=False, metadata={"help": "Embed each row's caption (a captioning dataset) and "
                                                            "write the contrastive objective's dataset."})


def caption_of(row: dict) -> str | None:
    """A captioning row's caption: its `caption`, else the first answer of its `texts` turns; None when empty."""
    text = row.get("caption")
    if text is None and row.get("texts"):
        text = row["texts"][0].get("assistant")
    return text.strip() if isinstance(text, str) and text.strip() else None


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EmbedTextsArguments).parse_args_into_dataclasses(args=argv)
    source = Path(args.input_dir)
    dataset = load_labelled(source) if any(source.glob("shard-*")) else load_from_disk(str(source))
    if args.captions:
        return embed_captions(dataset, source, args)
    if "expressions" not in dataset.column_names:
        raise ValueError(f"{source}: no 'expressions' column (has {dataset.column_names}).")
    embedder = SentenceEmbedder(args.model or _minilm(), device=args.device)
    features = Features({**dataset.features, "text_embeds": List(List(Value("float32")))})
    # Carry images and masks over as their stored bytes: no decoding, no re-encoding.
    for column, raw in (("image", Image(decode=False)), ("masks", List(Image(decode=False)))):
        if column in dataset.column_names:
            dataset = dataset.cast_column(column, raw)

    def label(indices):
        rows = [dataset[i] for i in indices]
        results = [None] * len(rows)
        texts, owners = [], []
        for position, row in enumerate(rows):
            if not row["expressions"] or any(not t or not t.strip() for t in row["expressions"]):
                results[position] = Skip("empty expression")
                continue
            texts.extend(row["expressions"])
            owners.extend([position] * len(row["expressions"]))
        embeddings = embedder(texts).tolist() if texts else []
        for position, row in enumerate(rows):
            if results[position] is None:
                results[position] = {**row, "text_embeds": [e for e, o in zip(embeddings, owners) if o == position]}
        return results

    return run_sharded(list(range(len(dataset))), label, args.output_dir, features, args.shard_size, args.batch_size,
                       "embeddings",
                       settings={**vars(args), "input_fingerprint": dataset._fingerprint})


def embed_captions(dataset, source: Path, args: EmbedTextsArguments) -> dict:
    from versavit_trainer.data.schemas import CONTRASTIVE_FEATURES

    if "image" not in dataset.column_names or not {"caption", "texts"} & set(dataset.column_names):
        raise ValueError(f"{source}: --captions needs an 'image' column and a 'caption' or 'texts' column (has "
                         f"{dataset.column_names}).")
    embedder = SentenceEmbedder(args.model or _minilm(), device=args.device)
    dataset = dataset.cast_column("image", Image(decode=False))  # carried over as stored bytes

    def label(indices):
        rows = [dataset[i] for i in indices]
        captions = [caption_of(row) for row in rows]
        embeddings = iter(embedder([c for c in captions if c is not None]).tolist())
        return [Skip("no caption") if caption is None else
                {"image": row["image"], "caption": caption, "text_embeds": next(embeddings)}
                for row, caption in zip(rows, captions)]

    return run_sharded(list(range(len(dataset))), label, args.output_dir, CONTRASTIVE_FEATURES, args.shard_size,
                       args.batch_size, "embeddings",
                       settings={**vars(args), "input_fingerprint": dataset._fingerprint})


def _minilm() -> str:
    from versavit_trainer.data.assets import minilm_path

    return str(minilm_path())


if __name__ == "__main__":
    main(sys.argv[1:])
