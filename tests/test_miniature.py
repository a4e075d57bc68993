# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The pre-trained miniature: its recipe (deterministic, tower + projector only, with a digest), the digest check on
every use, runs starting from it (tower and projector reused, the LLM from `language_model`), and the shipped
asset itself."""

import json
import shutil

import pytest
import torch
from conftest import pretrain_tiny_miniature
from safetensors import safe_open

from versavit_trainer.core.models import build_model
from versavit_trainer.core.options import ModelArguments
from versavit_trainer.data.assets import MINIATURE, file_sha256, miniature_path


@pytest.fixture(scope="module")
def asset(tiny_llm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("miniature")
    return pretrain_tiny_miniature(folder / "a", tiny_llm), folder


def test_the_recipe_writes_tower_and_projector_with_their_digest_and_the_same_run_gives_the_same_bytes(
        asset, tiny_llm):
    summary, folder = asset
    written = folder / "a" / "asset"
    record = json.loads((written / "miniature.json").read_text())
    assert record["sha256"] == summary["sha256"] == file_sha256(written / "model.safetensors")
    assert record["recipe"] == "recipes/pretrain_miniature.py" and record["config"]["tasks"] == ["captioning"]
    with safe_open(written / "model.safetensors", framework="pt") as handle:
        names = list(handle.keys())
        assert all(handle.get_tensor(name).dtype == torch.float16 for name in names)
    assert {name.split(".")[0] for name in names} == {"visual", "projector"}  # no LLM, no heads
    assert record["parameters"]["visual"] > 0 and record["parameters"]["projector"] > 0
    config = json.loads((written / "config.json").read_text())
    assert "auto_map" not in config and config["dtype"] == "float32"
    again = pretrain_tiny_miniature(folder / "b", tiny_llm)
    assert again["sha256"] == summary["sha256"]


def test_a_run_from_the_miniature_reuses_its_tower_and_projector_and_takes_the_llm_from_language_model(
        asset, tiny_llm):
    _, folder = asset
    written = miniature_path(folder / "a" / "asset")
    model, tokenizer = build_model(ModelArguments(model_name_or_path=str(written), language_model=str(tiny_llm)),
                                   ["captioning", "depth"])
    assert tokenizer is not None
    with safe_open(written / "model.safetensors", framework="pt") as handle:
        for prefix, module in (("visual.", model.visual), ("projector.", model.projector)):
            for name, value in module.state_dict().items():
                assert value.dtype == torch.float32
                torch.testing.assert_close(value, handle.get_tensor(prefix + name).float(), rtol=0, atol=0)
    llm = type(model.language_model).from_pretrained(tiny_llm)
    for name, value in llm.state_dict().items():  # (the embeddings gained the image token's row)
        torch.testing.assert_close(model.language_model.state_dict()[name][: len(value)], value, rtol=0, atol=0)


def test_a_projector_of_another_llm_width_is_an_error_naming_language_model(asset, tiny_llm, tmp_path):
    _, folder = asset
    from transformers import LlamaConfig, LlamaForCausalLM

    wider = tmp_path / "wider_llm"
    config = LlamaConfig.from_pretrained(tiny_llm)
    config.hidden_size, config.head_dim = 48, 24
    LlamaForCausalLM(config).save_pretrained(wider)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny_llm / name).is_file():
            shutil.copy(tiny_llm / name, wider / name)
    with pytest.raises(ValueError, match="language_model: the projector of .* does not fit the configured LLM's width"):
        build_model(ModelArguments(model_name_or_path=str(folder / "a" / "asset"), language_model=str(wider)),
                    ["captioning"])


def test_a_replaced_or_truncated_weights_file_is_refused_naming_it_and_both_digests(asset, tmp_path):
    _, folder = asset
    copy = shutil.copytree(folder / "a" / "asset", tmp_path / "copy")
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[:-8] + bytes(8))  # same length, last tensor bytes changed
    with pytest.raises(OSError, match=r"model\.safetensors: sha256 [0-9a-f]{64}, but .*miniature\.json records"):
        miniature_path(copy)
    with pytest.raises(OSError, match="sha256"):  # every run from it checks too
        build_model(ModelArguments(model_name_or_path=str(copy)), ["depth"])
    (copy / "miniature.json").unlink()
    with pytest.raises(OSError, match=r"miniature\.json: missing"):
        miniature_path(copy)


def test_the_shipped_miniature_matches_its_digest_and_loads_as_a_tower():
    from transformers import AutoModel

    import modeling_versavit  # noqa: F401  (registers the Auto classes)

    folder = miniature_path()
    assert folder == MINIATURE
    record = json.loads((folder / "miniature.json").read_text())
    assert record["config"]["tasks"] == ["captioning"] and record["config"]["model_name_or_path"] is None
    tower = AutoModel.from_pretrained(folder)
    assert type(tower).__name__ == "VersaViTModel" and next(tower.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in tower.parameters()) == record["parameters"]["visual"]
