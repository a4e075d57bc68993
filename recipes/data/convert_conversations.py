#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Convert MLLM conversation data to the captioning task dataset (image, texts, source).

    python recipes/data/convert_conversations.py --format llava --input llava_v1_5_mix665k.json --images data/ \\
        --output_dir llava_ds/
    python recipes/data/convert_conversations.py --format finevision --input FineVision/ --output_dir finevision_ds/

- `llava`: LLaVA / ShareGPT-style JSON (a list) or JSON Lines: each sample has `image` (a path relative to
  `--images`, or a list holding one) and `conversations` ([{"from": "human" | "gpt", "value": ...}], ShareGPT's
  roles) or `messages` ([{"role": "user" | "assistant", "content": ...}]). System turns are dropped, the `<image>`
  placeholder is removed from the question (the captioning processor places its own), and each question with the
  answer after it becomes a turn.
- `finevision`: a FineVision-layout dataset folder (`save_to_disk`, or parquet files) with `images` (a list) and
  `texts` ([{"user", "assistant"}]); only single-image samples are kept, as the paper does (supplement §8.2).

Multi-image and text-only samples, turns that do not alternate question / answer, empty turns and unreadable images
are skipped and counted in summary.json. Resumable: rerunning with the same settings skips finished shards (other
settings are refused).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Features, Value
from transformers import HfArgumentParser

from modeling_versavit import load_image
from versavit_trainer.data.labelling import Skip, run_sharded, stored_image
from versavit_trainer.data.readers import inside
from versavit_trainer.data.schemas import CAPTIONING_FEATURES

FEATURES = Features({**CAPTIONING_FEATURES, "source": Value("string")})
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class ConvertConversationsArguments:
    format: str = field(metadata={"help": "llava (LLaVA / ShareGPT JSON or JSONL) or finevision (a dataset folder)."})
    input: str = field(metadata={"help": "llava: the JSON / JSONL file; finevision: the dataset folder."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    images: str | None = field(default=None, metadata={"help": "llava: the folder the image paths are relative to."})
    shard_size: int = field(default=1024, metadata={"help": "Samples per saved (and resumable) shard."})


def read_samples(path: Path) -> list:
    """The samples of a LLaVA-style JSON list or JSON Lines file."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"input: {path} is neither a JSON list nor JSON Lines ({err}).") from None
    if not isinstance(data, list):
        raise ValueError(f"input: {path} holds a {type(data).__name__}, expected a list of samples.")
    return data


def turns_of(sample: dict, image_token: str = "<image>") -> list[dict] | Skip:
    """The `{"user", "assistant"}` turns of one LLaVA / ShareGPT sample, or why it cannot be used."""
    messages = sample.get("conversations") or sample.get("messages")
    if not isinstance(messages, list) or not messages:
        return Skip("no conversation")
    cleaned = []
    for message in messages:
        if not isinstance(message, dict):
            return Skip("malformed conversation")
        role = ROLES.get(str(message.get("from", message.get("role", ""))).lower())
        text = message.get("value", message.get("content"))
        if role is None or not isinstance(text, str):
            return Skip("malformed conversation")
        if role != "system":
            cleaned.append((role, text.replace(image_token, "").strip()))
    if len(cleaned) % 2 or any(role != ("user", "assistant")[k % 2] for k, (role, _) in enumerate(cleaned)):
        return Skip("turns do not alternate")
    turns = [{"user": cleaned[k][1], "assistant": cleaned[k + 1][1]} for k in range(0, len(cleaned), 2)]
    if not turns or any(not turn["user"] or not turn["assistant"] for turn in turns):
        return Skip("empty turn")
    return turns


def convert_llava(args: ConvertConversationsArguments) -> dict:
    if not args.images:
        raise ValueError("images: the llava format needs the folder its image paths are relative to.")
    root = Path(args.images)
    samples = read_samples(Path(args.input))

    def label(batch):
        results = []
        for sample in batch:
            image = sample.get("image") if isinstance(sample, dict) else None
            if isinstance(image, list):
                if len(image) != 1:
                    results.append(Skip("multi-image" if image else "no image"))
                    continue
                image = image[0]
            if not isinstance(image, str) or not image:
                results.append(Skip("no image"))
                continue
            turns = turns_of(sample)
            if isinstance(turns, Skip):
                results.append(turns)
                continue
            try:
                path = inside(root, image, "image")
            except ValueError as err:
                results.append(Skip("image path outside the image folder", str(err)))
                continue
            try:
                loaded = load_image(path)
            except (OSError, ValueError) as err:
                results.append(Skip("unreadable image", str(err)))
                continue
            results.append({"image": stored_image(path, loaded, image), "texts": turns, "source": image})
        return results

    return run_sharded(samples, label, args.output_dir, FEATURES, args.shard_size, 64, "conversations",
                       settings=vars(args))


def convert_finevision(args: ConvertConversationsArguments) -> dict:
    from datasets import load_dataset, load_from_disk

    folder = Path(args.input)
    if (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        rows = load_from_disk(str(folder))
    else:
        files = sorted(str(p) for p in folder.rglob("*.parquet"))
        if not files:
            raise ValueError(f"input: {folder} is neither a saved dataset nor a folder of parquet files.")
        rows = load_dataset("parquet", data_files=files, split="train")
    if hasattr(rows, "keys"):  # a DatasetDict: its splits in order
        from datasets import concatenate_datasets

        rows = concatenate_datasets([rows[split] for split in rows])
    missing = [column for column in ("images", "texts") if column not in rows.column_names]
    if missing:
        raise ValueError(f"input: {folder} lacks the FineVision columns {missing} (has {rows.column_names}).")

    def label(indices):
        results = []
        for index in indices:
            row = rows[index]
            images = row["images"] or []
            if len(images) != 1:
                results.append(Skip("multi-image" if images else "no image"))
                continue
            turns = [{"user": str(t.get("user") or "").strip(), "assistant": str(t.get("assistant") or "").strip()}
                     for t in (row["texts"] or [])]
            if not turns or any(not turn["user"] or not turn["assistant"] for turn in turns):
                results.append(Skip("empty turn"))
                continue
            try:
                image = load_image(images[0])
            except (OSError, ValueError) as err:
                results.append(Skip("unreadable image", str(err)))
                continue
            source = str(row.get("source") or f"{folder.name}/{index}")
            results.append({"image": image, "texts": turns, "source": source})
        return results

    return run_sharded(list(range(len(rows))), label, args.output_dir, FEATURES, args.shard_size, 64, "finevision",
                       settings={**vars(args), "input_fingerprint": rows._fingerprint})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ConvertConversationsArguments).parse_args_into_dataclasses(args=argv)
    converters = {"llava": convert_llava, "finevision": convert_finevision}
    if args.format not in converters:
        sys.exit(f"convert_conversations.py: error: format: expected llava or finevision, got {args.format!r}.")
    try:
        return converters[args.format](args)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"convert_conversations.py: error: {err}")


if __name__ == "__main__":
    main(sys.argv[1:])
