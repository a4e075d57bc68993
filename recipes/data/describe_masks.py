#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Referring data from masks that have no text (paper §4.2.3, strategy (ii): SA-1B masks described by a dense
captioning model, Describe Anything in the paper; any local image-text-to-text checkpoint here).

    python recipes/data/describe_masks.py --describer models/DAM-3B --images data/sa1b/ --output_dir refs/sa1b
    torchrun --nproc_per_node 8 recipes/data/describe_masks.py --describer ... --device cuda   # a shard stream per GPU

`--images` is SA-1B's layout: each `<name>.jpg` beside its `<name>.json` of COCO RLE masks. Per image, the masks
covering at least `--min_area` of it, at most `--max_masks` (largest first), are each shown to the describer as
`--view crop` (the mask's box widened by `--context`, the pixels outside the mask darkened by `--dim`) or `highlight`
(the whole image, the mask outlined in red) with `--prompt`, and described greedily (the same text on every run).
The first line of the answer, without quotes and a final period, is the referring expression. A region whose
description is empty, or equal to another region's of the same image (ambiguous), is dropped and counted; an image
left with none, or whose masks do not match its size, is skipped and counted, as is an unreadable image. Writes
image, expressions, masks, source (add text embeddings with recipes/data/embed_texts.py). Sharded and resumable, and
under torchrun / accelerate launch each process describes its own shards.
"""

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import torch
from transformers import HfArgumentParser

from modeling_versavit import load_image
from versavit_trainer.data import readers
from versavit_trainer.data.labelling import (
    DescriberArguments,
    Skip,
    describe_regions,
    process_device,
    run_sharded,
    stored_image,
)
from versavit_trainer.data.schemas import REFERRING_FEATURES


@dataclass
class DescribeMasksArguments:
    images: str = field(metadata={"help": "SA-1B-style folder: <name>.jpg beside <name>.json (COCO RLE masks)."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    min_area: float = field(default=0.01, metadata={"help": "Smallest mask kept, as a fraction of the image."})
    max_masks: int = field(default=8, metadata={"help": "Masks per image at most (the largest)."})
    shard_size: int = field(default=256, metadata={"help": "Images per saved (and resumable) shard."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Torch device."})


def main(argv: list[str] | None = None) -> dict:
    args, describer_args = HfArgumentParser((DescribeMasksArguments, DescriberArguments)).parse_args_into_dataclasses(
        args=argv)
    try:
        if not describer_args.describer:
            raise ValueError("describer: give the folder of an image-text-to-text model that describes the masks.")
        if not 0 <= args.min_area < 1 or args.max_masks < 1:
            raise ValueError(
                f"min_area must be in [0, 1) and max_masks >= 1, got {args.min_area} and {args.max_masks}."
            )
        items = readers.sa1b(args.images)
        describer = describer_args.build(process_device(args.device))
    except (ValueError, OSError) as err:
        sys.exit(f"describe_masks.py: error: {err}")
    root = Path(args.images)
    regions = Counter()

    def label(batch):
        results = []
        for image_path, masks_path in batch:
            name = str(image_path.relative_to(root))
            try:
                image = load_image(image_path)
                masks = readers.sa1b_masks(masks_path, args.min_area, args.max_masks)
            except (OSError, ValueError) as err:
                results.append(Skip("unreadable image or masks", str(err)))
                continue
            if any(mask.shape != (image.height, image.width) for mask in masks):
                results.append(Skip("masks do not match the image size", name))
                continue
            texts = describe_regions(describer, image, masks, regions) if masks else []
            kept = [(text, mask) for text, mask in zip(texts, masks) if text is not None]
            regions["regions: described"] += len(kept)
            if not kept:
                results.append(Skip("no described mask" if masks else "no mask large enough"))
                continue
            results.append({"image": stored_image(image_path, image, name), "expressions": [t for t, _ in kept],
                            "masks": [PIL.Image.fromarray(mask) for _, mask in kept], "source": name})
        return results

    return run_sharded(items, label, args.output_dir, REFERRING_FEATURES, args.shard_size, 1, "describing", regions,
                       settings={**vars(args), **vars(describer_args)})


if __name__ == "__main__":
    main(sys.argv[1:])
