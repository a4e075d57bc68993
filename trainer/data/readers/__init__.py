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

One module per kind: `segmentation`, `depth`, `text` (retrieval, classification, MMVP), `correspondence`, `refcoco`;
`common` holds what they share. Every name is importable from `versavit_trainer.data.readers`.

A malformed layout (missing folder, split file, image or label, a line that does not parse) raises a `ValueError`
or `FileNotFoundError` naming the file.
"""

from .common import IMAGE_SUFFIXES, inside
from .correspondence import (
    CorrespondenceSource,
    NaviSource,
    NaviView,
    navi,
    navi_depth,
    quaternion_matrix,
    scene_correspondences,
    spair,
)
from .depth import DepthSource, PairSource, da2k, kitti, nyuv2, scene_depth, stereo_motorcycle
from .refcoco import REF_KEYS, UnsafePickleError, load_builtin_pickle, refcoco_refs
from .segmentation import (
    SCENE_CLASSES,
    SegmentationSource,
    ade20k,
    cityscapes,
    pascal_voc,
    sa1b,
    sa1b_masks,
    scene_segmentation,
)
from .text import (
    SCENE_PROMPT,
    CaptionSource,
    ClassificationSource,
    StatementPairSource,
    image_folder_classes,
    karpathy,
    mmvp_vlm,
    scene_captions,
    scene_classes,
)

__all__ = [
    "IMAGE_SUFFIXES", "SCENE_CLASSES", "SCENE_PROMPT", "REF_KEYS", "CaptionSource", "ClassificationSource",
    "CorrespondenceSource", "DepthSource", "NaviSource", "NaviView", "PairSource", "SegmentationSource",
    "StatementPairSource", "UnsafePickleError", "ade20k", "cityscapes", "da2k", "image_folder_classes", "inside",
    "karpathy", "kitti", "load_builtin_pickle", "mmvp_vlm", "navi", "navi_depth", "nyuv2", "pascal_voc",
    "quaternion_matrix", "refcoco_refs", "sa1b", "sa1b_masks", "scene_captions", "scene_classes",
    "scene_correspondences", "scene_depth", "scene_segmentation", "spair", "stereo_motorcycle",
]
