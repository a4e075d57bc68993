# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Stage curricula: a training run as a list of stages, each data, not code.

A stage says which objectives run (their λ, per-device batch sizes and data), which parts train at which learning
rate (the rest is frozen) and how long it lasts. In a recipe's YAML config:

    stages:
      - name: projector                      # its folder: <output_dir>/projector
        objectives: [captioning]             # names of registered objectives (versavit_trainer.objectives)
        train: {projector: 5.0e-4}           # part -> learning rate (or `frozen`); parts not named are frozen
        max_steps: 100                       # any MultiTaskTrainingArguments field, for this stage only
      - name: projector_llm
        objectives:
          captioning: {weight: 1.0, batch_size: 8, data: /data/llava_instruct}   # a folder, or generated scenes:
        train: {projector: 2.0e-5, language_model: 2.0e-5}     # data: {num_scenes: 200, scene_seed: 7, texts: short}
        num_train_epochs: 1

An objective entry's unset `weight`, `batch_size` and `data` are the run's options (`<name>_weight`,
`<name>_batch_size`, `<name>_data`, else the run's generated scenes). Generated scenes' `texts` picks the conversations
their captioning rows hold (and the captions of contrastive pairs): `default` (caption + questions), `short`, `detailed`
(+ grounding) or `instructions` (`data.scenes.SCENE_TEXTS`, the data of SAILViT's stages). Instead of `train`, a stage
may name a preset with `stage: alignment` (the projector at `alignment_learning_rate`) or `stage: multitask` (the
paper's rates, see `stage_learning_rates`); `train` then adjusts it. Without `stages:` a run is the VersaViT curriculum
of today's flags (`methods.versavit.versavit_stages`): the captioning-alignment warm-up (`alignment_max_steps`), then
multi-task training of `tasks`.

Each stage trains in its own folder and, when it has finished, leaves there `trained_parts.safetensors` (the state
of the parts it trained), `log_history.json` and `stage.json`; a run resumed with `--resume` loads the finished
stages' parts in order and continues the first unfinished stage from its last checkpoint.
"""

import dataclasses
import importlib
import importlib.util
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ..config import ConfigError, check_mapping_keys
from ..objectives import get_objective
from ..run_folder import incomplete_file

logger = logging.getLogger(__name__)

STAGE_KEYS = ("name", "objectives", "train")
OBJECTIVE_KEYS = ("weight", "batch_size", "data")
SCENE_KEYS = ("num_scenes", "scene_seed", "texts")
# Training options a stage may not set: the trainer's folder is the stage's; the preset and the rates are `stage`
# and `train`.
NOT_PER_STAGE = ("output_dir", "part_learning_rates")
# What a run writes at the top of its output_dir: a stage's folder would collide with it.
RESERVED_NAMES = ("final", "backbone", "config.yaml", "summary.json", "eval_before.json", "loss_curves.png",
                  "predictions.png", "run.json")
TRAINED_PARTS_FILE = "trained_parts.safetensors"
STAGE_RECORD_FILE = "stage.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class StageObjective:
    """One objective of a stage: its λ, per-device batch size and data (a folder, a mapping of generated scenes
    `{num_scenes, scene_seed}`, or None: the run's default)."""

    name: str
    weight: float
    batch_size: int
    data: str | dict | None = None


@dataclass
class Stage:
    """One stage of a curriculum: its name (and folder), objectives, and the training options it sets
    (`stage` preset, `part_learning_rates`, length, ...)."""

    name: str
    objectives: list[StageObjective]
    training: dict[str, Any] = field(default_factory=dict)

    def arguments(self, training_args, output_dir: Path):
        """The run's `MultiTaskTrainingArguments` for this stage, writing to `output_dir / name`."""
        return dataclasses.replace(training_args, output_dir=str(Path(output_dir) / self.name), **self.training)

    @property
    def objective_names(self) -> list[str]:
        return [objective.name for objective in self.objectives]


def import_objectives(paths: list[str] | None) -> None:
    """Import the files (`*.py`) or modules that register a run's own objectives (`--imports`)."""
    for entry in paths or []:
        if entry.endswith(".py"):
            path = Path(entry)
            if not path.is_file():
                raise ConfigError(f"imports: no such file {entry!r}.")
            name = f"versavit_imports.{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(entry)
            except ImportError as err:
                raise ConfigError(f"imports: cannot import {entry!r} ({err}).") from None


def parse_stages(value, data_args, training_args) -> list[Stage]:
    """The `stages:` option as `Stage`s, every key and value checked; errors name the path (`stages[1].train.x`)."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"stages: expected a non-empty list of stages, got {value!r}.")
    fields = {f.name: f for f in dataclasses.fields(training_args) if f.init}
    stages, names = [], set()
    for i, entry in enumerate(value):
        where = f"stages[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping (name, objectives, train, ...), got {entry!r}.")
        for key in entry:
            if key not in STAGE_KEYS and (key not in fields or key in NOT_PER_STAGE):
                check_mapping_keys({key: None}, set(STAGE_KEYS) | (set(fields) - set(NOT_PER_STAGE)), where)
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES or name.startswith("config."):
            raise ConfigError(f"{where}.name: expected a folder name (letters, digits, _ . -) that is not one of the "
                              f"run's own files or folders ({', '.join(RESERVED_NAMES)}, config.*), got {name!r}.")
        if name in names:
            raise ConfigError(f"{where}.name: {name!r} names two stages.")
        names.add(name)
        objectives = _stage_objectives(entry.get("objectives"), data_args, f"{where}.objectives")
        training = {key: _checked_value(entry[key], fields[key], training_args, f"{where}.{key}")
                    for key in entry if key not in STAGE_KEYS}
        train = entry.get("train")
        if train is not None:
            if not isinstance(train, dict) or not train:
                raise ConfigError(f"{where}.train: expected a mapping of part -> learning rate or 'frozen', got "
                                  f"{train!r}.")
            training["part_learning_rates"] = train
            training.setdefault("stage", "custom")
        elif "stage" not in training:
            raise ConfigError(f"{where}: say what trains: train: {{part: learning rate, ...}} (the other parts are "
                              "frozen), or a preset stage: alignment | multitask.")
        stage = Stage(name, objectives, training)
        try:
            stage.arguments(training_args, Path(training_args.output_dir))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
        stages.append(stage)
    heads = model_tasks(stages)
    if data_args.tasks is not None and sorted(data_args.tasks) != sorted(heads):
        raise ConfigError(f"tasks: {data_args.tasks}, but with `stages:` the model's heads are those of the stages' "
                          f"objectives ({heads or 'none: objectives of your own add their parts'}); leave tasks out.")
    return stages


def _stage_objectives(value, data_args, where: str) -> list[StageObjective]:
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        value = dict.fromkeys(value)
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: expected objective names (a list) or a mapping of name -> {{weight, batch_size, "
                          f"data}}, got {value!r}.")
    objectives = []
    for name, settings in value.items():
        try:
            get_objective(name, where)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}.{name}: expected a mapping of {', '.join(OBJECTIVE_KEYS)}, got {settings!r}.")
        check_mapping_keys(settings, OBJECTIVE_KEYS, f"{where}.{name}")
        objectives.append(stage_objective(name, settings, data_args, f"{where}.{name}"))
    return objectives


def stage_objective(name: str, settings: dict, data_args, where: str = "") -> StageObjective:
    objective = get_objective(name, where or "tasks")
    weight = settings.get("weight", objective.weight(data_args))
    batch_size = settings.get("batch_size", objective.batch_size(data_args))
    data = settings.get("data")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
        raise ConfigError(f"{where}.weight: the loss weight λ must be a finite value >= 0, got {weight!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < objective.min_batch_size:
        raise ConfigError(
            f"{where}.batch_size: must be an integer >= {objective.min_batch_size} for objective {name!r}, "
            f"got {batch_size!r}."
        )
    if isinstance(data, dict):
        from ..data.scenes import SCENE_TEXTS

        check_mapping_keys(data, SCENE_KEYS, f"{where}.data")
        texts = data.get("texts", "default")
        if texts not in SCENE_TEXTS:
            raise ConfigError(f"{where}.data.texts: expected one of {list(SCENE_TEXTS)}, got {texts!r}.")
        for key, value in data.items():
            if key == "texts":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "num_scenes" else 0):
                raise ConfigError(f"{where}.data.{key}: expected an integer >= {1 if key == 'num_scenes' else 0}, got "
                                  f"{value!r}.")
    elif data is not None and not (isinstance(data, str) and data.strip()):
        raise ConfigError(f"{where}.data: expected a dataset folder or {{num_scenes, scene_seed}}, got {data!r}.")
    return StageObjective(name, float(weight), batch_size, data)


def _checked_value(value, spec: dataclasses.Field, training_args, where: str):
    """A stage's value for training option `spec`, of the type the run's own value has (a misspelt or mistyped
    value fails here, naming its path)."""
    current = getattr(training_args, spec.name)
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = True  # strings, enums, mappings: the arguments' own checks run on them
    if not ok:
        raise ConfigError(f"{where}: expected a {type(current).__name__}, got {value!r}.")
    return float(value) if isinstance(current, float) else value


def model_tasks(stages: list[Stage]) -> list[str]:
    """The tasks of the VersaViT model the curriculum trains (its heads), in order of first use."""
    tasks = []
    for stage in stages:
        for name in stage.objective_names:
            task = get_objective(name).model_task
            if task is not None and task not in tasks:
                tasks.append(task)
    return tasks


def objectives_of(stages: list[Stage]) -> list[str]:
    """Every objective the curriculum uses, in order of first use."""
    return list(dict.fromkeys(name for stage in stages for name in stage.objective_names))


# ---------------------------------------------------------------------------------------------------- finished stages
def finished_stage(folder: Path) -> dict | None:
    """What a finished stage recorded in `folder` (`stage.json`, written last), or None. A stage whose record or
    trained parts were not written to the end is not finished (a warning names the file): its run resumes from its
    last complete checkpoint."""
    folder = Path(folder)
    files = [folder / TRAINED_PARTS_FILE, folder / "log_history.json", folder / STAGE_RECORD_FILE]
    if not files[-1].is_file():
        return None
    damaged = {path.name: problem for path in files
               if (problem := "missing" if not path.is_file() else incomplete_file(path)) is not None}
    if damaged:
        logger.warning("%s: the finished stage's %s; resuming the stage from its last complete checkpoint instead",
                       folder, "; ".join(f"{name} is not complete ({problem})" for name, problem in damaged.items()))
        return None
    return json.loads(files[-1].read_text())


def check_finished_stages(stages: list["Stage"], training_args, output_dir: Path) -> None:
    """`ConfigError` when a resumed run asks a stage that finished earlier for another number of steps: a finished
    stage is loaded, not trained again (its schedule has ended), so the new count would be recorded yet never run."""
    for stage in stages:
        args = stage.arguments(training_args, output_dir)
        record = finished_stage(Path(args.output_dir))
        if record is not None and args.max_steps > 0 and args.max_steps != record["steps"]:
            raise ConfigError(
                f"--resume: stage {stage.name!r} asks for max_steps {args.max_steps}, but it finished at "
                f"{record['steps']} steps in the run being resumed ({Path(args.output_dir) / STAGE_RECORD_FILE}); a "
                "finished stage is not trained again. Resume with its original max_steps, or start a new run from "
                f"this one's weights (--model_name_or_path {Path(output_dir) / 'final'}).")


def check_stage_parts(model, stages: list["Stage"], training_args, output_dir: Path) -> None:
    """Before anything is written: `ConfigError` naming the stage unless each stage's parts are parts of `model` (the
    model the trainer gets) and at least one of them trains (a stage that freezes everything would only fail once
    its trainer builds the optimizer, after the run's record was written)."""
    from ..parts import training_parts
    from .arguments import stage_learning_rates

    parts = training_parts(model)
    for stage in stages:
        try:
            rates = stage_learning_rates(stage.arguments(training_args, output_dir), parts)
        except ValueError as err:
            raise ConfigError(f"stage {stage.name!r}: {err}") from None
        if not any(rate is not None and any(True for _ in parts[part].parameters()) for part, rate in rates.items()):
            shown = ", ".join(f"{part}: {'frozen' if rate is None else rate}" for part, rate in rates.items())
            raise ConfigError(f"stage {stage.name!r}: every part is frozen ({shown}), so it would train nothing; give "
                              "at least one part a learning rate (train: {part: rate}).")


def trained_state(model, rates: dict[str, float | None], whole: dict | None = None) -> dict:
    """The state (parameters and buffers) of the parts of `model` that trained (`rates` not None), under the names
    of `model.state_dict()`; a tensor tied to another is kept once. `whole`: the whole model's state gathered from
    the processes' shards (`MultiTaskTrainer.full_state_dict`), whose tensors are taken instead of `model`'s own."""
    from ..parts import training_parts

    parts = training_parts(model)
    ids = {id(t) for part, rate in rates.items() if rate is not None and part in parts
           for t in (*parts[part].parameters(), *parts[part].buffers())}
    state = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in ids:
            ids.discard(id(tensor))  # a tied tensor (the LLM's embeddings and head) once, under its first name
            state[name] = (tensor if whole is None else whole[name]).detach().contiguous()
    return state


def save_finished_stage(folder: Path, model, rates: dict, record: dict, log_history: list,
                        whole: dict | None = None) -> None:
    """Leave a finished stage's trained parts (from `whole` when the model is sharded: see `trained_state`), log
    history and record in `folder` (the record last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(model, rates, whole), folder / TRAINED_PARTS_FILE)
    (folder / "log_history.json").write_text(json.dumps(log_history))
    (folder / STAGE_RECORD_FILE).write_text(json.dumps(record, indent=2))


def load_finished_stage(folder: Path, model) -> list:
    """Load a finished stage's trained parts into `model`; returns its log history."""
    state = load_file(Path(folder) / TRAINED_PARTS_FILE)
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(
            f"{folder / TRAINED_PARTS_FILE}: holds weights this model lacks: {result.unexpected_keys[:5]}."
        )
    return json.loads((Path(folder) / "log_history.json").read_text())


__all__ = [
    "Stage",
    "check_finished_stages",
    "check_stage_parts",
    "stage_objective",
    "StageObjective",
    "finished_stage",
    "import_objectives",
    "load_finished_stage",
    "model_tasks",
    "objectives_of",
    "parse_stages",
    "save_finished_stage",
    "trained_state",
]


# ---------------------------------------------------------------------------------------------------- running
def stage_task_specs(stage: Stage, sources, context) -> list:
    """The task streams of `stage`: each objective's data (`sources`: a `build.DataSources`), collator, batch size
    and λ."""
    from .streams import TaskSpec

    return [TaskSpec(item.name, sources.train(item.name, item.data), get_objective(item.name).collator(context),
                     item.batch_size, item.weight) for item in stage.objectives]


def run_curriculum(model, stages: list[Stage], sources, context, training_args, output_dir: Path, resume: bool,
                   stop) -> dict:
    """Train `model` (an `ObjectivesModel`) through `stages` in order, each in `output_dir / name`.

    A stage finished by an earlier run (with `resume`) is loaded (its trained parts) instead of trained again; the
    first unfinished one continues from its last complete checkpoint. Returns `{"stages": {name: record},
    "histories": {name: log history}, "trainer": the last stage's trainer (None when it had finished earlier),
    "interrupted": where a signal stopped the run, or None, "gathered": the whole model's state on the main process
    when the last stage trained it sharded (ZeRO-3, FSDP2: `model` then holds this process's shards only), else None}`.
    Every process takes part in gathering a sharded stage's state."""
    from .stages import final_losses, run_stage

    main_process = training_args.process_index == 0
    if resume:
        check_finished_stages(stages, training_args, output_dir)
    result = {"stages": {}, "histories": {}, "trainer": None, "interrupted": None, "gathered": None}
    for stage in stages:
        args = stage.arguments(training_args, output_dir)
        folder = Path(args.output_dir)
        record = finished_stage(folder) if resume else None
        if record is not None:
            result["histories"][stage.name] = load_finished_stage(folder, model)
            logger.info("%s stage: finished earlier, its trained parts loaded from %s", stage.name,
                        folder / TRAINED_PARTS_FILE)
            result["stages"][stage.name] = {**record, "steps_this_run": 0}
            result["trainer"] = None
            continue
        specs = stage_task_specs(stage, sources, context)
        trainer, seconds, interrupted = run_stage(model, args, specs, resume, stop, label=stage.name)
        if interrupted:
            result["interrupted"] = interrupted
            return result
        steps = trainer.state.global_step
        run = steps - trainer.resumed_from_step
        images = {spec.name: spec.batch_size * args.world_size * args.rounds_per_step * run for spec in specs}
        record = {
            "steps": steps,
            "steps_this_run": run,  # fewer than `steps` after --resume
            "world_size": args.world_size,
            "seconds": seconds,
            "steps_per_second": run / seconds if run else None,
            "images_per_second": {name: count / seconds for name, count in images.items()} if run else None,
            "final_losses": final_losses(trainer.state.log_history),
            "learning_rates": {part: rate for part, rate in trainer.part_rates.items() if rate is not None},
            # the base learning rate each part's optimizer groups ran at (the schedule scales it)
            "optimizer_learning_rates": {group["part"]: group.get("initial_lr", group["lr"])
                                         for group in trainer.optimizer.param_groups},
        }
        whole = trainer.full_state_dict() if trainer.shards_parameters else None  # (every process gathers)
        if main_process:
            save_finished_stage(folder, model, trainer.part_rates, record, trainer.state.log_history, whole)
        result["gathered"] = whole
        result["stages"][stage.name] = record
        result["histories"][stage.name] = trainer.state.log_history
        result["trainer"] = trainer
    # Training is over: models built from here on (final/ read back, text encoders of the held-out evaluation) are
    # whole, one process's, even after a ZeRO-3 run, whose TrainingArguments had switched on sharded construction.
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    return result


__all__ += ["run_curriculum", "stage_task_specs"]
