#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Masks for box-annotated referring data with transformers' SamModel (paper §4.2.3, strategy (iii): GRIT /
Objects365 boxes -> SAM masks -> the annotation's text or a description of each mask).

    python recipes/data/label_masks.py --sam path/to/sam-vit-huge --annotations boxes.jsonl --images imgs/ \\
        --output_dir refs/
    python recipes/data/label_masks.py --sam ... --describer models/DAM-3B --text describer ...   # Objects365 (paper)

`--annotations` is JSON Lines, one image per line (GRIT and Objects365 annotations convert to it directly):

    {"image": "relative/path.jpg", "objects": [{"box": [x0, y0, x1, y1], "text": "a dog on the sofa"}, ...]}

Boxes are pixel corners. Each box prompts SAM for three masks; the best-scoring one (predicted IoU) is kept. With
`--describer` (any local image-text-to-text model; the options as in recipes/data/describe_masks.py) objects without
text (`--text auto`) or all objects (`--text describer`) get the describer's description of their SAM mask; a
description that is empty or equal to another's of the same image is dropped and counted. Boxes are clipped to the
image; a box left without area, an empty text or an empty mask is skipped and counted, as is an image that is missing or
unreadable. Writes image, expressions, masks, source (add text embeddings with recipes/data/embed_texts.py). Resumable:
rerunning skips finished shards; under torchrun / accelerate launch each process labels its own shards.
"""

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import HfArgumentParser, SamModel, SamProcessor

from modeling_versavit import load_image
from versavit_trainer.data.labelling import (
    DescriberArguments,
    Skip,
    describe_regions,
    process_device,
    run_sharded,
    stored_image,
)
from versavit_trainer.data.readers import inside
from versavit_trainer.data.schemas import REFERRING_FEATURES

FEATURES = REFERRING_FEATURES
TEXT_SOURCES = ("annotation", "describer", "auto")


@dataclass
class LabelMasksArguments:
    sam: str = field(metadata={"help": "Local folder of a SamModel checkpoint and its SamProcessor."})
    annotations: str = field(metadata={"help": "JSON Lines of {'image': path, 'objects': [{'box', 'text'}]}."})
    images: str = field(metadata={"help": "Folder the annotation image paths are relative to."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    text: str = field(default="auto", metadata={
        "help": "Where each object's expression comes from: annotation (its 'text'; objects without one are skipped), "
                "describer (the --describer model describes every SAM mask), auto (the annotation's text, else the "
                "describer's when --describer is given)."})
    shard_size: int = field(default=256, metadata={"help": "Images per saved (and resumable) shard."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Torch device."})


def read_annotations(path) -> list[dict]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err}).") from err
        if not isinstance(row.get("image"), str) or not isinstance(row.get("objects"), list):
            raise ValueError(f"{path}:{number}: needs 'image' (a path) and 'objects' (a list), got keys {sorted(row)}.")
        rows.append(row)
    return rows


def clip_box(box, width: int, height: int) -> list[float] | None:
    """The box clipped to the image, or None when nothing of it is inside."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(np.isfinite(v) for v in box)):
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    return [x0, y0, x1, y1] if x1 - x0 >= 1 and y1 - y0 >= 1 else None


def main(argv: list[str] | None = None) -> dict:
    args, describer_args = HfArgumentParser((LabelMasksArguments, DescriberArguments)).parse_args_into_dataclasses(
        args=argv)
    args.device = process_device(args.device)  # this process's GPU under a launcher
    if args.text not in TEXT_SOURCES:
        sys.exit(f"label_masks.py: error: text: expected one of {list(TEXT_SOURCES)}, got {args.text!r}.")
    if args.text == "describer" and not describer_args.describer:
        sys.exit("label_masks.py: error: describer: --text describer needs the folder of an image-text-to-text model.")
    try:
        rows = read_annotations(args.annotations)
        describer = describer_args.build(args.device) if describer_args.describer else None
    except (ValueError, OSError) as err:
        sys.exit(f"label_masks.py: error: {err}")
    processor = SamProcessor.from_pretrained(args.sam)
    model = SamModel.from_pretrained(args.sam).to(args.device).eval()
    root = Path(args.images)
    objects = Counter()

    def text_of(obj) -> str | None:
        """The annotation's text when it is used, None when the describer writes it, "" when the object has none."""
        text = str(obj.get("text") or "").strip()
        if args.text == "describer" or (args.text == "auto" and not text and describer is not None):
            return None
        return text

    @torch.inference_mode()
    def label(batch):
        results = []
        for row in batch:
            try:
                path = inside(root, row["image"], "image")
            except ValueError as err:
                results.append(Skip("image path outside the image folder", str(err)))
                continue
            try:
                image = load_image(path)
            except (OSError, ValueError) as err:
                results.append(Skip("missing or unreadable image", str(err)))
                continue
            boxes, texts = [], []
            for obj in row["objects"]:
                text = text_of(obj)
                box = clip_box(obj.get("box"), image.width, image.height)
                if text == "":
                    objects["objects skipped: empty text"] += 1
                elif box is None:
                    objects["objects skipped: box outside the image"] += 1
                else:
                    boxes.append(box)
                    texts.append(text)
            if not boxes:
                results.append(Skip("no usable object"))
                continue
            inputs = processor(images=image, input_boxes=[boxes], return_tensors="pt").to(args.device)
            outputs = model(**inputs, multimask_output=True)
            masks = processor.post_process_masks(
                outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
            )[0]  # (boxes, 3, H, W)
            best = outputs.iou_scores[0].argmax(-1).cpu()
            found = []
            for k, text in enumerate(texts):
                mask = masks[k, best[k]].numpy()
                if not mask.any():
                    objects["objects skipped: empty mask"] += 1
                else:
                    found.append((text, mask))
            wanted = [k for k, (text, _) in enumerate(found) if text is None]
            if wanted:  # strategy (iii): the SAM mask described
                described = describe_regions(describer, image, [found[k][1] for k in wanted], objects)
                for k, text in zip(wanted, described):
                    found[k] = (text, found[k][1])
                objects["objects described"] += sum(text is not None for text in described)
            kept = [(text, mask) for text, mask in found if text is not None]
            if not kept:
                results.append(Skip("no usable object"))
                continue
            results.append({"image": stored_image(path, image, row["image"]), "expressions": [t for t, _ in kept],
                            "masks": [PIL.Image.fromarray(mask) for _, mask in kept], "source": row["image"]})
        return results

    return run_sharded(rows, label, args.output_dir, FEATURES, args.shard_size, 1, "masks", objects,
                       settings={**vars(args), **vars(describer_args)})


if __name__ == "__main__":
    main(sys.argv[1:])
