#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Keypoint correspondence of a frozen encoder's dense features (the paper's Table 8; supplement §9.2).

    python recipes/evaluation/eval_correspondence.py                          # outputs/demo/backbone, generated scenes
    python recipes/evaluation/eval_correspondence.py --mllm models/Qwen2-VL-7B-Instruct --dataset spair \\
        --data_root data/SPair-71k --size 896                                  # the paper's SPair setting
    python recipes/evaluation/eval_correspondence.py --mllm models/Qwen2-VL-7B-Instruct --dataset navi \\
        --data_root data/navi_v1.5 --size 448                                  # the paper's NAVI setting (wild_set)

For every annotated point of image A, the location of image B whose last-layer feature is most similar (cosine,
nearest neighbour over B's patch grid) is its match; recall is the share of matches within 5 / 10 / 20 % of the
pair's scale of the true point. Datasets: scenes (each generated scene from a second camera, moved sideways and
turned; exact ray-cast correspondences with occlusion checked; scale = the image's longer side), spair
(SPair-71k's PairAnnotation/<split>/*.json and JPEGImages/; scale = the target box's longer side, PCK@α_bbox) and
navi (NAVI's <object>/wild_set or multiview*/ folders: annotations.json, images/, depth/; each pair's points are
object pixels of A that B sees too, from the depth maps and camera poses, occlusion checked; scale = B's longer
side; pairs from NAVI's custom_splits pairs file when present, else consecutive views at most 120 degrees apart).
Writes output_dir/results.json and model_index.json; the encoder never changes.
"""

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from versavit_trainer.data import readers
from versavit_trainer.evaluation.correspondence import THRESHOLDS, correspondence_recall
from versavit_trainer.evaluation.probe_runs import load_backbone, write_results
from versavit_trainer.evaluation.probes import FrozenFeatures

DATASETS = ("scenes", "spair", "navi")


@dataclass
class CorrespondenceArguments:
    model: str | None = field(default=None, metadata={"help": "A VersaViT folder (default outputs/demo/backbone when "
                                                              "no encoder is given)."})
    mllm: str | None = field(
        default=None, metadata={"help": "An MLLM folder of any tower family: evaluate its own tower."}
    )
    vision_config: str | None = field(default=None, metadata={"help": "JSON of a random tower (a floor to compare)."})
    dataset: str = field(default="scenes", metadata={"help": f"One of {DATASETS}."})
    data_root: str | None = field(default=None, metadata={"help": "spair / navi: the SPair-71k or NAVI folder."})
    split: str = field(default="test", metadata={"help": "spair: the split (trn, val, test)."})
    collection: str = field(default="wild_set", metadata={"help": "navi: wild_set or multiview."})
    pairs: str | None = field(default=None, metadata={"help": "navi: a pairs file (image_path_1 image_path_2 angle "
                                                              "per line); default NAVI's custom_splits file."})
    num_pairs: int = field(default=24, metadata={"help": "scenes: generated pairs."})
    scene_style: str = field(default="simple", metadata={"help": "scenes: simple or cluttered (more, smaller, "
                                                                    "look-alike and striped objects, varied light and "
                                                                    "camera)."})
    size: int = field(default=224, metadata={"help": "Square input side (the paper: 448 NAVI, 896 SPair)."})
    seed: int = field(default=0, metadata={"help": "Seed of a random tower."})
    output_dir: str = field(default="outputs/correspondence", metadata={"help": "Where results.json goes."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(CorrespondenceArguments).parse_args_into_dataclasses(args=argv)
    if not (args.model or args.mllm or args.vision_config):
        args.model = "outputs/demo/backbone"
    try:
        if args.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {DATASETS}, got {args.dataset!r}.")
        if args.dataset != "scenes" and not args.data_root:
            folder = "SPair-71k" if args.dataset == "spair" else "NAVI"
            raise ValueError(f"data_root: {args.dataset} needs the {folder} folder.")
        if args.dataset == "scenes":
            source = readers.scene_correspondences(args.num_pairs, 9000, camera=None, second=None,
                                                   style=args.scene_style)
        elif args.dataset == "spair":
            source = readers.spair(args.data_root, args.split)
        else:
            source = readers.navi(args.data_root, args.collection, args.pairs)
        features = FrozenFeatures(load_backbone(args), args.size)
        metrics = correspondence_recall(features, source)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"eval_correspondence.py: error: {err}") from None
    print(f"{source.name} correspondence ({metrics['num_pairs']} pairs, {metrics['num_points']} points, "
          f"{args.size} px): " + "  ".join(f"recall@{t:g} {metrics[f'recall@{t:g}']:.3f}" for t in THRESHOLDS))
    dataset_type = {"scenes": "versavit-scenes", "spair": "spair-71k", "navi": "navi"}[args.dataset]
    model_index = [{"task_type": "keypoint-matching", "dataset_type": dataset_type,
                    "dataset_name": source.name, "metric_type": f"recall_at_{t:g}",
                    "metric_name": f"correspondence recall @ {t:g}", "metric_value": round(metrics[f"recall@{t:g}"], 4)}
                   for t in THRESHOLDS]
    summary = {"encoder": args.model or args.mllm or "random", "dataset": args.dataset, "size": args.size,
               "results": metrics, "model_index": model_index}
    return write_results(args.output_dir, summary, model_index)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
