# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Correspondence of a frozen tower's dense features (the paper's Table 8; supplement §9.2, the Probe3D / DINOv3
setting): for each point of image A, the location in image B whose last-layer feature is the most similar
(cosine, nearest neighbour over B's patch grid) is its predicted match; recall is the share of points whose match
lies within a threshold of the true one, thresholds being fractions of each pair's scale (the image's longer side
for the scenes, the target box's for SPair-71k).

Both images are resized to `size` x `size` (the paper: 448 for NAVI, 896 for SPair). A query point's feature is
bilinearly sampled from A's grid at its position; a match is the centre of B's best cell, mapped back to B's own
pixels, where the error is measured.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..data.readers import CorrespondenceSource
from .probes import FrozenFeatures

logger = logging.getLogger(__name__)

THRESHOLDS = (0.05, 0.1, 0.2)


def _to_resized(points: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """`(row, col)` pixel coordinates (pixel centres at integers) of an `height` x `width` image, in the resized
    `size` x `size` image."""
    return (points + 0.5) * np.array([size / height, size / width]) - 0.5


def match_points(features_a: torch.Tensor, features_b: torch.Tensor, points_a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour matches in B's resized pixels `(N, 2)` of A's resized points, from `(C, h, w)` grids over
    `size` x `size` images: cosine similarity of A's bilinearly sampled features to every cell of B."""
    channels, height, width = features_b.shape
    normalised = (torch.as_tensor(points_a, dtype=torch.float32) + 0.5) / size * 2 - 1  # align_corners=False
    grid = normalised.flip(-1)[None, :, None]  # grid_sample takes (x, y)
    queries = F.grid_sample(features_a[None].float(), grid, mode="bilinear", align_corners=False)[0, :, :, 0].t()
    cells = features_b.float().reshape(channels, -1).t()
    best = (F.normalize(queries, dim=-1) @ F.normalize(cells, dim=-1).t()).argmax(dim=1).numpy()
    patch = size / height
    return np.stack([(best // width + 0.5) * patch - 0.5, (best % width + 0.5) * patch - 0.5], axis=1)


@torch.no_grad()
def correspondence_recall(features: FrozenFeatures, source: CorrespondenceSource,
                          thresholds=THRESHOLDS) -> dict:
    """Recall at each threshold over all points of all pairs, and the mean error as a fraction of the scale."""
    errors, empty = [], []
    for index in range(len(source)):
        image_a, image_b, points_a, points_b, scale = source.load(index)
        if not len(points_a):  # e.g. an all-zero (no depth) map, or views that share no visible point
            empty.append(index)
            continue
        grid_a, grid_b = features([image_a, image_b])
        size = features.size
        matches = match_points(grid_a, grid_b, _to_resized(points_a, image_a.height, image_a.width, size), size)
        predicted = (matches + 0.5) * np.array([image_b.height / size, image_b.width / size]) - 0.5
        errors.append(np.linalg.norm(predicted - points_b, axis=1) / scale)
    if empty:
        logger.warning("%s: %d of %d pairs have no corresponding point (all-zero depth maps or no shared view; first: "
                       "pair %d): left out of the recall and counted as pairs_without_points", source.name, len(empty),
                       len(source), empty[0])
    if not errors:
        raise ValueError(f"{source.name}: no pair to evaluate" + (
            f" ({len(empty)} pairs, none with a corresponding point: check the depth maps)." if empty else "."))
    errors = np.concatenate(errors)
    result = {f"recall@{t:g}": float((errors <= t).mean()) for t in thresholds}
    result.update(mean_error=float(errors.mean()), num_points=int(len(errors)), num_pairs=len(source) - len(empty),
                  pairs_without_points=len(empty))
    return result


__all__ = ["THRESHOLDS", "correspondence_recall", "match_points"]
