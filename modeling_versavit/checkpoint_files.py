# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Reading a local checkpoint folder's safetensors weights: which file holds each tensor (sharded with an index or
not), the tensors under one name prefix read shard by shard (an MLLM's tower without its LLM), and a corrupt or
truncated file named in the error."""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


def safetensors_problem(folder, err: Exception) -> str:
    """A message naming the unreadable safetensors file(s) of a local `folder`, from the error reading one of them."""
    bad = []
    if folder is not None and Path(folder).is_dir():
        for path in sorted(Path(folder).glob("*.safetensors")):
            try:
                with safe_open(path, framework="pt") as handle:
                    handle.keys()
            except SafetensorError:
                bad.append(str(path))
    where = ", ".join(bad) if bad else f"a safetensors file of {folder}"
    return f"{where}: corrupt or truncated safetensors data ({err}); download or save it again."


def read_safetensors(
    folder: str | Path, prefix: str, weight_map: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint folder whose names start with `prefix`, keyed by their names without it, read
    shard by shard (no other tensor is loaded). A corrupt shard is an `OSError` naming it."""
    folder = Path(folder)
    weight_map = safetensors_weight_map(folder) if weight_map is None else weight_map
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        if key.startswith(prefix):
            shards.setdefault(shard, []).append(key)
    tensors = {}
    for shard, keys in sorted(shards.items()):
        try:
            with safe_open(folder / shard, framework="pt") as handle:
                for key in keys:
                    tensors[key[len(prefix) :]] = handle.get_tensor(key)
        except SafetensorError as err:
            raise OSError(f"{folder / shard}: corrupt or truncated safetensors data ({err}).") from err
    return tensors


def safetensors_weight_map(folder: str | Path) -> dict[str, str]:
    """Tensor name -> file name of a checkpoint folder's safetensors weights, sharded (with an index) or not."""
    folder = Path(folder)
    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_file}: no 'weight_map' mapping of tensor names to shard files.")
        for name, shard in weight_map.items():  # a shard is a file of this folder, never a path out of it
            if not isinstance(shard, str) or shard in ("", ".", "..") or Path(shard).name != shard or "\\" in shard:
                raise ValueError(f"{index_file}: tensor {name!r} names the shard {shard!r}, which is not a plain file "
                                 "name in this folder.")
        return weight_map
    if (folder / "model.safetensors").is_file():
        try:
            with safe_open(folder / "model.safetensors", framework="pt") as handle:
                return dict.fromkeys(handle.keys(), "model.safetensors")
        except SafetensorError as err:
            raise OSError(safetensors_problem(folder, err)) from err
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise FileNotFoundError(
        f"{folder}: no safetensors weights (model.safetensors or model.safetensors.index.json); found {found}."
    )


__all__ = ["read_safetensors", "safetensors_problem", "safetensors_weight_map"]
