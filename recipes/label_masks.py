#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Masks for box-annotated referring data with transformers' SamModel (paper §4.2.3: GRIT / Objects365 boxes + SAM).

    python recipes/label_masks.py --sam path/to/sam-vit-huge --annotations boxes.jsonl --images imgs/ --output_dir refs/

`--annotations` is JSON Lines, one image per line (GRIT and Objects365 annotations convert to it directly):

    {"image": "relative/path.jpg", "objects": [{"box": [x0, y0, x1, y1], "text": "a dog on the sofa"}, ...]}

Boxes are pixel corners. Each box prompts SAM for three masks; the best-scoring one (predicted IoU) is kept.
Boxes are clipped to the image; a box left without area, an empty text or an empty mask is skipped and counted,
as is an image that is missing or unreadable. Writes image, expressions, masks, source (add text embeddings with
recipes/embed_texts.py). Resumable: rerunning skips finished shards.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import HfArgumentParser, SamModel, SamProcessor

from modeling_versavit import load_image
from versavit_trainer.data import REFERRING_FEATURES
from versavit_trainer.labelling import Skip, process_device, run_sharded, stored_image

FEATURES = REFERRING_FEATURES


@dataclass
class LabelMasksArguments:
    sam: str = field(metadata={"help": "Local folder of a SamModel checkpoint and its SamProcessor."})
    annotations: str = field(metadata={"help": "JSON Lines of {'image': path, 'objects': [{'box', 'text'}]}."})
    images: str = field(metadata={"help": "Folder the annotation image paths are relative to."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
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
    (args,) = HfArgumentParser(LabelMasksArguments).parse_args_into_dataclasses(args=argv)
    args.device = process_device(args.device)  # this process's GPU under a launcher
    processor = SamProcessor.from_pretrained(args.sam)
    model = SamModel.from_pretrained(args.sam).to(args.device).eval()
    root = Path(args.images)
    skipped_objects = {"box outside the image": 0, "empty text": 0, "empty mask": 0}

    @torch.inference_mode()
    def label(rows):
        results = []
        for row in rows:
            path = root / row["image"]
            try:
                image = load_image(path)
            except (OSError, ValueError) as err:
                results.append(Skip("missing or unreadable image", str(err)))
                continue
            boxes, texts = [], []
            for obj in row["objects"]:
                text = str(obj.get("text", "")).strip()
                box = clip_box(obj.get("box"), image.width, image.height)
                if not text:
                    skipped_objects["empty text"] += 1
                elif box is None:
                    skipped_objects["box outside the image"] += 1
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
            kept_texts, kept_masks = [], []
            for k, text in enumerate(texts):
                mask = masks[k, best[k]].numpy()
                if not mask.any():
                    skipped_objects["empty mask"] += 1
                    continue
                kept_texts.append(text)
                kept_masks.append(PIL.Image.fromarray(mask))
            if not kept_texts:
                results.append(Skip("no usable object"))
                continue
            results.append({"image": stored_image(path, image, row["image"]), "expressions": kept_texts,
                            "masks": kept_masks, "source": row["image"]})
        return results

    summary = run_sharded(read_annotations(args.annotations), label, args.output_dir, FEATURES, args.shard_size, 1, "masks")
    summary.update({f"objects skipped: {reason}": count for reason, count in skipped_objects.items()})
    (Path(args.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    print("objects skipped in this run: " + ", ".join(f"{k} {v}" for k, v in skipped_objects.items()))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
