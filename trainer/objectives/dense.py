# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The dense objectives of the paper: monocular depth (§4.2.2) and referring segmentation (§4.2.3)."""

from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation

from . import Objective, register_objective


class _DenseObjective(Objective):
    """A dense objective at the run's fixed size (`<name>_size`) or resolution set (`<name>_resolutions`)."""

    has_held_out = True

    def input_pixels(self, data_args):
        from ..data.sources import largest_pixels

        return largest_pixels(data_args, self.name)

    def input_description(self, data_args):
        from ..data.collators import parse_resolutions

        option = f"{self.name}_resolutions"
        resolutions = parse_resolutions(getattr(data_args, option), option)
        if resolutions:
            return " x " + " | ".join(f"{h}x{w}" for h, w in resolutions) + " px, one per batch"
        return f" x {getattr(data_args, f'{self.name}_size')}px"

    def collator(self, context):
        from ..data.sources import dense_collator

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

        from ..data.collators import fixed_size_pixels

        pixels = fixed_size_pixels([image], context.data_args.depth_size, context.image_processor)
        depth = model(task="depth", **pixels).predicted_depth[0]
        depth = torch.nn.functional.interpolate(depth[None, None], size=(image.height, image.width), mode="bilinear")[0, 0]
        # Relative depth has no scale, and unlabelled regions (sky) are unconstrained: colour by rank
        flat = depth.flatten()
        ranks = torch.empty_like(flat)
        ranks[flat.argsort()] = torch.linspace(0, 1, flat.numel())
        axis.imshow(ranks.view_as(depth).numpy(), cmap="magma_r")
        axis.set_title("predicted depth (rank; near = bright)", fontsize=9)
        return {}

    def evaluate(self, model, dataset, context):
        from ..data.sources import eval_batches
        from ..evaluation.metrics import evaluate_depth

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
        import numpy as np
        import torch

        from ..core.reporting import wrap_text
        from ..data.collators import SegmentationCollator

        collator = SegmentationCollator(size=context.data_args.segmentation_size, flip_probability=0.0,
                                        max_expressions=1, image_processor=context.image_processor)
        sample = {**row, "expressions": row["expressions"][:1], "masks": row["masks"][:1],
                  "text_embeds": row["text_embeds"][:1]}
        batch = collator([sample])
        logits = model(task="segmentation", **{k: v for k, v in batch.items() if k != "labels"}).pred_masks[0]
        mask = torch.nn.functional.interpolate(logits[None, None], size=(image.height, image.width))[0, 0] > 0
        overlay = np.asarray(image).astype(np.float32) / 255
        overlay[mask.numpy()] = 0.45 * overlay[mask.numpy()] + 0.55 * np.array([0.1, 0.9, 0.2])
        axis.imshow(overlay)
        axis.set_title(wrap_text(f'"{row["expressions"][0]}"', 36), fontsize=8)
        return {"expression": row["expressions"][0]}

    def _collator_options(self, context):
        return {"text_embed_dim": context.text_embed_dim}

    def from_scenes(self, tables):
        dataset = super().from_scenes(tables)
        if len(dataset) == 0:
            raise ValueError("segmentation data: no image with a referring expression.")
        return dataset

    def evaluate(self, model, dataset, context):
        from ..data.sources import eval_batches
        from ..evaluation.metrics import evaluate_segmentation

        return evaluate_segmentation(model, eval_batches(context.data_args, "segmentation", dataset,
                                                         online_text=context.online_text,
                                                         image_processor=context.image_processor))
