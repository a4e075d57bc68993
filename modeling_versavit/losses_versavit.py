# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The task losses of VersaViT (paper §4.2, supplement §7 and §8.1) and the image-text contrastive loss of its
retrieval evaluation (supplement §9.5). Shipped as Hub remote code: torch only."""

import math

import torch
import torch.nn.functional as F

# Guards a zero scale: a constant target (or prediction) normalises to all zeros instead of NaN.
SCALE_EPS = 1e-6


def depth_validity(labels: torch.Tensor, labels_mask: torch.Tensor | None = None,
                   label_space: str = "depth") -> torch.Tensor:
    """Pixels that supervise the depth loss, within `labels_mask` when given. Depth labels: finite and positive (NaN,
    inf, 0 and negatives mark holes, as zero-filled invalid depth). Disparity labels: finite and >= 0, since a
    disparity of 0 is the sky / far field (Depth Anything's output after its ReLU), not a hole."""
    if label_space not in ("depth", "disparity"):
        raise ValueError(f"label_space: expected 'depth' or 'disparity', got {label_space!r}.")
    valid = torch.isfinite(labels) & ((labels >= 0) if label_space == "disparity" else (labels > 0))
    if labels_mask is not None:
        if labels_mask.shape != labels.shape:
            raise ValueError(
                f"labels_mask: shape {tuple(labels_mask.shape)} does not match labels {tuple(labels.shape)}."
            )
        valid = valid & labels_mask.bool()
    return valid


def normalize_depth(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Align each map to zero translation and unit scale over its valid pixels (supplement §7):
    `(d - median(d)) / mean(|d - median(d)|)`.

    `depth` and `valid` are `(B, H, W)`. The median is the lower median of the valid values (torch's convention).
    Invalid pixels come out as 0; an image without valid pixels comes out all 0.
    """
    batch = depth.shape[0]
    flat = depth.reshape(batch, -1)
    mask = valid.reshape(batch, -1)
    count = mask.sum(dim=1, keepdim=True)
    # nanmedian over the valid pixels only; rows without any are all NaN and get a median of 0 below.
    median = torch.where(mask, flat, torch.full_like(flat, float("nan"))).nanmedian(dim=1, keepdim=True).values
    median = torch.nan_to_num(median, nan=0.0)
    centred = torch.where(mask, flat - median, torch.zeros_like(flat))
    scale = centred.abs().sum(dim=1, keepdim=True) / count.clamp(min=1)
    return (centred / scale.clamp(min=SCALE_EPS)).reshape_as(depth)


def ssi_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant mean absolute error (supplement §7).

    Both maps are normalised by `normalize_depth`, then `L_ssi = mean over valid pixels |d̂* - d̂|` per image,
    averaged over the images that have valid pixels. Inputs are `(B, H, W)`; returns a scalar (0 if no pixel is
    valid, still attached to the graph).
    """
    return _ssi_of_residual(_normalized_residual(prediction, target, valid), valid)


def gradient_matching_loss(
    prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, scales: int = 4
) -> torch.Tensor:
    """Multi-scale gradient matching (supplement §7, MiDaS): `L_gm = Σ_k (Σ |∇x R_k| + |∇y R_k|) / M_k`.

    `R = d̂* - d̂` is the residual of the normalised prediction and target (as in `ssi_loss`); scale `k` (0..K-1)
    keeps every `2^k`-th pixel of each axis; a finite difference counts only where both of its pixels are valid, and
    `M_k` is the number of valid pixels at scale `k`. Summed over scales, averaged over images with valid pixels.
    """
    return _gm_of_residual(_normalized_residual(prediction, target, valid), valid, scales)


def _normalized_residual(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`d̂* - d̂`, zero at invalid pixels: the residual both depth terms read, computed once per loss."""
    return normalize_depth(prediction, valid) - normalize_depth(target, valid)  # normalize_depth zeroes invalid pixels


def _ssi_of_residual(residual: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    count = valid.flatten(1).sum(dim=1)
    per_image = residual.abs().flatten(1).sum(dim=1) / count.clamp(min=1)
    return _mean_over_images(per_image, count > 0)


def _gm_of_residual(residual: torch.Tensor, valid: torch.Tensor, scales: int) -> torch.Tensor:
    total = residual.new_zeros(residual.shape[0])
    for k in range(scales):
        step = 2**k
        r = residual[:, ::step, ::step]
        m = valid[:, ::step, ::step]
        grad_x = (r[:, :, 1:] - r[:, :, :-1]).abs() * (m[:, :, 1:] & m[:, :, :-1])
        grad_y = (r[:, 1:, :] - r[:, :-1, :]).abs() * (m[:, 1:, :] & m[:, :-1, :])
        count = m.flatten(1).sum(dim=1)
        total = total + (grad_x.flatten(1).sum(dim=1) + grad_y.flatten(1).sum(dim=1)) / count.clamp(min=1)
    return _mean_over_images(total, valid.flatten(1).any(dim=1))


def depth_loss(
    prediction: torch.Tensor,
    labels: torch.Tensor,
    labels_mask: torch.Tensor | None = None,
    ssi_weight: float = 1.0,
    gm_weight: float = 0.5,
    gm_scales: int = 4,
    label_space: str = "depth",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`λ_ssi · L_ssi + λ_gm · L_gm` on `(B, H, W)` maps; returns the loss and its two terms (detached). The
    prediction is compared with the labels in their own `label_space` (depth or disparity), never inverted; the
    space only decides which pixels are holes (`depth_validity`)."""
    if prediction.shape != labels.shape:
        raise ValueError(
            f"labels: depth labels of shape {tuple(labels.shape)} do not match the predicted depth "
            f"{tuple(prediction.shape)} (labels are at the processed input size: image_grid_thw h, w x patch size)."
        )
    valid = depth_validity(labels, labels_mask, label_space)
    labels = torch.where(valid, labels, torch.zeros_like(labels))  # NaN/inf never enter the arithmetic
    dtype = torch.promote_types(prediction.dtype, torch.float32)  # bf16/fp16 predictions: reduce in fp32
    prediction = prediction.to(dtype)
    labels = labels.to(dtype)
    residual = _normalized_residual(prediction, labels, valid)  # shared by both terms: one median per map
    ssi = _ssi_of_residual(residual, valid)
    gm = _gm_of_residual(residual, valid, gm_scales)
    return ssi_weight * ssi + gm_weight * gm, {"loss_ssi": ssi.detach(), "loss_gm": gm.detach()}


def check_mask_labels(labels: torch.Tensor, expected_shape: tuple[int, ...]) -> torch.Tensor:
    """Binary `(num_expressions, H, W)` target masks as float, or a `ValueError` naming what is wrong."""
    if tuple(labels.shape) != tuple(expected_shape):
        raise ValueError(
            f"labels: mask labels of shape {tuple(labels.shape)} do not match the predicted masks "
            f"{tuple(expected_shape)} (one mask per expression, at the processed input size)."
        )
    if labels.dtype != torch.bool:
        bad = ~((labels == 0) | (labels == 1))
        if bad.any():
            raise ValueError(
                f"labels: mask labels must be binary (0/1 or bool); found {int(bad.sum())} other values, e.g. "
                f"{labels[bad].flatten()[:3].tolist()}."
            )
    return labels.float()


def mask_loss(
    logits: torch.Tensor, labels: torch.Tensor, bce_weight: float = 2.0, dice_weight: float = 0.5, smooth: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`λ_bce · BCE + λ_dice · Dice` for `(N, H, W)` mask logits and binary targets (supplement §8.1).

    Per mask: BCE is the mean over pixels of the binary cross-entropy with logits, and
    `Dice = 1 - (2 Σ p g + s) / (Σ p + Σ g + s)` with `p = sigmoid(logits)` and smoothing `s = 1`, so an empty
    target is valid (a confident empty prediction scores ~0). Both are averaged over masks.
    """
    labels = check_mask_labels(labels, logits.shape)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    labels = labels.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").flatten(1).mean(dim=1)
    probs = logits.sigmoid().flatten(1)
    target = labels.flatten(1)
    dice = 1 - (2 * (probs * target).sum(dim=1) + smooth) / (probs.sum(dim=1) + target.sum(dim=1) + smooth)
    bce, dice = bce.mean(), dice.mean()
    return bce_weight * bce + dice_weight * dice, {"loss_bce": bce.detach(), "loss_dice": dice.detach()}


def _mean_over_images(per_image: torch.Tensor, has_pixels: torch.Tensor) -> torch.Tensor:
    """Mean over the images that have valid pixels; 0 (still attached to the graph, as DDP needs) if none has."""
    has_pixels = has_pixels.to(per_image.dtype)
    return (per_image * has_pixels).sum() / has_pixels.sum().clamp(min=1)


__all__ = [
    "check_mask_labels",
    "depth_loss",
    "depth_validity",
    "gradient_matching_loss",
    "mask_loss",
    "normalize_depth",
    "ssi_loss",
]


# ------------------------------------------------------------------------------------- image-text contrastive
CONTRASTIVE_KINDS = ("sigmoid", "softmax")


def contrastive_logits(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    kind: str = "sigmoid",
) -> torch.Tensor:
    """`(num_images, num_texts)` logits `exp(logit_scale) * <image_i, text_j> (+ logit_bias)` of the L2-normalised
    embeddings; for `"softmax"` the scale is clamped at log 100, as CLIP does."""
    scale = logit_scale.exp() if kind == "sigmoid" else logit_scale.clamp(max=math.log(100)).exp()
    logits = scale * F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).t()
    return logits if logit_bias is None else logits + logit_bias


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    kind: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-text contrastive loss over a batch of `B` pairs (image `i` goes with text `i`, every other pair is a
    negative); the retrieval head of the paper's supplement §9.5 trains with it, and SAILViT's cross-modal alignment.

    Both embeddings are L2-normalised; `logits[i, j] = exp(logit_scale) * <image_i, text_j> (+ logit_bias)`.
    - `"sigmoid"` (SigLIP): `-sum_ij log sigmoid(z_ij * logits_ij) / B`, `z_ij` = 1 on the diagonal, -1 elsewhere;
      needs `logit_bias` (SigLIP initialises the scale to log 10 and the bias to -10).
    - `"softmax"` (CLIP): the mean of the image-to-text and text-to-image cross-entropies with the diagonal as
      targets; `logit_bias` must be None (a shared bias cancels in a softmax). The scale is clamped at log 100, as CLIP.

    Returns `(loss, logits_per_image)`: the scalar loss and the `(B, B)` logits.
    """
    if kind not in CONTRASTIVE_KINDS:
        raise ValueError(f"kind: expected one of {CONTRASTIVE_KINDS}, got {kind!r}.")
    if image_embeds.ndim != 2 or text_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image_embeds {tuple(image_embeds.shape)} and text_embeds {tuple(text_embeds.shape)}: expected two "
            "(batch, dim) tensors of the same shape, one text per image."
        )
    for name, value in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
        # A runtime assert, not a Python branch on the data: traceable by torch.export / torch.compile.
        message = f"{name}: contains NaN or inf values."
        torch._check_tensor_all_with(ValueError, torch.isfinite(value), lambda message=message: message)
    if (kind == "sigmoid") != (logit_bias is not None):
        raise ValueError(f"logit_bias: the {kind} loss takes {'a' if kind == 'sigmoid' else 'no'} bias.")
    logits = contrastive_logits(image_embeds, text_embeds, logit_scale, logit_bias, kind)
    batch = logits.shape[0]
    if kind == "sigmoid":
        signs = 2 * torch.eye(batch, device=logits.device, dtype=logits.dtype) - 1
        return -F.logsigmoid(signs * logits).sum() / batch, logits
    targets = torch.arange(batch, device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2, logits
