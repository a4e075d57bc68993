#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Extract VersaViT features from images: MLLM-ready merged tokens and dense per-layer feature maps.

    python recipes/evaluation/extract_features.py                            # small random backbone, sample photos
    python recipes/evaluation/extract_features.py --model path/to/versavit --images a.jpg b.png
    python recipes/evaluation/extract_features.py --mllm path/to/Qwen2-VL-7B-Instruct --layers 8 16 32

Prints the shape of every output and writes, per image, a PNG of the image beside a PCA view of each requested layer
(the first three principal components of the patch features as RGB), plus all feature maps as safetensors.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from safetensors.torch import save_file
from transformers import HfArgumentParser

from modeling_versavit import VersaViTImageProcessor, VersaViTModel, load_image
from versavit_trainer.core.models import backbone_from

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee")


@dataclass
class ExtractArguments:
    model: str | None = field(default=None, metadata={"help": "A VersaViT model folder (save_pretrained output)."})
    mllm: str | None = field(
        default=None,
        metadata={"help": "An MLLM folder of any tower family: use its vision tower (VersaViTModel.from_mllm)."},
    )
    images: list[str] = field(
        default_factory=list,
        metadata={"help": f"Image files. Default: scikit-image's sample photos {', '.join(SAMPLE_PHOTOS)}."},
    )
    layers: list[int] = field(
        default_factory=lambda: [0, -1],
        metadata={"help": "hidden_states indices to extract (0 = patch embedding, -1 = last block)."},
    )
    max_pixels: int = field(default=448 * 448, metadata={"help": "Resize budget per image (pixels), as Qwen2-VL."})
    output_dir: str = field(default="outputs/extract_features", metadata={"help": "Where PNGs and features go."})
    depth: int = field(default=4, metadata={"help": "Blocks of the random backbone used without --model/--mllm."})
    embed_dim: int = field(default=128, metadata={"help": "Width of the random backbone used without --model/--mllm."})
    seed: int = field(default=0, metadata={"help": "Seed of the random backbone."})


def sample_photos() -> list[tuple[str, PIL.Image.Image]]:
    try:
        import skimage.data
    except ImportError as err:  # pragma: no cover - scikit-image is a test/demo dependency
        raise SystemExit("No --images given and scikit-image (sample photos) is not installed.") from err
    return [(name, load_image(PIL.Image.fromarray(getattr(skimage.data, name)()))) for name in SAMPLE_PHOTOS]


def build_model(args: ExtractArguments) -> VersaViTModel:
    vision = None
    if not (args.model or args.mllm):
        vision = {"model_type": "qwen2_vl_vision", "depth": args.depth, "embed_dim": args.embed_dim,
                  "num_heads": max(1, args.embed_dim // 32), "hidden_size": 2 * args.embed_dim}
    try:
        return backbone_from(args.model, args.mllm, vision, seed=args.seed)
    except (ValueError, OSError) as err:
        raise SystemExit(f"extract_features.py: error: {err}") from None


def pca_image(feature_map: torch.Tensor) -> PIL.Image.Image:
    """(C, h, w) features -> RGB image of their first three principal components, each stretched to [0, 255]."""
    channels, height, width = feature_map.shape
    x = feature_map.float().reshape(channels, -1).T
    x = x - x.mean(0)
    _, _, v = torch.pca_lowrank(x, q=min(3, channels), center=False)
    components = x @ v
    lo, hi = components.quantile(0.01, dim=0), components.quantile(0.99, dim=0)
    components = ((components - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    if components.shape[1] < 3:
        components = torch.cat([components, components[:, :1].expand(-1, 3 - components.shape[1])], dim=1)
    rgb = (components.reshape(height, width, 3).numpy() * 255).astype(np.uint8)
    return PIL.Image.fromarray(rgb)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ExtractArguments).parse_args_into_dataclasses(args=argv)
    named = [(Path(p).stem, load_image(p)) for p in args.images] if args.images else sample_photos()
    if len({name for name, _ in named}) < len(named):  # same file name in two folders: keep outputs apart
        named = [(f"{i}_{name}", image) for i, (name, image) in enumerate(named)]
    model = build_model(args).eval()
    towers = model.config.backbone.image_processor_kwargs(model.config.vision_config)  # the tower family's layout
    processor = VersaViTImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": args.max_pixels}, **towers)
    inputs = processor(images=[image for _, image in named], return_tensors="pt")

    with torch.inference_mode():
        outputs = model(**inputs)
        maps = model.get_dense_features(**inputs, layers=args.layers, stack=False)

    family = model.config.backbone_family
    print(f"backbone: {family}, {model.config.num_hidden_layers} blocks, width {model.config.embed_dim}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    print(f"pixel_values {tuple(inputs['pixel_values'].shape)}  image_grid_thw {inputs['image_grid_thw'].tolist()}")
    print(f"last_hidden_state (pre-merger) {tuple(outputs.last_hidden_state.shape)}")
    print(f"pooler_output (merged, MLLM-ready) {tuple(outputs.pooler_output.shape)}")

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, summary = {}, {"backbone": family, "images": []}
    for i, (name, image) in enumerate(named):
        shapes = {}
        for layer, layer_maps in zip(args.layers, maps):
            tensors[f"{name}.layer{layer}"] = layer_maps[i].contiguous()
            shapes[str(layer)] = list(layer_maps[i].shape)
        print(f"  {name}: {image.width}x{image.height} px -> dense maps (C, h, w) per layer {shapes}")
        _, h, w = maps[0][i].shape
        tile = (w * model.config.patch_size, h * model.config.patch_size)
        panel = PIL.Image.new("RGB", (tile[0] * (1 + len(maps)), tile[1]), "white")
        panel.paste(image.resize(tile), (0, 0))
        for column, layer_maps in enumerate(maps, start=1):
            panel.paste(pca_image(layer_maps[i]).resize(tile, PIL.Image.NEAREST), (column * tile[0], 0))
        png = out_dir / f"{name}_features.png"
        panel.save(png)
        summary["images"].append({"name": name, "size": [image.width, image.height], "maps": shapes, "png": str(png)})
    save_file(tensors, out_dir / "features.safetensors")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(named)} PCA panels, features.safetensors and summary.json to {out_dir}/")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
