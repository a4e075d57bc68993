"""The recipes run end to end on tiny settings and document their options."""

import json
import subprocess
import sys

import PIL.Image
import pytest
import torch
from conftest import RECIPES, load_recipe, photo, recipe_path, tiny_config
from safetensors.torch import load_file

from modeling_versavit import VersaViTModel


def test_extract_features_default_run(tmp_path):
    summary = load_recipe("extract_features").main(
        ["--output_dir", str(tmp_path), "--depth", "2", "--embed_dim", "32", "--max_pixels", str(112 * 112)]
    )
    assert [image["name"] for image in summary["images"]] == ["astronaut", "chelsea", "coffee"]
    features = load_file(tmp_path / "features.safetensors")
    for image in summary["images"]:
        for layer, shape in image["maps"].items():
            assert list(features[f"{image['name']}.layer{layer}"].shape) == shape and shape[0] == 32
        panel = PIL.Image.open(image["png"])
        _, h, w = image["maps"]["-1"]
        assert panel.size == (3 * 14 * w, 14 * h)  # image | layer 0 | last layer
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


@pytest.mark.parametrize("family", ["qwen2_5_vl", "siglip2"])
def test_extract_features_from_a_saved_model_and_image_files(tmp_path, family):
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    VersaViTModel(tiny_config(family)).save_pretrained(model_dir)  # the image layout follows the tower family
    for folder in ("a", "b"):  # the same file name twice must not collide
        (tmp_path / folder).mkdir()
        PIL.Image.fromarray(photo("coffee")).save(tmp_path / folder / "cup.png")
    summary = load_recipe("extract_features").main(
        ["--model", str(model_dir), "--images", str(tmp_path / "a/cup.png"), str(tmp_path / "b/cup.png"),
         "--layers", "1", "3", "--output_dir", str(tmp_path / "out"), "--max_pixels", str(112 * 112)]
    )
    assert summary["backbone"] == family
    assert [image["name"] for image in summary["images"]] == ["0_cup", "1_cup"]
    features = load_file(tmp_path / "out" / "features.safetensors")
    assert torch.equal(features["0_cup.layer3"], features["1_cup.layer3"])


def test_recipe_help_documents_every_option():
    result = subprocess.run(
        [sys.executable, str(recipe_path("extract_features")), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for option in ("--model", "--mllm", "--images", "--layers", "--max_pixels", "--output_dir"):
        assert option in result.stdout


@pytest.mark.parametrize("name", sorted(path.stem for path in [*RECIPES.glob("*.py"), *RECIPES.glob("*/*.py")]))
def test_every_recipe_documents_its_options(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe(name).main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage:") and "--help" in printed
    assert len(printed.splitlines()) > 8  # every option with its help text


@pytest.mark.parametrize("name, config", [
    ("multitask", "default.yaml"), ("align", "default.yaml"), ("finetune_depth", "finetune_depth_default.yaml"),
    ("finetune_refseg", "finetune_refseg_default.yaml"), ("probe_depth", "probe_default.yaml"),
    ("probe_segmentation", "probe_default.yaml"), ("compare", "compare_default.yaml"),
])
def test_every_training_recipe_runs_its_embedded_default_without_config(name, config, tmp_path, monkeypatch, capsys):
    """No --config: the recipe's shipped default, named in the first printed line. Run where no `make demo` output
    exists, each stops right after at a clear error (a missing demo model, or a setting this test makes invalid)."""
    monkeypatch.chdir(tmp_path)
    argv = ["--output_dir", str(tmp_path / "out")]
    if name in ("multitask", "align"):
        argv += ["--num_scenes", "-1"]  # invalid: stops the run after the config is read
    with pytest.raises((SystemExit, ValueError)) as stop:
        load_recipe(name).main(argv)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"Config: {RECIPES / 'configs' / config}, the embedded default (no --config given)"), first
    message = str(stop.value)
    assert "num_scenes" in message if name in ("multitask", "align") else "make demo" in message, message
