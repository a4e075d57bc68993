# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground's tables as data (see `proving_ground`): a `Table`'s rows name `Arm`s, an arm is the options of
its run; the columns each table reports and the paper's numbers beside them; the scene seeds of the measurements.
Later methods and towers add theirs with `register_arm` / `register_table`."""

from dataclasses import dataclass, field

from ..methods.sailvit import sailvit_run_options

# Scene seeds of the measurements: far from the runs' training scenes (0 ..) and their held-out ones (1e6 ..).
PROBE_TRAIN_SEED, PROBE_EVAL_SEED, QA_EVAL_SEED = 5000, 9000, 9000
# (key, label, higher is better) of the table's columns, in the paper's order: QA accuracy, the depth probe's RMSE
# (metres, within the scenes' depth range) and the segmentation probe's mIoU over the object classes; then the
# paper's other depth metrics, the object pixels' depth, the background classes apart, the QA protocol's MLLM given
# a grey image instead of each scene (its control), and the out-of-task columns (`out_of_task.py`, for the
# measurements asked for: `--out_of_task`).
COLUMNS = (("qa_accuracy", "QA accuracy ↑", True), ("depth_rmse", "depth RMSE ↓", False),
           ("seg_miou", "object mIoU ↑", True))
EXTRA_COLUMNS = (("depth_abs_rel", "depth AbsRel ↓", False), ("depth_delta1", "depth δ1 ↑", True),
                 ("object_rmse", "object depth RMSE ↓", False), ("background_iou", "wall / sky + ground IoU ↑", True),
                 ("qa_grey", "grey-image QA (control) ↑", True),
                 ("correspondence", "scene correspondence R@10% ↑", True),
                 ("retrieval", "scene retrieval mean R ↑", True), ("classification", "scene zero-shot top-1 ↑", True))
PAPER_COLUMNS = ("OpenCompass ↑", "NYUv2 RMSE ↓", "ADE20k mIoU ↑")
# The MLLM tables' columns (`visper_ground.py`): accuracy on CV-Bench-style spatial questions, overall and per kind.
SPATIAL_COLUMNS = (("spatial_qa", "spatial QA ↑", True), ("spatial_depth", "depth order ↑", True),
                   ("spatial_relation", "left / right ↑", True), ("spatial_count", "count ↑", True))


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
    qa: bool = True  # measure QA accuracy (the probes' positive controls do not need it)


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
    Arm("depth_only", "control: + depth only", options={"tasks": ["depth"]}, qa=False),
    # the segmentation probe reads the shape classes: its positive control trains exactly that, semantic segmentation
    # posed as referring masks ("all spheres": every sphere), with the referring-segmentation head and loss
    Arm("seg_only", "control: + class segmentation only", options={"tasks": ["segmentation"],
                                                                    "scene_expressions": "classes"}, qa=False),
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

# The instruments and their controls: per instrument, the column it reads, its positive control (an arm trained for
# exactly what it reads) and its negative controls (an arm, or (arm, column): the same arm's other column; "floor":
# the majority-answer floor). An instrument passes when its positive control beats every negative one beyond the
# seeds' spread (`ground_report.check_instruments`); a claim on a column whose instrument failed gets no verdict.
# The controls' arms run with every tower table (`CONTROL_ARMS`), on the default tower.
INSTRUMENTS = {
    "depth probe": {"column": "depth_rmse", "positive": "depth_only", "negative": ("random",)},
    "segmentation probe": {"column": "seg_miou", "positive": "seg_only", "negative": ("random",)},
    "QA": {"column": "qa_accuracy", "positive": "baseline", "negative": (("baseline", "qa_grey"), "floor")},
}
CONTROL_ARMS = ("random", "baseline", "depth_only", "seg_only")

# A claim: (id, text, kind, arguments); kinds: "worst" (arm worst of the table on columns), "not_better" (arm not
# better than other on columns), "better" / "at_least" (arm better than / at least as good as other on column),
# "all_better" (each of arms better than other on columns), "best" (arm better than each of others on column).
register_table(Table(
    "table4", "Table 4: multi-task training ablation",
    ("random", "baseline", "depth_only", "seg_only", "cap", "cap_depth", "cap_depth_seg"),
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


__all__ = [
    "ALL_TASKS",
    "ARMS",
    "Arm",
    "COLUMNS",
    "CONTROL_ARMS",
    "EXTRA_COLUMNS",
    "INSTRUMENTS",
    "PAPER_COLUMNS",
    "PROBE_EVAL_SEED",
    "PROBE_TRAIN_SEED",
    "QA_EVAL_SEED",
    "SPATIAL_COLUMNS",
    "TABLES",
    "Table",
    "register_arm",
    "register_table",
]
