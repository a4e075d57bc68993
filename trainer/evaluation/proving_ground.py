# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground: the paper's ablation tables in miniature, on generated scenes, on a CPU (`make reproduce`).

The paper's premise is an MLLM tower trained for language only, weak on dense features (its Qwen2-VL-ViT). Its
analog here is the **baseline tower**: the pre-trained miniature (a small Qwen2-VL-style tower and its projector,
trained with captioning / QA only through the real SmolLM2 on generated scenes: `data.assets.miniature_path`)
continued with captioning once per seed. Each **arm** post-trains its seed's baseline
tower (the VersaViT curriculum of `recipes/multitask.py`: alignment warm-up, then multi-task training of the arm's
tasks and λ) with the same steps and data. Each tower is then **measured** on held-out scenes no run trained on, its
weights frozen:

- linear probes (the paper's Table 3 protocol, `probes.py`): metric depth (RMSE, AbsRel, δ1 within the scenes'
  depth range; RMSE on object pixels alone) and semantic segmentation (mIoU over the object classes; the
  background classes apart);
- question-answer accuracy, standing in for OpenCompass: the paper's VQA-evaluation protocol (a fresh projector,
  then projector + LLM, trained on the scenes' captions and questions with the tower frozen), then exact-match
  accuracy of greedy answers to held-out scene questions, and of the same MLLM shown a grey image (`qa.py`).

Every measurement is an instrument with controls (`ground_tables.INSTRUMENTS`): the random tower, towers
post-trained on depth alone and on class segmentation alone, the grey image and the majority-answer floor.
`ground_report.check_instruments` says which instruments passed; a claim resting on one that did not gets no
verdict.

Every arm runs with each seed (post-training, probes and QA protocol); tables report mean ± std over seeds, with the
paper's own numbers beside. A table is data: `Table` rows name `Arm`s, and an arm is the options of its run, so
later methods and towers add their tables with `register_table` without touching the default Table 4 run. Runs and
measurements are cached in the output folder: an interrupted reproduction continues where it stopped, and a
finished one only redraws its outputs.
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import ConfigError
from ..data.scenes import scene_style
from .ground_measures import HeldOut, measure_out_of_task, measure_probes, measure_qa
from .ground_report import (
    bar_chart,
    check_claims,
    check_instruments,
    instruments_markdown,
    markdown_table,
    spatial_markdown,
    summarise,
)
from .ground_runs import (
    QUICK_MEASURE,
    Runner,
    baseline_name,
    load_run_config,
    prune,
    random_tower,
    start_digest,
)
from .ground_tables import ARMS, CONTROL_ARMS, TABLES
from .out_of_task import OUT_OF_TASK
from .visper_ground import reproduce_visper


@dataclass
class ReproduceArguments:
    output_dir: str = field(default="outputs/reproduce", metadata={"help": "Where runs, measurements and tables go."})
    tables: list[str] = field(
        default_factory=lambda: ["table4"],
        metadata={
            "help": "Tables to reproduce: table4 (multi-task ablation, the default), table5 (loss weights), table6 "
            "(other tower families), sailvit (SAILViT's staged refinement against VersaViT, same budget), visper "
            "(VisPer-LM's embedding distillation vs NTP only vs VersaViT's tower: MLLMs on spatial questions)."
        },
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "Seeds of every arm (its post-training, probes and QA protocol; a random tower's init)."})
    quick: bool = field(default=False, metadata={
        "help": "A few steps of everything on a few scenes: checks the pipeline end to end in a few minutes; its "
                "numbers mean nothing."})
    run_config: str = field(default="default.yaml", metadata={
        "help": "The config every training run builds on (relative to recipes/configs, or a path): the tower, "
                "LLM, heads and stages of `make demo`."})
    scene_style: str = field(default="room", metadata={"help": "Style of every generated scene: room (the "
                                                               "cluttered style inside walls: bounded depth), "
                                                               "cluttered or simple."})
    baseline: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options of the baseline runs, one per seed (captioning only: the pre-trained "
                "miniature continued with the seed, or a tower trained from random init)."})
    post_training: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options every arm's post-training run shares (its arm adds tasks and λ)."})
    qa_protocol: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options of the VQA-evaluation runs (stages with the encoder frozen)."})
    visper: dict | str | None = field(default=None, metadata={
        "help": "recipes/multitask.py options over recipes/configs/visper_default.yaml's for the visper table's rows "
                "(e.g. distillation_experts for another tower or LLM: their layers)."})
    towers: dict | str | None = field(default=None, metadata={
        "help": "Other towers, by name: recipes/multitask.py options over run_config for an arm's `tower` (its "
                "vision_config, input sizes); its baseline and its arms use them (table6). A tower's `baseline:` "
                "mapping replaces options of `baseline:` for its own baseline (e.g. from random init)."})
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
        from ..config import mapping_option

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
                if tower is not None and not isinstance(self.towers[tower].get("baseline", {}), dict):
                    raise ConfigError(f"towers.{tower}.baseline: expected a mapping of run options over `baseline:`, "
                                      f"got {self.towers[tower]['baseline']!r}.")
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


# ---------------------------------------------------------------------------------------------- the run
def arms_of(tables: list[str]) -> list[str]:
    """The arms of `tables` in order; with any table of towers, the instruments' controls (`CONTROL_ARMS`) first."""
    seen = list(CONTROL_ARMS) if any(ARMS[arm].kind != "mllm" for name in tables for arm in TABLES[name].arms) else []
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

    # The plan: every run's config, checked before anything trains. One baseline per tower the arms use and seed,
    # so that the baseline row's spread, and every arm's, includes the baseline's training variation.
    def tower_options(tower: str | None, post: bool) -> dict:  # a post-training run takes its tower from the baseline
        options = {k: v for k, v in (args.towers[tower] if tower is not None else {}).items() if k != "baseline"}
        return {k: v for k, v in options.items() if k != "vision_config"} if post else options

    def baseline_options(tower: str | None) -> dict:  # `baseline:`, with a tower's own `baseline:` over it
        return {**args.baseline, **(args.towers[tower].get("baseline", {}) if tower is not None else {})}

    baselines = list(dict.fromkeys(ARMS[name].tower for name in arms if ARMS[name].kind != "random"))
    planned = [(baseline_name(tower, seed), runner.config(runs / baseline_name(tower, seed), baseline_options(tower),
                                                          tower_options(tower, post=False), {"seed": seed}))
               for seed in args.seeds for tower in baselines]
    towers = {}
    for seed in args.seeds:
        for name in arms:
            kind, tag, tower = ARMS[name].kind, f"{name}-seed{seed}", ARMS[name].tower
            baseline_tower = runs / baseline_name(tower, seed) / "backbone"
            if kind == "baseline":
                towers[tag] = baseline_tower
            elif kind == "random":
                towers[tag] = runs / f"random-seed{seed}" / "backbone"
            else:
                towers[tag] = runs / tag / "backbone"
                planned.append((tag, runner.config(runs / tag, args.post_training, tower_options(tower, post=True),
                                                   ARMS[name].options,
                                                   {"model_name_or_path": str(baseline_tower), "seed": seed})))
    seeds = {f"{name}-seed{seed}": seed for seed in args.seeds for name in arms}
    arm_of = {f"{name}-seed{seed}": name for seed in args.seeds for name in arms}
    qa_runs = {tag: runner.config(runs / f"qa-{tag}", tower_options(ARMS[arm_of[tag]].tower, post=True),
                                  args.qa_protocol, {"model_name_or_path": str(tower), "seed": seeds[tag]})
               for tag, tower in towers.items() if ARMS[arm_of[tag]].qa}
    if check is not None:
        for name, mapping in planned + [(f"qa-{tag}", m) for tag, m in qa_runs.items()]:
            runner.check(name, mapping, check)
    print(f"Proving ground: {', '.join(args.tables)}; arms {arms + arms_of(mllm_tables)}; seeds {args.seeds}; "
          f"{args.scene_style} scenes; {len(planned)} training runs and {len(qa_runs)} QA-protocol runs"
          + (" (and the VisPer-LM table's)" if mllm_tables else "") + f"; outputs in {output}", flush=True)

    # 1. the baseline towers, once each; 2. the arms' towers, from theirs
    for name, mapping in planned:  # a run is stale when the tower it starts from changed (the miniature, a baseline)
        prune(runner.run(name, mapping, start_digest(mapping)))
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
            result = {**probes, **measure_out_of_task(output / "measurements" / tag, towers[tag], seed, args)}
            if tag in qa_runs:
                result.update(measure_qa(runner, f"qa-{tag}", qa_runs[tag], data, args.qa_scenes))
            (output / "measurements" / f"{tag}.json").write_text(json.dumps(result, indent=2))
            if seed == args.seeds[0]:
                predictions[name] = drawn
            measurements.setdefault(name, []).append(result)
            extra = "".join(f"  {kind} {result[kind]:.3f}" for kind in OUT_OF_TASK if kind in result)
            qa = f"QA {result['qa_accuracy']:.3f} (grey image {result['qa_grey']:.3f})  " if tag in qa_runs else ""
            print(f"  {tag}: {qa}depth RMSE {result['depth_rmse']:.3f}  AbsRel {result['depth_abs_rel']:.3f}  "
                  f"object mIoU {result['seg_miou']:.3f}" + extra, flush=True)

    # the MLLM tables (VisPer-LM): their own runs and spatial questions
    floors = {}
    if mllm_tables:
        baselines = None if tower_tables else {
            seed: runner.config(runs / baseline_name(None, seed), args.baseline, {"seed": seed}) for seed in args.seeds}
        visper = reproduce_visper(args, runner, check, baselines)
        measurements.update(visper["measurements"])
        floors = visper["floors"]

    # 4. tables, charts and the figure
    summary = summarise(measurements)
    instruments = check_instruments(summary, {"qa_accuracy": data.majority_qa} if data else {})
    results = {"tables": {}, "arms": summary, "instruments": instruments, "seeds": args.seeds,
               "scene_style": args.scene_style, "majority_qa_accuracy": data.majority_qa if data else None,
               "settings": asdict(args), "run_seconds": runner.run_seconds}
    if mllm_tables:
        results["majority_spatial_accuracy"] = floors
    text = ""
    for name in args.tables:
        table = TABLES[name]
        claims = check_claims(table, summary, None if name in mllm_tables else instruments)
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
    floor = f"QA majority-answer floor: {data.majority_qa:.3f}\n\n" + instruments_markdown(instruments) if data else ""
    if data:
        (output / "instruments.md").write_text(instruments_markdown(instruments))
    figure = f"figure      {results['figure']}\n" if "figure" in results else ""
    print("\n" + text + floor + f"results     {output / 'results.json'}\n" + figure +
          f"time        {results['seconds'] / 60:.1f} min", flush=True)
    return results


__all__ = ["ReproduceArguments", "arms_of", "reproduce"]
