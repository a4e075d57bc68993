# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Recipe configuration: a YAML file of dataclass fields, overridden by command-line flags.

    python recipes/multitask.py --config recipes/configs/default.yaml --max_steps 20 --output_dir outputs/x

Every key of the YAML file is a field of one of the recipe's dataclasses (the same names as the flags in `--help`);
its values go through the same argparse type conversion as flags, so a misspelt key or a value of the wrong type
fails before anything runs, naming the key and the file. Flags given on the command line win over the file.
"""

import argparse
import dataclasses
import difflib
import enum
import sys
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

CONFIG_FLAG = "--config"


class ConfigError(ValueError):
    """A recipe configuration that cannot be used; the message names the key, the value and the file."""


def _dests(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.dest not in ("help", argparse.SUPPRESS)}


def _as_tokens(key: str, value: Any, action: argparse.Action, source: str) -> list[str] | None:
    """The command-line tokens that say `key: value`, or None when the value can only be set as a default."""
    flag = f"--{key}"
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, list):
        if action.nargs not in ("+", "*"):
            if all(isinstance(item, str) for item in value):
                return None  # an option typed `str | list[str]` (report_to): the dataclass takes the list itself
            raise ConfigError(f"{source}: key {key!r} takes one value, got the list {value!r}.")
        return [flag, *(_scalar(item, key, source) for item in value)]
    if isinstance(value, dict):
        return None  # a mapping option (vision_config, accelerator_config): the dataclass validates the mapping
    return [flag, _scalar(value, key, source)]


def _scalar(value: Any, key: str, source: str) -> str:
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{source}: key {key!r} has a nested value {value!r} where a single value is expected.")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_config(dataclass_types: tuple, argv: list[str] | None = None, description: str | None = None) -> tuple:
    """Instantiate `dataclass_types` from `--config FILE.yaml` (optional) and the command-line flags in `argv`.

    Raises `ConfigError` for an unknown key, a value of the wrong type or a missing file; `--help` prints every
    field with its help text (as `HfArgumentParser`, which builds the parser)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types, description=description)
    if CONFIG_FLAG[2:] not in _dests(parser):
        parser.add_argument(CONFIG_FLAG, default=None, help="A YAML file of these options; flags override it.")
    parser.exit_on_error = False  # errors become ConfigError, with the file or the command line named
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(CONFIG_FLAG, default=None)
    known, _ = pre.parse_known_args(argv)
    file_tokens: list[str] = []
    if known.config:
        file_tokens = _file_tokens(parser, Path(known.config))
    try:
        namespace, unknown = parser.parse_known_args(file_tokens + argv)
    except argparse.ArgumentError as err:
        raise ConfigError(f"command line: {err}") from None
    if unknown:
        raise ConfigError(f"command line: unrecognised arguments {unknown}; see --help.")
    values = vars(namespace)
    outputs = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in values.items() if k in names}))
        except (TypeError, ValueError) as err:
            where = f"{known.config} with the command line" if known.config else "command line"
            raise ConfigError(f"{where}: {err}") from err
    return tuple(outputs)


def _file_tokens(parser: HfArgumentParser, path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}.")
    dests = _dests(parser)
    tokens: list[str] = []
    for key, value in data.items():
        if key == CONFIG_FLAG[2:] or key not in dests:
            close = difflib.get_close_matches(str(key), list(dests), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; see --help for the options.")
        item = _as_tokens(key, value, dests[key], str(path))
        if item is None:
            parser.set_defaults(**{key: value})
            continue
        try:  # each key alone, so that a bad value names its key
            parser.parse_known_args(item)
        except argparse.ArgumentError as err:
            raise ConfigError(f"{path}: key {key!r}: {err.message}") from None
        tokens += item
    return tokens


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


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


__all__ = ["ConfigError", "parse_config", "resolved_config", "write_config"]
