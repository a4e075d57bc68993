"""A training objective written outside the package, as a user would: an L2 head on the tower's mean-pooled tokens
that predicts each image's mean colour. A run loads it with `--imports tests/toy_objective.py`."""

from dataclasses import dataclass

import numpy
import PIL.Image
import torch
from transformers.utils import ModelOutput

from modeling_versavit import fixed_size_pixels
from versavit_trainer.objectives import Objective, register_objective
from versavit_trainer.parts import unwrap_versavit


@dataclass
class PooledOutput(ModelOutput):
    loss: torch.Tensor | None = None
    loss_terms: dict | None = None


class MeanColourCollator:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, samples: list[dict]) -> dict:
        images = [
            sample["image"].convert("RGB").resize((self.size, self.size), PIL.Image.BICUBIC) for sample in samples
        ]
        batch = fixed_size_pixels(images, self.size)
        colours = [torch.from_numpy(numpy.asarray(image, dtype=numpy.float32)).mean((0, 1)) / 255 for image in images]
        return {**batch, "labels": torch.stack(colours)}


@register_objective
class PooledL2(Objective):
    name = "pooled_l2"
    default_batch_size = 2

    def modules(self, model):
        return {"pooled_head": torch.nn.Linear(model.config.embed_dim, 3)}

    def from_scenes(self, tables):
        return tables["depth"]  # the scenes' images; the labels come from the pixels

    def collator(self, context):
        return MeanColourCollator(context.data_args.depth_size)

    def forward(self, model, modules, batch):
        grid = batch["image_grid_thw"]
        # the tower's tokens, whatever its family (Qwen's packed patches or SigLIP's padded batch)
        tokens = unwrap_versavit(model).get_last_hidden_state(batch["pixel_values"], grid)
        pooled = torch.stack([t.mean(0) for t in tokens.split(grid.prod(-1).tolist())])
        loss = ((modules["pooled_head"](pooled) - batch["labels"]) ** 2).mean()
        return PooledOutput(loss=loss, loss_terms={"mse": loss.detach()})
