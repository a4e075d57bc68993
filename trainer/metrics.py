# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Evaluation metrics: relative depth (affine-invariant AbsRel, δ1), referring masks (mIoU, cIoU), semantic
segmentation (dataset-level mIoU) and metric depth (AbsRel, RMSE, log10, RMSE-log, δ1-3, with the Eigen / Garg crops).

Definitions:
- Relative depth: the prediction is aligned to the ground truth by the least-squares scale and shift over the
  labelled pixels (finite, > 0), as zero-shot relative-depth evaluation does (MiDaS, Depth Anything); then
  AbsRel = mean |d̂ - d| / d and δ1 = the fraction of pixels with max(d̂ / d, d / d̂) < 1.25 (aligned values are
  clamped to ≥ 1e-6 of the largest target first). Both are averaged per image, then over images.
- Referring masks: IoU of each predicted mask (logit > 0) with its ground truth, at the image's original resolution
  (logits resized bilinearly to it) when the ground truth comes at that size; `miou` is their mean (an empty
  prediction of an empty mask counts 1), `ciou` the cumulative intersection over the cumulative union.
- Semantic segmentation (`mean_iou`): intersections and unions summed per class over the dataset, IoU per class,
  nanmean over classes present in labels or predictions; `ignore_index` pixels excluded, `reduce_zero_label` as
  mmsegmentation / `evaluate`'s mean_iou.
- Metric depth (`depth_metrics`): per image over valid pixels (finite, in (min_depth, max_depth], in the crop), then
  averaged over images by the caller.
- Image-text retrieval (`retrieval_recall`): Recall@K in both directions, ties counted against the positive.
- Answers (`evaluate_answers`): teacher-forced cross-entropy per answer token and argmax token accuracy, over every
  answer token of the held-out conversations.
"""

import inspect
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from modeling_versavit.pipelines_versavit import masks_at_size

DELTA1_THRESHOLD = 1.25


def affine_align(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`s * prediction + t` with `(s, t)` minimising the squared error to `target` over `valid` pixels."""
    p, d = prediction[valid].double(), target[valid].double()
    design = torch.stack([p, torch.ones_like(p)], dim=1)
    scale, shift = torch.linalg.lstsq(design, d[:, None]).solution[:, 0]
    return (prediction.double() * scale + shift).to(prediction.dtype)


def relative_depth_metrics(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                           space: str = "depth") -> dict[str, float] | None:
    """Affine-invariant AbsRel and δ1 of one `(H, W)` prediction over labelled pixels (in `mask` if given); None
    when fewer than 2 pixels are labelled. `space="disparity"`: the prediction is a disparity, aligned to 1 / target
    (Depth Anything's protocol) and inverted before the errors are taken in depth."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} does not match target {tuple(target.shape)}.")
    if space not in ("depth", "disparity"):
        raise ValueError(f"space: expected 'depth' or 'disparity', got {space!r}.")
    valid = torch.isfinite(target) & (target > 0) & torch.isfinite(prediction)
    if mask is not None:
        valid &= mask.bool()
    if int(valid.sum()) < 2:
        return None
    truth = target[valid].double()
    if space == "disparity":
        disparity = affine_align(prediction, 1.0 / target.clamp(min=1e-12), valid)[valid].double()
        aligned = 1.0 / disparity.clamp(min=1e-6 / float(truth.max()))
    else:
        aligned = affine_align(prediction, target, valid)[valid].double()
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
def evaluate_depth(model, batches: Iterable[dict], space: str | None = None) -> dict[str, float]:
    """Mean relative-depth metrics of `model(task="depth")` (or a depth model) over collated depth batches of
    depth labels, the predictions aligned in `space` (default: the model's `config.depth_label_space`, the space it
    was trained in)."""
    if space is None:
        space = getattr(getattr(model, "config", None), "depth_label_space", "depth")
    scores = []
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k in ("pixel_values", "image_grid_thw")}
        output = model(task="depth", **inputs) if _is_multitask(model) else model(**inputs)
        for prediction, target in zip(output.predicted_depth.float(), batch["labels"].float()):
            scores.append(relative_depth_metrics(prediction, target, space=space))
    return average_scores(scores, "evaluate_depth")


def average_scores(scores: Iterable[dict[str, float] | None], what: str) -> dict[str, float]:
    """The mean of each metric over per-image scores, the images without a score (None: nothing labelled) left out,
    and `images`, how many were scored. None scored is a `ValueError` naming `what`."""
    kept = [score for score in scores if score is not None]
    if not kept:
        raise ValueError(f"{what}: no image with labelled pixels to score.")
    return {key: float(sum(score[key] for score in kept) / len(kept)) for key in kept[0]} | {"images": len(kept)}


@torch.no_grad()
def evaluate_segmentation(model, batches: Iterable[dict]) -> dict[str, float]:
    """mIoU and cIoU of `model(task="segmentation")` (or a segmentation model) over collated segmentation batches.

    When a batch carries `original_masks` (`eval_batches` collates them), each expression is scored at its image's
    original resolution, as refCOCO's cIoU is defined: the predicted logits are resized bilinearly from the input
    size to the image's size, then thresholded at 0. Otherwise at the input size, against `labels`."""
    ious, intersection, union = [], 0.0, 0.0
    for batch in batches:
        originals = batch.get("original_masks")
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "original_masks")}
        output = model(task="segmentation", **inputs) if _is_multitask(model) else model(**inputs)
        if originals is None:
            scored = [mask_ious(output.pred_masks > 0, batch["labels"] > 0.5)]
        else:
            scored = [mask_ious(masks_at_size(logits[None], *target.shape), target[None])
                      for logits, target in zip(output.pred_masks, originals)]
        for iou, inter, uni in scored:
            ious.append(iou)
            intersection += float(inter.sum())
            union += float(uni.sum())
    if not ious:
        raise ValueError("evaluate_segmentation: no expression to evaluate.")
    all_ious = torch.cat(ious)
    return {
        "miou": float(all_ious.mean()),
        "ciou": intersection / union if union else 1.0,
        "expressions": len(all_ious),
    }


def pairwise_depth_order(prediction: torch.Tensor, pairs: list[dict], space: str = "disparity") -> tuple[int, int]:
    """`(correct, total)` of DA-2K-style point pairs on one `(H, W)` prediction at the image's resolution: a pair is
    correct when the point the prediction puts closer is its `closer_point` (closer = larger disparity, or smaller
    depth with `space="depth"`); equal values count as wrong. Points are `[row, col]`; one outside the map is a
    `ValueError`."""
    if space not in ("depth", "disparity"):
        raise ValueError(f"space: expected 'depth' or 'disparity', got {space!r}.")
    height, width = prediction.shape
    correct = 0
    for pair in pairs:
        values = []
        for key in ("point1", "point2"):
            row, col = (int(v) for v in pair[key])
            if not (0 <= row < height and 0 <= col < width):
                raise ValueError(f"{key} {pair[key]} lies outside the {height}x{width} image.")
            values.append(float(prediction[row, col]))
        first_closer = values[0] > values[1] if space == "disparity" else values[0] < values[1]
        second_closer = values[1] > values[0] if space == "disparity" else values[1] < values[0]
        predicted = "point1" if first_closer else "point2" if second_closer else None
        correct += predicted == pair["closer_point"]
    return correct, len(pairs)


@torch.no_grad()
def evaluate_answers(model, batches: Iterable[dict]) -> dict[str, float]:
    """Teacher-forced answer metrics of `model(task="captioning")` (or a captioning model) over collated captioning
    batches (`labels` -100 outside the answers): `answer_loss`, the cross-entropy per answer token over every
    token of the data, and `token_accuracy`, the fraction of answer tokens that are the argmax of their position's
    logits; `tokens` counts them."""
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "num_truncated"}
        output = model(task="captioning", **inputs) if _is_multitask(model) else model(**inputs)
        targets = inputs["labels"][:, 1:]
        targets = targets[targets != -100].to(output.logits.device)  # row-major, as the logits are returned
        if output.logits.shape[0] != targets.shape[0]:
            raise ValueError(f"evaluate_answers: {output.logits.shape[0]} logits for {targets.shape[0]} answer tokens; "
                             "expected the captioning output's logits of the labelled positions.")
        loss_sum += float(F.cross_entropy(output.logits.float(), targets, reduction="sum"))
        correct += int((output.logits.argmax(-1) == targets).sum())
        count += targets.numel()
    if not count:
        raise ValueError("evaluate_answers: no answer token to score.")
    return {"answer_loss": loss_sum / count, "token_accuracy": correct / count, "tokens": count}


def _is_multitask(model) -> bool:
    """Whether `model.forward` takes `task=` (a multi-task model or a wrapper of one) rather than a task model's
    arguments only."""
    return "task" in inspect.signature(model.forward).parameters




# ---------------------------------------------------------------------------------------- semantic segmentation
def segmentation_histograms(prediction, target, num_classes: int, ignore_index: int = 255,
                            reduce_zero_label: bool = False) -> dict[str, torch.Tensor]:
    """Per-class pixel counts of one `(H, W)` label map pair: `intersect`, `union`, `pred`, `label` (float64,
    `num_classes` each). `reduce_zero_label`: label 0 (background in ADE20k) becomes `ignore_index`, the others
    shift down by one. Pixels whose label is `ignore_index` are left out."""
    prediction, target = torch.as_tensor(prediction).long(), torch.as_tensor(target).long().clone()
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} does not match target {tuple(target.shape)}.")
    if reduce_zero_label:
        zero = target == 0
        target = target - 1
        target[zero] = ignore_index
    keep = target != ignore_index
    prediction, target = prediction[keep], target[keep]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target: labels must be in [0, {num_classes}) or {ignore_index}, found "
                         f"{sorted(set(target.unique().tolist()) - set(range(num_classes)))[:5]}.")
    matched = prediction[prediction == target]
    bins = dict(minlength=num_classes)
    intersect = torch.bincount(matched, **bins)[:num_classes].double()
    pred = torch.bincount(prediction.clamp(0, num_classes - 1), **bins)[:num_classes].double()
    label = torch.bincount(target, **bins)[:num_classes].double()
    return {"intersect": intersect, "union": pred + label - intersect, "pred": pred, "label": label}


def mean_iou(predictions, targets, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False) -> dict:
    """Dataset-level mIoU as `evaluate`'s mean_iou and mmsegmentation compute it: intersection and union summed over
    all images per class, per-class IoU = intersection / union (NaN for a class absent from both predictions and
    labels), `mean_iou` = nanmean; also per-class / mean accuracy and overall pixel accuracy."""
    totals = None
    for prediction, target in zip(predictions, targets):
        counts = segmentation_histograms(prediction, target, num_classes, ignore_index, reduce_zero_label)
        totals = counts if totals is None else {k: totals[k] + counts[k] for k in totals}
    if totals is None:
        raise ValueError("mean_iou: no image.")
    iou = totals["intersect"] / totals["union"]  # 0 / 0 = NaN: an absent class
    accuracy = totals["intersect"] / totals["label"]
    return {
        "mean_iou": float(torch.nanmean(iou)),
        "mean_accuracy": float(torch.nanmean(accuracy)),
        "overall_accuracy": float(totals["intersect"].sum() / totals["label"].sum()),
        "per_category_iou": iou.tolist(),
        "per_category_accuracy": accuracy.tolist(),
    }


# ---------------------------------------------------------------------------------------- metric depth
def depth_metrics(prediction: torch.Tensor, target: torch.Tensor, min_depth: float = 1e-3,
                  max_depth: float | None = None, mask: torch.Tensor | None = None) -> dict[str, float] | None:
    """Standard metric-depth errors of one map on its valid pixels (target finite, > `min_depth`, <= `max_depth`,
    inside `mask`); the prediction is clamped to [min_depth, max_depth]. None when no pixel is valid.

    abs_rel = mean |p - g| / g, sq_rel = mean (p - g)² / g, rmse = sqrt mean (p - g)², rmse_log = sqrt mean
    (ln p - ln g)², log10 = mean |log10 p - log10 g|, δk = fraction with max(p / g, g / p) < 1.25^k."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} does not match target {tuple(target.shape)}.")
    valid = torch.isfinite(target) & (target > min_depth)
    if max_depth is not None:
        valid &= target <= max_depth
    if mask is not None:
        valid &= mask.bool()
    if not valid.any():
        return None
    g = target[valid].double()
    p = prediction[valid].double().nan_to_num(nan=min_depth).clamp(min=min_depth, max=max_depth)
    ratio = torch.maximum(p / g, g / p)
    return {
        "abs_rel": float(((p - g).abs() / g).mean()),
        "sq_rel": float(((p - g) ** 2 / g).mean()),
        "rmse": float(((p - g) ** 2).mean().sqrt()),
        "rmse_log": float(((p.log() - g.log()) ** 2).mean().sqrt()),
        "log10": float((p.log10() - g.log10()).abs().mean()),
        "delta1": float((ratio < 1.25).double().mean()),
        "delta2": float((ratio < 1.25**2).double().mean()),
        "delta3": float((ratio < 1.25**3).double().mean()),
    }


def eigen_crop(height: int, width: int) -> torch.Tensor:
    """NYUv2's Eigen crop as a boolean mask (rows 45:471, columns 41:601 of 480x640, scaled to the map size)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[round(45 / 480 * height): round(471 / 480 * height), round(41 / 640 * width): round(601 / 640 * width)] = True
    return mask


def garg_crop(height: int, width: int) -> torch.Tensor:
    """KITTI's Garg crop as a boolean mask (rows 40.8%-99.2%, columns 3.6%-96.4%)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[int(0.40810811 * height): int(0.99189189 * height), int(0.03594771 * width): int(0.96405229 * width)] = True
    return mask


__all__ = [
    "average_scores",
    "affine_align",
    "depth_metrics",
    "eigen_crop",
    "evaluate_answers",
    "evaluate_depth",
    "evaluate_segmentation",
    "pairwise_depth_order",
    "garg_crop",
    "mask_ious",
    "mean_iou",
    "relative_depth_metrics",
    "segmentation_histograms",
]


# ---------------------------------------------------------------------------------------- image-text retrieval
def retrieval_recall(similarity: torch.Tensor, text_image: torch.Tensor, ks: Iterable[int] = (1, 5, 10)) -> dict:
    """Recall@K of image-text retrieval in both directions, as the COCO / Flickr30k Karpathy-split benchmarks count it
    (an image may have several captions, a caption has one image).

    `similarity` is `(num_images, num_texts)`; `text_image[j]` is the index of text `j`'s image.
    - image -> text: image `i` is retrieved within K when its best-scoring own caption ranks among the top K texts;
    - text -> image: text `j` when its image ranks among the top K images.
    The rank of a positive is the number of negatives scoring at least as high: ties count against the positive, so
    a constant similarity scores 0, not an arbitrary tie-break. Returns fractions in [0, 1] keyed
    `image_to_text_R@K` / `text_to_image_R@K`, and their mean `mean_recall` (the "RSUM / 6" of the retrieval papers).
    """
    if similarity.ndim != 2:
        raise ValueError(f"similarity: expected (num_images, num_texts), got shape {tuple(similarity.shape)}.")
    if not torch.isfinite(similarity).all():
        raise ValueError("similarity: contains NaN or inf values.")
    num_images, num_texts = similarity.shape
    text_image = torch.as_tensor(text_image)
    if text_image.shape != (num_texts,) or text_image.is_floating_point():
        raise ValueError(
            f"text_image: expected {num_texts} integer image indices, got shape {tuple(text_image.shape)}."
        )
    if num_texts and not 0 <= int(text_image.min()) <= int(text_image.max()) < num_images:
        raise ValueError(f"text_image: indices must lie in [0, {num_images}), got {text_image.tolist()}.")
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}.")
    positive = torch.zeros(num_images, num_texts, dtype=torch.bool)
    positive[text_image, torch.arange(num_texts)] = True
    uncaptioned = (~positive.any(dim=1)).nonzero().flatten().tolist()
    if uncaptioned:
        raise ValueError(f"text_image: images {uncaptioned[:10]} have no caption, so they cannot be retrieved.")
    similarity = similarity.float()
    best = similarity.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
    image_rank = ((similarity >= best) & ~positive).sum(dim=1)
    own = similarity[text_image, torch.arange(num_texts)]
    text_rank = (similarity >= own).sum(dim=0) - 1  # the own image scores >= itself
    scores = {}
    for k in ks:
        scores[f"image_to_text_R@{k}"] = float((image_rank < k).float().mean())
        scores[f"text_to_image_R@{k}"] = float((text_rank < k).float().mean())
    scores["mean_recall"] = sum(scores.values()) / len(scores)
    return scores
