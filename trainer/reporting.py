# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What a person sees of a run: a clean stop on Ctrl-C / SIGTERM, loss curves and a panel of predictions."""

import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from .data import CAPTION_PROMPT, SegmentationCollator, caption_image_processor, fixed_size_pixels

logger = logging.getLogger(__name__)


class GracefulStop(TrainerCallback):
    """Ctrl-C or SIGTERM during `train()`: finish the current optimizer step, save a checkpoint, stop.

    The stop is agreed across processes at every step end (a one-element all-reduce), so a signal that reaches one
    rank stops all of them at the same step. A second signal interrupts at once (the default behaviour)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None  # the signal received
        self.stopped_at: int | None = None  # the global step saved and stopped at
        self._previous = {}

    def _handler(self, signum, frame):
        self.requested = signum
        logger.warning("%s received: stopping after this step and saving a checkpoint (again to abort).",
                       signal.Signals(signum).name)
        for sig, previous in self._previous.items():  # a second signal takes the default path
            signal.signal(sig, previous)

    def on_train_begin(self, args, state, control, **kwargs):
        self.requested = self.stopped_at = None
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_end(self, args, state, control, **kwargs):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def on_step_end(self, args, state, control, **kwargs):
        flag = torch.tensor([0.0 if self.requested is None else float(self.requested)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = args.device if torch.distributed.get_backend() != "gloo" else torch.device("cpu")
            flag = flag.to(device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() > 0:
            self.requested = int(flag.item())
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


def plot_loss_curves(histories: dict[str, list[dict]], path: Path) -> Path:
    """One panel per stage: each task's (unweighted) loss against the optimizer step, from `Trainer` log
    histories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = {name: history for name, history in histories.items() if any("loss" in e for e in history)}
    if not stages:
        raise ValueError("plot_loss_curves: no logged training loss.")
    figure, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
    for axis, (stage, history) in zip(axes[0], stages.items()):
        keys = sorted({k for entry in history for k in entry if k.startswith("loss_") and not k.endswith("_weighted")})
        for key in keys:
            points = [(entry["step"], entry[key]) for entry in history if key in entry]
            axis.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key.removeprefix("loss_"))
        axis.set_title(f"{stage} stage")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("task loss (unweighted)")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


@torch.no_grad()
def render_panel(model, tokenizer, rows: Sequence[dict], path: Path, depth_size: int, segmentation_size: int,
                 caption_max_pixels: int, max_new_tokens: int = 40) -> tuple[Path, list[dict]]:
    """A PNG of held-out samples, one row each: image | predicted depth | predicted mask of the first expression |
    generated caption (the columns of the tasks the model has). `rows` carry `image` and, for segmentation,
    `expressions` / `masks` / `text_embeds` (segmentation dataset rows). Returns the path and what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modeling_versavit import VersaViTCaptioningProcessor, VersaViTImageProcessor, to_rgb

    tasks = list(model.config.tasks)
    columns = ["image"] + [t for t in ("depth", "segmentation", "captioning") if t in tasks]
    was_training = model.training
    model.eval()
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(3.2 * len(columns), 2.8 * len(rows)), squeeze=False)
    drawn = []
    processor = VersaViTImageProcessor()
    for r, row in enumerate(rows):
        image = to_rgb(row["image"])
        record = {}
        for c, column in enumerate(columns):
            axis = axes[r][c]
            axis.axis("off")
            if column == "image":
                axis.imshow(image)
                axis.set_title("held-out image", fontsize=9)
            elif column == "depth":
                pixels = fixed_size_pixels([image], depth_size, processor)
                depth = model(task="depth", pixel_values=pixels["pixel_values"],
                              image_grid_thw=pixels["image_grid_thw"]).predicted_depth[0]
                depth = torch.nn.functional.interpolate(depth[None, None], size=(image.height, image.width),
                                                        mode="bilinear")[0, 0]
                # Relative depth has no scale, and unlabelled regions (sky) are unconstrained: colour by rank
                flat = depth.flatten()
                ranks = torch.empty_like(flat)
                ranks[flat.argsort()] = torch.linspace(0, 1, flat.numel())
                axis.imshow(ranks.view_as(depth).numpy(), cmap="magma_r")
                axis.set_title("predicted depth (rank; near = bright)", fontsize=9)
            elif column == "segmentation":
                collator = SegmentationCollator(size=segmentation_size, flip_probability=0.0, max_expressions=1)
                sample = {**row, "expressions": row["expressions"][:1], "masks": row["masks"][:1],
                          "text_embeds": row["text_embeds"][:1]}
                batch = collator([sample])
                logits = model(task="segmentation", **{k: v for k, v in batch.items() if k != "labels"}).pred_masks[0]
                mask = torch.nn.functional.interpolate(logits[None, None], size=(image.height, image.width))[0, 0] > 0
                overlay = np.asarray(image).astype(np.float32) / 255
                overlay[mask.numpy()] = 0.45 * overlay[mask.numpy()] + 0.55 * np.array([0.1, 0.9, 0.2])
                axis.imshow(overlay)
                axis.set_title(_wrap(f'"{row["expressions"][0]}"', 36), fontsize=8)
                record["expression"] = row["expressions"][0]
            else:
                caption_processor = VersaViTCaptioningProcessor(caption_image_processor(caption_max_pixels), tokenizer)
                inputs = caption_processor([image], prompts=[CAPTION_PROMPT])
                tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, no_repeat_ngram_size=3)
                caption = tokenizer.decode(tokens[0], skip_special_tokens=True).strip()
                axis.text(0.0, 0.5, _wrap(caption, 34), fontsize=8, va="center", wrap=True)
                axis.set_title("generated caption", fontsize=9)
                record["caption"] = caption
        drawn.append(record)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    model.train(was_training)
    return path, drawn


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:8])


__all__ = ["GracefulStop", "plot_loss_curves", "render_panel"]
