# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What a person sees of a run: a clean stop on Ctrl-C / SIGTERM, loss curves and a panel of predictions."""

import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import TrainerCallback

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
def probe_figure(path: Path, examples: list, rows: list[dict]) -> Path:
    """The paper's Figure 4 layout: per held-out example (`(image, segmentation labels, depth)`), the image, the
    ground-truth classes, each row's probe segmentation, the true depth and each row's probe depth; `rows` hold
    `name`, `segmentations` and `depths` (one prediction per example)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + 2 * (1 + len(rows))
    fig, axes = plt.subplots(len(examples), columns, figsize=(2.4 * columns, 2.2 * len(examples)), squeeze=False)
    for r, (image, labels, depth) in enumerate(examples):
        panels = [(np.asarray(image), "image", None), (labels, "ground truth", "tab10")]
        panels += [(row["segmentations"][r].numpy(), row["name"], "tab10") for row in rows]
        panels += [(depth, "depth (truth)", "magma_r")]
        panels += [(row["depths"][r].numpy(), row["name"], "magma_r") for row in rows]
        for c, (values, title, cmap) in enumerate(panels):
            axis = axes[r][c]
            axis.axis("off")
            if cmap == "magma_r":
                finite = np.isfinite(depth)  # the ground reaches the horizon: colour the nearer 90% of pixels
                low, high = np.percentile(depth[finite], [2, 90]) if finite.any() else (0, 1)
                axis.imshow(values, cmap=cmap, vmin=low, vmax=high)
            elif cmap:
                axis.imshow(values, cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
            else:
                axis.imshow(values)
            if r == 0:
                axis.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_panel(model, rows: Sequence[dict], path: Path, context) -> tuple[Path, list[dict]]:
    """A PNG of held-out samples, one row each: the image, then one column per objective of the model that draws its
    prediction (`Objective.draw`: predicted depth, the mask of the first expression, a generated caption). `rows`
    carry `image` and what the objectives read (segmentation dataset rows: `expressions`, `masks`, `text_embeds`);
    `context`: the run's `ObjectiveContext` (sizes, tokenizer, `caption_max_new_tokens`). Returns the path and what
    was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modeling_versavit import to_rgb

    from ..objectives import OBJECTIVES

    columns = [o for o in OBJECTIVES.values() if o.model_task in model.config.tasks and o.draws_predictions]
    was_training = model.training
    model.eval()
    figure, axes = plt.subplots(len(rows), 1 + len(columns), figsize=(3.2 * (1 + len(columns)), 2.8 * len(rows)),
                                squeeze=False)
    drawn = []
    for r, row in enumerate(rows):
        image = to_rgb(row["image"])
        for axis in axes[r]:
            axis.axis("off")
        axes[r][0].imshow(image)
        axes[r][0].set_title("held-out image", fontsize=9)
        record = {}
        for c, objective in enumerate(columns, 1):
            record.update(objective.draw(axes[r][c], model, image, row, context) or {})
        drawn.append(record)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    model.train(was_training)
    return path, drawn


__all__ = ["GracefulStop", "plot_loss_curves", "probe_figure", "render_panel"]
