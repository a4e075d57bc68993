# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The dense objectives of the paper: monocular depth (§4.2.2) and referring segmentation (§4.2.3)."""

from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation

from ..data.collators import DepthCollator, SegmentationCollator
from ..data.processors import parse_resolutions
from .base import Objective, register_objective, wrap_text


# ----------------------------------------------------------------------------------- the dense tasks' batches
# `data_args`: the run's `DataArguments` (sizes, resolution sets, `max_expressions`).
def largest_pixels(data_args, task: str) -> int:
    """Pixels of the largest input a dense task's batches get: its fixed size squared, or the largest of its set."""
    resolutions = parse_resolutions(getattr(data_args, f"{task}_resolutions"), f"{task}_resolutions")
    return max(h * w for h, w in resolutions) if resolutions else getattr(data_args, f"{task}_size") ** 2


def dense_collator(data_args, task: str, seed: int | None, **options):
    """The training collator of a dense task ("depth" or "segmentation") with the run's size, resolution set and
    `max_expressions`; `options` go to the collator (`online_text`, `text_embed_dim`, ...). The trainer sets its
    `positions_per_batch` (the global batch) when it builds the schedule."""
    if task == "depth":
        return DepthCollator(size=data_args.depth_size, seed=seed, resolutions=data_args.depth_resolutions, **options)
    return SegmentationCollator(size=data_args.segmentation_size, max_expressions=data_args.max_expressions, seed=seed,
                                resolutions=data_args.segmentation_resolutions, **options)


def eval_batches(data_args, task: str, dataset, batch_size: int = 4, online_text: bool = False,
                 image_processor=None):
    """Deterministic held-out batches at the fixed `depth_size` / `segmentation_size` (no flip, no dynamic resolution,
    every expression, the masks at their images' own size for scoring; `online_text`: expressions instead of
    embeddings; `image_processor`: the tower's, default Qwen2-VL's)."""
    if task == "depth":
        collator = DepthCollator(image_processor, size=data_args.depth_size, flip_probability=0.0)
    else:
        collator = SegmentationCollator(size=data_args.segmentation_size, flip_probability=0.0, max_expressions=10**6,
                                        online_text=online_text, keep_original_masks=True,
                                        image_processor=image_processor)
    for start in range(0, len(dataset), batch_size):
        yield collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


# ------------------------------------------------------------------------------------------- objectives


class _DenseObjective(Objective):
    """A dense objective at the run's fixed size (`<name>_size`) or resolution set (`<name>_resolutions`)."""

    has_held_out = True

    def input_pixels(self, data_args):
        return largest_pixels(data_args, self.name)

    def input_description(self, data_args):
        option = f"{self.name}_resolutions"
        resolutions = parse_resolutions(getattr(data_args, option), option)
        if resolutions:
            return " x " + " | ".join(f"{h}x{w}" for h, w in resolutions) + " px, one per batch"
        return f" x {getattr(data_args, f'{self.name}_size')}px"

    def collator(self, context):
        return dense_collator(context.data_args, self.name, context.seed, image_processor=context.image_processor,
                              **self._collator_options(context))

    def _collator_options(self, context) -> dict:
        return {}


@register_objective
class DepthObjective(_DenseObjective):
    """Monocular relative depth (paper §4.2.2): DPT head, scale-and-shift-invariant + gradient-matching loss."""

    name = "depth"
    parts = ("depth_head",)
    model_task = "depth"
    task_class = VersaViTForDepthEstimation
    checkpoint_prefixes = ("depth_head.",)

    def layers_read(self, model):
        return model.depth_layers_read()

    draws_predictions = True

    def draw(self, axis, model, image, row, context):
        import torch

        from modeling_versavit import fixed_size_pixels

        pixels = fixed_size_pixels([image], context.data_args.depth_size, context.image_processor)
        depth = model(task="depth", **pixels).predicted_depth[0]
        depth = torch.nn.functional.interpolate(depth[None, None], size=(image.height, image.width), mode="bilinear")[
            0, 0
        ]
        # Relative depth has no scale, and unlabelled regions (sky) are unconstrained: colour by rank
        flat = depth.flatten()
        ranks = torch.empty_like(flat)
        ranks[flat.argsort()] = torch.linspace(0, 1, flat.numel())
        axis.imshow(ranks.view_as(depth).numpy(), cmap="magma_r")
        axis.set_title("predicted depth (rank; near = bright)", fontsize=9)
        return {}

    def evaluate(self, model, dataset, context):
        from ..metrics import evaluate_depth

        return evaluate_depth(model, eval_batches(context.data_args, "depth", dataset,
                                                  image_processor=context.image_processor))


@register_objective
class SegmentationObjective(_DenseObjective):
    """Referring segmentation (paper §4.2.3): SAM-style decoder prompted by text embeddings. Reaches the text
    encoder too when it trains online (`OnlineTextSegmentation`)."""

    name = "segmentation"
    parts = ("segmentation_head", "text_encoder")
    model_task = "segmentation"
    task_class = VersaViTForReferringSegmentation
    checkpoint_prefixes = ("segmentation_head.",)
    needs_text_embeddings = True

    def layers_read(self, model):
        return model.segmentation_layers_read()

    draws_predictions = True

    def draw(self, axis, model, image, row, context):
        import hashlib

        import numpy as np

        from modeling_versavit.pipelines_versavit import masks_at_size

        collator = SegmentationCollator(size=context.data_args.segmentation_size, flip_probability=0.0,
                                        max_expressions=1, image_processor=context.image_processor)
        sample = {**row, "expressions": row["expressions"][:1], "masks": row["masks"][:1],
                  "text_embeds": row["text_embeds"][:1]}
        batch = collator([sample])
        logits = model(task="segmentation", **{k: v for k, v in batch.items() if k != "labels"}).pred_masks
        mask = masks_at_size(logits, image.height, image.width)[0]  # as the referring-segmentation pipeline does
        overlay = np.asarray(image).astype(np.float32) / 255
        overlay[mask.numpy()] = 0.45 * overlay[mask.numpy()] + 0.55 * np.array([0.1, 0.9, 0.2])
        axis.imshow(overlay)
        axis.set_title(wrap_text(f'"{row["expressions"][0]}"', 36), fontsize=8)
        # what was drawn, to compare with the referring-segmentation pipeline: the mask's size, area and digest
        # (sha256 of its rows of bits, numpy.packbits of the boolean (H, W) array)
        bits = np.packbits(mask.numpy()).tobytes()
        return {"expression": row["expressions"][0], "mask_size": [image.height, image.width],
                "mask_pixels": int(mask.sum()), "mask_sha256": hashlib.sha256(bits).hexdigest()}

    def _collator_options(self, context):
        return {"text_embed_dim": context.text_embed_dim}

    def from_scenes(self, tables):
        dataset = super().from_scenes(tables)
        if len(dataset) == 0:
            raise ValueError("segmentation data: no image with a referring expression.")
        return dataset

    def evaluate(self, model, dataset, context):
        from ..metrics import evaluate_segmentation

        return evaluate_segmentation(model, eval_batches(context.data_args, "segmentation", dataset,
                                                         online_text=context.online_text,
                                                         image_processor=context.image_processor))
