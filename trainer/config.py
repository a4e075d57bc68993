# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Recipe configuration: a YAML file of dataclass fields, overridden by command-line flags.

    python recipes/multitask.py --config recipes/configs/default.yaml --max_steps 20 --output_dir outputs/x

Every key of the YAML file is a field of one of the recipe's dataclasses (the same names as the flags in `--help`);
its values go through the same argparse type conversion as flags, so a misspelt key or a value of the wrong type
fails before anything runs, naming the key and the file.

A file may start from another: `base: versavit_qwen2vl_7b.yaml` (relative to the file) takes that file's options,
and each key the file sets replaces the base's value whole.

Where the settings come from, lowest first: the YAML file (`--config`; without it, the recipe's embedded default,
and the first printed line says so), then `$VERSAVIT_CONFIG_OVERRIDES` (a YAML / JSON mapping of the same keys, for
CI and tests to shrink a run without changing its command; printed when set), then the command-line flags. An option
of an exclusive group (the backbone sources `model_name_or_path`, `mllm`, `vision_config`) given at a higher level
replaces the group's options of the lower ones: `--mllm DIR` on top of a config with a `vision_config` uses the MLLM.
"""

import argparse
import dataclasses
import difflib
import enum
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .run_folder import claim_output_dir

CONFIG_FLAG = "--config"
# Options that run code (`--imports` imports Python files): taken from the command line only, never from a config
# file or $VERSAVIT_CONFIG_OVERRIDES, so that reading a config never executes anything.
COMMAND_LINE_ONLY = ("imports",)
BASE_KEY = "base"  # a config file's key naming the config file it builds on
OVERRIDES_ENV = "VERSAVIT_CONFIG_OVERRIDES"
# Options of which a run takes one: set at a higher level (command line over environment over file), the others of
# its group set at a lower level are dropped.
EXCLUSIVE_OPTIONS = (("model_name_or_path", "mllm", "vision_config"), ("model", "mllm", "vision_config"))


@dataclasses.dataclass(frozen=True)
class DefaultConfig:
    """The config file a recipe runs without `--config`, and how to say so in its first line."""

    path: Path
    what: str  # e.g. "the same run as `make demo`"
    instead: str = ""  # e.g. "for the paper's setting pass --config recipes/configs/versavit_qwen2vl_7b.yaml"


class ConfigError(ValueError):
    """A recipe configuration that cannot be used; the message names the key, the value and the file."""


def _dests(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.dest not in ("help", argparse.SUPPRESS)}


def _as_tokens(key: str, value: Any, action: argparse.Action, source: str) -> list[str] | None:
    """The command-line tokens that say `key: value`, or None when the value can only be set as a default."""
    flag = f"--{key}"
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return None  # a list of mappings (stages): the dataclass checks it
    if isinstance(value, list):
        if action.nargs not in ("+", "*"):
            if all(isinstance(item, str) for item in value):
                return None  # an option typed `str | list[str]` (report_to): the dataclass takes the list itself
            raise ConfigError(f"{source}: key {key!r} takes one value, got the list {value!r}.")
        if key.endswith("_resolutions"):  # a resolution may be written [H, W] in YAML, as HxW on the command line
            value = [_resolution_token(item) for item in value]
        return [flag, *(_scalar(item, key, source) for item in value)]
    if isinstance(value, dict):
        return None  # a mapping option (vision_config, accelerator_config): the dataclass validates the mapping
    return [flag, _scalar(value, key, source)]


def _resolution_token(item: Any) -> Any:
    pair = isinstance(item, list) and len(item) == 2
    return "x".join(str(side) for side in item) if pair and all(type(side) is int for side in item) else item


def _scalar(value: Any, key: str, source: str) -> str:
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{source}: key {key!r} has a nested value {value!r} where a single value is expected.")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_config(dataclass_types: tuple, argv: list[str] | None = None, description: str | None = None,
                 default_config: DefaultConfig | None = None) -> tuple:
    """Instantiate `dataclass_types` from `--config FILE.yaml` (else `default_config`, if given), the mapping in
    `$VERSAVIT_CONFIG_OVERRIDES` and the command-line flags in `argv`, in that order of precedence.

    Prints (on the main process) which config file is used and what overrides it, before anything else happens.
    Raises `ConfigError` for an unknown key, a value of the wrong type or a missing file; `--help` prints every
    field with its help text (as `HfArgumentParser`, which builds the parser)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types, description=description)
    if CONFIG_FLAG[2:] not in _dests(parser):
        parser.add_argument(CONFIG_FLAG, default=None, help="A YAML file of these options; flags override it.")
    if default_config is not None:
        parser.description = (parser.description or "") + (
            f"\n\nWithout --config: {_shown(default_config.path)} ({default_config.what}). ${OVERRIDES_ENV}: a "
            "YAML/JSON mapping of options applied over the file, under the flags."
        )
    parser.exit_on_error = False  # errors become ConfigError, with the file or the command line named
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(CONFIG_FLAG, default=None)
    known, _ = pre.parse_known_args(argv)
    dests = _dests(parser)
    given = {_flag_dest(token) for token in argv if token.startswith("--")} & (set(dests) - {CONFIG_FLAG[2:]})
    env_values = mapping_option(os.environ.get(OVERRIDES_ENV, ""), f"${OVERRIDES_ENV}") or {}
    config_path = Path(known.config) if known.config else None
    if config_path is None and default_config is not None and not {"-h", "--help"} & set(argv):
        config_path = default_config.path
    file_tokens: list[str] = []
    chain = _config_chain(config_path) if config_path is not None else []
    above, aboves = given | set(env_values), []
    for _, data in reversed(chain):  # what each file's keys are overridden by: the flags, the env, the files on it
        aboves.insert(0, set(above))
        above |= set(data)
    for (path, data), set_above in zip(chain, aboves):  # base first: a later file's values win
        file_tokens += _mapping_tokens(parser, data, str(path), set_above)
    env_tokens = _mapping_tokens(parser, env_values, f"${OVERRIDES_ENV}", given) if env_values else []
    try:
        namespace, unknown = parser.parse_known_args(file_tokens + env_tokens + argv)
    except argparse.ArgumentError as err:
        raise ConfigError(f"command line: {err}") from None
    if unknown:
        raise ConfigError(f"command line: unrecognised arguments {unknown}; see --help.")
    if int(os.environ.get("RANK", "0")) == 0:  # said before the values are checked: an error is then placed
        print(_provenance(config_path, known.config is None and default_config is not None, default_config,
                          env_values, sorted(given), [path for path, _ in chain[:-1]]), flush=True)
    values = vars(namespace)
    if config_path is not None:
        values[CONFIG_FLAG[2:]] = str(config_path)
    outputs = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in values.items() if k in names}))
        except (TypeError, ValueError) as err:
            where = f"{config_path} with the command line" if config_path else "command line"
            raise ConfigError(f"{where}: {err}") from err
    return tuple(outputs)


def _shown(path: Path) -> str:
    """`path` relative to the working directory where it lies below it (as a user would type it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _provenance(path: Path | None, defaulted: bool, default: DefaultConfig | None, env_values: dict,
                flags: list[str], bases: list[Path] = ()) -> str:
    if path is None:
        line = "Config: no config file; the options' defaults and the command line"
    elif defaulted:
        line = f"Config: {_shown(path)}, the embedded default (no --config given): {default.what}"
        if default.instead:
            line += f"; {default.instead}"
    else:
        line = f"Config: {_shown(path)}"
    for base in reversed(bases):
        line += f"\n  on top of its base {_shown(base)}"
    if env_values:
        line += f"\n  overridden by ${OVERRIDES_ENV}: " + ", ".join(f"{k}={v!r}" for k, v in env_values.items())
    if flags:
        line += "\n  overridden on the command line: " + ", ".join(flags)
    return line


def _flag_dest(token: str) -> str:
    return token[2:].split("=", 1)[0].replace("-", "_")


def mapping_option(value, name: str) -> dict | None:
    """A mapping option given as a mapping (YAML file) or as text (a flag, an environment variable): YAML or JSON
    (a JSON object is YAML). Empty text is None; anything but a mapping is a `ConfigError` naming `name`."""
    if value is None or isinstance(value, dict):
        return value
    if not str(value).strip():
        return None
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: expected a YAML / JSON mapping, got {value!r} ({err}).") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{name}: expected a YAML / JSON mapping, got {value!r}.")
    return parsed


def _config_chain(path: Path, below: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """`(file, mapping)` of `path` and the files it builds on, the deepest base first. A file's `base:` key names
    another config file (relative to the file) whose options it starts from: each key of the file replaces the base's
    value whole (a mapping option too), and a backbone source in the file replaces the base's."""
    data = _read_mapping(path, f"{below[-1]}: key {BASE_KEY!r}" if below else CONFIG_FLAG)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return [(path, data)]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: key {BASE_KEY!r}: expected the path of a YAML config file, got {base!r}.")
    base_path = path.parent / base
    if base_path.resolve() in {p.resolve() for p in (*below, path)}:
        raise ConfigError(f"{path}: key {BASE_KEY!r}: {base!r} is already a base of this file (a cycle).")
    return [*_config_chain(base_path, (*below, path)), (path, data)]


def load_config_file(path: str | Path) -> dict:
    """The options a config file sets, its `base:` chain applied (each key of a file replaces its base's whole)."""
    merged: dict = {}
    for _, data in _config_chain(Path(path)):
        merged.update(data)
    return merged


def _read_mapping(path: Path, named_by: str = CONFIG_FLAG) -> dict:
    if not path.is_file():
        raise ConfigError(f"{named_by}: no such file {str(path)!r}.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}.")
    return data


def _mapping_tokens(parser: HfArgumentParser, data: dict, source: str, given_above: set[str]) -> list[str]:
    """Command-line tokens for the options of `data` (from `source`); a mapping option becomes a parser default. An
    option whose exclusive group has a member in `given_above` (set at a higher level) is dropped."""
    dests = _dests(parser)
    dropped = {name for group in EXCLUSIVE_OPTIONS if given_above & set(group) for name in group} - given_above
    required = [action for action in dests.values() if action.required]
    for action in required:  # each key is checked alone below: the others are not missing
        action.required = False
    try:
        return _checked_tokens(parser, data, source, dests, dropped)
    finally:
        for action in required:
            action.required = True


def _checked_tokens(parser, data: dict, source: str, dests: dict, dropped: set[str]) -> list[str]:
    tokens: list[str] = []
    for key, value in data.items():
        if key == CONFIG_FLAG[2:] or key not in dests:
            close = difflib.get_close_matches(str(key), list(dests), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}; see --help for the options.")
        if key in COMMAND_LINE_ONLY and value:
            raise ConfigError(f"{source}: {key}: {value!r} would run code, and configs are data; code runs only from "
                              f"the command line's --{key} (pass --{key} there).")
        if key in dropped:
            continue
        item = _as_tokens(key, value, dests[key], source)
        if item is None:
            parser.set_defaults(**{key: value})
            continue
        try:  # each key alone, so that a bad value names its key
            parser.parse_known_args(item)
        except argparse.ArgumentError as err:
            raise ConfigError(f"{source}: key {key!r}: {err.message}") from None
        tokens += item
    return tokens


def check_mapping_keys(mapping: dict, allowed, path: str) -> None:
    """`ConfigError` for the first key of `mapping` (the option `path`) not in `allowed`, naming its full path and
    the closest allowed key: `head_config.depth_fusion_hiden_size` fails like a top-level typo."""
    allowed = sorted(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {path}.{close[0]}?)" if close else ""
            raise ConfigError(f"{path}.{key}: unknown key{hint}; {path} takes {', '.join(allowed)}.")


def dataclass_error_path(err: Exception, paths: dict[str, str]) -> str | None:
    """For a strict-dataclass validation error (transformers configs), the message with its field named by the full
    option path found in `paths` (field -> path prefix), or None when `err` is not such an error."""
    import re

    match = re.match(r"Validation error for field '([^']+)':\s*(.*)", str(err), re.S)
    if match is None:
        return None
    field, cause = match.groups()
    prefix = paths.get(field)
    return f"{prefix}.{field}: {cause.strip()}" if prefix else f"{field}: {cause.strip()}"


def resolved_config(*configs, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of every init field of `configs` (dataclasses) but `config` and `exclude`, as plain YAML-able
    data: reading it back with `--config` reproduces the run's settings."""
    resolved: dict[str, Any] = {}
    skip = {CONFIG_FLAG[2:], *exclude}
    for config in configs:
        for f in dataclasses.fields(config):
            if f.init and not f.name.startswith("_") and f.name not in skip:
                resolved[f.name] = _plain(getattr(config, f.name))
    return resolved


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# Settings a resumed run may change without `allow_config_change`: how long it runs and how it saves, logs and
# loads data, none of which changes what the steps already taken computed.
RESUMABLE_CHANGES = frozenset({
    "max_steps", "num_train_epochs", "save_steps", "save_total_limit", "save_strategy", "logging_steps",
    "logging_strategy", "logging_dir", "report_to", "run_name", "disable_tqdm", "dataloader_num_workers",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataloader_pin_memory", "panel_samples",
    "caption_max_new_tokens", "output_dir",
})


# What describes this machine or this invocation rather than the run: not written to config.yaml. `imports` (code)
# is given on the command line only, so a config.yaml that recorded it could not be run with --config.
NOT_RECORDED = ("resume", "dry_run", "check_memory", "allow_config_change", "overwrite_output_dir", "imports")


def claim_run_folder(output_dir: Path, recipe: str, run_args, training_args) -> None:
    """Before anything is built: the main process locks `output_dir` for this run and checks it may write there
    (`versavit_trainer.run_folder`: empty, or this recipe's own run with `--resume`, or `--overwrite_output_dir`);
    the other processes wait for it, so none reads a folder that is being emptied."""
    with training_args.main_process_first(local=False, desc="claiming the output folder"):
        if training_args.process_index == 0:
            claim_output_dir(output_dir, recipe, resume=run_args.resume, overwrite=run_args.overwrite_output_dir)


# Settings whose values live in the checkpoint's optimizer and scheduler state: a resumed run restores that state,
# so a new value would be printed and recorded but never used. Refused on resume even with `allow_config_change`.
RESTORED_ON_RESUME = frozenset({
    "learning_rate", "backbone_learning_rate", "alignment_learning_rate", "part_learning_rates", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "optim", "optim_args", "lr_scheduler_type", "lr_scheduler_kwargs",
    "warmup_ratio", "warmup_steps",
})


def check_run_record(output_dir: Path, config: dict[str, Any], resume: bool, allow_change: bool) -> bool:
    """Before anything is built: whether this run resumes the one recorded in `output_dir/config.yaml`.

    An `output_dir` that holds a run is refused without `resume`. A resumed run whose settings differ from the
    record outside `RESUMABLE_CHANGES` is a `ConfigError` naming each key with its saved and new value, unless
    `allow_change` (the record is never rewritten; `write_run_record` keeps the new settings beside it)."""
    original = output_dir / "config.yaml"
    if not original.is_file():
        return False
    if not resume:
        raise SystemExit(f"output_dir: {output_dir} already holds a run; pass --resume to continue it or choose "
                         "another --output_dir.")
    refused = {key: values for key, values in _changes(original, config).items() if key not in RESUMABLE_CHANGES}
    restored = {key: values for key, values in refused.items() if key in RESTORED_ON_RESUME}
    if restored and allow_change:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in sorted(restored.items()))
        raise ConfigError(
            f"--resume --allow_config_change: {listed} cannot apply to a resumed run: the optimizer and its schedule "
            "resume from the checkpoint's state, which holds the original values. Resume with the original settings, "
            f"or start a new run from this one's weights (--model_name_or_path {output_dir / 'final'} once it has "
            "finished) with the new ones.")
    if refused and not allow_change:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in sorted(refused.items()))
        raise ConfigError(
            f"--resume: the settings differ from {original} ({listed}). A resumed run continues the original one (its "
            "optimizer, schedule and data order come from the checkpoint, so such a change would not apply as "
            "written); use the original settings, another --output_dir, or --allow_config_change true to continue "
            "anyway (the changes are recorded beside config.yaml)."
        )
    return True


def write_run_record(output_dir: Path, config: dict[str, Any], resuming: bool) -> Path:
    """`output_dir/config.yaml` for a new run; for a resumed one whose settings differ at all from it,
    `config.resume-<n>.yaml` beside it (the record of what ran, resume by resume). Returns the file that holds this
    run's settings."""
    original = output_dir / "config.yaml"
    if not resuming:
        return write_config(original, config)
    if not _changes(original, config):
        return original
    number = 1 + sum(1 for _ in output_dir.glob("config.resume-*.yaml"))
    return write_config(output_dir / f"config.resume-{number}.yaml", config)


def _changes(original: Path, config: dict[str, Any]) -> dict[str, tuple]:
    saved = yaml.safe_load(original.read_text()) or {}
    changed = {key: (saved.get(key), value) for key, value in config.items() if saved.get(key) != value}
    changed.update({key: (value, None) for key, value in saved.items() if key not in config})
    return changed


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


__all__ = [
    "ConfigError",
    "DefaultConfig",
    "OVERRIDES_ENV",
    "check_mapping_keys",
    "dataclass_error_path",
    "load_config_file",
    "mapping_option",
    "parse_config",
    "NOT_RECORDED",
    "check_run_record",
    "claim_run_folder",
    "resolved_config",
    "write_config",
    "write_run_record",
]
