#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Convert RefCOCO / RefCOCO+ / RefCOCOg (refs pickle + COCO instances) to referring-segmentation rows.

    python recipes/data/convert_refcoco.py --refs refcoco/refs(unc).p --instances refcoco/instances.json \\
        --images coco/train2014/ --split train --output_dir refcoco_train/

One row per image: every sentence of every ref of the split becomes an expression, its mask the ref's COCO
instance mask (polygons or RLE, decoded with pycocotools). Writes image, expressions, masks, source; add text
embeddings with recipes/data/embed_texts.py. Missing images, refs without an annotation and empty sentences are
skipped and counted. Resumable: rerunning with the same settings skips finished shards (other settings are refused).

The refs file is a pickle; it is read with a restricted unpickler (versavit_trainer.data.readers.refcoco_refs) that
builds lists, dicts, strings and numbers only and refuses anything else, naming the global: a tampered download cannot
run code. instances.json is JSON (pycocotools), the images go through load_image.
"""

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
from transformers import HfArgumentParser

from modeling_versavit import load_image
from versavit_trainer.data.labelling import Skip, run_sharded, stored_image
from versavit_trainer.data.readers import inside, refcoco_refs
from versavit_trainer.data.schemas import REFERRING_FEATURES

FEATURES = REFERRING_FEATURES


@dataclass
class ConvertRefCocoArguments:
    refs: str = field(metadata={"help": "The refs pickle, e.g. refs(unc).p (RefCOCO, RefCOCO+) or refs(umd).p."})
    instances: str = field(metadata={"help": "The COCO-format instances.json of the same release."})
    images: str = field(metadata={"help": "Folder of the COCO images (file_name in instances.json)."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    split: str = field(default="train", metadata={"help": "Split to convert: train, val, testA, testB, test."})
    shard_size: int = field(default=512, metadata={"help": "Images per saved (and resumable) shard."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ConvertRefCocoArguments).parse_args_into_dataclasses(args=argv)
    from pycocotools.coco import COCO

    refs = refcoco_refs(args.refs)  # before pycocotools reads the (large) instances file
    coco = COCO(args.instances)
    by_image = defaultdict(list)
    for ref in refs:
        if ref.get("split") == args.split:
            by_image[ref["image_id"]].append(ref)
    if not by_image:
        splits = sorted({ref.get("split") for ref in refs})
        raise ValueError(f"split: no ref in {args.split!r}; the refs file has splits {splits}.")
    root = Path(args.images)

    def label(image_ids):
        results = []
        for image_id in image_ids:
            info = coco.imgs.get(image_id)
            if info is None:
                results.append(Skip("image not in instances.json"))
                continue
            try:
                path = inside(root, info["file_name"], "file_name")
            except ValueError as err:
                results.append(Skip("image path outside the image folder", str(err)))
                continue
            try:
                image = load_image(path)
            except (OSError, ValueError) as err:
                results.append(Skip("missing or unreadable image", str(err)))
                continue
            expressions, masks = [], []
            for ref in by_image[image_id]:
                if ref["ann_id"] not in coco.anns:
                    continue
                mask = coco.annToMask(coco.anns[ref["ann_id"]]).astype(bool)
                if mask.shape != (image.height, image.width):
                    continue
                for sentence in ref.get("sentences", []):
                    text = (sentence.get("sent") or sentence.get("raw") or "").strip()
                    if text:
                        expressions.append(text)
                        masks.append(PIL.Image.fromarray(mask))
            if not expressions:
                results.append(Skip("no usable expression"))
                continue
            results.append({"image": stored_image(path, image, info["file_name"]), "expressions": expressions,
                            "masks": masks, "source": info["file_name"]})
        return results

    return run_sharded(sorted(by_image), label, args.output_dir, FEATURES, args.shard_size, 16, f"refcoco {args.split}",
                       settings=vars(args))


if __name__ == "__main__":
    main(sys.argv[1:])
