# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""An output folder belongs to one run: the rule every recipe that writes a folder follows.

`claim_output_dir(folder, recipe, ...)`, called before anything is built:

1. takes an exclusive lock on `folder/.versavit.lock` (`fcntl.flock`), held until the process ends. A second run into
   the folder is refused at once, naming the process that holds it. The operating system drops the lock when its
   process ends in any way (exit, exception, SIGKILL), so a killed run never leaves a stale lock: its `--resume`
   takes the lock again. (On a network file system, flock is only as good as that file system's locking.)
2. accepts the folder when it is absent or empty, or when it holds this recipe's own run (`run.json` names the
   recipe) and the recipe resumes it; anything else is refused, naming what is there and the flag that overrides
   it (which deletes what the folder holds and starts afresh).

`run.json` records which recipe owns the folder and, for a resumable conversion, a fingerprint of its inputs and
settings (`inputs`): a rerun with other inputs is refused with the differences, so shards of two different
conversions never mix.

`claim_export_folder` is the rule for finished artefacts (an exported model, an upload folder): absent or empty, or
deleted first with `--overwrite`; it adds no lock or record to what gets uploaded. `incomplete_file(s)` tell a file
that was written to the end from one cut short (resume takes the last complete checkpoint by them).
"""

import fcntl
import json
import os
import shutil
import socket
import time
import zipfile
from pathlib import Path
from typing import Any

LOCK_FILE = ".versavit.lock"
OWNER_FILE = "run.json"
_HELD: dict[Path, Any] = {}  # folder -> the open lock file; kept open for the life of the process


class OutputFolderError(SystemExit):
    """An output folder that this run may not write: held by another run, or holding something else."""


def claim_output_dir(folder, recipe: str, *, resume: bool = False, overwrite: bool = False,
                     inputs: dict | None = None,
                     afresh: str = "pass --overwrite_output_dir true to delete what it holds and start afresh") -> bool:
    """Lock `folder` for this process and check that `recipe` may write it; returns whether it holds this recipe's
    earlier run (which the caller resumes). See the module docstring for the rule.

    `resume`: the caller continues its own earlier run (converters always do; training recipes with `--resume`).
    `overwrite`: delete what the folder holds first. `inputs`: a JSON-able fingerprint that an earlier run of the
    recipe in this folder must equal. `afresh`: how the refusals tell the user to start afresh."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _lock(folder, recipe)
    contents = folder_contents(folder)
    owner = _owner(folder)
    if overwrite and contents:
        _clear(folder, contents)
        contents, owner = [], None
    if not contents:  # empty (or only the record of a run that stopped before writing anything)
        _write_owner(folder, recipe, inputs)
        return False
    if owner is None or owner.get("recipe") != recipe:
        what = f"a run of {owner.get('recipe')}" if owner else "files that no run of this library wrote"
        raise OutputFolderError(f"output folder {folder} holds {what} ({_listed(contents)}); choose another folder, or "
                                f"{afresh}.")
    if not resume:
        raise OutputFolderError(f"output folder {folder} already holds a run of {recipe} ({_listed(contents)}); pass "
                                f"--resume to continue it, choose another folder, or {afresh}.")
    if inputs is not None and owner.get("inputs") != inputs:
        raise OutputFolderError(
            f"output folder {folder} holds a {recipe} run of other inputs or settings "
            f"({_differences(owner.get('inputs') or {}, inputs)}): its finished shards are not this run's. Rerun with "
            f"the earlier settings to continue it, choose another folder, or {afresh}.")
    return True


def claim_export_folder(folder, recipe: str, overwrite: bool = False, overwrite_flag: str = "--overwrite true") -> Path:
    """The rule for a recipe whose output is a finished artefact (an export, an upload folder), not a resumable run:
    `folder` must be absent or empty, or `overwrite` deletes what it holds; otherwise refused, naming what is there.
    Nothing is added to the folder (no lock, no record): it holds exactly what the recipe writes."""
    folder = Path(folder)
    contents = folder_contents(folder)
    if contents and not overwrite:
        raise OutputFolderError(f"{recipe}: output folder {folder} is not empty ({_listed(contents)}); choose an empty "
                                f"or new folder, or pass {overwrite_flag} to delete what it holds.")
    _clear(folder, contents)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def folder_contents(folder) -> list[str]:
    """The names in `folder` but the run's own lock and record, sorted: empty for an absent folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in (LOCK_FILE, OWNER_FILE, f".{OWNER_FILE}.tmp"))


def incomplete_file(path) -> str | None:
    """Why the file at `path` was not written to the end, or None: a JSON file that does not parse, a safetensors
    file shorter than its header says, a torch archive (`.pt`, `.pth`, `.bin`) without its zip directory (which is
    written last). Cheap: headers and ends are read, never the tensors."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                if size < 8 or length > size - 8:
                    return f"{size} bytes, shorter than its header"
                header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
            if size < 8 + length + end:
                return f"{size} bytes where its header describes {8 + length + end}"
        elif path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
            return f"{size} bytes without the archive's directory (truncated)"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def incomplete_files(folder) -> dict[str, str]:
    """The files of `folder` (not its subfolders) that `incomplete_file` finds were not written to the end."""
    return {path.name: problem for path in sorted(Path(folder).iterdir())
            if path.is_file() and (problem := incomplete_file(path)) is not None}


def release_output_dir(folder) -> None:
    """Release this process's lock on `folder` (the end of the process does it too)."""
    handle = _HELD.pop(Path(folder).resolve(), None)
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _clear(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _lock(folder: Path, recipe: str) -> None:
    key = folder.resolve()
    if key in _HELD:  # this process holds it already (a recipe called twice in one process, as tests do)
        return
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(handle)
        handle.close()
        raise OutputFolderError(
            f"output folder {folder} is in use by another run ({holder}); wait for it to finish, or choose another "
            "folder.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{recipe}, pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _HELD[key] = handle


def _holder(handle, wait: float = 2.0) -> str:
    """The name the lock's holder wrote, read again for up to `wait` seconds (it writes it just after taking the
    lock)."""
    deadline = time.monotonic() + wait
    while True:
        handle.seek(0)
        holder = handle.read().strip()
        if holder or time.monotonic() > deadline:
            return holder or "another process"
        time.sleep(0.05)


def _owner(folder: Path) -> dict | None:
    path = folder / OWNER_FILE
    if not path.is_file():
        return None
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _write_owner(folder: Path, recipe: str, inputs: dict | None) -> None:
    record = {"recipe": recipe, **({"inputs": inputs} if inputs is not None else {})}
    staging = folder / f".{OWNER_FILE}.tmp"
    staging.write_text(json.dumps(record, indent=2, sort_keys=True))
    staging.replace(folder / OWNER_FILE)


def _listed(names: list[str], shown: int = 5) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changed.append(_differences(before, after, f"{prefix}{key}."))
        elif before != after:
            changed.append(f"{prefix}{key}: {before!r} -> {after!r}")
    return "; ".join(item for item in changed if item)


__all__ = [
    "LOCK_FILE", "OWNER_FILE", "OutputFolderError", "claim_export_folder", "claim_output_dir", "folder_contents",
    "incomplete_file", "incomplete_files", "release_output_dir",
]
