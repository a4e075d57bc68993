# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground's VisPer-LM table (`python recipes/reproduce.py --tables visper`): three ways to a
dense-aware MLLM from the same baseline tower, at the same budget, scored on CV-Bench-style spatial questions.

VisPer-LM changes the MLLM, not the tower, so its rows are MLLMs, each built by the two stages of
recipes/configs/visper_default.yaml on the proving ground's scenes (the tower frozen throughout):

- `visper_ntp`: next-token prediction only (LLaVA-1.5's recipe): pre-training trains the projector on the scenes'
  detailed captions, instruction tuning the projector and the LLM;
- `visper`: the same, with VisPer-LM's coupled objective in pre-training (projector, embedding predictors and task
  tokens; the experts are the depth and referring models of the same seed's VersaViT arm, `cap_depth_seg`);
- `visper_versavit`: next-token prediction only, on the VersaViT arm's tower instead of the baseline's.

Each stage has the same steps and batch for every row; instruction tuning is on the scenes' spatial questions
(`texts: spatial`: depth order, left / right, counts), so that the small LLM learns their answer format (CV-Bench is
zero-shot for VisPer-LM's 8B LLMs; SmolLM2-135M does not answer "first" / "second" without seeing the format). The
score is exact-match accuracy on held-out scenes' spatial questions, overall and per kind, beside the majority
answer per kind of the instruction-tuning questions. For the first seed, every LLM layer of the NTP and VisPer-LM
models is probed for the experts' embeddings (`llm_probes.py`; visper_layer_probes.png).
"""

import copy
import hashlib
import json
import shutil
from pathlib import Path

import torch

from ..data.scenes import SPATIAL_COUNT, SPATIAL_DEPTH, SPATIAL_RELATION
from .ground_runs import DENSE_FOLDER, baseline_name, prune, start_digest
from .ground_tables import ARMS, PROBE_EVAL_SEED, PROBE_TRAIN_SEED, QA_EVAL_SEED
from .qa import majority_accuracy, qa_accuracy, scene_questions

# What the table reads from each kind of question (`qa.question_kind`), and its columns.
SPATIAL_KEYS = {SPATIAL_DEPTH: "spatial_depth", SPATIAL_RELATION: "spatial_relation", SPATIAL_COUNT: "spatial_count"}
VERSAVIT_ARM = "cap_depth_seg"  # the run whose tower and dense heads the table uses
IFT_TEXTS = "spatial"
PROBED_ARMS = ("visper_ntp", "visper")


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]


def visper_options(arm: str, tower: Path, experts: Path | None, overrides: dict | None = None) -> dict:
    """Run options of row `arm` over the proving ground's run config: visper_default.yaml's stages (with the
    reproduction's `visper` options over them), instruction tuning on spatial questions, `tower` as the MLLM's
    (frozen) tower, `experts` the depth + segmentation model."""
    from ..methods.visper import visper_run_options

    options = copy.deepcopy({**visper_run_options(), **(overrides or {})})
    pretrain, tuning = options["stages"]
    tuning["objectives"]["captioning"]["data"]["texts"] = IFT_TEXTS
    if arm == "visper":
        for expert in options["distillation_experts"].values():
            expert["model"] = str(experts)
    else:  # next-token prediction only: the same data, steps and batch, the projector alone in pre-training
        (settings,) = pretrain["objectives"].values()
        pretrain["objectives"] = {"captioning": {**settings, "weight": 1.0}}
        pretrain["train"] = {"projector": pretrain["train"]["projector"]}
        options = {k: v for k, v in options.items() if not k.startswith("distillation_")}
    return {**options, "model_name_or_path": str(tower)}


def spatial_result(model_folder: Path, questions: list) -> dict:
    from modeling_versavit import VersaViTCaptioningProcessor, VersaViTForCaptioning

    model = VersaViTForCaptioning.from_pretrained(model_folder, dtype=torch.float32)
    processor = VersaViTCaptioningProcessor.from_pretrained(model_folder)
    qa = qa_accuracy(model, processor, questions)
    result = {"spatial_qa": qa["accuracy"], "qa_answers": qa["answers"][:20]}
    for kind, key in SPATIAL_KEYS.items():
        if kind in qa["per_kind"]:
            result[key] = qa["per_kind"][kind]
    return result


def reproduce_visper(args, runner, check=None, baselines: dict[int, dict] | None = None) -> dict:
    """Run and score the table's rows for every seed (cached like the other tables' runs), each from its seed's
    baseline tower (`baselines`: the baseline runs' configs by seed, when no other table runs them); returns the
    per-arm measurements, the majority floors and, for the first seed, the layer probes."""
    from .llm_probes import LayerProbeSettings, plot_layer_probes, probe_llm_layers

    output = Path(args.output_dir)
    runs = output / "runs"
    style = args.scene_style
    held_out = scene_questions(args.qa_scenes, QA_EVAL_SEED, texts=IFT_TEXTS, style=style)
    training = scene_questions(300, 200000, texts=IFT_TEXTS, style=style)  # visper_default.yaml's IFT scenes
    floors = {"spatial_qa": majority_accuracy(training, held_out)}
    for kind, key in SPATIAL_KEYS.items():
        floors[key] = majority_accuracy(training, [q for q in held_out if q.question.startswith(kind)])

    planned = []
    for seed in args.seeds:
        baseline = baseline_name(None, seed)
        baseline_tower = runs / baseline / "backbone"
        if baselines is not None:
            planned.append((baseline, baselines[seed], ""))
        tag = f"{VERSAVIT_ARM}-seed{seed}"
        versavit = runner.config(runs / tag, args.post_training, ARMS[VERSAVIT_ARM].options,
                                 {"model_name_or_path": str(baseline_tower), "seed": seed})
        planned.append((tag, versavit, baseline))
        for arm in ("visper_ntp", "visper", "visper_versavit"):
            tower = runs / tag / "backbone" if arm == "visper_versavit" else baseline_tower
            experts = runs / tag / DENSE_FOLDER if arm == "visper" else None
            mapping = runner.config(runs / f"{arm}-seed{seed}", visper_options(arm, tower, experts, args.visper),
                                    {"seed": seed})
            planned.append((f"{arm}-seed{seed}", mapping, tag))
    if check is not None:
        for name, mapping, _ in planned:
            runner.check(name, mapping, check)

    measurements: dict[str, list[dict]] = {}
    probes = None
    for name, mapping, after in planned:
        folder = Path(mapping["output_dir"])
        if name in {baseline_name(None, seed) for seed in args.seeds}:
            prune(runner.run(name, mapping, start_digest(mapping)))
            continue
        if name.startswith(VERSAVIT_ARM):  # the row's tower and experts (shared with the other tables' arm)
            depends = start_digest(mapping)  # the baseline's tower
            if runner.done(mapping, depends) and not (folder / DENSE_FOLDER).is_dir():
                print(f"  run {name}: rerun to keep its depth and referring heads (the VisPer-LM experts)", flush=True)
                shutil.rmtree(folder)
            prune(runner.run(name, mapping, depends))  # pruning keeps dense/
            continue
        depends = start_digest(mapping)
        if "distillation_experts" in mapping:
            depends += " experts " + _digest(runs / after / DENSE_FOLDER)
        arm, seed = name.rsplit("-seed", 1)
        probed = arm in PROBED_ARMS and int(seed) == args.seeds[0]
        scored = folder / "spatial_qa.json"
        if runner.done(mapping, depends) and scored.is_file() and \
                json.loads(scored.read_text())["qa_scenes"] == args.qa_scenes and \
                (not probed or (folder / "layer_probes.json").is_file()):
            result = json.loads(scored.read_text())["result"]
        else:
            if runner.done(mapping, depends) and not (folder / "final").is_dir():
                shutil.rmtree(folder)  # scored with other questions and pruned: run it again
            runner.run(name, mapping, depends)
            result = spatial_result(folder / "final", held_out)
            scored.write_text(json.dumps({"qa_scenes": args.qa_scenes, "result": result}, indent=2))
            if probed:
                (folder / "layer_probes.json").write_text(json.dumps(
                    _probe_layers(folder, runs / after / DENSE_FOLDER, args,
                                  LayerProbeSettings(steps=max(1, args.probe_steps // 2), seed=int(seed)),
                                  probe_llm_layers)))
            prune(folder)
        measurements.setdefault(arm, []).append(result)
        print(f"  {name}: spatial QA {result['spatial_qa']:.3f}" + "".join(
            f"  {key.split('_', 1)[1]} {result[key]:.3f}" for key in SPATIAL_KEYS.values() if key in result),
            flush=True)
    first = args.seeds[0]
    layer_files = {arm: runs / f"{arm}-seed{first}" / "layer_probes.json" for arm in PROBED_ARMS}
    if all(path.is_file() for path in layer_files.values()):
        probes = {ARMS[arm].label.split(" (")[0]: json.loads(path.read_text()) for arm, path in layer_files.items()}
        plot_layer_probes(probes, output / "visper_layer_probes.png",
                          f"LLM layers probed for the experts' embeddings (seed {first})")
        (output / "visper_layer_probes.json").write_text(json.dumps(probes, indent=2))
    return {"measurements": measurements, "floors": floors, "layer_probes": probes}


def _probe_layers(mllm: Path, experts: Path, args, settings, probe_llm_layers) -> dict:
    """The layer probes of one run's MLLM (every second LLM layer, and each distilled one) for its experts'
    embeddings, on probe scenes no run trained on."""
    from modeling_versavit import VersaViTCaptioningProcessor, VersaViTForCaptioning

    from ..data.experts import parse_experts
    from ..methods.visper import visper_run_options
    from .llm_probes import scene_probe_data

    options = {**visper_run_options(), **args.visper}
    specs = parse_experts({name: {**spec, "model": str(experts)}
                           for name, spec in options["distillation_experts"].items()}, 1)
    model = VersaViTForCaptioning.from_pretrained(mllm / "final", dtype=torch.float32).eval().requires_grad_(False)
    processor = VersaViTCaptioningProcessor.from_pretrained(mllm / "final")
    depth = model.config.text_config.num_hidden_layers
    distilled = {layer for spec in specs for layer in spec.llm_layers}
    layers = sorted(set(range(2, depth + 1, 2)) | distilled)
    train, train_targets, held_out, eval_targets = scene_probe_data(
        specs, PROBE_TRAIN_SEED, args.probe_scenes, PROBE_EVAL_SEED, args.eval_scenes, args.scene_style)
    result = probe_llm_layers(model, processor, train, train_targets, held_out, eval_targets, layers, settings)
    return {expert: {str(layer): value for layer, value in by_layer.items()} for expert, by_layer in result.items()}


__all__ = ["reproduce_visper", "visper_options"]
