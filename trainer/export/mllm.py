# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Put a VersaViT encoder back into an MLLM of its tower family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, ...).

- `swap_vision_tower(mllm_dir, encoder, output_dir)` writes a complete MLLM folder whose vision tower is the
  encoder's and whose every other tensor is the source's, shard by shard (the LLM is never loaded): same shard files
  and index, the config, tokenizer, processor and generation files carried over.
- `swap_vision_tower_in_memory(mllm, encoder)` does the same to a loaded MLLM.

Both check compatibility first (tower family, depth, width, heads, patch / merge sizes, and the merger's output
width = the LLM's hidden size) and name every difference before anything is written. The MLLM's own mergers
(`VisionBackbone.mllm_owned`: the PatchMerger, Qwen3-VL's DeepStack mergers) are kept by default (VersaViT never
trains them); `use_projector=True` takes the VersaViT captioning projector as the main merger instead, when its
output width is the MLLM's LLM width. An encoder that captioned through the MLLM's own LLM (`mllm_language_model`,
a run's `final/`) trained those mergers with it: they go in with the tower. The MLLM's LLM is the source's either
way.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig

from modeling_versavit import VersaViTConfig, VersaViTPreTrainedModel, read_safetensors, safetensors_weight_map
from modeling_versavit.backbones import BACKBONES

from ..run_folder import folder_contents

MERGER = "merger."


def compatibility_errors(encoder_config: VersaViTConfig, mllm_config, use_projector: bool = False) -> list[str]:
    """Every difference that keeps `encoder_config`'s tower from replacing `mllm_config`'s (empty when it fits)."""
    vision = getattr(mllm_config, "vision_config", None)
    family = BACKBONES.get(getattr(vision, "model_type", None))
    if family is None:
        return [f"mllm: model_type {mllm_config.model_type!r} has no vision tower of a supported family "
                f"({', '.join(b.name for b in BACKBONES.values())})"]
    errors = []
    if encoder_config.backbone is not family:
        errors.append(f"backbone family: encoder {encoder_config.backbone_family!r}, MLLM {family.name!r}")
        return errors
    ours, theirs = encoder_config.vision_config.to_dict(), vision.to_dict()
    for name in family.architecture_fields:
        if ours.get(name) != theirs.get(name):
            errors.append(f"vision_config.{name}: encoder {ours.get(name)!r}, MLLM {theirs.get(name)!r}")
    text_width = mllm_config.text_config.hidden_size
    merged = family.merged_dim(vision)
    if merged is not None and merged != text_width:
        errors.append(f"MLLM merger output width {merged} != its LLM hidden size {text_width}")
    if use_projector:
        if encoder_config.mllm_language_model:
            errors.append("use_projector: the encoder captions through the MLLM's own mergers (mllm_language_model), "
                          "which go in with the tower; it has no separate projector")
        elif merged is None:
            errors.append(f"use_projector: a {family.name} tower has no merger to replace (the MLLM's projector is "
                          "outside the tower)")
        elif encoder_config.text_config is None:
            errors.append(
                "use_projector: the encoder has no captioning projector (not a captioning / multi-task model)"
            )
        elif encoder_config.text_config.hidden_size != text_width:
            errors.append(f"use_projector: projector output width {encoder_config.text_config.hidden_size} != "
                          f"the MLLM's LLM hidden size {text_width}")
    return errors


def check_compatibility(encoder_config: VersaViTConfig, mllm_config, use_projector: bool = False) -> None:
    errors = compatibility_errors(encoder_config, mllm_config, use_projector)
    if errors:
        raise ValueError("The encoder does not fit the MLLM's vision tower:\n  - " + "\n  - ".join(errors))


def _owned(name: str, owned: tuple[str, ...]) -> bool:
    return any(name.startswith(part + ".") for part in owned)


def _encoder_tensors(encoder, use_projector: bool) -> dict[str, torch.Tensor]:
    """Tower tensors by their name inside the tower (`blocks.0.attn.qkv.weight`, ...), the MLLM's mergers excluded
    (with `use_projector` the projector's tensors come under `merger.`)."""
    if isinstance(encoder, VersaViTPreTrainedModel):
        state = encoder.state_dict()

        def part(prefix):
            return {k[len(prefix) :]: v.detach() for k, v in state.items() if k.startswith(prefix)}
    else:
        weight_map = safetensors_weight_map(encoder)

        def part(prefix):
            return read_safetensors(encoder, prefix, weight_map)

    config = _encoder_config(encoder)
    owned = () if config.mllm_language_model else config.backbone.mllm_owned  # (trained with the MLLM's own LLM)
    tensors = {k: v for k, v in part("visual.").items() if not _owned(k, owned)}
    if use_projector:
        tensors.update({MERGER + k: v for k, v in part("projector.").items()})
    return tensors


def _encoder_config(encoder) -> VersaViTConfig:
    if isinstance(encoder, VersaViTPreTrainedModel):
        return encoder.config
    return VersaViTConfig.from_pretrained(encoder)


def swap_vision_tower(mllm_dir, encoder, output_dir, use_projector: bool = False) -> Path:
    """Write `output_dir`: the MLLM of `mllm_dir` with `encoder`'s vision tower (a VersaViT model or folder).

    Streams shard by shard: each source shard is read, its vision tensors replaced (in the source's dtype), and
    written under the same name; the index is rewritten; every other file is copied. Non-vision tensors keep their
    exact values. Raises `ValueError` (listing every difference) or `FileExistsError` before writing anything."""
    source, output = Path(mllm_dir), Path(output_dir)
    mllm_config = AutoConfig.from_pretrained(source)
    encoder_config = _encoder_config(encoder)
    check_compatibility(encoder_config, mllm_config, use_projector)
    weight_map = safetensors_weight_map(source)
    prefix = encoder_config.backbone.tower_prefix(weight_map, source)
    replacement = _encoder_tensors(encoder, use_projector)
    kept = _kept_parts(encoder_config, use_projector)
    expected = {k.removeprefix(prefix) for k in weight_map if k.startswith(prefix)}
    expected = {k for k in expected if not _owned(k, kept)}
    missing, extra = sorted(expected - set(replacement)), sorted(set(replacement) - expected)
    if missing or extra:
        raise ValueError(
            f"encoder tensors do not match the MLLM tower's: missing {missing[:5]}, unexpected {extra[:5]}."
        )
    if folder_contents(output):
        raise FileExistsError(f"output_dir: {output} is not empty ({', '.join(folder_contents(output)[:5])}); choose "
                              "an empty or new folder.")
    output.mkdir(parents=True, exist_ok=True)

    total_size = 0
    for shard in sorted(set(weight_map.values())):
        tensors = {}
        with safe_open(source / shard, framework="pt") as handle:
            metadata = handle.metadata()
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                inner = key.removeprefix(prefix) if key.startswith(prefix) else None
                if inner in replacement:
                    new = replacement[inner]
                    if new.shape != tensor.shape:
                        raise ValueError(f"{key}: encoder shape {tuple(new.shape)}, MLLM {tuple(tensor.shape)}.")
                    tensor = new.to(tensor.dtype).contiguous()
                tensors[key] = tensor
                total_size += tensor.numel() * tensor.element_size()
        save_file(tensors, output / shard, metadata=metadata)
        del tensors
    index_file = source / "model.safetensors.index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        index.setdefault("metadata", {})["total_size"] = total_size
        (output / index_file.name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    for item in source.iterdir():
        if item.name.endswith(".safetensors") or item.name == index_file.name:
            continue
        if item.is_dir():
            shutil.copytree(item, output / item.name)
        else:
            shutil.copy2(item, output / item.name)
    return output


def _kept_parts(encoder_config, use_projector: bool) -> tuple[str, ...]:
    """The MLLM's tower parts a swap keeps: its mergers, but the main one when the projector replaces it, and none
    when the encoder trained them (`mllm_language_model`)."""
    if encoder_config.mllm_language_model:
        return ()
    owned = encoder_config.backbone.mllm_owned
    return tuple(part for part in owned if not (use_projector and part + "." == MERGER))


def swap_vision_tower_in_memory(mllm, encoder: VersaViTPreTrainedModel, use_projector: bool = False):
    """Replace the vision tower weights of a loaded MLLM (of the encoder's tower family) by `encoder`'s (in
    place)."""
    check_compatibility(encoder.config, mllm.config, use_projector)
    inner = getattr(mllm, "model", mllm)
    attribute = encoder.config.backbone.mllm_attribute
    visual = getattr(inner, attribute, None)
    if visual is None:
        raise ValueError(f"{type(mllm).__name__} has no vision tower (`model.{attribute}`).")
    tensors = _encoder_tensors(encoder, use_projector)
    result = visual.load_state_dict(tensors, strict=False)
    kept = _kept_parts(encoder.config, use_projector)
    missing = [k for k in result.missing_keys if not _owned(k, kept)]
    if missing or result.unexpected_keys:
        raise ValueError(f"encoder tensors do not match the tower: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}.")
    return mllm


__all__ = ["check_compatibility", "compatibility_errors", "swap_vision_tower", "swap_vision_tower_in_memory"]
