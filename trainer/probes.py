# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Linear probes on a frozen backbone (paper §5.1, following DINOv3's protocol, scaled down).

- Segmentation: last-layer patch features (raster order) -> BatchNorm + dropout + 1x1 conv -> bilinear upsampling to
  the label size -> cross-entropy (ignore index). Evaluated with a sliding window and dataset-level mIoU.
- Depth: the same features -> BatchNorm + 1x1 conv to 256 depth bins -> softmax-weighted sum of the bin centres ->
  bilinear upsampling -> scale-invariant log loss. Evaluated with the metric-depth errors (with the dataset's crop).

The backbone runs under `torch.no_grad` in eval mode and its parameters are never handed to the optimizer: it does not
change. Training features are computed once per image (no augmentation) and cached, so a probe trains in seconds.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from modeling_versavit import VersaViTConfig, VersaViTImageProcessor, VersaViTModel

from .metrics import depth_metrics, eigen_crop, garg_crop, mean_iou
from . import readers
from .readers import DepthSource, SegmentationSource


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
    """Scale-invariant log loss over valid (finite, > 0) target pixels: sqrt(mean d² - λ (mean d)²), d = log p - log g."""
    valid = torch.isfinite(target) & (target > 0)
    if not valid.any():
        return prediction.sum() * 0.0
    d = prediction[valid].clamp(min=1e-6).log() - target[valid].log()
    return (d.pow(2).mean() - variance_focus * d.mean().pow(2)).clamp(min=1e-12).sqrt()


@dataclass
class ProbeSettings:
    size: int = 224  # probe input size, a multiple of 28
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    seed: int = 0


class FrozenFeatures:
    """Last-layer feature maps of a frozen backbone at a fixed square input size."""

    def __init__(self, backbone, size: int):
        if size <= 0 or size % 28:
            raise ValueError(f"size: must be a positive multiple of 28, got {size}.")
        self.backbone = backbone.eval()
        self.backbone.requires_grad_(False)
        self.size = size
        self.processor = VersaViTImageProcessor()

    @torch.no_grad()
    def __call__(self, images: list[PIL.Image.Image], size: tuple[int, int] | None = None) -> torch.Tensor:
        height, width = size or (self.size, self.size)
        resized = [image.convert("RGB").resize((width, height), PIL.Image.BICUBIC) for image in images]
        inputs = self.processor(images=resized, do_resize=False, return_tensors="pt")
        (maps,) = self.backbone.get_dense_features(**inputs, layers=[-1])
        return maps.float()

    @property
    def channels(self) -> int:
        return self.backbone.config.embed_dim


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


def _resize_labels(labels: np.ndarray, size: int) -> torch.Tensor:
    resized = PIL.Image.fromarray(labels.astype(np.int32)).resize((size, size), PIL.Image.NEAREST)
    return torch.from_numpy(np.array(resized)).long()


def train_segmentation_probe(features: FrozenFeatures, source: SegmentationSource, settings: ProbeSettings):
    """A linear segmentation head trained on `source`; returns it (eval mode) and the training losses."""
    torch.manual_seed(settings.seed)
    maps, labels = [], []
    for index in range(len(source)):
        image, label = source.load(index)
        maps.append(features([image])[0])
        label = _resize_labels(label, settings.size)
        if source.reduce_zero_label:
            label = torch.where(label == 0, source.ignore_index, label - 1)
        labels.append(label)
    maps, labels = torch.stack(maps), torch.stack(labels)
    head = LinearSegmentationHead(features.channels, source.num_classes)

    def loss(batch):
        logits = F.interpolate(head(maps[batch]), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels[batch], ignore_index=source.ignore_index)

    return head.eval(), _fit(head, loss, len(maps), settings)


def keep_aspect_size(height: int, width: int, short_side: int, multiple: int = 28) -> tuple[int, int]:
    """`(height, width)` of an image resized so its short side is `short_side` (a multiple of `multiple`) and its long
    side keeps the aspect ratio, rounded to the nearest multiple (Depth Anything's "lower bound" resize; KITTI's
    352x1216 at 532 becomes 532x1848). The backbone takes any grid of `multiple`-pixel blocks."""
    if short_side <= 0 or short_side % multiple:
        raise ValueError(f"size: must be a positive multiple of {multiple}, got {short_side}.")
    scale = short_side / min(height, width)
    return (max(short_side, round(height * scale / multiple) * multiple),
            max(short_side, round(width * scale / multiple) * multiple))


@torch.no_grad()
def segment(features: FrozenFeatures, head: LinearSegmentationHead, image: PIL.Image.Image) -> torch.Tensor:
    """Sliding-window prediction: the image resized so its short side is the probe size, windows of that size with
    2/3 overlap stride, logits averaged, upsampled to the original size; returns `(H, W)` class ids."""
    size = features.size
    height, width = keep_aspect_size(image.height, image.width, size)
    resized = image.convert("RGB").resize((width, height), PIL.Image.BICUBIC)
    num_classes = head.classifier.out_channels
    logits = torch.zeros(num_classes, height, width)
    counts = torch.zeros(1, height, width)
    stride = max(28, (2 * size // 3) // 28 * 28)
    tops = sorted({*range(0, height - size + 1, stride), height - size})
    lefts = sorted({*range(0, width - size + 1, stride), width - size})
    for top in tops:
        for left in lefts:
            window = resized.crop((left, top, left + size, top + size))
            output = F.interpolate(head(features([window])), size=(size, size), mode="bilinear", align_corners=False)
            logits[:, top : top + size, left : left + size] += output[0]
            counts[:, top : top + size, left : left + size] += 1
    logits = F.interpolate((logits / counts)[None], size=(image.height, image.width), mode="bilinear", align_corners=False)
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
    torch.manual_seed(settings.seed)
    low, high = value_range or depth_range(source)
    maps, targets = [], []
    for index in range(len(source)):
        image, depth = source.load(index)
        maps.append(features([image])[0])
        target = torch.from_numpy(depth)[None, None]
        targets.append(F.interpolate(target.nan_to_num(0.0), size=(settings.size, settings.size), mode="nearest")[0, 0])
    maps, targets = torch.stack(maps), torch.stack(targets)
    head = LinearDepthHead(features.channels, low, high)

    def loss(batch):
        prediction = F.interpolate(head(maps[batch])[:, None], size=targets.shape[-2:], mode="bilinear",
                                   align_corners=False)[:, 0]
        return silog_loss(prediction, targets[batch])

    return head.eval(), _fit(head, loss, len(maps), settings)


@torch.no_grad()
def predict_depth(features: FrozenFeatures, head: LinearDepthHead, image: PIL.Image.Image) -> torch.Tensor:
    prediction = head(features([image]))[:, None]
    return F.interpolate(prediction, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0]


def evaluate_depth_probe(features, head, source: DepthSource) -> tuple[dict, list]:
    scores, predictions = [], []
    for index in range(len(source)):
        image, depth = source.load(index)
        prediction = predict_depth(features, head, image)
        predictions.append(prediction)
        target = torch.from_numpy(depth)
        score = depth_metrics(prediction, target, source.min_depth, source.max_depth,
                              crop_mask(source, *target.shape))
        if score is not None:
            scores.append(score)
    if not scores:
        raise ValueError(f"{source.name}: no image with a labelled pixel to evaluate.")
    result = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
    result["images"] = len(scores)
    return result, predictions


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
    scores = []
    for index in range(len(source)):
        _, depth = source.load(index)
        target = torch.from_numpy(depth)
        score = depth_metrics(torch.full_like(target, median), target, source.min_depth, source.max_depth,
                              crop_mask(source, *target.shape))
        if score is not None:
            scores.append(score)
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}


# ------------------------------------------------------------------------------------------------ the recipes' runner
SEGMENTATION_DATASETS = {"scenes", "ade20k", "voc", "cityscapes"}
DEPTH_DATASETS = {"scenes", "nyuv2", "kitti", "stereo_motorcycle"}
HUB_DATASETS = {"ade20k": "scene_parse_150", "voc": "pascal_voc", "cityscapes": "cityscapes",
                "nyuv2": "nyu_depth_v2", "kitti": "kitti", "scenes": "versavit-scenes",
                "stereo_motorcycle": "middlebury-stereo", "da2k": "depth-anything/DA-2K"}


@dataclass
class ProbeArguments:
    """The encoder, the data and the probe settings of probe_segmentation.py / probe_depth.py."""

    model: str | None = field(default=None, metadata={"help": "A VersaViT folder (backbone or any checkpoint)."})
    mllm: str | None = field(default=None, metadata={"help": "A Qwen2-VL / Qwen2.5-VL folder: probe its own tower."})
    vision_config: str | None = field(default=None, metadata={"help": "JSON of a random tower (a floor to compare)."})
    dataset: str = field(default="scenes", metadata={"help": "scenes | ade20k | voc | cityscapes | nyuv2 | kitti | "
                                                              "stereo_motorcycle (depth only)."})
    data_root: str | None = field(default=None, metadata={"help": "Root folder of a segmentation dataset."})
    train_split: str = field(default="", metadata={"help": "Segmentation: split name (default training / train); "
                                                          "depth: the split file of training pairs."})
    eval_split: str = field(default="", metadata={"help": "Segmentation: split name (default validation / val); "
                                                         "depth: the split file of evaluation pairs."})
    num_scenes: int = field(default=120, metadata={"help": "Generated training scenes (dataset scenes)."})
    num_eval_scenes: int = field(default=24, metadata={"help": "Generated held-out scenes (dataset scenes)."})
    size: int = field(default=224, metadata={"help": "Probe input size, a multiple of 28 (paper: 560 segmentation)."})
    steps: int = field(default=300, metadata={"help": "Optimizer steps of the linear head."})
    batch_size: int = field(default=8, metadata={"help": "Images per step."})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate (warmup, then cosine)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head and the batch order."})
    output_dir: str = field(default="outputs/probe", metadata={"help": "Where results.json goes."})


def pretrained_backbone(path: str, option: str = "model") -> VersaViTModel:
    """The VersaViT backbone saved in the local folder `path` (any VersaViT checkpoint), or a `FileNotFoundError`
    naming `option` (the library never downloads)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{option}: {path} is not a folder; give a VersaViT folder, e.g. a run's backbone/ "
                                "(`make demo` writes outputs/demo/backbone).")
    return VersaViTModel.from_pretrained(path, dtype=torch.float32)


def load_backbone(args: ProbeArguments) -> VersaViTModel:
    if sum(bool(x) for x in (args.model, args.mllm, args.vision_config)) != 1:
        raise ValueError("encoder: give exactly one of model, mllm, vision_config.")
    if args.model:
        return pretrained_backbone(args.model)
    if args.mllm:
        return VersaViTModel.from_mllm(args.mllm, dtype=torch.float32)
    torch.manual_seed(args.seed)
    return VersaViTModel(VersaViTConfig(vision_config=json.loads(args.vision_config)))


def sources(args: ProbeArguments, task: str):
    name = args.dataset
    if task == "segmentation":
        if name not in SEGMENTATION_DATASETS:
            raise ValueError(f"dataset: {name!r} has no segmentation labels (choose among {sorted(SEGMENTATION_DATASETS)}).")
        if name == "scenes":
            return readers.scene_segmentation(args.num_scenes, 5000), readers.scene_segmentation(args.num_eval_scenes, 9000)
        if not args.data_root:
            raise ValueError(f"data_root: {name} needs the folder that holds the dataset.")
        reader = {"ade20k": readers.ade20k, "voc": readers.pascal_voc, "cityscapes": readers.cityscapes}[name]
        train_default, eval_default = ("training", "validation") if name == "ade20k" else ("train", "val")
        return (reader(args.data_root, args.train_split or train_default),
                reader(args.data_root, args.eval_split or eval_default))
    if name not in DEPTH_DATASETS:
        raise ValueError(f"dataset: {name!r} has no depth labels (choose among {sorted(DEPTH_DATASETS)}).")
    if name == "scenes":
        return readers.scene_depth(args.num_scenes, 5000), readers.scene_depth(args.num_eval_scenes, 9000)
    if name == "stereo_motorcycle":  # one real image: a check that the probe fits real data, not a benchmark
        source = readers.stereo_motorcycle()
        return source, source
    reader = {"nyuv2": readers.nyuv2, "kitti": readers.kitti}[name]
    if not (args.train_split and args.eval_split):
        raise ValueError(f"train_split / eval_split: {name} needs the split files of its training and evaluation pairs.")
    return reader(args.train_split), reader(args.eval_split)


def run_probes(args: ProbeArguments, tasks: list[str]) -> dict:
    """Train and evaluate the probes of `tasks` on `args.dataset`; writes `results.json` and `model_index.json`."""
    backbone = load_backbone(args)
    settings = ProbeSettings(size=args.size, steps=args.steps, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, seed=args.seed)
    features = FrozenFeatures(backbone, args.size)
    results, model_index = {}, []
    for task in tasks:
        train, held_out = sources(args, task)
        if task == "segmentation":
            head, losses = train_segmentation_probe(features, train, settings)
            metrics, _ = evaluate_segmentation_probe(features, head, held_out)
            metrics["chance_mean_iou"] = chance_segmentation(held_out)["mean_iou"]
            print(f"{args.dataset} segmentation probe: mIoU {metrics['mean_iou']:.4f} "
                  f"(majority class {metrics['chance_mean_iou']:.4f})")
            card = [("image-segmentation", "mean_iou", "mIoU (linear probe)", metrics["mean_iou"])]
        else:
            head, losses = train_depth_probe(features, train, settings)
            metrics, _ = evaluate_depth_probe(features, head, held_out)
            metrics["chance"] = chance_depth(train, held_out)
            print(f"{args.dataset} depth probe: AbsRel {metrics['abs_rel']:.4f} RMSE {metrics['rmse']:.4f} "
                  f"δ1 {metrics['delta1']:.4f} (median depth: AbsRel {metrics['chance']['abs_rel']:.4f}, "
                  f"RMSE {metrics['chance']['rmse']:.4f})")
            card = [("depth-estimation", "rmse", "RMSE (linear probe)", metrics["rmse"]),
                    ("depth-estimation", "abs_rel", "AbsRel (linear probe)", metrics["abs_rel"])]
        metrics["final_loss"] = losses[-1]
        results[task] = metrics
        model_index += [{"task_type": task_type, "dataset_type": HUB_DATASETS[args.dataset], "dataset_name": args.dataset,
                         "metric_type": metric, "metric_name": label, "metric_value": round(value, 4)}
                        for task_type, metric, label, value in card]
    summary = {"encoder": args.model or args.mllm or "random", "dataset": args.dataset, "size": args.size,
               "steps": args.steps, "results": results, "model_index": model_index}
    return write_results(args.output_dir, summary, model_index)


def write_results(output_dir, summary: dict, model_index: list[dict]) -> dict:
    """`results.json` (the summary) and `model_index.json` (the model card's results, for push_to_hub --results)."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(summary, indent=2))
    (output / "model_index.json").write_text(json.dumps(model_index, indent=2))
    print(f"results     {output / 'results.json'}\nmodel index {output / 'model_index.json'}  "
          "(recipes/push_to_hub.py --results)")
    return summary



__all__ = [
    "ProbeArguments",
    "run_probes",
    "load_backbone",
    "FrozenFeatures",
    "LinearDepthHead",
    "LinearSegmentationHead",
    "ProbeSettings",
    "chance_depth",
    "crop_mask",
    "keep_aspect_size",
    "chance_segmentation",
    "evaluate_depth_probe",
    "evaluate_segmentation_probe",
    "predict_depth",
    "segment",
    "silog_loss",
    "train_depth_probe",
    "train_segmentation_probe",
    "write_results",
]
