# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Linear probes on a frozen backbone (paper §5.1 and supplement §8.1, following DINOv3's protocol, scaled down).

- Segmentation: last-layer patch features (raster order) -> BatchNorm + dropout + 1x1 conv -> bilinear upsampling to
  the label size -> cross-entropy (ignore index); dataset-level mIoU at each image's original resolution. Training
  and evaluation see the images through one resize rule (`ProbeSettings.resize`):
  - `"square"` (the paper: "input images are resized to 560x560"): the whole image squashed to `size` x `size`; the
    logits are upsampled to the original size for scoring.
  - `"short_side"` (DINOv3's evaluation): the short side resized to `size`, the long side keeping the aspect ratio,
    and windows of `size` x `size` at a 2/3 stride (DINOv3: 512 and 341); training uses the same windows, evaluation
    averages their logits.
- Depth: the same features -> BatchNorm + 1x1 conv to 256 depth bins -> softmax-weighted sum of the bin centres ->
  bilinear upsampling -> scale-invariant log loss. Images are fed at the dataset's own resolution, each side rounded
  to a multiple of 28 (the paper: "the standard resolution specified by the corresponding dataset"; NYUv2's 480x640
  is fed at 476x644) and trained and scored against the labels at their own size, with the metric-depth errors (with
  the dataset's crop).

Against DINOv3's linear segmentation protocol (ADE20k: 40k iterations, batch 16, AdamW lr 1e-3, weight decay 1e-3,
1.5k warmup iterations then cosine; random rescaling 0.5-2x, 512 crops and flips in training): the features here are
computed once per image (or window) without augmentation and cached, so a probe trains in seconds; the shipped
`recipes/configs/probe_paper.yaml` uses DINOv3's optimiser settings at the paper's 560 px.

The backbone runs under `torch.no_grad` in eval mode and its parameters are never handed to the optimizer: it does not
change. Training features are computed once per image (no augmentation) and cached, so a probe trains in seconds.

The recipes' runner (options, data, results) is `probe_runs`.
"""

from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from modeling_versavit import fixed_size_pixels

from ..data.processors import QWEN2_VL_SIZE_MULTIPLE, image_processor_for
from ..data.readers import DepthSource, SegmentationSource
from ..metrics import average_scores, depth_metrics, eigen_crop, garg_crop, mean_iou


class LinearSegmentationHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.norm(features)))


class LinearDepthHead(nn.Module):
    """Depth as the expectation over `bins` bin centres spaced linearly in [min_depth, max_depth]."""

    def __init__(self, channels: int, min_depth: float, max_depth: float, bins: int = 256):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, bins, kernel_size=1)
        self.register_buffer("centres", torch.linspace(min_depth, max_depth, bins), persistent=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probabilities = self.classifier(self.norm(features)).softmax(dim=1)
        return torch.einsum("bkhw,k->bhw", probabilities, self.centres)


def silog_loss(prediction: torch.Tensor, target: torch.Tensor, variance_focus: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss over valid (finite, > 0) target pixels: sqrt(mean d² - λ (mean d)²),
    d = log p - log g."""
    valid = torch.isfinite(target) & (target > 0)
    if not valid.any():
        return prediction.sum() * 0.0
    d = prediction[valid].clamp(min=1e-6).log() - target[valid].log()
    return (d.pow(2).mean() - variance_focus * d.mean().pow(2)).clamp(min=1e-12).sqrt()


RESIZE_RULES = ("square", "short_side")


@dataclass
class ProbeSettings:
    """How a linear probe trains (the recipes' options of the same names; DINOv3's values in the help)."""

    size: int = field(default=224, metadata={"help": "Segmentation input size, a multiple of 28 (paper: 560). Depth "
                                                     "probes run at each dataset's own resolution."})
    resize: str = field(default="square", metadata={"help": "Segmentation resize rule of training and evaluation: "
                                                            "square (the paper: size x size) or short_side (DINOv3: "
                                                            "short side = size, sliding windows of size)."})
    steps: int = field(default=300, metadata={"help": "Optimizer steps of the linear head (DINOv3: 40000)."})
    batch_size: int = field(default=8, metadata={"help": "Images (or windows) per step (DINOv3: 16)."})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate, warmup then cosine "
                                                                 "(DINOv3: 1e-3)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (DINOv3: 1e-3)."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warmup steps (DINOv3: 1500)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head and the batch order (and of a random tower)."})
    cache_features: bool = field(default=True, metadata={"help": "Compute each training image's (or window's) "
                                                                 "features once and keep them in memory (small "
                                                                 "runs); false: compute them at every step (paper "
                                                                 "scale, where they do not fit in memory)."})

    def __post_init__(self):
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize: expected one of {list(RESIZE_RULES)}, got {self.resize!r}.")


def native_size(height: int, width: int, multiple: int = QWEN2_VL_SIZE_MULTIPLE) -> tuple[int, int]:
    """An image's own resolution with each side rounded to the nearest multiple of `multiple` (at least one)."""
    return max(multiple, round(height / multiple) * multiple), max(multiple, round(width / multiple) * multiple)


class FrozenFeatures:
    """Last-layer feature maps of a frozen backbone, at a fixed square input size unless a size is given."""

    def __init__(self, backbone, size: int):
        self.multiple = backbone.config.input_size_multiple  # the tower's patch x merge
        if size <= 0 or size % self.multiple:
            raise ValueError(f"size: must be a positive multiple of {self.multiple}, got {size}.")
        self.backbone = backbone.eval()
        self.backbone.requires_grad_(False)
        self.size = size
        self.processor = image_processor_for(backbone.config)

    @torch.no_grad()
    def __call__(self, images: list[PIL.Image.Image], size: tuple[int, int] | None = None) -> torch.Tensor:
        inputs = fixed_size_pixels(images, size or self.size, self.processor)
        (maps,) = self.backbone.get_dense_features(**inputs, layers=[-1])
        return maps.float()

    @property
    def channels(self) -> int:
        return self.backbone.config.embed_dim


class _Examples:
    """A probe's training examples `make(key)` for `keys` (a (feature map, label) pair each): made once and kept when
    `cache`, else made again at every use (the memory of one batch)."""

    def __init__(self, make, keys: list, cache: bool):
        self.make, self.keys = make, keys
        self._kept = [make(key) for key in keys] if cache else None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int):
        return self._kept[index] if self._kept is not None else self.make(self.keys[index])


def _fit(head: nn.Module, loss_of_batch, count: int, settings: ProbeSettings) -> list[float]:
    """AdamW with linear warmup then cosine decay on `head` only, over reshuffled passes of `count` cached samples."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    head.train()
    losses = []
    for batch in _batches(count, settings):
        loss = loss_of_batch(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def _batches(count: int, settings: ProbeSettings):
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(settings.steps):
        if len(order) < settings.batch_size:
            order = torch.cat([order, torch.randperm(count, generator=generator)])
        batch, order = order[: settings.batch_size], order[settings.batch_size:]
        yield batch


def _resize_labels(labels: np.ndarray, height: int, width: int) -> torch.Tensor:
    resized = PIL.Image.fromarray(labels.astype(np.int32)).resize((width, height), PIL.Image.NEAREST)
    return torch.from_numpy(np.array(resized)).long()


def windows(height: int, width: int, size: int, multiple: int = QWEN2_VL_SIZE_MULTIPLE) -> list[tuple[int, int]]:
    """`(top, left)` of the `size` x `size` windows covering a `height` x `width` image at a 2/3 stride (a multiple
    of `multiple`, the tower's patch x merge), the last row and column flush with the border."""
    stride = max(multiple, (2 * size // 3) // multiple * multiple)
    tops = sorted({*range(0, height - size + 1, stride), height - size})
    lefts = sorted({*range(0, width - size + 1, stride), width - size})
    return [(top, left) for top in tops for left in lefts]


def segmentation_views(image: PIL.Image.Image, label: np.ndarray | None, size: int, resize: str,
                       multiple: int = QWEN2_VL_SIZE_MULTIPLE):
    """The `(image, label)` views that a segmentation probe trains on under the resize rule `resize` (see the module
    docstring): one `size` x `size` squashed view, or the sliding windows of the short-side resized image. Labels are
    resized with nearest neighbours (None passes through as None)."""
    if resize == "square":
        height, width = size, size
    else:
        height, width = keep_aspect_size(image.height, image.width, size, multiple)
    resized = image.convert("RGB").resize((width, height), PIL.Image.BICUBIC)
    resized_label = None if label is None else _resize_labels(label, height, width)
    views = []
    for top, left in windows(height, width, size, multiple):
        crop = resized.crop((left, top, left + size, top + size))
        views.append((crop, None if label is None else resized_label[top : top + size, left : left + size]))
    return views


def train_segmentation_probe(features: FrozenFeatures, source: SegmentationSource, settings: ProbeSettings):
    """A linear segmentation head trained on `source` through the resize rule of `settings` (the one evaluation
    uses); returns it (eval mode) and the training losses."""
    torch.manual_seed(settings.seed)
    size = features.size
    keys = []
    for index in range(len(source)):
        if settings.resize == "square":
            keys.append((index, 0))
        else:
            width, height = source.load(index)[0].size
            shape = keep_aspect_size(height, width, size, features.multiple)
            keys += [(index, k) for k in range(len(windows(*shape, size, features.multiple)))]

    def make(key):
        image, label = source.load(key[0])
        view, view_label = segmentation_views(image, label, size, settings.resize, features.multiple)[key[1]]
        if source.reduce_zero_label:
            view_label = torch.where(view_label == 0, source.ignore_index, view_label - 1)
        return features([view])[0], view_label

    examples = _Examples(make, keys, settings.cache_features)
    head = LinearSegmentationHead(features.channels, source.num_classes)
    head.resize = settings.resize  # evaluation follows the rule the head was trained with

    def loss(batch):
        maps, labels = (torch.stack(parts) for parts in zip(*(examples[i] for i in batch.tolist())))
        logits = F.interpolate(head(maps), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels, ignore_index=source.ignore_index)

    return head.eval(), _fit(head, loss, len(examples), settings)


def keep_aspect_size(height: int, width: int, short_side: int,
                     multiple: int = QWEN2_VL_SIZE_MULTIPLE) -> tuple[int, int]:
    """`(height, width)` of an image resized so its short side is `short_side` (a multiple of `multiple`) and its long
    side keeps the aspect ratio, rounded to the nearest multiple (Depth Anything's "lower bound" resize; KITTI's
    352x1216 at 532 becomes 532x1848). The backbone takes any grid of `multiple`-pixel blocks."""
    if short_side <= 0 or short_side % multiple:
        raise ValueError(f"size: must be a positive multiple of {multiple}, got {short_side}.")
    scale = short_side / min(height, width)
    return (max(short_side, round(height * scale / multiple) * multiple),
            max(short_side, round(width * scale / multiple) * multiple))


@torch.no_grad()
def segment(features: FrozenFeatures, head: LinearSegmentationHead, image: PIL.Image.Image,
            resize: str | None = None) -> torch.Tensor:
    """`(H, W)` class ids of `image` at its original size, seen through the resize rule the head was trained with
    (or `resize`): the squashed `size` x `size` view, or the sliding windows of the short-side resized image with
    their logits averaged; the logits are upsampled bilinearly to the original size."""
    size = features.size
    resize = resize or getattr(head, "resize", "square")
    multiple = features.multiple
    height, width = (size, size) if resize == "square" else keep_aspect_size(image.height, image.width, size, multiple)
    logits = torch.zeros(head.classifier.out_channels, height, width)
    counts = torch.zeros(1, height, width)
    views = segmentation_views(image, None, size, resize, multiple)
    for (top, left), (view, _) in zip(windows(height, width, size, multiple), views):
        output = F.interpolate(head(features([view])), size=(size, size), mode="bilinear", align_corners=False)
        logits[:, top : top + size, left : left + size] += output[0]
        counts[:, top : top + size, left : left + size] += 1
    logits = F.interpolate(
        (logits / counts)[None], size=(image.height, image.width), mode="bilinear", align_corners=False
    )
    return logits[0].argmax(0)


def evaluate_segmentation_probe(features, head, source: SegmentationSource) -> tuple[dict, list]:
    predictions, targets = [], []
    for index in range(len(source)):
        image, label = source.load(index)
        predictions.append(segment(features, head, image))
        targets.append(torch.from_numpy(label))
    result = mean_iou(predictions, targets, source.num_classes, source.ignore_index, source.reduce_zero_label)
    return result, predictions


def crop_mask(source: DepthSource, height: int, width: int) -> torch.Tensor | None:
    if source.crop == "eigen":
        return eigen_crop(height, width)
    if source.crop == "garg":
        return garg_crop(height, width)
    return None


def depth_range(source: DepthSource) -> tuple[float, float]:
    """The bins' range: the dataset's, else the labels' own 0.5th-99.5th percentiles (scenes, disparity)."""
    if source.max_depth is not None:
        return source.min_depth, source.max_depth
    values = np.concatenate([v[np.isfinite(v)] for v in (source.load(i)[1] for i in range(len(source)))])
    if values.size == 0:
        raise ValueError(f"{source.name}: no labelled depth pixel.")
    low, high = np.percentile(values, [0.5, 99.5])
    return float(max(low * 0.5, 1e-3)), float(high * 1.2)


def train_depth_probe(features: FrozenFeatures, source: DepthSource, settings: ProbeSettings,
                      value_range: tuple[float, float] | None = None):
    """A linear depth head trained on `source` at the dataset's own resolution (each image fed at `native_size`, the
    loss taken against the labels at their own size, pooled over the batch's labelled pixels); returns it (eval
    mode) and the training losses. Images of different sizes are batched by size."""
    torch.manual_seed(settings.seed)
    low, high = value_range or depth_range(source)

    def make(index):
        image, depth = source.load(index)
        return features([image], native_size(image.height, image.width, features.multiple))[0], torch.from_numpy(depth)

    examples = _Examples(make, list(range(len(source))), settings.cache_features)
    head = LinearDepthHead(features.channels, low, high)

    def loss(batch):
        groups: dict[tuple, list] = {}
        for i in batch.tolist():
            feature_map, target = examples[i]
            groups.setdefault((feature_map.shape, target.shape), []).append((feature_map, target))
        predicted, labelled = [], []
        for (_, shape), members in groups.items():
            maps, targets = (torch.stack(parts) for parts in zip(*members))
            prediction = F.interpolate(head(maps)[:, None], size=shape, mode="bilinear", align_corners=False)[:, 0]
            predicted.append(prediction.flatten())
            labelled.append(targets.flatten())
        return silog_loss(torch.cat(predicted), torch.cat(labelled))

    return head.eval(), _fit(head, loss, len(examples), settings)


@torch.no_grad()
def predict_depth(features: FrozenFeatures, head: LinearDepthHead, image: PIL.Image.Image) -> torch.Tensor:
    """The probe's `(H, W)` depth of `image`, fed at its own resolution (`native_size`), at the image's size."""
    prediction = head(features([image], native_size(image.height, image.width, features.multiple)))[:, None]
    return F.interpolate(prediction, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0]


def score_depth_source(source: DepthSource, predict, metric) -> tuple[dict, list]:
    """The one depth-evaluation loop over a dataset: per image, `predict(image, (H, W))` at the label's size, then
    `metric(prediction, target, mask)` over the dataset's evaluation pixels (its crop, and its depth range when it has
    one); returns the metrics averaged over the scored images (`average_scores`) and the predictions."""
    scores, predictions = [], []
    for index in range(len(source)):
        image, depth = source.load(index)
        target = torch.from_numpy(depth)
        prediction = predict(image, tuple(target.shape))
        predictions.append(prediction)
        mask = crop_mask(source, *target.shape)
        if source.max_depth is not None:
            in_range = (target > source.min_depth) & (target <= source.max_depth)
            mask = in_range if mask is None else mask & in_range
        scores.append(metric(prediction, target, mask))
    return average_scores(scores, source.name), predictions


def _metric_depth(source: DepthSource):
    return lambda prediction, target, mask: depth_metrics(prediction, target, source.min_depth, source.max_depth, mask)


def evaluate_depth_probe(features, head, source: DepthSource) -> tuple[dict, list]:
    return score_depth_source(source, lambda image, shape: predict_depth(features, head, image), _metric_depth(source))


def chance_segmentation(source: SegmentationSource) -> dict:
    """mIoU of predicting every pixel as the most frequent training class: the floor a probe must beat."""
    counts = np.zeros(source.num_classes)
    labels = [source.load(i)[1] for i in range(len(source))]
    for label in labels:
        reduced = np.where(label == 0, source.ignore_index, label - 1) if source.reduce_zero_label else label
        valid = reduced[reduced != source.ignore_index]
        counts += np.bincount(valid, minlength=source.num_classes)[: source.num_classes]
    majority = int(counts.argmax())
    return mean_iou([torch.full(label.shape, majority) for label in labels],
                    [torch.from_numpy(label) for label in labels], source.num_classes, source.ignore_index,
                    source.reduce_zero_label)


def chance_depth(train: DepthSource, source: DepthSource) -> dict:
    """Metric-depth errors of predicting the training labels' median everywhere."""
    values = np.concatenate([v[np.isfinite(v)] for v in (train.load(i)[1] for i in range(len(train)))])
    median = float(np.median(values))
    result, _ = score_depth_source(source, lambda image, shape: torch.full(shape, median), _metric_depth(source))
    result.pop("images")
    return result


__all__ = [
    "FrozenFeatures",
    "LinearDepthHead",
    "LinearSegmentationHead",
    "ProbeSettings",
    "RESIZE_RULES",
    "chance_depth",
    "chance_segmentation",
    "crop_mask",
    "depth_range",
    "evaluate_depth_probe",
    "evaluate_segmentation_probe",
    "keep_aspect_size",
    "native_size",
    "predict_depth",
    "score_depth_source",
    "segment",
    "segmentation_views",
    "silog_loss",
    "train_depth_probe",
    "train_segmentation_probe",
    "windows",
]
