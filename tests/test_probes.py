"""Linear probes on a frozen backbone: the backbone does not change, the probes beat chance on generated scenes."""

import PIL.Image
import pytest
import torch

from modeling_versavit import VersaViTConfig, VersaViTModel
from versavit_trainer.probes import (
    FrozenFeatures,
    ProbeSettings,
    chance_depth,
    chance_segmentation,
    evaluate_depth_probe,
    evaluate_segmentation_probe,
    segment,
    silog_loss,
    train_depth_probe,
    train_segmentation_probe,
)
from versavit_trainer.readers import scene_depth, scene_segmentation

SETTINGS = ProbeSettings(size=112, steps=200, batch_size=8, learning_rate=1e-2)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    vision = {"model_type": "qwen2_vl_vision", "depth": 2, "embed_dim": 96, "num_heads": 2, "hidden_size": 64}
    return VersaViTModel(VersaViTConfig(vision_config=vision))


def test_silog_loss_definition():
    target = torch.tensor([[1.0, 2.0], [4.0, float("nan")]])
    assert silog_loss(2 * target.nan_to_num(1.0), target, variance_focus=1.0) == pytest.approx(0.0, abs=1e-5)
    d = torch.log(torch.tensor([2.0, 2.0, 2.0])) - torch.log(torch.tensor([1.0, 2.0, 4.0]))
    expected = torch.sqrt((d**2).mean() - 0.85 * d.mean() ** 2)
    assert silog_loss(torch.full((2, 2), 2.0), target) == pytest.approx(float(expected))


def test_segmentation_probe_beats_chance_and_keeps_the_backbone(backbone):
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    train, held_out = scene_segmentation(40, seed=5000), scene_segmentation(8, seed=9000)
    features = FrozenFeatures(backbone, SETTINGS.size)
    head, losses = train_segmentation_probe(features, train, SETTINGS)
    result, predictions = evaluate_segmentation_probe(features, head, held_out)
    chance = chance_segmentation(held_out)
    print(f"scenes segmentation probe mIoU {result['mean_iou']:.3f} (chance {chance['mean_iou']:.3f})")
    assert losses[-1] < 0.5 * losses[0]
    assert result["mean_iou"] > chance["mean_iou"] + 0.15
    assert predictions[0].shape == held_out.load(0)[1].shape  # full resolution from the sliding window
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_depth_probe_beats_chance(backbone):
    train, held_out = scene_depth(40, seed=5000), scene_depth(8, seed=9000)
    features = FrozenFeatures(backbone, SETTINGS.size)
    head, _ = train_depth_probe(features, train, SETTINGS)
    result, predictions = evaluate_depth_probe(features, head, held_out)
    chance = chance_depth(train, held_out)
    print(f"scenes depth probe AbsRel {result['abs_rel']:.3f} RMSE {result['rmse']:.2f} "
          f"(chance {chance['abs_rel']:.3f}, {chance['rmse']:.2f})")
    assert result["abs_rel"] < chance["abs_rel"] and result["rmse"] < 0.8 * chance["rmse"]
    assert predictions[0].shape == held_out.load(0)[1].shape


def test_sliding_window_covers_a_wide_image(backbone):
    features = FrozenFeatures(backbone, 56)
    head, _ = train_segmentation_probe(features, scene_segmentation(4), ProbeSettings(size=56, steps=2))
    wide = PIL.Image.new("RGB", (300, 90), (120, 130, 140))
    assert segment(features, head, wide).shape == (90, 300)
    with pytest.raises(ValueError, match="size: must be a positive multiple of 28, got 50"):
        FrozenFeatures(backbone, 50)


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_probe_recipes_write_results_the_model_card_takes(tmp_path, task):
    import json

    from conftest import load_recipe
    from huggingface_hub import ModelCard

    from versavit_trainer.hub import export_folder

    vision = '{"model_type": "qwen2_vl_vision", "depth": 2, "embed_dim": 64, "num_heads": 2, "hidden_size": 64}'
    summary = load_recipe(f"probe_{task}").main([
        "--vision_config", vision, "--size", "56", "--steps", "30", "--num_scenes", "12", "--num_eval_scenes", "4",
        "--output_dir", str(tmp_path),
    ])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["results"]) == {task} and saved == summary
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    expected = {"segmentation": ["mean_iou"], "depth": ["rmse", "abs_rel"]}[task]
    assert [r["metric_type"] for r in model_index] == expected
    folder = export_folder(_tiny(), tmp_path / "card", "org/x", results=model_index)
    assert len(ModelCard.load(folder / "README.md").data.eval_results) == len(expected)


def test_probe_on_the_real_stereo_motorcycle_disparity_fits(tmp_path):
    from conftest import load_recipe

    vision = '{"model_type": "qwen2_vl_vision", "depth": 2, "embed_dim": 64, "num_heads": 2, "hidden_size": 64}'
    summary = load_recipe("probe_depth").main([
        "--vision_config", vision, "--dataset", "stereo_motorcycle", "--size", "112", "--steps", "150",
        "--output_dir", str(tmp_path),
    ])
    result = summary["results"]["depth"]
    print(f"stereo_motorcycle probe: AbsRel {result['abs_rel']:.3f} (median {result['chance']['abs_rel']:.3f})")
    assert result["abs_rel"] < result["chance"]["abs_rel"]
    with pytest.raises(SystemExit, match="dataset: 'voc' has no depth labels"):
        load_recipe("probe_depth").main(["--vision_config", vision, "--dataset", "voc", "--output_dir", str(tmp_path)])


def _tiny():
    vision = {"model_type": "qwen2_vl_vision", "depth": 1, "embed_dim": 32, "num_heads": 2, "hidden_size": 32}
    return VersaViTModel(VersaViTConfig(vision_config=vision))
