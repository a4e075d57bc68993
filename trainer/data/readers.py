# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Readers for the standard on-disk layouts of the probe benchmarks, and the generated scenes as a benchmark.

Semantic segmentation (`SegmentationSource`: image paths, label paths, class count, ignore index):
- ADE20k: `ADEChallengeData2016/images/{training,validation}/*.jpg` + `annotations/.../*.png` (0 = "other",
  reduced: 150 classes).
- Pascal VOC 2012: `VOC2012/ImageSets/Segmentation/{train,val}.txt`, `JPEGImages/<id>.jpg`,
  `SegmentationClass/<id>.png` (palette indices, 21 classes, 255 = boundary).
- Cityscapes: `leftImg8bit/{train,val}/<city>/*_leftImg8bit.png` + `gtFine/.../*_gtFine_labelTrainIds.png` (19
  classes, 255 = ignore).

Metric depth (`DepthSource`: image paths, depth paths, scale, range, crop):
- NYUv2 and KITTI (Eigen split) as the BTS / DINOv2 depth code lays them out: a split file of lines
  `<image path> <depth path> <focal>` relative to the data folders; 16-bit PNG depth, millimetres for NYUv2
  (/1000, up to 10 m, Eigen crop), 1/256 m for KITTI (/256, up to 80 m, Garg crop); a depth path `None` has no label.

Relative-depth pairs: DA-2K (Depth Anything V2's benchmark, paper Table 9): `annotations.json` maps each image path
(relative to the folder, `images/<scene>/<name>.jpg`) to a list of `{"point1": [row, col], "point2": [row, col],
"closer_point": "point1" | "point2"}` (`PairSource`).

Image-text retrieval (`CaptionSource`: images with their captions): COCO / Flickr30k Karpathy splits
(`dataset_coco.json` / `dataset_flickr30k.json` with the images under a root folder, `karpathy`), and the generated
scenes' captions (`scene_captions`). Zero-shot classification (`ClassificationSource`): an ImageNet-style folder of
class folders (`image_folder_classes`), and the scenes labelled by their largest object's shape (`scene_classes`).
MMVP-VLM's CLIP-blind pairs (`Questions.csv` + `MLLM_VLM Images/<Type>/<id>.jpg`, `mmvp_vlm`: `StatementPairSource`).

Correspondence (`CorrespondenceSource`: image pairs with matching points): SPair-71k (`PairAnnotation/<split>/*.json`,
`JPEGImages/<category>/`, `spair`), NAVI (`<object>/{wild_set,multiview*}/annotations.json`, `images/`, `depth/`;
correspondences from the depth maps and camera poses, `navi`), and each scene seen from a second camera with exact
ray-cast correspondences (`scene_correspondences`).

Referring expressions: RefCOCO / RefCOCO+ / RefCOCOg's `refs(unc).p` / `refs(umd).p` (`refcoco_refs`), read with a
restricted unpickler that builds builtin containers and scalars only (the file is a pickle: plain `pickle.load` would
run whatever a tampered download asks for).

A malformed layout (missing folder, split file, image or label, a line that does not parse) raises a `ValueError`
or `FileNotFoundError` naming the file.
"""

import io
import json
import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import PIL.Image

from modeling_versavit import load_image

from .scenes import SHAPES, Camera, corresponding_pixels, generate_scene, render, scene_style

SCENE_CLASSES = ("sky", "ground", *SHAPES)


@dataclass
class SegmentationSource:
    name: str
    num_classes: int
    items: list  # (image path, label path) pairs, or (image array, label array) pairs in memory
    ignore_index: int = 255
    reduce_zero_label: bool = False
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, np.ndarray]:
        """The RGB image and its `(H, W)` int64 label map (the dataset's own ids)."""
        image, label = self.items[index]
        if isinstance(image, np.ndarray):
            return PIL.Image.fromarray(image), np.asarray(label, dtype=np.int64)
        picture = load_image(image)
        with PIL.Image.open(label) as handle:
            labels = np.asarray(handle, dtype=np.int64)  # palette PNGs give their indices, not colours
        if labels.ndim != 2 or labels.shape != (picture.height, picture.width):
            raise ValueError(f"{label}: label map of shape {labels.shape} does not match its image "
                             f"{picture.height}x{picture.width}.")
        return picture, labels


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


@dataclass
class CaptionSource:
    """Images with their captions (one or several each), for image-text retrieval."""

    name: str
    items: list  # (image path or HxWx3 uint8 array, [caption, ...])

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, list[str]]:
        image, captions = self.items[index]
        return (PIL.Image.fromarray(image) if isinstance(image, np.ndarray) else load_image(image)), list(captions)


def karpathy(split_json, image_root, split: str = "test") -> CaptionSource:
    """A Karpathy split of COCO or Flickr30k (`dataset_coco.json` / `dataset_flickr30k.json`: `images` entries with
    `filename`, optional `filepath` under `image_root`, `split` and `sentences[].raw`), the retrieval benchmarks'
    layout (5k / 1k test images, 5 captions each). `restval` counts as `train`."""
    path = _require(Path(split_json), "split_json")
    root = _require(Path(image_root), "image_root")
    try:
        entries = json.loads(path.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a Karpathy split file (a JSON object with an 'images' list): {err}.") from err
    items = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "filename" not in entry or "sentences" not in entry:
            raise ValueError(f"{path}: images[{index}] lacks 'filename' or 'sentences'.")
        if {"restval": "train"}.get(entry.get("split"), entry.get("split")) != split:
            continue
        captions = [s.get("raw", "").strip() for s in entry["sentences"] if isinstance(s, dict)]
        captions = [c for c in captions if c]
        if not captions:
            raise ValueError(f"{path}: images[{index}] ({entry['filename']}) has no caption.")
        items.append((inside(root, Path(entry.get("filepath", "")) / entry["filename"], f"{path}: filename"),
                      captions))
    if not items:
        raise ValueError(f"{path}: no image in split {split!r}.")
    return CaptionSource(path.stem.removeprefix("dataset_"), items)


def scene_captions(num_scenes: int, seed: int = 0, camera: Camera | None = Camera(),
                   style: str = "simple") -> CaptionSource:
    """Generated scenes with their captions (the objects they show, by colour, shape and position); `camera=None`
    takes the style's own camera."""
    scenes = (generate_scene(seed + i, camera, style=style) for i in range(num_scenes))
    return CaptionSource(_scenes_name(style), [(scene.image, [scene.caption]) for scene in scenes])


def _scenes_name(style: str) -> str:
    return "scenes" if style == "simple" else f"scenes-{style}"


@dataclass
class ClassificationSource:
    """Images with a class index each, and the class names prompts are made from."""

    name: str
    items: list  # (image path or HxWx3 uint8 array, class index)
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, int]:
        image, label = self.items[index]
        return (PIL.Image.fromarray(image) if isinstance(image, np.ndarray) else load_image(image)), int(label)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


def image_folder_classes(root, class_names=None) -> ClassificationSource:
    """An ImageNet-style folder: one sub-folder of images per class (`val/n01440764/*.JPEG`), classes in sorted
    folder order. `class_names` (a JSON file: a list in that order, or a {folder: name} map) gives the names the
    prompts use; by default the folder names, with `_` read as a space."""
    root = _require(Path(root), "classification root")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root}: no class folders (expected <root>/<class>/<image>).")
    names = [folder.name.replace("_", " ") for folder in folders]
    if class_names is not None:
        path = _require(Path(class_names), "class_names")
        given = json.loads(path.read_text())
        if isinstance(given, dict):
            missing = [folder.name for folder in folders if folder.name not in given]
            if missing:
                raise ValueError(f"{path}: no name for class folders {missing[:5]}.")
            names = [str(given[folder.name]) for folder in folders]
        elif isinstance(given, list) and len(given) == len(folders):
            names = [str(name) for name in given]
        else:
            raise ValueError(f"{path}: expected a list of {len(folders)} names or a {{folder: name}} map.")
    items = [(image, label) for label, folder in enumerate(folders)
             for image in sorted(folder.iterdir()) if image.suffix in IMAGE_SUFFIXES]
    if not items:
        raise ValueError(f"{root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES[:5])}, ...).")
    return ClassificationSource(root.name, items, tuple(names))


@dataclass
class StatementPairSource:
    """MMVP-style pairs: two images and two statements, statement k describing image k (and not the other); a
    model passes a pair when each statement scores higher with its own image than with the other one."""

    name: str
    items: list  # (image path 1, image path 2, statement 1, statement 2, category)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, PIL.Image.Image, str, str, str]:
        first, second, statement_1, statement_2, category = self.items[index]
        return load_image(first), load_image(second), statement_1, statement_2, category


MMVP_COLUMNS = ("Question ID", "Type", "Statement")


def mmvp_vlm(root) -> StatementPairSource:
    """MMVP-VLM (the paper's Table 15): `Questions.csv` with the columns `Question ID`, `Type`, `Statement`, its rows
    in pairs (the two images of a CLIP-blind pair, one after the other, of the same `Type`), and the images under
    `MLLM_VLM Images/<Type>/<Question ID>.jpg`. Each statement describes the image of its own row."""
    import csv

    root = _require(Path(root), "MMVP-VLM root")
    table = _require(root / "Questions.csv", "MMVP-VLM Questions.csv")
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in MMVP_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{table}: missing columns {missing} (MMVP-VLM has {list(MMVP_COLUMNS)}).")
        rows = [row for row in reader if any((value or "").strip() for value in row.values())]
    if len(rows) % 2:
        raise ValueError(f"{table}: {len(rows)} rows; MMVP-VLM's rows come in pairs.")
    items = []
    for first in range(0, len(rows), 2):
        pair = rows[first:first + 2]
        line = first + 2  # the header is line 1
        if pair[0]["Type"] != pair[1]["Type"]:
            raise ValueError(f"{table}:{line}-{line + 1}: a pair's two rows have different Types "
                             f"({pair[0]['Type']!r}, {pair[1]['Type']!r}).")
        images = []
        for offset, row in enumerate(pair):
            qid, statement = row["Question ID"].strip(), row["Statement"].strip()
            if not qid or not statement:
                raise ValueError(f"{table}:{line + offset}: empty Question ID or Statement.")
            image = inside(root / "MLLM_VLM Images", Path(row["Type"]) / f"{qid}.jpg", f"{table}:{line + offset}")
            images.append(_require(image, "MMVP-VLM image"))
        items.append((*images, pair[0]["Statement"].strip(), pair[1]["Statement"].strip(), pair[0]["Type"]))
    if not items:
        raise ValueError(f"{table}: no pairs.")
    return StatementPairSource("mmvp-vlm", items)


# The zero-shot prompt of a scene class, in the words of the scenes' captions.
SCENE_PROMPT = "A checkered floor with a {}."


def scene_classes(num_scenes: int, seed: int = 0, camera: Camera | None = Camera(),
                  style: str = "simple") -> ClassificationSource:
    """Generated scenes labelled with the shape of their largest visible object (the style's shapes); prompt them
    with `SCENE_PROMPT`; `camera=None` takes the style's own camera."""
    shapes = scene_style(style).shapes
    items = []
    for index in range(num_scenes):
        scene = generate_scene(seed + index, camera, style=style)
        areas = [(scene.instances == i + 1).sum() for i in range(len(scene.objects))]
        if areas:
            items.append((scene.image, shapes.index(scene.objects[int(np.argmax(areas))].shape)))
    return ClassificationSource(_scenes_name(style), items, shapes)


@dataclass
class CorrespondenceSource:
    """Image pairs with corresponding points: `points_a[k]` in image A shows what `points_b[k]` shows in image B,
    `(row, col)` pixel coordinates; `scale` (pixels) is what recall thresholds are fractions of."""

    name: str
    items: list  # (image A, image B, (N, 2) points_a, (N, 2) points_b, scale); images as paths or uint8 arrays

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[PIL.Image.Image, PIL.Image.Image, np.ndarray, np.ndarray, float]:
        image_a, image_b, points_a, points_b, scale = self.items[index]
        pictures = [PIL.Image.fromarray(i) if isinstance(i, np.ndarray) else load_image(i) for i in (image_a, image_b)]
        return (*pictures, np.asarray(points_a, dtype=np.float64), np.asarray(points_b, dtype=np.float64), float(scale))


def scene_correspondences(num_pairs: int, seed: int = 0, camera: Camera | None = Camera(),
                          second: Camera | None = Camera(x=0.6, yaw=0.12), points: int = 40,
                          style: str = "simple") -> CorrespondenceSource:
    """Each generated scene seen from `camera` and from `second`: up to `points` object pixels of view A that view
    B sees too (ray-cast geometry, occlusion checked), with their exact position in B; recall thresholds are
    fractions of the image's longer side (as NAVI's image-level thresholds). `camera=None` takes the scene style's
    own camera (the cluttered style draws its height and pitch per scene); `second=None` is the first camera moved
    0.6 m sideways and turned 0.12 rad, as the default second camera is from the default first."""
    items = []
    for index in range(num_pairs):
        scene = generate_scene(seed + index, camera, style=style)
        view_b = second if second is not None else replace(scene.camera, x=scene.camera.x + 0.6,
                                                           yaw=scene.camera.yaw + 0.12)
        image_b, depth_b, _ = render(scene.objects, view_b, scene.light, scene.ground)
        rows, cols = np.nonzero(scene.instances > 0)
        rows_b, cols_b, visible = corresponding_pixels(scene.depth, scene.camera, depth_b, view_b, rows, cols)
        keep = np.nonzero(visible)[0]
        if len(keep) == 0:
            continue
        keep = np.random.default_rng(seed + index).choice(keep, size=min(points, len(keep)), replace=False)
        items.append((scene.image, image_b, np.stack([rows[keep], cols[keep]], 1).astype(np.float64),
                      np.stack([rows_b[keep], cols_b[keep]], 1), max(scene.camera.width, scene.camera.height_px)))
    return CorrespondenceSource(_scenes_name(style), items)


def spair(root, split: str = "test") -> CorrespondenceSource:
    """SPair-71k (semantic correspondence): `PairAnnotation/<split>/*.json` pairs (`src_imname`, `trg_imname`,
    `category`, `src_kps` / `trg_kps` as `[x, y]` lists in the same order, `trg_bndbox` `[x1, y1, x2, y2]`) with
    the images under `JPEGImages/<category>/`; thresholds are fractions of the target box's longer side
    (PCK@α_bbox)."""
    root = _require(Path(root), "spair root")
    folder = _require(root / "PairAnnotation" / split, f"SPair split {split!r}")
    items = []
    for path in sorted(folder.glob("*.json")):
        try:
            pair = json.loads(path.read_text())
            source, target = np.asarray(pair["src_kps"], float), np.asarray(pair["trg_kps"], float)
            x1, y1, x2, y2 = pair["trg_bndbox"]
            images = [root / "JPEGImages" / pair["category"] / pair[key] for key in ("src_imname", "trg_imname")]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not an SPair-71k pair annotation ({err}).") from err
        if source.ndim != 2 or source.shape != target.shape or source.shape[1] != 2:
            raise ValueError(
                f"{path}: src_kps {source.shape} and trg_kps {target.shape} must be matching [x, y] lists."
            )
        for image in images:
            _require(image, "SPair image")
        items.append((*images, source[:, ::-1].copy(), target[:, ::-1].copy(), max(x2 - x1, y2 - y1)))
    if not items:
        raise ValueError(f"{folder}: no pair annotations (*.json).")
    return CorrespondenceSource("spair", items)


NAVI_DEPTH_SCALE = 65535 * 10.0  # NAVI's depth PNGs hold this / depth (millimetres): a disparity, 0 = no depth
NAVI_COLLECTIONS = ("wild_set", "multiview")


def navi_depth(path) -> np.ndarray:
    """A NAVI depth map in millimetres, `inf` where the PNG holds 0 (no depth): NAVI stores the disparity
    `65535 * 10 / depth` as a 16-bit PNG."""
    with PIL.Image.open(path) as picture:
        values = np.asarray(picture).astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"{path}: a NAVI depth map has one channel, got shape {values.shape}.")
    with np.errstate(divide="ignore"):
        return np.where(values > 0, NAVI_DEPTH_SCALE / values, np.inf)


def quaternion_matrix(q) -> np.ndarray:
    """The rotation matrix of a `[w, x, y, z]` quaternion (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@dataclass
class NaviView:
    """One annotated NAVI image: its pose maps object points (millimetres) into the camera's frame as
    `rotation @ p + translation`, OpenCV axes (x right, y down, z forward); a pinhole of `focal` pixels with the
    principal point at the image centre (pixel centres at +0.5, as Probe3D reads NAVI)."""

    image: Path
    depth: Path
    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    size: tuple[int, int]  # (height, width)

    @property
    def height_px(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Object points `(N, 3)` -> continuous `(rows, cols)` of their pixels (centres at integers) and z-depth;
        the geometry `scenes.corresponding_pixels` works with, as a scene `Camera`'s."""
        camera = points @ self.rotation.T + self.translation
        z = camera[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            rows = self.focal * camera[:, 1] / z + self.size[0] / 2 - 0.5
            cols = self.focal * camera[:, 0] / z + self.size[1] / 2 - 0.5
        return rows, cols, z

    def unproject(self, rows: np.ndarray, cols: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Object points `(N, 3)` of pixel centres `(rows, cols)` at their z-depths."""
        camera = np.stack([(cols + 0.5 - self.size[1] / 2) / self.focal * depth,
                           (rows + 0.5 - self.size[0] / 2) / self.focal * depth, depth], axis=-1)
        return (camera - self.translation) @ self.rotation


@dataclass
class NaviSource(CorrespondenceSource):
    """NAVI image pairs whose correspondences come from the depth maps and poses, computed when a pair is loaded
    (`items`: pairs of `NaviView`): up to `points` object pixels of A (finite depth) that B sees too, drawn with
    the pair's own seed; thresholds are fractions of B's longer side."""

    points: int = 40
    seed: int = 0
    tolerance: float = 0.02

    def load(self, index: int) -> tuple[PIL.Image.Image, PIL.Image.Image, np.ndarray, np.ndarray, float]:
        view_a, view_b = self.items[index]
        pictures, depths = [], []
        for view in (view_a, view_b):
            picture, depth = load_image(view.image), navi_depth(view.depth)
            height, width = view.size
            if (picture.height, picture.width) != view.size or depth.shape != view.size:
                raise ValueError(f"{view.image}: annotations.json gives image_size [{height}, {width}], but the image "
                                 f"is {picture.height}x{picture.width} and its depth map {depth.shape[0]}x"
                                 f"{depth.shape[1]} (height x width).")
            pictures.append(picture)
            depths.append(depth)
        rows, cols = np.nonzero(np.isfinite(depths[0]) & (depths[0] > 0))
        rows_b, cols_b, visible = corresponding_pixels(depths[0], view_a, depths[1], view_b, rows, cols, self.tolerance)
        keep = np.nonzero(visible)[0]
        keep = np.sort(np.random.default_rng([self.seed, index]).choice(keep, size=min(self.points, len(keep)),
                                                                          replace=False))
        return (*pictures, np.stack([rows[keep], cols[keep]], 1).astype(np.float64),
                np.stack([rows_b[keep], cols_b[keep]], 1), float(max(view_b.size)))


def _navi_views(annotations_path: Path) -> dict[str, NaviView]:
    """The views of one NAVI image collection, by image file name."""
    folder = annotations_path.parent
    try:
        entries = json.loads(annotations_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{annotations_path}: not JSON ({err}).") from err
    if not isinstance(entries, list):
        raise ValueError(f"{annotations_path}: expected a list of image annotations, got {type(entries).__name__}.")
    views = {}
    for position, entry in enumerate(entries):
        try:
            camera, filename = entry["camera"], entry["filename"]
            q, t = np.asarray(camera["q"], float), np.asarray(camera["t"], float)
            focal, (height, width) = float(camera["focal_length"]), entry["image_size"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{annotations_path}: entry {position} is not a NAVI annotation (needs camera.q, "
                             f"camera.t, camera.focal_length, filename, image_size): {err!r}.") from err
        if q.shape != (4,) or t.shape != (3,) or not np.isfinite([*q, *t, focal]).all() or not np.linalg.norm(q) > 0:
            raise ValueError(f"{annotations_path}: entry {position} ({filename}): camera.q must be 4 finite numbers "
                             f"(not all 0) and camera.t 3, got q={camera['q']}, t={camera['t']}.")
        if not focal > 0:
            raise ValueError(f"{annotations_path}: entry {position} ({filename}): focal_length must be > 0, got "
                             f"{focal}.")
        if not all(type(side) is int and side > 0 for side in (height, width)):
            raise ValueError(f"{annotations_path}: entry {position} ({filename}): image_size must be [height, width], "
                             f"two positive integers, got {entry['image_size']!r}.")
        image = _require(folder / "images" / filename, "NAVI image")
        depth = _require(folder / "depth" / f"{Path(filename).stem}.png", "NAVI depth map")
        views[filename] = NaviView(image, depth, quaternion_matrix(q), t, focal, (height, width))
    return views


def _rotation_degrees(a: NaviView, b: NaviView) -> float:
    cosine = (np.trace(b.rotation @ a.rotation.T) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def navi(root, collection: str = "wild_set", pairs: str | None = None, max_angle: float = 120.0, points: int = 40,
         seed: int = 0, tolerance: float = 0.02) -> NaviSource:
    """NAVI (geometric correspondence, the paper's Table 8 in the Probe3D setting): `<object>/<collection
    folder>/annotations.json` with `images/` and `depth/` beside it (`wild_set`, or every `multiview*` folder).

    Pairs: the lines `image_path_1 image_path_2 angle` of `pairs` (paths relative to `root`, as NAVI's
    `custom_splits/pairwise_pixel_correspondences/pairs-<collection>.txt`, read from there when `pairs` is not
    given and the file exists); otherwise each image with the next one of its collection whose camera turned by at
    most `max_angle` degrees (Probe3D pairs views up to 120 degrees apart). Correspondences come from the depth
    maps and poses (`NaviSource`)."""
    if collection not in NAVI_COLLECTIONS:
        raise ValueError(f"collection: expected one of {NAVI_COLLECTIONS}, got {collection!r}.")
    root = _require(Path(root), "NAVI root")
    pattern = "*/wild_set/annotations.json" if collection == "wild_set" else "*/multiview*/annotations.json"
    collections = {path.parent: _navi_views(path) for path in sorted(root.glob(pattern))}
    if not collections:
        raise ValueError(f"{root}: no NAVI {collection} collection ({pattern}).")
    official = root / "custom_splits" / "pairwise_pixel_correspondences" / f"pairs-{collection}.txt"
    listed = Path(pairs) if pairs else official
    items = []
    if pairs or listed.is_file():
        lines = _require(listed, "NAVI pairs file").read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{listed}:{number}: expected 'image_path_1 image_path_2 [angle]', got {line!r}.")
            views = []
            for name in fields[:2]:
                path = root / name.lstrip("/")
                view = collections.get(path.parent.parent, {}).get(path.name)
                if view is None or path.parent.name != "images":
                    raise ValueError(f"{listed}:{number}: {name} is not an annotated image of a {collection} "
                                     f"collection under {root} (<object>/<collection>/images/<file>).")
                views.append(view)
            items.append(tuple(views))
    else:
        for views in collections.values():
            ordered = list(views.values())
            for index, view in enumerate(ordered):
                partner = next((other for other in ordered[index + 1:]
                                if 0 < _rotation_degrees(view, other) <= max_angle), None)
                if partner is not None:
                    items.append((view, partner))
    if not items:
        raise ValueError(f"{root}: no NAVI {collection} pair (views at most {max_angle} degrees apart).")
    return NaviSource(f"navi-{collection}", items, points=points, seed=seed, tolerance=tolerance)


def da2k(root) -> PairSource:
    """DA-2K's layout: `root/annotations.json` and the images it names (paths relative to `root`). A malformed entry
    is a `ValueError` naming the image and the pair."""
    root = Path(root)
    annotations = _require(root / "annotations.json", "DA-2K annotations.json")
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
        items.append((_require(inside(root, name, str(annotations)), f"image of {annotations.name}"), pairs))
    return PairSource("da2k", items)


def sa1b(root) -> list[tuple[Path, Path]]:
    """SA-1B's layout: `root/<name>.jpg` beside its `root/<name>.json` (the masks), sorted; an image without its JSON is
    a `FileNotFoundError` naming it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"images: {root} is not a folder.")
    images = sorted(p for p in root.rglob("*.jpg") if p.is_file())
    return _check_pairs([(image, image.with_suffix(".json")) for image in images], f"SA-1B folder {root}")


def sa1b_masks(path, min_area: float = 0.0, max_masks: int | None = None) -> list[np.ndarray]:
    """The masks of one SA-1B annotation file (COCO RLE, decoded with pycocotools) as `(H, W)` bool arrays, largest
    first: those covering at least `min_area` of the image, at most `max_masks`. A malformed file is a `ValueError`
    naming it and the annotation."""
    from pycocotools import mask as mask_utils

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise ValueError(f"{path}: expected SA-1B's {{'image': ..., 'annotations': [...]}}.")
    masks = []
    for number, annotation in enumerate(annotations):
        rle = annotation.get("segmentation") if isinstance(annotation, dict) else None
        if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str) and isinstance(rle.get("size"), list)
                and len(rle["size"]) == 2):
            raise ValueError(f"{path}: annotation {number} needs a COCO RLE segmentation {{'size': [h, w], "
                             f"'counts': str}}, got {rle!r:.120}.")
        size = rle["size"]
        if not all(isinstance(side, int) and not isinstance(side, bool) and 0 < side <= 1 << 16 for side in size):
            raise ValueError(f"{path}: annotation {number} has the size {size!r}; expected [height, width], two "
                             "positive integers (at most 65536).")
        try:
            mask = mask_utils.decode({"size": size, "counts": rle["counts"].encode()}).astype(bool)
        except Exception as err:  # pycocotools raises what its C code meets (OverflowError, MemoryError, ...)
            raise ValueError(
                f"{path}: annotation {number}'s RLE does not decode ({type(err).__name__}: {err})."
            ) from None
        if mask.any() and mask.mean() >= min_area:
            masks.append(mask)
    masks.sort(key=lambda m: -int(m.sum()))
    return masks[:max_masks] if max_masks is not None else masks


def inside(root, name, what: str) -> Path:
    """`root / name` for a path `name` read from an input file (an annotation's image, a CSV's folder), which must be
    relative and stay inside `root`: an absolute path or one that climbs out with `..` is a `ValueError` naming
    `what` and the value, never read. The check is on the name itself, so a folder of symlinks the user made (images
    linked from a shared store) still reads."""
    root = Path(root)
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise ValueError(f"{what}: expected a file name relative to {root}, got {name!r}.")
    path, normal = root / name, os.path.normpath(str(name))
    if Path(name).is_absolute() or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise ValueError(f"{what}: {str(name)!r} is not a path inside {root}; paths in input files are read relative "
                         "to their folder and may not leave it.")
    return path


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing {what}.")
    return path


def _check_pairs(pairs: list[tuple[Path, Path]], name: str) -> list[tuple[Path, Path]]:
    if not pairs:
        raise ValueError(f"{name}: no samples found.")
    for image, label in pairs:
        _require(image, f"image of {name}")
        _require(label, f"label of {name} (for {image.name})")
    return pairs


def ade20k(root, split: str = "validation") -> SegmentationSource:
    root = Path(root)
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    images = _require(base / "images" / split, f"ADE20k {split} images")
    pairs = [(p, base / "annotations" / split / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
    return SegmentationSource("ade20k", 150, _check_pairs(pairs, f"ADE20k {split}"), reduce_zero_label=True)


def pascal_voc(root, split: str = "val") -> SegmentationSource:
    root = Path(root)
    base = root / "VOC2012" if (root / "VOC2012").is_dir() else root
    split_file = _require(base / "ImageSets" / "Segmentation" / f"{split}.txt", f"VOC {split} split file")
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    pairs = [(base / "JPEGImages" / f"{i}.jpg", base / "SegmentationClass" / f"{i}.png") for i in ids]
    return SegmentationSource("voc", 21, _check_pairs(pairs, f"VOC {split}"))


def cityscapes(root, split: str = "val") -> SegmentationSource:
    root = Path(root)
    images = _require(root / "leftImg8bit" / split, f"Cityscapes {split} images")
    pairs = []
    for image in sorted(images.glob("*/*_leftImg8bit.png")):
        stem = image.name.removesuffix("_leftImg8bit.png")
        pairs.append((image, root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"))
    return SegmentationSource("cityscapes", 19, _check_pairs(pairs, f"Cityscapes {split}"))


def _split_file_pairs(split_file: Path, image_root: Path, depth_root: Path, name: str) -> list[tuple[Path, Path]]:
    pairs = []
    for number, line in enumerate(_require(split_file, f"{name} split file").read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"{split_file}:{number}: expected '<image> <depth> [focal]', got {line!r}.")
        if fields[1] == "None":
            continue  # an image without ground truth (KITTI's Eigen split has some)
        pairs.append((image_root / fields[0].lstrip("/"), depth_root / fields[1].lstrip("/")))
    return _check_pairs(pairs, name)


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


def scene_segmentation(num_scenes: int, seed: int = 0, camera: Camera | None = None,
                       style: str = "simple") -> SegmentationSource:
    """Generated scenes of `style` as semantic segmentation: sky, ground and the style's primitive types (5 classes
    for the simple style, 6 for the cluttered one)."""
    classes = ("sky", "ground", *scene_style(style).shapes)
    items = []
    for index in range(num_scenes):
        scene = generate_scene(seed + index, camera, style=style)
        kinds = np.array([classes.index(o.shape) for o in scene.objects] or [0], dtype=np.int64)
        labels = np.where(scene.instances < 0, 0, np.where(scene.instances == 0, 1, 0)).astype(np.int64)
        objects = scene.instances > 0
        labels[objects] = kinds[scene.instances[objects] - 1]
        items.append((scene.image, labels))
    return SegmentationSource("scenes", len(classes), items, class_names=classes)


def scene_depth(num_scenes: int, seed: int = 0, camera: Camera | None = None, style: str = "simple") -> DepthSource:
    """Generated scenes of `style` as metric depth (metres; the sky is unlabelled), evaluated up to 30 m as KITTI is
    up to 80 m (the ground plane reaches hundreds of metres at the horizon)."""
    scenes = (generate_scene(seed + i, camera, style=style) for i in range(num_scenes))
    items = [(scene.image, scene.depth) for scene in scenes]
    return DepthSource("scenes", items, max_depth=30.0)


def stereo_motorcycle() -> DepthSource:
    """scikit-image's real Middlebury `stereo_motorcycle` left image with its disparity (inf = unknown) as the
    target: a tiny real-data check (disparity, not metres)."""
    import skimage.data

    left, _, disparity = skimage.data.stereo_motorcycle()
    return DepthSource("stereo_motorcycle", [(left, disparity)], max_depth=None)


# ---------------------------------------------------------------------------------------------- referring refs
# What a refs pickle may build: builtin containers and scalars. Lists, dicts, tuples, strings, bytes, numbers, bools
# and None are pickle opcodes and need no global at all; sets and a few constructors are looked up as globals
# (`__builtin__` in Python 2 pickles, which RefCOCO's are). Everything else, `posix.system` or
# `copy_reg._reconstructor` (arbitrary objects) included, is refused before it is called.
_SAFE_BUILTINS = frozenset({"set", "frozenset", "list", "dict", "tuple", "str", "bytes", "bytearray", "int", "float",
                            "complex", "bool"})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed builtins; nothing it named was called."""


class _BuiltinsUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class("builtins", name)
        raise UnsafePickleError(
            f"{self.source}: refused the global {module}.{name}; a refs file holds only builtin containers and "
            f"scalars ({', '.join(sorted(_SAFE_BUILTINS))}), so this file is not a RefCOCO refs file or was tampered "
            "with. Nothing it names was run."
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent id {pid!r}; a refs file holds none.")


def load_builtin_pickle(path) -> object:
    """The object in the pickle file `path`, built from builtin containers and scalars only (`UnsafePickleError`,
    naming the file and the global, for anything else; nothing it names is called)."""
    path = Path(path)
    data = _require(path, "pickle file").read_bytes()
    try:
        return _BuiltinsUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # truncated or not a pickle at all: EOFError, UnpicklingError, ValueError, ...
        raise ValueError(f"{path}: not a readable pickle ({type(err).__name__}: {err}).") from None


REF_KEYS = ("image_id", "ann_id", "split", "sentences")


def refcoco_refs(path) -> list[dict]:
    """The refs of RefCOCO / RefCOCO+ / RefCOCOg's `refs(unc).p` / `refs(umd).p`: a list of dicts with at least
    `REF_KEYS`, read by `load_builtin_pickle` (a file that asks for code to run is refused, naming the global)."""
    refs = load_builtin_pickle(path)
    if not isinstance(refs, list):
        raise ValueError(f"refs: {path} holds a {type(refs).__name__}, expected the list of refs of refs(unc).p.")
    for position, ref in enumerate(refs):
        missing = [key for key in REF_KEYS if not isinstance(ref, dict) or key not in ref]
        if missing:
            raise ValueError(f"refs: entry {position} of {path} lacks {missing} (a ref has {list(REF_KEYS)}).")
    return refs


__all__ = [
    "inside",
    "CorrespondenceSource",
    "scene_correspondences",
    "spair",
    "NaviSource",
    "NaviView",
    "navi",
    "navi_depth",
    "quaternion_matrix",
    "CaptionSource",
    "ClassificationSource",
    "image_folder_classes",
    "scene_classes",
    "StatementPairSource",
    "mmvp_vlm",
    "SCENE_PROMPT",
    "DepthSource",
    "karpathy",
    "scene_captions",
    "PairSource",
    "REF_KEYS",
    "UnsafePickleError",
    "load_builtin_pickle",
    "refcoco_refs",
    "sa1b",
    "sa1b_masks",
    "SCENE_CLASSES",
    "SegmentationSource",
    "ade20k",
    "cityscapes",
    "da2k",
    "kitti",
    "nyuv2",
    "pascal_voc",
    "scene_depth",
    "scene_segmentation",
    "stereo_motorcycle",
]
