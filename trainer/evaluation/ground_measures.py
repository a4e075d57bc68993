# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground's measurements of one tower, its weights frozen, on held-out scenes no run trained on
(`HeldOut`): linear probes (`probe_tower`), out-of-task columns and the QA protocol; each cached beside the tower's
digest and the settings that made it."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import readers
from ..data.scenes import generate_scene
from ..metrics import depth_metrics
from .ground_runs import Runner, prune, tower_digest
from .ground_tables import PROBE_EVAL_SEED, PROBE_TRAIN_SEED, QA_EVAL_SEED
from .out_of_task import scene_out_of_task
from .probes import (
    FrozenFeatures,
    ProbeSettings,
    evaluate_depth_probe,
    evaluate_segmentation_probe,
    train_depth_probe,
    train_segmentation_probe,
)
from .qa import majority_accuracy, qa_accuracy, scene_questions


@dataclass
class HeldOut:
    """The measurement data, the same for every tower: probe training and held-out scenes, the held-out scenes'
    object masks, and the QA protocol's held-out questions with their majority-answer floor."""

    seg_train: object
    seg_eval: object
    depth_train: object
    depth_eval: object
    object_masks: list
    questions: list
    majority_qa: float

    @classmethod
    def build(cls, args, num_train_scenes: int) -> "HeldOut":
        style = args.scene_style
        eval_scenes = [generate_scene(PROBE_EVAL_SEED + i, style=style) for i in range(args.eval_scenes)]
        questions = scene_questions(args.qa_scenes, QA_EVAL_SEED, style=style)
        return cls(readers.scene_segmentation(args.probe_scenes, PROBE_TRAIN_SEED, style=style),
                   readers.scene_segmentation(args.eval_scenes, PROBE_EVAL_SEED, style=style),
                   readers.scene_depth(args.probe_scenes, PROBE_TRAIN_SEED, style=style),
                   readers.scene_depth(args.eval_scenes, PROBE_EVAL_SEED, style=style),
                   [scene.instances > 0 for scene in eval_scenes], questions,
                   majority_accuracy(scene_questions(num_train_scenes, 0, style=style), questions))


def probe_tower(backbone_dir: Path, seed: int, args, data: HeldOut) -> tuple[dict, dict]:
    """Frozen-feature linear probes of one tower: (metrics, predictions on the held-out scenes for the figure)."""
    from ..core.models import backbone_from

    encoder = backbone_from(str(backbone_dir), dtype=torch.float32)
    settings = ProbeSettings(size=args.probe_size, steps=args.probe_steps, seed=seed)
    features = FrozenFeatures(encoder, args.probe_size)
    head, _ = train_segmentation_probe(features, data.seg_train, settings)
    segmentation, seg_predictions = evaluate_segmentation_probe(features, head, data.seg_eval)
    head, _ = train_depth_probe(features, data.depth_train, settings)
    depth, depth_predictions = evaluate_depth_probe(features, head, data.depth_eval)
    objects = [depth_metrics(prediction, torch.from_numpy(data.depth_eval.load(i)[1]), data.depth_eval.min_depth,
                             data.depth_eval.max_depth, torch.from_numpy(mask))
               for i, (prediction, mask) in enumerate(zip(depth_predictions, data.object_masks))]
    object_rmse = [score["rmse"] for score in objects if score is not None]
    per_class = segmentation["per_category_iou"]  # the background (sky or walls), ground, then the shape classes
    metrics = {"seg_miou": float(np.nanmean(per_class[2:])), "background_iou": float(np.nanmean(per_class[:2])),
               "depth_rmse": depth["rmse"], "depth_abs_rel": depth["abs_rel"], "depth_delta1": depth["delta1"],
               "object_rmse": float(np.mean(object_rmse)) if object_rmse else float("nan"),
               "per_class_iou": dict(zip(data.seg_eval.class_names, per_class))}
    count = args.num_examples
    return metrics, {"segmentations": seg_predictions[:count], "depths": depth_predictions[:count]}


# What `probe_tower` scores, versioned: a cache made by an earlier version measures again. 2: mIoU over the object
# classes, the background classes apart; depth within the style's range with AbsRel and δ1 (issue 36).
PROBE_SCORING = 2


def _cached_metrics(saved: Path, settings: dict) -> dict | None:
    """The metrics a measurement saved in `saved`, if it ran with exactly `settings` (otherwise it runs again)."""
    if saved.is_file():
        cached = json.loads(saved.read_text())
        if cached["settings"] == settings:
            return cached["metrics"]
    return None


def _save_metrics(saved: Path, settings: dict, metrics: dict) -> None:
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"settings": settings, "metrics": metrics}, indent=2))


def measure_probes(stem: Path, tower: Path, seed: int, args, data: HeldOut) -> tuple[dict, dict]:
    """`probe_tower`, cached in `<stem>.probes.json` / `<stem>.probes.pt` with the settings it ran with (other
    settings measure again)."""
    settings = {"tower": tower_digest(tower), "seed": seed, "scene_style": args.scene_style,
                "scoring": PROBE_SCORING,
                **{key: getattr(args, key) for key in ("probe_size", "probe_steps", "probe_scenes", "eval_scenes",
                                                       "num_examples")}}
    saved, drawn_file = stem.with_suffix(".probes.json"), stem.with_suffix(".probes.pt")
    cached = _cached_metrics(saved, settings)
    if cached is not None and drawn_file.is_file():
        return cached, torch.load(drawn_file)
    metrics, drawn = probe_tower(tower, seed, args, data)
    stem.parent.mkdir(parents=True, exist_ok=True)
    torch.save(drawn, drawn_file)
    _save_metrics(saved, settings, metrics)
    return metrics, drawn


def measure_out_of_task(stem: Path, tower: Path, seed: int, args) -> dict:
    """`scene_out_of_task` of one frozen tower (the probes' size, training and held-out scene counts and style),
    cached in `<stem>.out_of_task.json` with the settings it ran with."""
    if not args.out_of_task:
        return {}
    from ..core.models import backbone_from

    settings = {"tower": tower_digest(tower), "seed": seed, "scene_style": args.scene_style,
                "kinds": list(args.out_of_task),
                **{key: getattr(args, key) for key in ("probe_size", "probe_scenes", "eval_scenes")}}
    saved = stem.with_suffix(".out_of_task.json")
    cached = _cached_metrics(saved, settings)
    if cached is not None:
        return cached
    encoder = backbone_from(str(tower), dtype=torch.float32)
    metrics = scene_out_of_task(encoder, args.out_of_task, args.probe_size, seed, args.probe_scenes,
                                args.eval_scenes, args.scene_style)
    _save_metrics(saved, settings, metrics)
    return metrics


def grey_questions(items: list) -> list:
    """The same questions with a mid-grey image instead of each scene: what an MLLM answers without seeing it."""
    from dataclasses import replace

    return [replace(item, image=np.full_like(item.image, 128)) for item in items]


def measure_qa(runner: Runner, name: str, mapping: dict, data: HeldOut, qa_scenes: int) -> dict:
    """QA accuracy of the tower after the VQA-evaluation protocol (run `name`): its MLLM (`final/`) answers the
    held-out questions, and the same questions with a grey image (`qa_grey`, the instrument's negative control;
    `qa_same_as_grey`: the fraction of questions answered the same either way). Cached in the run's `qa.json`; the
    run's MLLM is pruned once scored, so a change of `qa_scenes` trains the protocol again."""
    from modeling_versavit import VersaViTCaptioningProcessor, VersaViTForCaptioning

    folder = Path(mapping["output_dir"])
    scored, depends = folder / "qa.json", tower_digest(Path(mapping["model_name_or_path"]))
    if runner.done(mapping, depends) and scored.is_file():
        saved = json.loads(scored.read_text())
        if saved["qa_scenes"] == qa_scenes and "qa_grey" in saved["result"]:
            return saved["result"]
    if runner.done(mapping, depends) and not (folder / "final").is_dir():
        shutil.rmtree(folder)  # scored with other questions and pruned: train the protocol again
    folder = runner.run(name, mapping, depends)
    model = VersaViTForCaptioning.from_pretrained(folder / "final", dtype=torch.float32)
    processor = VersaViTCaptioningProcessor.from_pretrained(folder / "final")
    qa = qa_accuracy(model, processor, data.questions)
    grey = qa_accuracy(model, processor, grey_questions(data.questions))
    same = np.mean([a["said"] == b["said"] for a, b in zip(qa["answers"], grey["answers"])])
    result = {"qa_accuracy": qa["accuracy"], "qa_per_kind": qa["per_kind"], "qa_grey": grey["accuracy"],
              "qa_grey_per_kind": grey["per_kind"], "qa_same_as_grey": float(same), "qa_answers": qa["answers"][:20]}
    scored.write_text(json.dumps({"qa_scenes": qa_scenes, "result": result}, indent=2))
    prune(folder)
    return result


__all__ = ["HeldOut", "grey_questions", "measure_out_of_task", "measure_probes", "measure_qa", "probe_tower"]
