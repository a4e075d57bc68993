# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Resumable, sharded labelling runs: the machinery behind the pseudo-labelling and conversion recipes.

The inputs (a deterministic list) are cut into shards of `shard_size`. Each shard is labelled in batches and saved
as its own `datasets` folder (`shard-00000`, ...), written to a temporary folder and renamed when complete, then
marked done. A rerun skips the done shards, so an interrupted run loses at most the shard in progress. Items that
cannot be labelled (corrupt images, boxes outside the image, empty expressions, ...) are skipped and counted by
reason; `summary.json` and the last printed line give the totals. `load_labelled(folder)` is the whole dataset.
"""

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
from datasets import Dataset, Features, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Skip:
    """An item that was not labelled, and why (the reason is the counter's key: keep it short and fixed)."""

    reason: str
    detail: str = ""


def list_images(folder) -> list[Path]:
    """Image files under `folder` (recursively), sorted: the same order on every run."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"images: {folder} is not a folder.")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def stored_image(path: Path, loaded: PIL.Image.Image, name: str) -> dict | PIL.Image.Image:
    """What to store for an image whose labels were made on `loaded` (`load_image`'s RGB, EXIF-rotated): the file's
    own bytes (compact, exact) when they decode to the same geometry, else the loaded image itself."""
    raw = path.read_bytes()
    with PIL.Image.open(path) as original:
        if original.size == loaded.size and original.getexif().get(0x0112, 1) == 1:
            return {"bytes": raw, "path": name}
    return loaded


def run_sharded(
    items: Sequence,
    label_batch: Callable[[list], list],
    output_dir,
    features: Features,
    shard_size: int = 256,
    batch_size: int = 8,
    description: str = "labelling",
) -> dict:
    """Label `items` shard by shard into `output_dir`; returns the summary (also written to summary.json).

    `label_batch(items)` returns, per item, a row dict (matching `features`), a list of rows, or a `Skip`.

    Under `torchrun` / `accelerate launch` with N processes (`RANK`, `WORLD_SIZE`), process r labels shards r,
    r + N, ...: the shards are the same as a 1-process run's, written by whichever process owns them, and a rerun
    resumes each. A process that finishes when every shard is done writes summary.json (the counts of all shards;
    `shards_resumed` is its own); the others return their own counts with `"complete": False`.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}.")
    rank, world = process_rank()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    totals = Counter()
    num_shards = (len(items) + shard_size - 1) // shard_size
    mine = [shard for shard in range(num_shards) if shard % world == rank]
    resumed = 0
    with tqdm(total=sum(len(items[s * shard_size : (s + 1) * shard_size]) for s in mine), desc=description,
              unit="item", disable=rank > 0) as progress:
        for shard in mine:
            shard_items = items[shard * shard_size : (shard + 1) * shard_size]
            final = output_dir / f"shard-{shard:05d}"
            if (final / "DONE").is_file():
                totals.update(json.loads((final / "DONE").read_text()))
                progress.update(len(shard_items))
                resumed += 1
                continue
            rows, counts = [], Counter()
            for start in range(0, len(shard_items), batch_size):
                batch = shard_items[start : start + batch_size]
                for item, result in zip(batch, label_batch(batch), strict=True):
                    if isinstance(result, Skip):
                        counts[f"skipped: {result.reason}"] += 1
                        progress.write(f"skipped {item}: {result.reason}{' (' + result.detail + ')' if result.detail else ''}")
                    else:
                        produced = result if isinstance(result, list) else [result]
                        rows.extend(produced)
                        counts["labelled"] += 1
                        counts["rows"] += len(produced)
                progress.update(len(batch))
            staging = output_dir / f".staging-{shard:05d}"
            shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
            if rows:
                Dataset.from_list(rows, features=features).save_to_disk(str(staging))
            else:  # every item skipped: `datasets` can neither write nor read an empty shard; DONE alone records it
                staging.mkdir()
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            (final / "DONE").write_text(json.dumps(counts))
            totals.update(counts)
    done = [output_dir / f"shard-{shard:05d}" / "DONE" for shard in range(num_shards)]
    if world > 1 and not all(path.is_file() for path in done):  # other processes still label their shards
        return {"shards": len(mine), "shards_resumed": resumed, "complete": False, **dict(sorted(totals.items()))}
    if world > 1:
        totals = Counter()
        for path in done:
            totals.update(json.loads(path.read_text()))
    summary = {"shards": num_shards, "shards_resumed": resumed, **dict(sorted(totals.items()))}
    staging = output_dir / f".summary-{rank}.json"
    staging.write_text(json.dumps(summary, indent=2))
    staging.replace(output_dir / "summary.json")
    print("summary: " + ", ".join(f"{key} {value}" for key, value in summary.items()))
    return summary


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process under torchrun / accelerate launch; (0, 1) alone."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world}.")
    return rank, world


def process_device(device: str) -> str:
    """`device` for this process: a bare "cuda" becomes this process's GPU (`LOCAL_RANK`) under a launcher."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def load_labelled(folder) -> Dataset:
    """The dataset a labelling run wrote: its finished shards, concatenated in order."""
    folder = Path(folder)
    shards = sorted(p for p in folder.glob("shard-*") if (p / "DONE").is_file())
    if not shards:
        raise FileNotFoundError(f"{folder}: no finished labelling shards (shard-*/DONE).")
    # a shard whose every item was skipped holds no rows, which `datasets` cannot read back: leave it out
    filled = [p for p in shards if json.loads((p / "DONE").read_text()).get("rows", 0) > 0]
    if not filled:
        raise ValueError(f"{folder}: every labelling shard is empty (all items were skipped; see summary.json).")
    return concatenate_datasets([load_from_disk(str(p)) for p in filled])


__all__ = [
    "IMAGE_SUFFIXES",
    "Skip",
    "list_images",
    "load_labelled",
    "process_device",
    "process_rank",
    "run_sharded",
    "stored_image",
]
