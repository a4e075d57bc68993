# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground's training runs: `recipes/multitask.py` configs run once each in their own folders and reused
while their config and starting tower are the same (`Runner`), untrained towers (`random_tower`), and pruning a
finished run down to what the measurements read (`prune`, `keep_dense_heads`)."""

import contextlib
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from ..config import ConfigError

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
DENSE_FOLDER = "dense"  # a finished VersaViT run's tower + depth and segmentation heads, kept when it is pruned


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

    def __init__(self, args, train: Callable[[list[str]], dict]):
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


def baseline_name(tower: str | None, seed: int) -> str:
    """The run folder of the caption-trained baseline of `tower` (None: the run config's) with `seed`."""
    return f"baseline-seed{seed}" if tower is None else f"baseline-{tower}-seed{seed}"


def tower_digest(backbone: Path) -> str:
    """A digest of a tower folder's weights and config: what a cached run or measurement of it depends on."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((backbone / name).read_bytes())
    return digest.hexdigest()[:16]


def start_digest(mapping: dict) -> str:
    """What a run of config `mapping` depends on besides its config: the digest of the tower it starts from
    (`model_name_or_path`: a baseline's pre-trained miniature, an arm's baseline tower), "" from random init."""
    start = mapping.get("model_name_or_path")
    return tower_digest(Path(start)) if start else ""


def prune(folder: Path) -> None:
    """Drop a finished run's full model and stage states (the LLM's copy each, ~0.5 GB); its `backbone/`, config,
    logs and summary stay, and its tower with its dense heads (`dense/`, a few MB: the VisPer-LM table's experts)."""
    keep_dense_heads(folder)
    shutil.rmtree(folder / "final", ignore_errors=True)
    for parts in folder.glob("*/trained_parts.safetensors"):
        parts.unlink()


def random_tower(folder: Path, base: Path, seed: int) -> Path:
    """An untrained tower of the run config's shape (`vision_config`), initialised from `seed`, as a backbone
    folder."""
    from ..config import load_config_file
    from ..core.models import backbone_from
    from ..data.processors import image_processor_for

    target, record = folder / "backbone", folder / "tower.json"
    made = {"vision_config": load_config_file(base).get("vision_config"), "seed": seed}
    if (target / "config.json").is_file() and record.is_file() and json.loads(record.read_text()) == made:
        return target
    model = backbone_from(vision_config=made["vision_config"], seed=seed)
    model.save_pretrained(target)
    image_processor_for(model.config).save_pretrained(target)
    record.write_text(json.dumps(made))
    return target


def keep_dense_heads(run: Path) -> Path | None:
    """Save `run/final`'s tower and dense heads (no LLM) as `run/dense`, a model folder the experts load; None when
    the run has no dense head."""
    from safetensors.torch import load_file, save_file

    from modeling_versavit import VersaViTConfig

    final, target = run / "final", run / DENSE_FOLDER
    if not (final / "model.safetensors").is_file():
        return None
    config = VersaViTConfig.from_pretrained(final)
    dense = [task for task in config.tasks if task in ("depth", "segmentation")]
    if not dense:
        return None
    keep = ("visual.",) + tuple(f"{task}_head." for task in dense)
    state = {k: v for k, v in load_file(final / "model.safetensors").items() if k.startswith(keep)}
    target.mkdir(exist_ok=True)
    config.text_config, config.image_token_id, config.tasks, config.task_tokens = None, None, dense, None
    config.save_pretrained(target)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(final / "preprocessor_config.json", target / "preprocessor_config.json")
    return target


def load_run_config(mapping: dict) -> dict:
    """The options a run's config mapping sets, its `base:` chain applied."""
    from ..config import load_config_file

    return {**load_config_file(mapping["base"]), **{k: v for k, v in mapping.items() if k != "base"}}


__all__ = ["CONFIGS", "DENSE_FOLDER", "QUICK_MEASURE", "QUICK_RUN", "RUN_FIXED", "Runner", "baseline_name",
           "keep_dense_heads",
           "load_run_config", "prune", "random_tower", "start_digest", "tower_digest"]
