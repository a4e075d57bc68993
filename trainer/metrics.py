# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Held-out quality of the dense heads: relative depth (affine-invariant AbsRel, δ1) and referring masks (IoU).

Definitions:
- Relative depth: the prediction is aligned to the ground truth by the least-squares scale and shift over the
  labelled pixels (finite, > 0), as zero-shot relative-depth evaluation does (MiDaS, Depth Anything); then
  AbsRel = mean |d̂ - d| / d and δ1 = the fraction of pixels with max(d̂ / d, d / d̂) < 1.25 (aligned values are
  clamped to ≥ 1e-6 of the largest target first). Both are averaged per image, then over images.
- Referring masks: IoU of each predicted mask (logit > 0) with its ground truth; `miou` is their mean (an
  empty prediction of an empty mask counts 1), `ciou` the cumulative intersection over the cumulative union.
"""

import inspect
from collections.abc import Iterable

import torch

DELTA1_THRESHOLD = 1.25


def affine_align(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`s * prediction + t` with `(s, t)` minimising the squared error to `target` over `valid` pixels."""
    p, d = prediction[valid].double(), target[valid].double()
    design = torch.stack([p, torch.ones_like(p)], dim=1)
    scale, shift = torch.linalg.lstsq(design, d[:, None]).solution[:, 0]
    return (prediction.double() * scale + shift).to(prediction.dtype)


def relative_depth_metrics(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float] | None:
    """Affine-invariant AbsRel and δ1 of one `(H, W)` prediction; None when fewer than 2 pixels are labelled."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} does not match target {tuple(target.shape)}.")
    valid = torch.isfinite(target) & (target > 0) & torch.isfinite(prediction)
    if int(valid.sum()) < 2:
        return None
    aligned = affine_align(prediction, target, valid)[valid].double()
    truth = target[valid].double()
    aligned = aligned.clamp(min=1e-6 * float(truth.max()))
    ratio = torch.maximum(aligned / truth, truth / aligned)
    return {
        "abs_rel": float(((aligned - truth).abs() / truth).mean()),
        "delta1": float((ratio < DELTA1_THRESHOLD).double().mean()),
    }


def mask_ious(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-mask `(iou, intersection, union)` of boolean `(P, H, W)` masks; an empty-vs-empty pair has IoU 1."""
    if predicted.shape != target.shape:
        raise ValueError(f"predicted masks {tuple(predicted.shape)} do not match targets {tuple(target.shape)}.")
    predicted, target = predicted.bool().flatten(1), target.bool().flatten(1)
    intersection = (predicted & target).sum(1).double()
    union = (predicted | target).sum(1).double()
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    return iou, intersection, union


@torch.no_grad()
def evaluate_depth(model, batches: Iterable[dict]) -> dict[str, float]:
    """Mean relative-depth metrics of `model(task="depth")` (or a depth model) over collated depth batches."""
    scores = []
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k in ("pixel_values", "image_grid_thw")}
        output = model(task="depth", **inputs) if _is_multitask(model) else model(**inputs)
        for prediction, target in zip(output.predicted_depth.float(), batch["labels"].float()):
            score = relative_depth_metrics(prediction, target)
            if score is not None:
                scores.append(score)
    if not scores:
        raise ValueError("evaluate_depth: no image with at least two labelled pixels.")
    return {key: sum(s[key] for s in scores) / len(scores) for key in ("abs_rel", "delta1")} | {"images": len(scores)}


@torch.no_grad()
def evaluate_segmentation(model, batches: Iterable[dict]) -> dict[str, float]:
    """mIoU and cIoU of `model(task="segmentation")` (or a segmentation model) over collated segmentation batches."""
    ious, intersection, union = [], 0.0, 0.0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        output = model(task="segmentation", **inputs) if _is_multitask(model) else model(**inputs)
        iou, inter, uni = mask_ious(output.pred_masks > 0, batch["labels"] > 0.5)
        ious.append(iou)
        intersection += float(inter.sum())
        union += float(uni.sum())
    if not ious:
        raise ValueError("evaluate_segmentation: no expression to evaluate.")
    all_ious = torch.cat(ious)
    return {"miou": float(all_ious.mean()), "ciou": intersection / union if union else 1.0, "expressions": len(all_ious)}


def _is_multitask(model) -> bool:
    """Whether `model.forward` takes `task=` (a multi-task model or a wrapper of one) rather than a task model's
    arguments only."""
    return "task" in inspect.signature(model.forward).parameters


__all__ = ["affine_align", "evaluate_depth", "evaluate_segmentation", "mask_ious", "relative_depth_metrics"]
