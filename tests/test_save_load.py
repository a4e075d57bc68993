"""save_pretrained / from_pretrained: the Auto API, remote code without the package, and an offline Hub cache."""

import json

import pytest
import torch
from conftest import random_inputs, tiny_config
from hub_fixtures import REPO_ID, WITHOUT_PACKAGE, hub_cache_with, run_python
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from modeling_versavit import VersaViTConfig, VersaViTImageProcessor, VersaViTModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved VersaViT folder (weights, remote code, image processor) plus reference inputs and outputs."""
    folder = tmp_path_factory.mktemp("versavit")
    torch.manual_seed(0)
    model = VersaViTModel(tiny_config("qwen2_5_vl")).eval()
    model.save_pretrained(folder)
    VersaViTImageProcessor(size={"shortest_edge": 3136, "longest_edge": 224 * 224}).save_pretrained(folder)
    inputs = random_inputs(model.config, [(8, 12), (16, 10)])
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
    reference = folder.parent / f"{folder.name}-reference.safetensors"
    save_file({**inputs, "pooler_output": outputs.pooler_output, "layer2": outputs.hidden_states[2]}, reference)
    return folder, reference


def test_saved_folder_carries_auto_map_and_code(saved):
    folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "versavit"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_versavit.VersaViTConfig",
        "AutoModel": "modeling_versavit.VersaViTModel",
        "AutoImageProcessor": "image_processing_versavit.VersaViTImageProcessor",
    }
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert "auto_map" not in processor and "image_processor_type" not in processor  # see tests/test_pipelines.py
    for name in ("configuration_versavit.py", "modeling_versavit.py", "image_processing_versavit.py",
                 "pipelines_versavit.py"):
        assert (folder / name).is_file()
    with safe_open(folder / "model.safetensors", framework="pt") as handle:
        assert all(key.startswith("visual.") for key in handle.keys())


def test_auto_classes_round_trip_in_process(saved):
    folder, reference = saved
    expected = load_file(reference)
    config = AutoConfig.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    assert isinstance(config, VersaViTConfig) and isinstance(model, VersaViTModel)
    assert isinstance(processor, VersaViTImageProcessor) and processor.size["longest_edge"] == 224 * 224
    with torch.no_grad():
        out = model(expected["pixel_values"], expected["image_grid_thw"], output_hidden_states=[2])
    assert torch.equal(out.pooler_output, expected["pooler_output"])
    assert torch.equal(out.hidden_states[2], expected["layer2"])


def test_task_checkpoint_keys_load_quietly_into_the_backbone(tmp_path, saved):
    folder, reference = saved
    tensors = load_file(folder / "model.safetensors")
    tensors["depth_head.weight"] = torch.zeros(2)  # a head the backbone does not have
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, info = VersaViTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    expected = load_file(reference)
    with torch.no_grad():
        assert torch.equal(model(expected["pixel_values"], expected["image_grid_thw"]).pooler_output,
                           expected["pooler_output"])


def test_a_checkpoint_missing_part_of_the_tower_is_refused_not_loaded_half_random(tmp_path, saved):
    """transformers would start the missing tensors at random with a load report only; a tower partly at random
    is not the checkpoint's (from_mllm refuses the same defect), in the model classes and in a training run."""
    from pathlib import Path

    from conftest import load_recipe, tiny_run_config

    from modeling_versavit import VersaViTForDepthEstimation

    folder, _ = saved
    tensors = load_file(folder / "model.safetensors")
    kept = dict(list(sorted(tensors.items()))[: len(tensors) // 2])
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    missing = len(tensors) - len(kept)
    for cls in (VersaViTModel, VersaViTForDepthEstimation):
        with pytest.raises(ValueError, match=rf"{tmp_path}: the checkpoint lacks {missing} of the vision tower's "
                                             rf"{len(tensors)} tensors \(visual\."):
            cls.from_pretrained(tmp_path)
    config = tiny_run_config(tmp_path, Path("unused"), tasks=["depth"], vision_config=None, num_scenes=2,
                             num_eval_scenes=0, model_name_or_path=str(tmp_path))
    with pytest.raises(ValueError, match=rf"the checkpoint lacks {missing} of the vision tower's"):
        load_recipe("multitask").main(["--config", str(config)])
    assert not (tmp_path / "run" / "config.yaml").exists()


CHECK_OUTPUTS = """
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel
expected = load_file({reference!r})
model = AutoModel.from_pretrained({source!r}{trust}).eval()
processor = AutoImageProcessor.from_pretrained({source!r}{trust})
with torch.no_grad():
    out = model(expected["pixel_values"], expected["image_grid_thw"], output_hidden_states=[2])
assert torch.equal(out.pooler_output, expected["pooler_output"])
assert torch.equal(out.hidden_states[2], expected["layer2"])
print(type(model).__module__, type(model).__name__, type(processor).__name__)
"""


def test_remote_code_loads_where_the_package_is_not_installed(tmp_path, saved):
    folder, reference = saved
    code = WITHOUT_PACKAGE + CHECK_OUTPUTS.format(
        reference=str(reference), source=str(folder), trust=", trust_remote_code=True"
    )
    out = run_python(code, tmp_path, {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    module, name, processor = out.split()
    assert module.startswith("transformers_modules.") and name == "VersaViTModel"
    assert processor == "VersaViTImageProcessor"


@pytest.mark.parametrize("installed", [True, False], ids=["package-installed", "remote-code"])
def test_repo_id_loads_offline_from_the_hub_cache(tmp_path, saved, installed):
    folder, reference = saved
    cache = tmp_path / "hub"
    hub_cache_with(folder, cache)
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(tmp_path / "home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    prelude = "import modeling_versavit\n" if installed else WITHOUT_PACKAGE
    trust = "" if installed else ", trust_remote_code=True"
    out = run_python(
        prelude + CHECK_OUTPUTS.format(reference=str(reference), source=REPO_ID, trust=trust), tmp_path, env
    )
    module, name, processor = out.split()
    assert name == "VersaViTModel" and processor == "VersaViTImageProcessor"
    if installed:  # the registered local class wins over the cached remote code
        assert module == "modeling_versavit.modeling_versavit"
    else:
        assert module.startswith("transformers_modules.")
