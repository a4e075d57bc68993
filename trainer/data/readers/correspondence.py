# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Correspondence (`CorrespondenceSource`: image pairs with matching points): SPair-71k, NAVI (from depth maps and
camera poses) and each scene from a second camera."""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import PIL.Image

from modeling_versavit import load_image

from ..scenes import Camera, corresponding_pixels, generate_scene, render
from .common import require_path, scenes_name


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
        image_b, depth_b, _ = render(scene.objects, view_b, scene.light, scene.ground, scene.walls)
        rows, cols = np.nonzero(scene.instances > 0)
        rows_b, cols_b, visible = corresponding_pixels(scene.depth, scene.camera, depth_b, view_b, rows, cols)
        keep = np.nonzero(visible)[0]
        if len(keep) == 0:
            continue
        keep = np.random.default_rng(seed + index).choice(keep, size=min(points, len(keep)), replace=False)
        items.append((scene.image, image_b, np.stack([rows[keep], cols[keep]], 1).astype(np.float64),
                      np.stack([rows_b[keep], cols_b[keep]], 1), max(scene.camera.width, scene.camera.height_px)))
    return CorrespondenceSource(scenes_name(style), items)


def spair(root, split: str = "test") -> CorrespondenceSource:
    """SPair-71k (semantic correspondence): `PairAnnotation/<split>/*.json` pairs (`src_imname`, `trg_imname`,
    `category`, `src_kps` / `trg_kps` as `[x, y]` lists in the same order, `trg_bndbox` `[x1, y1, x2, y2]`) with
    the images under `JPEGImages/<category>/`; thresholds are fractions of the target box's longer side
    (PCK@α_bbox)."""
    root = require_path(Path(root), "spair root")
    folder = require_path(root / "PairAnnotation" / split, f"SPair split {split!r}")
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
            require_path(image, "SPair image")
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
        image = require_path(folder / "images" / filename, "NAVI image")
        depth = require_path(folder / "depth" / f"{Path(filename).stem}.png", "NAVI depth map")
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
    root = require_path(Path(root), "NAVI root")
    pattern = "*/wild_set/annotations.json" if collection == "wild_set" else "*/multiview*/annotations.json"
    collections = {path.parent: _navi_views(path) for path in sorted(root.glob(pattern))}
    if not collections:
        raise ValueError(f"{root}: no NAVI {collection} collection ({pattern}).")
    official = root / "custom_splits" / "pairwise_pixel_correspondences" / f"pairs-{collection}.txt"
    listed = Path(pairs) if pairs else official
    items = []
    if pairs or listed.is_file():
        lines = require_path(listed, "NAVI pairs file").read_text().splitlines()
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


__all__ = [
    "CorrespondenceSource",
    "NAVI_COLLECTIONS",
    "NAVI_DEPTH_SCALE",
    "NaviSource",
    "NaviView",
    "navi",
    "navi_depth",
    "quaternion_matrix",
    "scene_correspondences",
    "spair",
]
