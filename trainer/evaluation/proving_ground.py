# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground: the paper's ablation tables in miniature, on generated scenes, on a CPU (`make reproduce`).

The paper's premise is an MLLM tower trained for language only, weak on dense features (its Qwen2-VL-ViT). Its
analog here is the **baseline tower**: a small Qwen2-VL-style tower trained from random init with captioning / QA
only, through the real SmolLM2, on generated scenes, once. Each **arm** post-trains that tower (the VersaViT
curriculum of `recipes/multitask.py`: alignment warm-up, then multi-task training of the arm's tasks and λ) with the
same steps and data; a random tower of the same shape is the floor. Each tower is then **measured** on held-out
scenes no run trained on, its weights frozen:

- linear probes (the paper's Table 3 protocol, `probes.py`): semantic segmentation (mIoU over sky, ground and the
  shape classes; also the mean over the shape classes alone) and metric depth (RMSE; also on object pixels alone);
- question-answer accuracy, standing in for OpenCompass: the paper's VQA-evaluation protocol (a fresh projector,
  then projector + LLM, trained on the scenes' captions and questions with the tower frozen), then exact-match
  accuracy of greedy answers to held-out scene questions (`qa.py`).

Every arm runs with each seed (post-training, probes and QA protocol); tables report mean ± std over seeds, with the
paper's own numbers beside. A table is data: `Table` rows name `Arm`s, and an arm is the options of its run, so
later methods and towers add their tables with `register_table` without touching the default Table 4 run. Runs and
measurements are cached in the output folder: an interrupted reproduction continues where it stopped, and a
finished one only redraws its outputs.
"""

import contextlib
import hashlib
import io
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from ..core.config import ConfigError
from ..data import readers
from ..data.scenes import generate_scene, scene_style
from ..methods.sailvit import sailvit_run_options
from .metrics import depth_metrics
from .out_of_task import OUT_OF_TASK, scene_out_of_task
from .probes import (
    FrozenFeatures,
    ProbeSettings,
    evaluate_depth_probe,
    evaluate_segmentation_probe,
    train_depth_probe,
    train_segmentation_probe,
)
from .qa import majority_accuracy, qa_accuracy, scene_questions
from .visper_ground import SPATIAL_COLUMNS, reproduce_visper

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
# Scene seeds of the measurements: far from the runs' training scenes (0 ..) and their held-out ones (1e6 ..).
PROBE_TRAIN_SEED, PROBE_EVAL_SEED, QA_EVAL_SEED = 5000, 9000, 9000
# (key, label, higher is better) of the table's columns, in the paper's order; then the object-weighted extras.
COLUMNS = (("qa_accuracy", "QA accuracy ↑", True), ("depth_rmse", "depth RMSE ↓", False),
           ("seg_miou", "seg mIoU ↑", True))
# The out-of-task columns (`out_of_task.py`) follow, for the measurements asked for (`--out_of_task`).
EXTRA_COLUMNS = (("object_rmse", "object depth RMSE ↓", False), ("object_miou", "shape-class mIoU ↑", True),
                 ("correspondence", "scene correspondence R@10% ↑", True),
                 ("retrieval", "scene retrieval mean R ↑", True), ("classification", "scene zero-shot top-1 ↑", True))
PAPER_COLUMNS = ("OpenCompass ↑", "NYUv2 RMSE ↓", "ADE20k mIoU ↑")


@dataclass(frozen=True)
class Arm:
    """One row of a table: `kind` "random" (an untrained tower of the baseline's shape), "baseline" (the
    caption-trained tower itself), "post" (the baseline post-trained by a `recipes/multitask.py` run with
    `options` over the reproduction's `post_training` options) or "mllm" (an MLLM built around a frozen tower and
    scored by its own answers: the VisPer-LM table, `visper_ground.py`). `tower` names an entry of the reproduction's
    `towers` (run options over `run_config`, e.g. another tower family's `vision_config`): the arm's baseline is
    built on that tower, once per tower; None is `run_config`'s own tower."""

    name: str
    label: str
    kind: str = "post"
    options: dict = field(default_factory=dict)
    tower: str | None = None


@dataclass(frozen=True)
class Table:
    """A table of the proving ground: its arms (rows, by name), the paper's numbers per arm (OpenCompass, NYUv2
    RMSE, ADE20k mIoU) and the claims its shape should show (checked by `check_claims`)."""

    name: str
    title: str
    arms: tuple[str, ...]
    paper: dict = field(default_factory=dict)
    claims: tuple = ()


ARMS: dict[str, Arm] = {}
TABLES: dict[str, Table] = {}


def register_arm(arm: Arm) -> Arm:
    if arm.kind not in ("random", "baseline", "post", "mllm"):
        raise ValueError(f"Arm.kind: expected random, baseline, post or mllm, got {arm.kind!r}.")
    ARMS[arm.name] = arm
    return arm


def register_table(table: Table) -> Table:
    missing = [name for name in table.arms if name not in ARMS]
    if missing:
        raise ValueError(f"Table {table.name}: unknown arms {missing} (register them first).")
    TABLES[table.name] = table
    return table


ALL_TASKS = ["captioning", "depth", "segmentation"]
for _arm in (
    Arm("random", "random tower (floor)", "random"),
    Arm("baseline", "baseline tower (captioning only)", "baseline"),
    Arm("cap", "+ VQA & captioning", options={"tasks": ["captioning"]}),
    Arm("cap_depth", "+ VQA & captioning + depth", options={"tasks": ["captioning", "depth"]}),
    Arm("cap_depth_seg", "+ VQA & captioning + depth + seg (VersaViT)", options={"tasks": ALL_TASKS}),
    Arm("lambda_cap", "λ 0.50 / 0.25 / 0.25", options={
        "tasks": ALL_TASKS, "captioning_weight": 0.5, "depth_weight": 0.25, "segmentation_weight": 0.25}),
    Arm("lambda_depth", "λ 0.25 / 0.50 / 0.25", options={
        "tasks": ALL_TASKS, "captioning_weight": 0.25, "depth_weight": 0.5, "segmentation_weight": 0.25}),
    Arm("lambda_seg", "λ 0.25 / 0.25 / 0.50", options={
        "tasks": ALL_TASKS, "captioning_weight": 0.25, "depth_weight": 0.25, "segmentation_weight": 0.5}),
):
    register_arm(_arm)

# A claim: (id, text, kind, arguments); kinds: "worst" (arm worst of the table on columns), "not_better" (arm not
# better than other on columns), "better" / "at_least" (arm better than / at least as good as other on column),
# "all_better" (each of arms better than other on columns), "best" (arm better than each of others on column).
register_table(Table(
    "table4", "Table 4: multi-task training ablation",
    ("random", "baseline", "cap", "cap_depth", "cap_depth_seg"),
    paper={"baseline": (64.8, 0.541, 33.6), "cap": (66.1, 0.557, 32.0), "cap_depth": (66.3, 0.495, 35.1),
           "cap_depth_seg": (66.4, 0.473, 49.6)},
    claims=(
        ("a", "the random tower is worst on both probes", "worst", ("random", ("depth_rmse", "seg_miou"))),
        ("b", "captioning-only post-training does not improve the dense probes over the baseline", "not_better",
         ("cap", "baseline", ("depth_rmse", "seg_miou"))),
        ("c", "adding depth improves the depth probe", "better", ("cap_depth", "cap", "depth_rmse")),
        ("d", "adding segmentation improves the segmentation probe", "better", ("cap_depth_seg", "cap_depth",
                                                                                "seg_miou")),
        ("e", "all three tasks keep QA accuracy at least at the captioning-only arm's", "at_least",
         ("cap_depth_seg", "cap", "qa_accuracy")),
    ),
))
# Table 6: the method on other tower families, each against its own caption-trained baseline (same budget).
TABLE6_TOWERS = {"qwen2_5_vl": "Qwen2.5-VL-style (window attention)", "qwen3_vl": "Qwen3-VL-style (DeepStack)",
                 "siglip2": "SigLIP2-style (fixed resolution, as so400m-512)"}
for _tower, _label in TABLE6_TOWERS.items():
    register_arm(Arm(f"baseline_{_tower}", f"{_label} baseline", "baseline", tower=_tower))
    register_arm(Arm(f"versavit_{_tower}", f"{_label} + depth + seg (VersaViT)", options={"tasks": ALL_TASKS},
                     tower=_tower))
register_table(Table(
    "table6", "Table 6: other vision towers (each against its own caption-trained baseline)",
    tuple(f"{kind}_{tower}" for tower in TABLE6_TOWERS for kind in ("baseline", "versavit")),
    paper={"baseline_qwen2_5_vl": (64.0, 0.533, 37.2), "versavit_qwen2_5_vl": (65.2, 0.464, 47.2),
           "baseline_siglip2": (59.3, 0.497, 40.9), "versavit_siglip2": (60.4, 0.481, 49.2)},
    claims=tuple(
        (f"{tower}-{column}", f"{TABLE6_TOWERS[tower].split(' (')[0]}: VersaViT improves the {what} probe over its "
         f"baseline", "better", (f"versavit_{tower}", f"baseline_{tower}", column))
        for tower in TABLE6_TOWERS for column, what in (("depth_rmse", "depth"), ("seg_miou", "segmentation"))
    ),
))
# SAILViT's staged refinement (methods/sailvit.py) from the same baseline at VersaViT's budget: 135 optimizer steps
# (15 + 60 + 60 against VersaViT's 15 warm-up + 120 multi-task steps) and the same captioning batch, so both see as
# many captioning samples; VersaViT adds its dense batches. Its stages are sailvit_default.yaml's.
register_arm(Arm("sailvit", "SAILViT (3 caption stages: short, detailed + grounding, instructions)",
                 options=sailvit_run_options()))
register_table(Table(
    "sailvit", "SAILViT vs VersaViT: two methods from the same baseline tower, same steps and captioning samples",
    ("baseline", "cap", "cap_depth_seg", "sailvit"),
    paper={"baseline": (64.8, 0.541, 33.6), "cap": (66.1, 0.557, 32.0), "cap_depth_seg": (66.4, 0.473, 49.6)},
    claims=(
        ("a", "SAILViT keeps QA accuracy at least at the baseline's", "at_least",
         ("sailvit", "baseline", "qa_accuracy")),
        ("b", "SAILViT's staged refinement beats plain captioning post-training on QA", "better",
         ("sailvit", "cap", "qa_accuracy")),
        ("c", "VersaViT's depth probe beats SAILViT's", "better", ("cap_depth_seg", "sailvit", "depth_rmse")),
        ("d", "VersaViT's segmentation probe beats SAILViT's", "better", ("cap_depth_seg", "sailvit", "seg_miou")),
    ),
))
# VisPer-LM (methods/visper.py): rows are MLLMs around a frozen tower, scored by their own answers to held-out
# CV-Bench-style spatial questions (visper_ground.py), same stages, steps and batches for every row.
for _arm in (
    Arm("visper_ntp", "NTP only (baseline tower)", "mllm"),
    Arm("visper", "VisPer-LM (baseline tower, VersaViT's depth + seg heads as experts)", "mllm"),
    Arm("visper_versavit", "VersaViT tower + NTP", "mllm"),
):
    register_arm(_arm)
register_table(Table(
    "visper", "VisPer-LM vs NTP only vs VersaViT's tower: MLLMs on spatial questions, same stages and budget",
    ("visper_ntp", "visper", "visper_versavit"),
    claims=(
        ("a", "VisPer-LM's embedding distillation beats NTP only on spatial questions", "better",
         ("visper", "visper_ntp", "spatial_qa")),
        ("b", "its largest gain is on depth (the paper: +8.7 points on CV-Bench depth)", "better",
         ("visper", "visper_ntp", "spatial_depth")),
        ("c", "a VersaViT tower under plain NTP beats the baseline tower under plain NTP", "better",
         ("visper_versavit", "visper_ntp", "spatial_qa")),
    ),
))
register_table(Table(
    "table5", "Table 5: loss-weight ablation (λ captioning / depth / segmentation)",
    ("baseline", "lambda_cap", "lambda_depth", "lambda_seg", "cap_depth_seg"),
    paper={"baseline": (64.8, 0.541, 33.6), "lambda_cap": (66.5, 0.470, 48.3), "lambda_depth": (65.7, 0.455, 48.9),
           "lambda_seg": (65.7, 0.476, 50.0), "cap_depth_seg": (66.4, 0.473, 49.6)},
    claims=(
        ("a", "every weighting beats the baseline on both probes", "all_better",
         (("lambda_cap", "lambda_depth", "lambda_seg", "cap_depth_seg"), "baseline", ("depth_rmse", "seg_miou"))),
        ("b", "a larger depth weight gives the best depth probe of the weightings", "best",
         ("lambda_depth", ("lambda_cap", "lambda_seg", "cap_depth_seg"), "depth_rmse")),
        ("c", "a larger segmentation weight gives the best segmentation probe of the weightings", "best",
         ("lambda_seg", ("lambda_cap", "lambda_depth", "cap_depth_seg"), "seg_miou")),
    ),
))


@dataclass
class ReproduceArguments:
    output_dir: str = field(default="outputs/reproduce", metadata={"help": "Where runs, measurements and tables go."})
    tables: list[str] = field(default_factory=lambda: ["table4"], metadata={
        "help": "Tables to reproduce: table4 (multi-task ablation, the default), table5 (loss weights), table6 (other "
                "tower families), sailvit (SAILViT's staged refinement against VersaViT, same budget), visper (VisPer-LM's "
                "embedding distillation vs NTP only vs VersaViT's tower: MLLMs on spatial questions)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "Seeds of every arm (its post-training, probes and QA protocol; a random tower's init)."})
    quick: bool = field(default=False, metadata={
        "help": "A few steps of everything on a few scenes: checks the pipeline end to end in a few minutes; its "
                "numbers mean nothing."})
    run_config: str = field(default="default.yaml", metadata={
        "help": "The config every training run builds on (relative to recipes/configs, or a path): the tower, "
                "LLM, heads and stages of `make demo`."})
    scene_style: str = field(default="cluttered", metadata={"help": "Style of every generated scene: cluttered "
                                                                    "or simple."})
    baseline: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options of the baseline run (captioning only from a random tower)."})
    post_training: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options every arm's post-training run shares (its arm adds tasks and λ)."})
    qa_protocol: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options of the VQA-evaluation runs (stages with the encoder frozen)."})
    visper: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options over recipes/configs/visper_default.yaml's for the visper table's rows "
                "(e.g. distillation_experts for another tower or LLM: their layers)."})
    towers: dict | str | None = field(default=None, metadata={
        "help": "Other towers, by name: recipes/multitask.py options over run_config for an arm's `tower` (its "
                "vision_config, input sizes); its baseline and its arms use them (table6)."})
    probe_size: int = field(default=224, metadata={"help": "Input size of the segmentation probe (a multiple of "
                                                           "28); depth probes run at the scenes' own size."})
    probe_steps: int = field(default=300, metadata={"help": "Optimizer steps of each linear probe."})
    probe_scenes: int = field(default=120, metadata={"help": "Scenes the probes train on."})
    eval_scenes: int = field(default=48, metadata={"help": "Held-out scenes the probes are scored on."})
    qa_scenes: int = field(default=32, metadata={"help": "Held-out scenes whose questions score QA accuracy."})
    num_examples: int = field(default=3, metadata={"help": "Held-out scenes in the qualitative figure."})
    out_of_task: list[str] = field(default_factory=lambda: list(OUT_OF_TASK), metadata={
        "help": f"Out-of-task columns among {OUT_OF_TASK} (none: leave them out): two-view keypoint correspondence "
                "(recall within a tenth of the image), image-text retrieval and zero-shot shape classification "
                "through a retrieval head trained on the probe scenes' captions, every tower frozen."})

    def __post_init__(self):
        from ..core.config import mapping_option

        for name in ("baseline", "post_training", "qa_protocol", "towers", "visper"):
            setattr(self, name, mapping_option(getattr(self, name), name) or {})
        unknown = [name for name in self.tables if name not in TABLES]
        if unknown or not self.tables:
            raise ConfigError(f"tables: unknown {unknown or self.tables} (choose among {sorted(TABLES)}).")
        for table in self.tables:
            for arm in TABLES[table].arms:
                tower = ARMS[arm].tower
                if tower is not None and not isinstance(self.towers.get(tower), dict):
                    raise ConfigError(f"towers.{tower}: {table}'s arm {arm} needs this tower's run options (a mapping "
                                      f"with its vision_config), got {self.towers.get(tower)!r}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct seeds, got {self.seeds}.")
        scene_style(self.scene_style)
        unknown = [kind for kind in self.out_of_task if kind not in OUT_OF_TASK]
        if unknown:
            raise ConfigError(f"out_of_task: unknown {unknown} (choose among {OUT_OF_TASK}).")
        for name in ("probe_steps", "probe_scenes", "eval_scenes", "qa_scenes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}.")
        if self.probe_size % 28:
            raise ConfigError(f"probe_size: must be a multiple of 28, got {self.probe_size}.")
        from modeling_versavit import VersaViTConfig

        for tower in {ARMS[arm].tower for table in self.tables for arm in TABLES[table].arms} - {None}:
            try:
                multiple = VersaViTConfig(vision_config=dict(self.towers[tower]["vision_config"])).input_size_multiple
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(f"towers.{tower}.vision_config: {err}") from None
            if self.probe_size % multiple:
                raise ConfigError(f"probe_size: must be a multiple of {multiple} for tower {tower} (whole merge "
                                  f"blocks), got {self.probe_size}.")


# What --quick shrinks (over the config's values): every run a few steps on a few scenes.
QUICK_RUN = {"num_scenes": 8, "alignment_max_steps": 1, "max_steps": 2, "logging_steps": 1,
             "captioning_batch_size": 1, "depth_batch_size": 2, "segmentation_batch_size": 2}
QUICK_MEASURE = {"probe_steps": 4, "probe_scenes": 4, "eval_scenes": 3, "qa_scenes": 2, "num_examples": 2}
# What every run of the proving ground sets: no held-out metrics or panel (it measures them itself), no checkpoints
# (an interrupted run is redone from its start, giving the same result).
RUN_FIXED = {"num_eval_scenes": 0, "panel_samples": 0, "save_strategy": "no", "report_to": "none"}


# --------------------------------------------------------------------------------------------------- runs
def _quick_objectives(objectives):
    """A stage's objectives with their generated-scene data shrunk to --quick's scenes."""
    if not isinstance(objectives, dict):
        return objectives
    return {name: {**settings, "data": {**settings["data"], "num_scenes": QUICK_RUN["num_scenes"]}}
            if isinstance(settings, dict) and isinstance(settings.get("data"), dict) else settings
            for name, settings in objectives.items()}


class Runner:
    """Runs `recipes/multitask.py` configs (`train(argv)`, its `main`) in their own folders under `output_dir`,
    each once: a folder whose `summary.json` exists and whose recorded config is the same is reused."""

    def __init__(self, args: ReproduceArguments, train: Callable[[list[str]], dict]):
        self.args, self.train = args, train
        path = Path(args.run_config)
        self.base = path if path.is_absolute() or path.exists() else CONFIGS / path
        if not self.base.is_file():
            raise ConfigError(f"run_config: no such file {args.run_config!r} (nor {self.base}).")
        self.run_seconds: dict[str, float] = {}

    def config(self, folder: Path, *layers: dict) -> dict:
        mapping = {"base": str(self.base.resolve())}
        for layer in layers:
            mapping.update(layer)
        mapping.update({**RUN_FIXED, "scene_style": self.args.scene_style, "output_dir": str(folder)})
        if self.args.quick:
            mapping.update({k: v for k, v in QUICK_RUN.items()})
            if "stages" in mapping:
                mapping["stages"] = [{**stage, "max_steps": 1, "objectives": _quick_objectives(stage["objectives"])}
                                     for stage in mapping["stages"]]
        return mapping

    def check(self, name: str, mapping: dict, check: Callable[[list[str]], object]) -> None:
        """Parse run `name`'s config with `check` (the recipe's parser) without running it: a bad option fails
        before anything trains, naming the run and the key."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(mapping, sort_keys=False))
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    check(["--config", str(path)])
            except (ConfigError, ValueError) as err:
                raise ConfigError(f"run {name}: {err}") from None

    @staticmethod
    def record(mapping: dict, depends: str = "") -> str:
        """The run's record: its config, and the digest of the tower it starts from (a tower retrained at the same
        path makes the run stale)."""
        return yaml.safe_dump(mapping, sort_keys=False) + (f"# starts from tower {depends}\n" if depends else "")

    @staticmethod
    def files(folder: Path) -> tuple[Path, Path]:
        """The run's config record and log, beside its folder (`runs/<run>.yaml`, `runs/<run>.log`): the folder
        itself belongs to the multitask run (`versavit_trainer.run_folder`)."""
        return folder.parent / f"{folder.name}.yaml", folder.parent / f"{folder.name}.log"

    def done(self, mapping: dict, depends: str = "") -> bool:
        """Whether the run of `mapping` has finished with exactly this config (and starting tower)."""
        folder = Path(mapping["output_dir"])
        record, _ = self.files(folder)
        return (folder / "summary.json").is_file() and record.is_file() and \
            record.read_text() == self.record(mapping, depends)

    def run(self, name: str, mapping: dict, depends: str = "") -> Path:
        folder = Path(mapping["output_dir"])
        record, log_file = self.files(folder)
        text = self.record(mapping, depends)
        if self.done(mapping, depends):
            logger.info("run %s: done earlier (%s)", name, folder)
            return folder
        if folder.exists():  # an interrupted run (or another config): redone from its start
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(text)
        print(f"  run {name} ...", flush=True)
        start = time.perf_counter()
        with open(log_file, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            self.train(["--config", str(record)])
        self.run_seconds[name] = time.perf_counter() - start
        print(f"  run {name}: {self.run_seconds[name]:.0f} s", flush=True)
        return folder


def tower_digest(backbone: Path) -> str:
    """A digest of a tower folder's weights and config: what a cached run or measurement of it depends on."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((backbone / name).read_bytes())
    return digest.hexdigest()[:16]


def prune(folder: Path) -> None:
    """Drop a finished run's full model and stage states (the LLM's copy each, ~0.5 GB); its `backbone/`, config,
    logs and summary stay, and its tower with its dense heads (`dense/`, a few MB: the VisPer-LM table's experts)."""
    from .visper_ground import keep_dense_heads

    keep_dense_heads(folder)
    shutil.rmtree(folder / "final", ignore_errors=True)
    for parts in folder.glob("*/trained_parts.safetensors"):
        parts.unlink()


def random_tower(folder: Path, base: Path, seed: int) -> Path:
    """An untrained tower of the run config's shape (`vision_config`), initialised from `seed`, as a backbone
    folder."""
    from ..core.config import load_config_file
    from ..core.models import backbone_from
    from ..data.collators import image_processor_for

    target, record = folder / "backbone", folder / "tower.json"
    made = {"vision_config": load_config_file(base).get("vision_config"), "seed": seed}
    if (target / "config.json").is_file() and record.is_file() and json.loads(record.read_text()) == made:
        return target
    model = backbone_from(vision_config=made["vision_config"], seed=seed)
    model.save_pretrained(target)
    image_processor_for(model.config).save_pretrained(target)
    record.write_text(json.dumps(made))
    return target


# --------------------------------------------------------------------------------------------- measuring
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
    def build(cls, args: ReproduceArguments, num_train_scenes: int) -> "HeldOut":
        style = args.scene_style
        eval_scenes = [generate_scene(PROBE_EVAL_SEED + i, style=style) for i in range(args.eval_scenes)]
        questions = scene_questions(args.qa_scenes, QA_EVAL_SEED, style=style)
        return cls(readers.scene_segmentation(args.probe_scenes, PROBE_TRAIN_SEED, style=style),
                   readers.scene_segmentation(args.eval_scenes, PROBE_EVAL_SEED, style=style),
                   readers.scene_depth(args.probe_scenes, PROBE_TRAIN_SEED, style=style),
                   readers.scene_depth(args.eval_scenes, PROBE_EVAL_SEED, style=style),
                   [scene.instances > 0 for scene in eval_scenes], questions,
                   majority_accuracy(scene_questions(num_train_scenes, 0, style=style), questions))


def probe_tower(backbone_dir: Path, seed: int, args: ReproduceArguments, data: HeldOut) -> tuple[dict, dict]:
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
    shape_iou = segmentation["per_category_iou"][2:]  # after sky and ground
    metrics = {"seg_miou": segmentation["mean_iou"], "object_miou": float(np.nanmean(shape_iou)),
               "depth_rmse": depth["rmse"], "depth_abs_rel": depth["abs_rel"],
               "object_rmse": float(np.mean(object_rmse)) if object_rmse else float("nan"),
               "per_class_iou": dict(zip(data.seg_eval.class_names, segmentation["per_category_iou"]))}
    count = args.num_examples
    return metrics, {"segmentations": seg_predictions[:count], "depths": depth_predictions[:count]}


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


def measure_probes(stem: Path, tower: Path, seed: int, args: ReproduceArguments, data: HeldOut) -> tuple[dict, dict]:
    """`probe_tower`, cached in `<stem>.probes.json` / `<stem>.probes.pt` with the settings it ran with (other
    settings measure again)."""
    settings = {"tower": tower_digest(tower), "seed": seed, "scene_style": args.scene_style,
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


def measure_out_of_task(stem: Path, tower: Path, seed: int, args: ReproduceArguments) -> dict:
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


def measure_qa(runner: "Runner", name: str, mapping: dict, data: HeldOut, qa_scenes: int) -> dict:
    """QA accuracy of the tower after the VQA-evaluation protocol (run `name`): its MLLM (`final/`) answers the
    held-out questions. Cached in the run's `qa.json`; the run's MLLM is pruned once scored, so a change of
    `qa_scenes` trains the protocol again."""
    from modeling_versavit import VersaViTCaptioningProcessor, VersaViTForCaptioning

    folder = Path(mapping["output_dir"])
    scored, depends = folder / "qa.json", tower_digest(Path(mapping["model_name_or_path"]))
    if runner.done(mapping, depends) and scored.is_file():
        saved = json.loads(scored.read_text())
        if saved["qa_scenes"] == qa_scenes:
            return saved["result"]
    if runner.done(mapping, depends) and not (folder / "final").is_dir():
        shutil.rmtree(folder)  # scored with other questions and pruned: train the protocol again
    folder = runner.run(name, mapping, depends)
    model = VersaViTForCaptioning.from_pretrained(folder / "final", dtype=torch.float32)
    processor = VersaViTCaptioningProcessor.from_pretrained(folder / "final")
    qa = qa_accuracy(model, processor, data.questions)
    result = {"qa_accuracy": qa["accuracy"], "qa_per_kind": qa["per_kind"], "qa_answers": qa["answers"][:20]}
    scored.write_text(json.dumps({"qa_scenes": qa_scenes, "result": result}, indent=2))
    prune(folder)
    return result


# -------------------------------------------------------------------------------------------- reporting
def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(measurements: dict[str, list[dict]]) -> dict[str, dict]:
    """Per arm, per column: mean, std and the per-seed values."""
    keys = [key for key, _, _ in COLUMNS + EXTRA_COLUMNS + SPATIAL_COLUMNS]
    out = {}
    for arm, rows in measurements.items():
        out[arm] = {}
        for key in keys:
            values = [row[key] for row in rows if key in row and math.isfinite(row[key])]
            if values:
                mean, std = spread(values)
                out[arm][key] = {"mean": mean, "std": std, "values": values}
    return out


def _higher(key: str) -> bool:
    return {k: h for k, _, h in COLUMNS + EXTRA_COLUMNS + SPATIAL_COLUMNS}[key]


def compare(summary: dict, arm: str, other: str, key: str) -> tuple[bool, bool]:
    """(is `arm` better than `other` on `key` by the means, do their mean ± std intervals not overlap)."""
    a, b = summary[arm][key], summary[other][key]
    better = a["mean"] > b["mean"] if _higher(key) else a["mean"] < b["mean"]
    separated = (a["mean"] - a["std"] > b["mean"] + b["std"]) or (a["mean"] + a["std"] < b["mean"] - b["std"])
    return better, separated


def check_claims(table: Table, summary: dict) -> list[dict]:
    """Each claim of `table`: whether the means show it (`holds`), whether every comparison it makes has its arms'
    mean ± std intervals apart (`separated`), whether some comparison goes against it with the intervals apart
    (`contradicted`), and a `verdict` saying so."""
    results = []
    for claim_id, text, kind, params in table.claims:
        comparisons = []  # (holds, separated)
        if kind == "worst":
            arm, keys = params
            for key in keys:
                for other in table.arms:
                    if other != arm and key in summary.get(other, {}):
                        better, separated = compare(summary, other, arm, key)
                        comparisons.append((better, separated))
        elif kind == "not_better":
            arm, other, keys = params
            for key in keys:
                better, separated = compare(summary, arm, other, key)
                comparisons.append((not better, separated))
        elif kind in ("better", "at_least"):
            arm, other, key = params
            better, separated = compare(summary, arm, other, key)
            equal = summary[arm][key]["mean"] == summary[other][key]["mean"]
            comparisons.append((better or (kind == "at_least" and equal), separated))
        elif kind == "all_better":
            arms, other, keys = params
            for arm in arms:
                for key in keys:
                    comparisons.append(compare(summary, arm, other, key))
        elif kind == "best":
            arm, others, key = params
            for other in others:
                comparisons.append(compare(summary, arm, other, key))
        else:
            raise ValueError(f"claim {claim_id}: unknown kind {kind!r}.")
        holds = all(h for h, _ in comparisons)
        separated = all(s for _, s in comparisons)  # every comparison's mean ± std intervals apart
        contradicted = any(s and not h for h, s in comparisons)  # some comparison goes the other way, apart
        if holds:
            verdict = "holds, the seeds separate" if separated else "holds by the means, within the seeds' spread"
        else:
            verdict = ("does not hold: contradicted beyond the seeds' spread" if contradicted
                       else "does not hold, within the seeds' spread")
        results.append({"claim": claim_id, "text": text, "holds": holds, "separated": separated,
                        "contradicted": contradicted, "verdict": verdict})
    return results


def _cell(stats: dict | None) -> str:
    return "—" if stats is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def markdown_table(table: Table, summary: dict, claims: list[dict], seeds: list[int]) -> str:
    measured = [column for column in EXTRA_COLUMNS if any(column[0] in summary.get(arm, {}) for arm in table.arms)]
    columns = COLUMNS + tuple(measured)
    labels = [label for _, label, _ in columns]
    lines = [f"### {table.title} (mean ± std over seeds {seeds})", "",
             "| arm | " + " | ".join(labels) + " | paper: " + " / ".join(PAPER_COLUMNS) + " |",
             "|---|" + "---|" * (len(labels) + 1)]
    for name in table.arms:
        row = summary.get(name, {})
        cells = [_cell(row.get(key)) for key, _, _ in columns]
        paper = table.paper.get(name)
        paper_cell = " / ".join(f"{v:g}" for v in paper) if paper else "—"
        lines.append(f"| {ARMS[name].label} | " + " | ".join(cells) + f" | {paper_cell} |")
    lines.append("")
    for claim in claims:
        lines.append(f"- ({claim['claim']}) {claim['text']}: **{claim['verdict']}**")
    return "\n".join(lines) + "\n"


def spatial_markdown(table: Table, summary: dict, claims: list[dict], seeds: list[int], floors: dict) -> str:
    """An MLLM table (VisPer-LM's): spatial QA accuracy overall and per kind, the majority-answer floor below."""
    labels = [label for _, label, _ in SPATIAL_COLUMNS]
    lines = [f"### {table.title} (mean ± std over seeds {seeds})", "",
             "| MLLM | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name in table.arms:
        row = summary.get(name, {})
        lines.append(f"| {ARMS[name].label} | " + " | ".join(_cell(row.get(key)) for key, _, _ in SPATIAL_COLUMNS)
                     + " |")
    lines.append("| majority answer per kind (floor) | " + " | ".join(
        f"{floors[key]:.3f}" if key in floors else "—" for key, _, _ in SPATIAL_COLUMNS) + " |")
    lines.append("")
    for claim in claims:
        lines.append(f"- ({claim['claim']}) {claim['text']}: **{claim['verdict']}**")
    return "\n".join(lines) + "\n"


def bar_chart(path: Path, table: Table, summary: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4.2 * len(COLUMNS), 3.6))
    names = [name for name in table.arms if name in summary]
    for axis, (key, label, _) in zip(axes, COLUMNS):
        present = [name for name in names if key in summary[name]]
        means = [summary[name][key]["mean"] for name in present]
        stds = [summary[name][key]["std"] for name in present]
        axis.bar(range(len(present)), means, yerr=stds, capsize=4, color=plt.cm.tab10(np.arange(len(present))))
        axis.set_xticks(range(len(present)), [name for name in present], rotation=30, ha="right", fontsize=8)
        axis.set_title(label, fontsize=10)
    fig.suptitle(table.title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- the run
def arms_of(tables: list[str]) -> list[str]:
    seen = []
    for name in tables:
        seen += [arm for arm in TABLES[name].arms if arm not in seen]
    return seen


FIGURE_ARMS = ("baseline", "cap_depth_seg")  # the qualitative figure: baseline vs. VersaViT probe predictions


def reproduce(args: ReproduceArguments, train: Callable[[list[str]], dict],
              check: Callable[[list[str]], object] | None = None) -> dict:
    """Build the baseline, run every arm of `args.tables` with every seed, measure each tower, write the tables
    (Markdown, JSON), bar charts and the qualitative figure; returns the results. `train(argv)` runs a
    `recipes/multitask.py` command line; `check(argv)`, if given, parses one without running it: every run's config
    is checked before the first one starts."""
    from ..core.reporting import probe_figure

    if args.quick:
        for key, value in QUICK_MEASURE.items():
            setattr(args, key, value)
    started = time.perf_counter()
    output = Path(args.output_dir)
    runner = Runner(args, train)
    mllm_tables = [name for name in args.tables if all(ARMS[arm].kind == "mllm" for arm in TABLES[name].arms)]
    tower_tables = [name for name in args.tables if name not in mllm_tables]
    arms = arms_of(tower_tables)
    runs = output / "runs"

    # The plan: every run's config, checked before anything trains. One baseline per tower the arms use.
    def baseline_name(tower: str | None) -> str:
        return "baseline" if tower is None else f"baseline-{tower}"

    def tower_options(tower: str | None, post: bool) -> dict:  # a post-training run takes its tower from the baseline
        options = dict(args.towers[tower]) if tower is not None else {}
        return {k: v for k, v in options.items() if k != "vision_config"} if post else options

    baselines = list(dict.fromkeys(ARMS[name].tower for name in arms if ARMS[name].kind != "random"))
    planned = [(baseline_name(tower), runner.config(runs / baseline_name(tower), args.baseline,
                                                    tower_options(tower, post=False))) for tower in baselines]
    towers, starts = {}, {}
    for seed in args.seeds:
        for name in arms:
            kind, tag, tower = ARMS[name].kind, f"{name}-seed{seed}", ARMS[name].tower
            baseline_tower = runs / baseline_name(tower) / "backbone"
            if kind == "baseline":
                towers[tag] = baseline_tower
            elif kind == "random":
                towers[tag] = runs / f"random-seed{seed}" / "backbone"
            else:
                towers[tag], starts[tag] = runs / tag / "backbone", baseline_tower
                planned.append((tag, runner.config(runs / tag, args.post_training, tower_options(tower, post=True),
                                                   ARMS[name].options,
                                                   {"model_name_or_path": str(baseline_tower), "seed": seed})))
    seeds = {f"{name}-seed{seed}": seed for seed in args.seeds for name in arms}
    arm_of = {f"{name}-seed{seed}": name for seed in args.seeds for name in arms}
    qa_runs = {tag: runner.config(runs / f"qa-{tag}", tower_options(ARMS[arm_of[tag]].tower, post=True),
                                  args.qa_protocol, {"model_name_or_path": str(tower), "seed": seeds[tag]})
               for tag, tower in towers.items()}
    if check is not None:
        for name, mapping in planned + [(f"qa-{tag}", m) for tag, m in qa_runs.items()]:
            runner.check(name, mapping, check)
    print(f"Proving ground: {', '.join(args.tables)}; arms {arms + arms_of(mllm_tables)}; seeds {args.seeds}; "
          f"{args.scene_style} scenes; {len(planned)} training runs and {len(qa_runs)} QA-protocol runs"
          + (" (and the VisPer-LM table's)" if mllm_tables else "") + f"; outputs in {output}", flush=True)

    # 1. the baseline towers, once each; 2. the arms' towers, from theirs
    for name, mapping in planned:
        depends = tower_digest(starts[name]) if name in starts else ""
        prune(runner.run(name, mapping, depends))
    for tag, tower in towers.items():
        if ARMS[tag.rsplit("-seed", 1)[0]].kind == "random":
            random_tower(tower.parent, runner.base, seeds[tag])
    data = HeldOut.build(args, load_run_config(planned[0][1]).get("num_scenes", 300)) if planned else None

    # 3. the measurements of every tower (cached per arm and seed)
    measurements: dict[str, list[dict]] = {}
    predictions: dict[str, dict] = {}
    for seed in args.seeds:
        for name in arms:
            tag = f"{name}-seed{seed}"
            probes, drawn = measure_probes(output / "measurements" / tag, towers[tag], seed, args, data)
            result = {**probes, **measure_out_of_task(output / "measurements" / tag, towers[tag], seed, args),
                      **measure_qa(runner, f"qa-{tag}", qa_runs[tag], data, args.qa_scenes)}
            (output / "measurements" / f"{tag}.json").write_text(json.dumps(result, indent=2))
            if seed == args.seeds[0]:
                predictions[name] = drawn
            measurements.setdefault(name, []).append(result)
            extra = "".join(f"  {kind} {result[kind]:.3f}" for kind in OUT_OF_TASK if kind in result)
            print(f"  {tag}: QA {result['qa_accuracy']:.3f}  depth RMSE {result['depth_rmse']:.3f}  "
                  f"seg mIoU {result['seg_miou']:.3f}" + extra, flush=True)

    # the MLLM tables (VisPer-LM): their own runs and spatial questions
    floors = {}
    if mllm_tables:
        baseline = None if tower_tables else runner.config(runs / baseline_name(None), args.baseline)
        visper = reproduce_visper(args, runner, check, baseline)
        measurements.update(visper["measurements"])
        floors = visper["floors"]

    # 4. tables, charts and the figure
    summary = summarise(measurements)
    results = {"tables": {}, "arms": summary, "seeds": args.seeds, "scene_style": args.scene_style,
               "majority_qa_accuracy": data.majority_qa if data else None, "settings": asdict(args),
               "run_seconds": runner.run_seconds}
    if mllm_tables:
        results["majority_spatial_accuracy"] = floors
    text = ""
    for name in args.tables:
        table = TABLES[name]
        claims = check_claims(table, summary)
        markdown = (spatial_markdown(table, summary, claims, args.seeds, floors) if name in mllm_tables
                    else markdown_table(table, summary, claims, args.seeds))
        (output / f"{name}.md").write_text(markdown)
        if name not in mllm_tables:
            bar_chart(output / f"{name}.png", table, summary)
        results["tables"][name] = {"arms": list(table.arms), "paper": table.paper, "claims": claims,
                                   "markdown": str(output / f"{name}.md"), "chart": str(output / f"{name}.png")}
        text += markdown + "\n"
    if predictions:
        shown = [name for name in FIGURE_ARMS if name in predictions] or list(predictions)[:2]
        count = min(args.num_examples, len(data.seg_eval))
        examples = [(data.seg_eval.load(i)[0], data.seg_eval.load(i)[1], data.depth_eval.load(i)[1])
                    for i in range(count)]
        rows = [{"name": ARMS[name].label.split(" (")[0], **predictions[name]} for name in shown]
        results["figure"] = str(probe_figure(output / "figure4.png", examples, rows))
    results["seconds"] = time.perf_counter() - started
    (output / "results.json").write_text(json.dumps(results, indent=2))
    floor = f"QA majority-answer floor: {data.majority_qa:.3f}\n" if data else ""
    figure = f"figure      {results['figure']}\n" if "figure" in results else ""
    print("\n" + text + floor + f"results     {output / 'results.json'}\n" + figure +
          f"time        {results['seconds'] / 60:.1f} min", flush=True)
    return results


def load_run_config(mapping: dict) -> dict:
    """The options a run's config mapping sets, its `base:` chain applied."""
    from ..core.config import load_config_file

    return {**load_config_file(mapping["base"]), **{k: v for k, v in mapping.items() if k != "base"}}


__all__ = [
    "ARMS", "Arm", "HeldOut", "ReproduceArguments", "TABLES", "Table", "check_claims", "markdown_table",
    "probe_tower", "register_arm", "register_table", "reproduce", "spread", "summarise",
]
