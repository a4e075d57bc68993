# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Metric depth (`DepthSource`: NYUv2 and KITTI's Eigen split, the generated scenes, scikit-image's stereo pair) and
relative-depth pairs (`PairSource`: DA-2K)."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from modeling_versavit import load_image

from ..scenes import Camera, generate_scene, scene_style
from .common import check_pairs, inside, require_path


@dataclass
class DepthSource:
    name: str
    items: list  # (image path, depth path) pairs, or (image array, depth array) pairs in memory
    depth_scale: float = 1.0  # stored value per metre
    min_depth: float = 1e-3
    max_depth: float | None = None
    crop: str | None = None  # "eigen", "garg" or None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, np.ndarray]:
        """The RGB image and its float32 depth in metres (NaN where unlabelled)."""
        image, depth = self.items[index]
        if isinstance(image, np.ndarray):
            values = np.asarray(depth, dtype=np.float32)
            return PIL.Image.fromarray(image), np.where(np.isfinite(values) & (values > 0), values, np.nan)
        picture = load_image(image)
        with PIL.Image.open(depth) as handle:
            stored = np.asarray(handle, dtype=np.float64)
        if stored.ndim != 2 or stored.shape != (picture.height, picture.width):
            raise ValueError(f"{depth}: depth map of shape {stored.shape} does not match its image "
                             f"{picture.height}x{picture.width}.")
        return picture, np.where(stored > 0, stored / self.depth_scale, np.nan).astype(np.float32)


@dataclass
class PairSource:
    """Images with point pairs whose depth order is annotated (DA-2K)."""

    name: str
    items: list  # (image path, [{"point1": (row, col), "point2": (row, col), "closer_point": "point1" | "point2"}])

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, list[dict]]:
        image, pairs = self.items[index]
        return load_image(image), pairs


def da2k(root) -> PairSource:
    """DA-2K's layout: `root/annotations.json` and the images it names (paths relative to `root`). A malformed entry
    is a `ValueError` naming the image and the pair."""
    root = Path(root)
    annotations = require_path(root / "annotations.json", "DA-2K annotations.json")
    try:
        data = json.loads(annotations.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{annotations}: not valid JSON ({err}).") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{annotations}: expected a mapping of image paths to lists of point pairs.")
    items = []
    for name, pairs in sorted(data.items()):
        pairs = pairs if isinstance(pairs, list) else [pairs]
        for number, pair in enumerate(pairs):
            points_ok = all(isinstance(pair.get(key), (list, tuple)) and len(pair[key]) == 2
                            and all(isinstance(v, (int, float)) for v in pair[key]) for key in ("point1", "point2")) \
                if isinstance(pair, dict) else False
            if not points_ok or pair.get("closer_point") not in ("point1", "point2"):
                raise ValueError(f"{annotations}: pair {number} of {name} needs point1 and point2 as [row, col] and "
                                 f"closer_point 'point1' or 'point2', got {pair!r}.")
        items.append((require_path(inside(root, name, str(annotations)), f"image of {annotations.name}"), pairs))
    return PairSource("da2k", items)


def _split_file_pairs(split_file: Path, image_root: Path, depth_root: Path, name: str) -> list[tuple[Path, Path]]:
    pairs = []
    for number, line in enumerate(require_path(split_file, f"{name} split file").read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"{split_file}:{number}: expected '<image> <depth> [focal]', got {line!r}.")
        if fields[1] == "None":
            continue  # an image without ground truth (KITTI's Eigen split has some)
        pairs.append((image_root / fields[0].lstrip("/"), depth_root / fields[1].lstrip("/")))
    return check_pairs(pairs, name)


def nyuv2(split_file, image_root=None, depth_root=None) -> DepthSource:
    split_file = Path(split_file)
    image_root = Path(image_root or split_file.parent)
    pairs = _split_file_pairs(split_file, image_root, Path(depth_root or image_root), "NYUv2")
    return DepthSource("nyuv2", pairs, depth_scale=1000.0, max_depth=10.0, crop="eigen")


def kitti(split_file, image_root=None, depth_root=None) -> DepthSource:
    split_file = Path(split_file)
    image_root = Path(image_root or split_file.parent)
    pairs = _split_file_pairs(split_file, image_root, Path(depth_root or image_root), "KITTI")
    return DepthSource("kitti", pairs, depth_scale=256.0, max_depth=80.0, crop="garg")


def scene_depth(num_scenes: int, seed: int = 0, camera: Camera | None = None, style: str = "simple") -> DepthSource:
    """Generated scenes of `style` as metric depth (metres; the sky is unlabelled), evaluated within the style's
    range (`SceneStyle.max_depth`): up to 10 m in a room as NYUv2 is, up to 30 m on open ground as KITTI is up to
    80 m (the ground plane reaches hundreds of metres at the horizon)."""
    scenes = (generate_scene(seed + i, camera, style=style) for i in range(num_scenes))
    items = [(scene.image, scene.depth) for scene in scenes]
    return DepthSource("scenes", items, max_depth=scene_style(style).max_depth)


def stereo_motorcycle() -> DepthSource:
    """scikit-image's real Middlebury `stereo_motorcycle` left image with its disparity (inf = unknown) as the
    target: a tiny real-data check (disparity, not metres)."""
    import skimage.data

    left, _, disparity = skimage.data.stereo_motorcycle()
    return DepthSource("stereo_motorcycle", [(left, disparity)], max_depth=None)


__all__ = ["DepthSource", "PairSource", "da2k", "kitti", "nyuv2", "scene_depth", "stereo_motorcycle"]
