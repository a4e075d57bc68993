#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Convert GRIT (Kosmos-2's grounded image-text pairs) to the box annotations of recipes/data/label_masks.py.

    python recipes/data/convert_grit.py --input grit/ --images grit_images/ --output grit_boxes.jsonl
    python recipes/data/label_masks.py --sam models/sam-vit-huge --annotations grit_boxes.jsonl --images grit_images/ \\
        --output_dir grit_refs/                                     # then embed_texts.py: a segmentation dataset

`--input` is a GRIT parquet / JSON Lines file or a folder of them: per image `key`, `caption`, `width`, `height` and
`ref_exps` (or `noun_chunks` with `--spans noun_chunks`): `[start, end, x0, y0, x1, y1, score]` with the box
normalised to [0, 1] and the text `caption[start:end]`. `--images` holds the downloaded images as `<key>.<ext>`
anywhere below it (img2dataset's layout). Each image becomes one line `{"image": path, "objects": [{"box": [x0, y0,
x1, y1] in pixels, "text"}]}`; spans under `--min_score`, with an empty text or a degenerate box are dropped, and
images not found or left without an object are skipped; the counts go to stdout and `<output>.summary.json`.
"""

import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from versavit_trainer.data.labelling import list_images


@dataclass
class ConvertGritArguments:
    input: str = field(metadata={"help": "A GRIT parquet or JSON Lines file, or a folder of them."})
    images: str = field(metadata={"help": "Folder of the downloaded images, named <key>.<ext> (searched recursively)."})
    output: str = field(metadata={"help": "The box-annotation JSON Lines file to write (label_masks.py input)."})
    spans: str = field(default="ref_exps", metadata={"help": "ref_exps (referring expressions) or noun_chunks."})
    min_score: float = field(default=0.0, metadata={"help": "Drop spans whose grounding score is below this."})


def read_rows(path: Path) -> list[dict]:
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json")) if path.is_dir() else [path]
    )
    if not files:
        raise FileNotFoundError(f"input: no parquet or JSON Lines file in {path}.")
    rows = []
    for file in files:
        if file.suffix == ".parquet":
            from datasets import Dataset

            rows += Dataset.from_parquet(str(file)).to_list()
        else:
            rows += [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def objects_of(row: dict, spans: str, min_score: float, counts: Counter) -> list[dict]:
    """The label_masks objects of one GRIT row: pixel boxes and their caption spans. A span whose offsets or
    coordinates are not finite numbers, or whose normalised coordinates leave [0, 1], is skipped and counted (never
    clamped to the image's edge); the first of each kind is printed with its row key and values."""
    caption, width, height = str(row.get("caption") or ""), row.get("width"), row.get("height")
    if not (_real(width) and _real(height) and width > 0 and height > 0):
        _skip(counts, "no image size", len(row.get(spans) or []), row, f"width {width!r}, height {height!r}")
        return []
    objects = []
    for span in row.get(spans) or []:
        if not isinstance(span, (list, tuple)) or len(span) < 6:
            _skip(counts, "malformed", 1, row, f"span {span!r}")
            continue
        start, end, *box = span[:6]
        score = span[6] if len(span) > 6 else 1.0
        if not all(_real(v) for v in (start, end, *box, score)):
            _skip(counts, "coordinates that are not finite numbers", 1, row, f"span {list(span)!r}")
            continue
        if not all(0.0 <= v <= 1.0 for v in box):
            _skip(counts, "coordinates outside [0, 1]", 1, row, f"span {list(span)!r}")
            continue
        text = caption[int(start):int(end)].strip()
        if score < min_score:
            counts["skipped spans: low score"] += 1
        elif not text:
            counts["skipped spans: empty text"] += 1
        elif box[2] <= box[0] or box[3] <= box[1]:
            counts["skipped spans: degenerate box"] += 1
        else:
            objects.append({"box": [box[0] * width, box[1] * height, box[2] * width, box[3] * height], "text": text})
    return objects


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _skip(counts: Counter, reason: str, number: int, row: dict, detail: str) -> None:
    key = f"skipped spans: {reason}"
    if number and not counts[key]:
        print(f"convert_grit.py: skipping spans with {reason} (first: row {row.get('key')!r}, {detail}).")
    counts[key] += number


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ConvertGritArguments).parse_args_into_dataclasses(args=argv)
    if args.spans not in ("ref_exps", "noun_chunks"):
        sys.exit(f"convert_grit.py: error: spans: expected ref_exps or noun_chunks, got {args.spans!r}.")
    try:
        rows = read_rows(Path(args.input))
        root = Path(args.images)
        by_key = {path.stem: path for path in list_images(root)}
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"convert_grit.py: error: {err}")
    counts: Counter = Counter()
    lines = []
    for row in rows:
        path = by_key.get(str(row.get("key")))
        if path is None:
            counts["skipped images: not downloaded"] += 1
            continue
        objects = objects_of(row, args.spans, args.min_score, counts)
        if not objects:
            counts["skipped images: no usable span"] += 1
            continue
        lines.append(json.dumps({"image": str(path.relative_to(root)), "objects": objects}))
        counts["objects"] += len(objects)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(line + "\n" for line in lines))
    summary = {"images": len(lines), **dict(sorted(counts.items())), "output": str(output)}
    output.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
