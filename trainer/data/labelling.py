# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Resumable, sharded labelling runs: the machinery behind the pseudo-labelling and conversion recipes.

The inputs (a deterministic list) are cut into shards of `shard_size`. Each shard is labelled in batches and saved
as its own `datasets` folder (`shard-00000`, ...), written to a temporary folder and renamed when complete, then
marked done. A rerun with the same inputs and settings skips the done shards, so an interrupted run loses at most
the shard in progress; a rerun with others is refused, naming the differences (`run.json` keeps their fingerprint,
`versavit_trainer.run_folder`). Items that cannot be labelled (corrupt images, boxes outside the image, empty
expressions, ...) are skipped and counted by reason; `summary.json` and the last printed line give the totals.
`load_labelled(folder)` is the whole dataset.

`RegionDescriber` writes a referring expression for a mask with any transformers image-text-to-text model (the
paper's strategies (ii) and (iii) of §4.2.3, with Describe Anything there; any local checkpoint here).
"""

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFilter
import torch
from datasets import Dataset, Features, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from ..run_folder import OWNER_FILE, OutputFolderError, claim_output_dir

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
    part_counts: Counter | None = None,
    settings: dict | None = None,
) -> dict:
    """Label `items` shard by shard into `output_dir`; returns the summary (also written to summary.json).

    The folder belongs to this conversion (`versavit_trainer.run_folder`): `run.json` records a fingerprint of the
    items, `shard_size`, `description` and `settings` (the recipe's options; where it writes, the device and the batch
    size are left out, as they do not change what is written). A rerun with the same fingerprint resumes; one with
    another is refused with the differences, as is a folder that holds anything else.

    `label_batch(items)` returns, per item, a row dict (matching `features`), a list of rows, or a `Skip`.
    `part_counts`, a Counter that `label_batch` adds to (e.g. objects or regions dropped inside an item), is recorded
    per shard like the item counts, so the summary counts resumed shards and other processes' shards too.

    Under `torchrun` / `accelerate launch` with N processes (`RANK`, `WORLD_SIZE`), process r labels shards r,
    r + N, ...: the shards are the same as a 1-process run's, written by whichever process owns them, and a rerun
    resumes each. A process that finishes when every shard is done writes summary.json (the counts of all shards;
    `shards_resumed` is its own); the others return their own counts with `"complete": False`.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}.")
    rank, world = process_rank()
    output_dir = Path(output_dir)
    inputs = labelling_fingerprint(items, shard_size, description, settings)
    if rank == 0:
        claim_output_dir(output_dir, "labelling", resume=True, inputs=inputs,
                         afresh="delete the folder to start afresh")
    else:  # rank 0 claims the folder (and holds its lock); the others wait for its record and check it too
        check_labelling_record(output_dir, inputs)
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
            parts_before = Counter(part_counts or {})
            for start in range(0, len(shard_items), batch_size):
                batch = shard_items[start : start + batch_size]
                for item, result in zip(batch, label_batch(batch), strict=True):
                    if isinstance(result, Skip):
                        counts[f"skipped: {result.reason}"] += 1
                        progress.write(
                            f"skipped {item}: {result.reason}{' (' + result.detail + ')' if result.detail else ''}"
                        )
                    else:
                        produced = result if isinstance(result, list) else [result]
                        rows.extend(produced)
                        counts["labelled"] += 1
                        counts["rows"] += len(produced)
                progress.update(len(batch))
            counts.update(Counter(part_counts or {}) - parts_before)
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


# Options that say where or how fast a conversion runs, not what it writes: outside its fingerprint.
NOT_FINGERPRINTED = frozenset({"output_dir", "device", "batch_size"})


def labelling_fingerprint(items: Sequence, shard_size: int, description: str, settings: dict | None) -> dict:
    """What a sharded conversion's output is a function of: its items (their count and a digest of their text), the
    shard size (which item lands in which shard), the kind of conversion and the recipe's settings."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(str(item).encode() + b"\n")
    kept = {key: value for key, value in sorted((settings or {}).items())
            if key not in NOT_FINGERPRINTED and key != "shard_size"}  # the shard size is recorded once, above
    return json.loads(json.dumps({"description": description, "items": len(items), "items_sha256": digest.hexdigest(),
                                  "shard_size": shard_size, "settings": kept}, default=str))


def check_labelling_record(output_dir: Path, inputs: dict, wait: float = 600.0) -> None:
    """For a process that is not rank 0: wait (up to `wait` seconds) until rank 0 has claimed `output_dir` (its
    `run.json`), then `OutputFolderError` when the folder records a conversion of other inputs."""
    record, deadline = output_dir / OWNER_FILE, time.monotonic() + wait
    while not record.is_file():
        if time.monotonic() > deadline:
            raise OutputFolderError(f"output folder {output_dir}: rank 0 has not claimed it within {wait:.0f} s (no "
                                    f"{OWNER_FILE}); see its error.")
        time.sleep(0.1)
    if json.loads(record.read_text()).get("inputs") != inputs:
        raise OutputFolderError(f"output folder {output_dir} holds a conversion of other inputs or settings (see "
                                f"{record}); delete the folder to start afresh.")


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


REGION_VIEWS = ("crop", "highlight")
DESCRIBE_PROMPTS = {
    "crop": "Describe the highlighted object in a short referring phrase.",
    "highlight": "Describe the object outlined in red in a short referring phrase.",
}


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """`(x0, y0, x1, y1)` (exclusive ends) of a boolean mask's pixels, or None when it is empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def region_view(image: PIL.Image.Image, mask: np.ndarray, view: str = "crop", context: float = 0.25,
                dim: float = 0.5, min_side: int = 56) -> PIL.Image.Image:
    """What a describer sees of the region `mask` (boolean, the image's size) of `image`.

    - `"crop"`: the mask's box widened by `context` x its size on each side (clipped to the image), the pixels
      outside the mask darkened by `dim` (0 keeps them, 1 blacks them out), scaled up so its short side is at least
      `min_side`: the region in focus with some of its surroundings (Describe Anything's focal crop).
    - `"highlight"`: the whole image, the pixels outside the mask darkened by `dim` and the mask's outline drawn in
      red: the region among everything else.
    """
    if view not in REGION_VIEWS:
        raise ValueError(f"view: expected one of {list(REGION_VIEWS)}, got {view!r}.")
    if not (0 <= context and 0 <= dim <= 1):
        raise ValueError(f"context must be >= 0 and dim in [0, 1], got {context} and {dim}.")
    if mask.shape != (image.height, image.width):
        raise ValueError(f"mask: shape {mask.shape} does not match the image ({image.height}x{image.width}).")
    box = mask_box(mask)
    if box is None:
        raise ValueError("mask: empty (no pixel to describe).")
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    shown = np.where(mask[..., None], pixels, pixels * (1 - dim)).round().astype(np.uint8)
    result = PIL.Image.fromarray(shown)
    if view == "highlight":
        region = PIL.Image.fromarray(mask.astype(np.uint8) * 255)
        width = max(1, min(image.size) // 100)
        edge = np.asarray(region.filter(PIL.ImageFilter.MaxFilter(2 * width + 1))) > 0
        edge &= ~(np.asarray(region.filter(PIL.ImageFilter.MinFilter(2 * width + 1))) > 0)
        shown[edge] = (255, 0, 0)
        result = PIL.Image.fromarray(shown)
    else:
        x0, y0, x1, y1 = box
        pad_x, pad_y = round((x1 - x0) * context), round((y1 - y0) * context)
        result = result.crop((max(0, x0 - pad_x), max(0, y0 - pad_y), min(image.width, x1 + pad_x),
                              min(image.height, y1 + pad_y)))
    scale = min_side / min(result.size)
    if scale > 1:
        result = result.resize((round(result.width * scale), round(result.height * scale)), PIL.Image.BICUBIC)
    return result


def clean_description(text: str) -> str:
    """A generated description as a referring expression: its first non-empty line, without surrounding quotes,
    spaces and a final period ("" when nothing is left)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0].strip().strip("\"'`").strip().rstrip(".").strip()


@dataclass
class DescriberArguments:
    """The region describer of describe_masks.py and label_masks.py."""

    describer: str | None = field(default=None, metadata={
        "help": "Local folder of a transformers image-text-to-text model (AutoModelForImageTextToText with a chat "
                "template; Describe Anything / DAM-3B in the paper) that describes each mask."})
    view: str = field(default="crop", metadata={
        "help": "What the describer sees: crop (the mask's box with context, outside pixels darkened) or highlight "
                "(the whole image, the mask outlined in red)."})
    context: float = field(default=0.25, metadata={"help": "crop: the box widened by this fraction on each side."})
    dim: float = field(default=0.5, metadata={"help": "Darkening of the pixels outside the mask (0 none, 1 black)."})
    prompt: str | None = field(default=None, metadata={"help": "The question (default: one per view)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest description in tokens."})
    describe_batch_size: int = field(default=8, metadata={"help": "Regions per generate() call."})

    def build(self, device: str) -> "RegionDescriber":
        return RegionDescriber(self.describer, device, self.view, self.context, self.dim, self.prompt,
                               self.max_new_tokens, self.describe_batch_size)


def describe_regions(describer: "RegionDescriber", image: PIL.Image.Image, masks: list[np.ndarray],
                     counts: Counter) -> list[str | None]:
    """Descriptions of `masks`, None for a region left without a usable one: an empty output, or a text given to two
    regions of the image (an ambiguous referring expression). Each such region is counted in `counts`."""
    texts = describer(image, masks)
    repeated = {text for text in texts if text and texts.count(text) > 1}
    kept = []
    for text in texts:
        if not text:
            counts["regions dropped: empty description"] += 1
            kept.append(None)
        elif text in repeated:
            counts["regions dropped: same description as another region"] += 1
            kept.append(None)
        else:
            kept.append(text)
    return kept


class RegionDescriber:
    """Referring expressions for image regions from a local transformers image-text-to-text model folder (its
    `AutoProcessor` with a chat template, and `AutoModelForImageTextToText`): each region is shown as
    `region_view(image, mask, view, context, dim)` with `prompt` (default: `DESCRIBE_PROMPTS[view]`), decoded greedily
    (the same text on every run, so a resumed labelling run equals an uninterrupted one) and cleaned by
    `clean_description`."""

    def __init__(self, path, device: str = "cpu", view: str = "crop", context: float = 0.25, dim: float = 0.5,
                 prompt: str | None = None, max_new_tokens: int = 32, batch_size: int = 8, dtype=None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not Path(path).is_dir():
            raise FileNotFoundError(f"describer: {path} is not a folder; give a local image-text-to-text model folder "
                                    "(the library never downloads).")
        if view not in REGION_VIEWS:
            raise ValueError(f"view: expected one of {list(REGION_VIEWS)}, got {view!r}.")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}.")
        self.processor = AutoProcessor.from_pretrained(path)
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"describer: {path}'s processor has no chat template, so no prompt can be built for it.")
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"  # batched generation continues every prompt at its end
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device, self.view, self.context, self.dim = device, view, context, dim
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.prompt = prompt or DESCRIBE_PROMPTS[view]
        message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        self.text = self.processor.apply_chat_template(message, add_generation_prompt=True)

    @torch.inference_mode()
    def __call__(self, image: PIL.Image.Image, masks: list[np.ndarray]) -> list[str]:
        """One description per mask of `image` ("" where the model gave nothing usable)."""
        views = [region_view(image, mask, self.view, self.context, self.dim) for mask in masks]
        descriptions = []
        for start in range(0, len(views), self.batch_size):
            chunk = views[start : start + self.batch_size]
            inputs = self.processor(text=[self.text] * len(chunk), images=chunk, padding=True,
                                    return_tensors="pt").to(self.device)
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = output[:, inputs["input_ids"].shape[1] :]
            descriptions += [clean_description(t) for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        return descriptions


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



def dataset_folder(path: str, task: str) -> Dataset:
    """The dataset in folder `path` for objective `task`: a labelling output (`run_sharded`'s shards) or a saved
    `datasets` folder, checked against the task's schema."""
    from .schemas import check_schema

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{task} data: {folder} does not exist (or is not a folder).")
    if any(folder.glob("shard-*/DONE")):
        dataset = load_labelled(folder)
    elif (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        try:
            dataset = load_from_disk(str(folder))
        except (IndexError, ValueError, OSError) as err:  # datasets fails this way on empty or damaged folders
            raise ValueError(f"{task} data: {folder} is not a readable saved dataset, or holds no rows "
                             f"({type(err).__name__}: {err}).") from err
    else:
        found = sorted(p.name for p in folder.iterdir())[:8]
        raise FileNotFoundError(f"{task} data: {folder} is neither a labelling output (shard-*/DONE) nor a saved "
                                f"dataset (dataset_info.json); it holds {found or 'nothing'}.")
    if len(dataset) == 0:
        raise ValueError(f"{task} data: {folder} holds no rows.")
    return check_schema(dataset, task)

__all__ = [
    "DESCRIBE_PROMPTS",
    "DescriberArguments",
    "IMAGE_SUFFIXES",
    "REGION_VIEWS",
    "RegionDescriber",
    "Skip",
    "clean_description",
    "dataset_folder",
    "describe_regions",
    "list_images",
    "load_labelled",
    "mask_box",
    "process_device",
    "process_rank",
    "region_view",
    "run_sharded",
    "stored_image",
]
