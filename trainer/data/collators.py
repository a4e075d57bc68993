# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The task datasets' training collators: rows -> the model's batch.

Depth and segmentation images are resized to one fixed size divisible by 28 (532 and 560 in the paper), labels
with them: depth without interpolating across unlabelled pixels, masks with nearest neighbours; a horizontal flip
is applied to image and label together. Captioning keeps Qwen2-VL's dynamic resolution. With `resolutions` the dense
tasks get dynamic resolution too (the paper's future work, §12): each batch is resized to one `(height, width)` drawn
from the set, a function of (seed, the batch's global number) alone, so every rank of a step and a resumed run draw
the same size.

Every collator has `validate(sample)`: the checks that make a sample unusable (a `ValueError` naming what is wrong),
run by the trainer when the sample is loaded, so a bad sample is skipped and counted there like an unreadable one.
Masks must be binary: one channel holding 0 and at most one other value (0/1, 0/255, mode "1"); soft masks,
instance ids and colour masks are refused rather than thresholded. Text embeddings and depth scales must be finite.
"""

import random
import re

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from modeling_versavit import VersaViTCaptioningProcessor, VersaViTImageProcessor, fixed_size_pixels, to_rgb

from .processors import check_size, parse_resolutions, size_multiple
from .scenes import CAPTION_PROMPT
from .schemas import decode_depth


def resize_depth(depth: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an `(H, W)` map to `size` (a side, or `(height, width)`) that never mixes labelled and
    unlabelled pixels (NaN = unlabelled): values and validity are resampled separately and an output pixel is
    labelled only when all its sources are."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    valid = torch.isfinite(depth)
    filled = torch.where(valid, depth, torch.zeros_like(depth))
    stacked = torch.stack([filled * valid, valid.to(depth.dtype)])[None]
    values, weights = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)[0]
    labelled = weights > 1 - 1e-4
    return torch.where(labelled, values / weights.clamp(min=1e-6), torch.full_like(values, float("nan")))


class _SeededCollator:
    """A collator with a reproducible random stream (flips, subsets of expressions or turns).

    In training, the trainer calls `at_position(p)` before each batch with the stream position of its first sample:
    the batch's random decisions are then a pure function of (seed, p), whatever the number of DataLoader workers,
    and a resumed run (which skips the trained batches without collating them) draws what an uninterrupted run
    draws. Used alone, each process (and each DataLoader worker) has its own stream, reproducible when `seed` is
    set."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self._worker = -1  # built in the main process; a DataLoader worker receives a copy
        self._random = random.Random(seed)
        self._positioned = False
        self._position = 0

    def at_position(self, position: int) -> None:
        """Seed the next batch's random decisions from (seed, `position`) alone."""
        self._random = random.Random(f"versavit/{self.seed}/{position}")
        self._positioned = True
        self._position = position

    @property
    def random(self) -> random.Random:
        if self._positioned:
            return self._random
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        if worker != self._worker:
            self._worker = worker
            self._random = random.Random(None if self.seed is None else self.seed * 1_000_003 + worker + 1)
        return self._random

    def validate(self, sample: dict) -> None:
        """Raise a `ValueError` naming the problem when `sample` cannot be collated (subclasses add their checks)."""


class _FixedSizeCollator(_SeededCollator):
    """A dense-task collator: every image of a batch at one size, `size` x `size`, or with `resolutions` one
    `(height, width)` of the set per batch.

    In training the batch's size is drawn from (seed, `position // positions_per_batch`), where the position is the
    one `at_position` received and `positions_per_batch` is the global batch (per-device batch x ranks): every rank
    of a step and every sample of a batch (also one collated alone after a failure) draw the same size, and a
    resumed run draws what an uninterrupted one drew. Used alone (no position), each batch draws from the
    collator's own stream."""

    def __init__(self, image_processor: VersaViTImageProcessor | None, size: int, flip_probability: float,
                 seed: int | None, resolutions=None, positions_per_batch: int = 1):
        image_processor = image_processor or VersaViTImageProcessor()
        multiple = size_multiple(image_processor)
        check_size(size, "size", multiple)
        if not 0 <= flip_probability <= 1:
            raise ValueError(f"flip_probability: must be in [0, 1], got {flip_probability}.")
        if positions_per_batch < 1:
            raise ValueError(f"positions_per_batch: must be >= 1, got {positions_per_batch}.")
        super().__init__(seed)
        self.image_processor = image_processor
        self.size = size
        self.flip_probability = flip_probability
        self.resolutions = parse_resolutions(resolutions, "resolutions", multiple)
        self.positions_per_batch = positions_per_batch

    def batch_resolution(self) -> tuple[int, int]:
        """`(height, width)` of the next batch (see the class docstring)."""
        if not self.resolutions:
            return self.size, self.size
        if self._positioned:
            batch_number = self._position // self.positions_per_batch
            draw = random.Random(f"versavit/{self.seed}/resolution/{batch_number}")
        else:
            draw = self.random
        return self.resolutions[draw.randrange(len(self.resolutions))]

    def _flip(self) -> bool:
        return self.flip_probability > 0 and self.random.random() < self.flip_probability


class DepthCollator(_FixedSizeCollator):
    """Depth samples (the depth schema) -> `pixel_values`, `image_grid_thw`, `labels` `(B, size, size)` (or the
    batch's drawn `(B, height, width)`) with NaN where unlabelled. Default size 532 (paper: the multiple of 28 nearest
    Depth Anything's 518)."""

    def __init__(self, image_processor=None, size: int = 532, flip_probability: float = 0.5, seed: int | None = None,
                 resolutions=None, positions_per_batch: int = 1):
        super().__init__(image_processor, size, flip_probability, seed, resolutions, positions_per_batch)

    def validate(self, sample: dict) -> None:
        self._depth(sample)

    @staticmethod
    def _depth(sample: dict) -> torch.Tensor:
        depth = torch.from_numpy(decode_depth(sample["depth"], sample["depth_scale"]))
        if depth.shape != (sample["image"].height, sample["image"].width):
            raise ValueError(
                f"depth: map of shape {tuple(depth.shape)} does not match its image "
                f"({sample['image'].height}x{sample['image'].width})."
            )
        return depth

    def __call__(self, samples: list[dict]) -> dict:
        flips, labels = [], []
        size = self.batch_resolution()
        for sample in samples:
            depth = self._depth(sample)
            flips.append(self._flip())
            label = resize_depth(depth, size)
            labels.append(label.flip(-1) if flips[-1] else label)
        pixels = fixed_size_pixels([s["image"] for s in samples], size, self.image_processor, flips)
        return {**pixels, "labels": torch.stack(labels)}


class SegmentationCollator(_FixedSizeCollator):
    """Segmentation samples -> `pixel_values`, `image_grid_thw`, `text_embeds` `(P, D)`, `expression_image_index`
    `(P,)` and `labels` `(P, size, size)` (or the batch's drawn `(P, height, width)`). At most `max_expressions` per
    image (a random subset). Default size 560. `keep_original_masks=True` adds `original_masks`, each expression's mask
    at its image's own size (a list of `(H, W)` bool tensors), which evaluation scores against.

    `online_text=True` gives the chosen `expressions` (P strings) instead of `text_embeds`, for a text encoder
    trained in the loop (`versavit_trainer.objectives.online_text`); samples then need no `text_embeds` column.

    The flip never contradicts an expression: with online text, "left" and "right" (also "leftmost", "left-hand",
    ...) are swapped in the expressions of a flipped image; with precomputed embeddings, which cannot be mirrored, an
    image whose chosen expressions mention a side is not flipped (its random draw is still made, so the stream is
    the same)."""

    def __init__(
        self, image_processor=None, size: int = 560, flip_probability: float = 0.5, max_expressions: int = 8,
        seed: int | None = None, online_text: bool = False, text_embed_dim: int | None = None,
        keep_original_masks: bool = False, resolutions=None, positions_per_batch: int = 1,
    ):
        super().__init__(image_processor, size, flip_probability, seed, resolutions, positions_per_batch)
        if max_expressions < 1:
            raise ValueError(f"max_expressions: must be >= 1, got {max_expressions}.")
        self.max_expressions = max_expressions
        self.online_text = online_text
        self.text_embed_dim = text_embed_dim
        self.keep_original_masks = keep_original_masks

    def validate(self, sample: dict) -> None:
        self._check_texts(sample)
        for k, mask in enumerate(sample["masks"]):
            binary_mask(mask, sample["image"].size, f"masks[{k}]")

    def _check_texts(self, sample: dict) -> None:
        """Counts, expressions and text embeddings (the masks are read by `binary_mask`)."""
        expressions, masks = sample["expressions"], sample["masks"]
        text = expressions if self.online_text else sample["text_embeds"]
        if not (len(expressions) == len(masks) == len(text)) or not expressions:
            raise ValueError(
                f"segmentation sample: needs one mask and one text embedding per expression and at least one "
                f"expression, got {len(expressions)} expressions, {len(masks)} masks, {len(text)} embeddings."
            )
        for k, expression in enumerate(expressions):
            if not isinstance(expression, str) or not expression.strip():
                raise ValueError(f"segmentation sample: expression {k} is empty.")
        if not self.online_text:
            widths = {len(embedding) for embedding in text}
            expected = {self.text_embed_dim} if self.text_embed_dim else widths
            if len(widths) != 1 or widths != expected:
                raise ValueError(f"text_embeds: widths {sorted(widths)}, expected {sorted(expected)} for every "
                                 "expression (the segmentation head's text_embed_dim).")
            values = np.asarray(text, dtype=np.float64)
            if not np.isfinite(values).all():
                bad = sorted({int(k) for k in np.nonzero(~np.isfinite(values))[0]})
                raise ValueError(f"text_embeds: NaN or inf values in the embeddings of expressions {bad}.")

    def __call__(self, samples: list[dict]) -> dict:
        flips, embeds, index, labels, chosen_texts, originals = [], [], [], [], [], []
        height, width = size = self.batch_resolution()
        for position, sample in enumerate(samples):
            self._check_texts(sample)  # the chosen masks are checked as they are read below
            expressions, masks = sample["expressions"], sample["masks"]
            chosen = sorted(self.random.sample(range(len(expressions)), min(len(expressions), self.max_expressions)))
            flip = self._flip()
            if flip and not self.online_text and any(mentions_direction(expressions[k]) for k in chosen):
                flip = False  # a precomputed embedding of "on the left" cannot be mirrored with the image
            flips.append(flip)
            for k in chosen:
                mask = binary_mask(masks[k], sample["image"].size, f"masks[{k}]")
                if self.keep_original_masks:
                    original = torch.from_numpy(mask)
                    originals.append(original.flip(-1) if flip else original)
                mask = PIL.Image.fromarray(mask).resize((width, height), PIL.Image.NEAREST)
                mask = torch.from_numpy(np.array(mask))
                labels.append(mask.flip(-1) if flip else mask)
                if self.online_text:
                    chosen_texts.append(mirror_directions(expressions[k]) if flip else expressions[k])
                else:
                    embeds.append(torch.tensor(sample["text_embeds"][k], dtype=torch.float32))
                index.append(position)
        text_inputs = {"expressions": chosen_texts} if self.online_text else {"text_embeds": torch.stack(embeds)}
        extra = {"original_masks": originals} if self.keep_original_masks else {}
        return {
            **fixed_size_pixels([s["image"] for s in samples], size, self.image_processor, flips),
            **text_inputs,
            "expression_image_index": torch.tensor(index),
            "labels": torch.stack(labels).float(),
            **extra,
        }


_DIRECTION = re.compile(r"\b(left|right)(?=(most)?\b)", re.IGNORECASE)


def mentions_direction(text: str) -> bool:
    """Whether a referring expression depends on left / right, which a horizontal flip mirrors."""
    return _DIRECTION.search(text) is not None


def mirror_directions(text: str) -> str:
    """The expression of the mirrored image: "left" and "right" swapped (also in "leftmost", "left-hand"), keeping
    their case."""

    def swap(match: re.Match) -> str:
        word = match.group(1)
        other = "right" if word.lower() == "left" else "left"
        return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other

    return _DIRECTION.sub(swap, text)


_SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")


def binary_mask(mask: PIL.Image.Image, image_size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """The boolean array of a binary mask image: one channel of the image's size (width, height) holding 0 and at
    most one other value (0/1, 0/255, mode "1"). Anything else is a `ValueError` naming `name`: soft masks (many
    levels), instance ids (several objects) and colour masks are refused, not thresholded."""
    if mask.size != image_size:
        raise ValueError(f"{name}: size {mask.size[0]}x{mask.size[1]} does not match its image "
                         f"{image_size[0]}x{image_size[1]}.")
    if mask.mode not in _SINGLE_CHANNEL_MODES:
        raise ValueError(f"{name}: mode {mask.mode!r} is not a binary mask (one channel of 0 and one other value).")
    values = np.asarray(mask)
    levels = np.unique(values)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        shown = ", ".join(str(v) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
        raise ValueError(f"{name}: not a binary mask: values {{{shown}}} ({len(levels)} levels); expected 0 and one "
                         "other value (soft masks and instance ids are refused, not thresholded).")
    return values > 0


class CaptioningCollator(_SeededCollator):
    """Captioning samples -> `VersaViTForCaptioning` inputs, at Qwen2-VL's dynamic resolution (build the processor's
    image processor with `caption_image_processor()`: at most 896x896 as in the paper). A sample's `texts` turns form
    one conversation with every answer labelled; a `caption` is the answer to "Describe the image.".

    `max_turns` keeps a random subset of at most that many turns of a longer conversation (in their order): shorter
    sequences for small runs; None keeps every turn. `max_length` caps a sequence's tokens (the processor truncates
    the answers, never the image tokens, and the batch's `num_truncated` counts the samples cut)."""

    def __init__(self, processor: VersaViTCaptioningProcessor, max_turns: int | None = None, seed: int | None = None,
                 max_length: int | None = None):
        if max_turns is not None and (isinstance(max_turns, bool) or max_turns < 1):
            raise ValueError(f"max_turns: must be >= 1 or None, got {max_turns!r}.")
        super().__init__(seed)
        self.processor = processor
        self.max_turns = max_turns
        self.max_length = max_length

    @staticmethod
    def _turns(sample: dict) -> list[dict]:
        if sample.get("texts"):
            turns = [{"user": t.get("user"), "assistant": t.get("assistant")} for t in sample["texts"]]
        elif sample.get("caption"):
            turns = [{"user": CAPTION_PROMPT, "assistant": sample["caption"]}]
        else:
            raise ValueError("captioning sample: has neither conversation turns ('texts') nor a 'caption'.")
        for k, turn in enumerate(turns):
            for role in ("user", "assistant"):
                if not isinstance(turn[role], str) or not turn[role].strip():
                    raise ValueError(f"captioning sample: turn {k} has no {role} text (training needs every answer).")
        return turns

    def validate(self, sample: dict) -> None:
        self._turns(sample)

    def __call__(self, samples: list[dict]) -> dict:
        conversations = []
        for sample in samples:
            turns = self._turns(sample)
            if self.max_turns is not None and len(turns) > self.max_turns:
                keep = sorted(self.random.sample(range(len(turns)), self.max_turns))
                turns = [turns[k] for k in keep]
            conversations.append(turns)
        images = [to_rgb(s["image"]) for s in samples]
        return dict(self.processor(images, conversations=conversations, max_length=self.max_length,
                                   return_num_truncated=self.max_length is not None))


__all__ = [
    "CaptioningCollator",
    "DepthCollator",
    "SegmentationCollator",
    "binary_mask",
    "mentions_direction",
    "mirror_directions",
    "resize_depth",
]
