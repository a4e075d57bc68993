"""Linear probes on a frozen backbone: the backbone does not change, the probes beat chance on generated scenes."""

import PIL.Image
import pytest
import torch

from modeling_versavit import VersaViTConfig, VersaViTModel
from versavit_trainer.data.readers import DepthSource, SegmentationSource, scene_depth, scene_segmentation
from versavit_trainer.evaluation.probes import (
    FrozenFeatures,
    ProbeSettings,
    chance_depth,
    chance_segmentation,
    evaluate_depth_probe,
    evaluate_segmentation_probe,
    native_size,
    predict_depth,
    segment,
    segmentation_views,
    silog_loss,
    train_depth_probe,
    train_segmentation_probe,
    windows,
)

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


class RecordingFeatures(FrozenFeatures):
    """FrozenFeatures that records the (height, width) of every image it embeds."""

    def __init__(self, backbone, size):
        super().__init__(backbone, size)
        self.seen = []

    def __call__(self, images, size=None):
        out = super().__call__(images, size)
        self.seen += [tuple(size or (self.size, self.size))] * len(images)
        return out


def _wide_segmentation(count: int = 2):
    """Segmentation data of 90 x 300 images whose label is the column's third (0 | 1 | 2)."""
    import numpy as np

    rng = np.random.default_rng(0)
    label = np.repeat(np.repeat(np.arange(3), 100)[None], 90, axis=0)
    items = [(rng.integers(0, 255, (90, 300, 3), dtype=np.uint8), label) for _ in range(count)]
    return SegmentationSource("wide", 3, items)


def test_segmentation_probe_trains_and_evaluates_through_one_resize_rule(backbone):
    import numpy as np

    source = _wide_segmentation()
    # square (the paper): one 56 x 56 view per image in training and in evaluation
    features = RecordingFeatures(backbone, 56)
    head, _ = train_segmentation_probe(features, source, ProbeSettings(size=56, steps=2))
    assert features.seen == [(56, 56)] * 2
    features.seen.clear()
    image, label = source.load(0)
    assert segment(features, head, image).shape == (90, 300) and features.seen == [(56, 56)]
    # short_side (DINOv3): 56 x 196 (300 * 56 / 90 = 186.7 -> 7 blocks of 28), windows at a stride of 28 px
    assert windows(56, 196, 56) == [(0, 0), (0, 28), (0, 56), (0, 84), (0, 112), (0, 140)]
    views = segmentation_views(image, label, 56, "short_side")
    resized = np.array(image.resize((196, 56), PIL.Image.BICUBIC))
    resized_label = np.array(PIL.Image.fromarray(label.astype(np.int32)).resize((196, 56), PIL.Image.NEAREST))
    assert len(views) == 6
    for (top, left), (view, view_label) in zip(windows(56, 196, 56), views):
        assert np.array_equal(np.array(view), resized[top : top + 56, left : left + 56])
        assert np.array_equal(view_label.numpy(), resized_label[top : top + 56, left : left + 56])
    features = RecordingFeatures(backbone, 56)
    head, _ = train_segmentation_probe(features, source, ProbeSettings(size=56, resize="short_side", steps=2))
    assert len(features.seen) == 12 and head.resize == "short_side"
    features.seen.clear()
    assert segment(features, head, image).shape == (90, 300) and len(features.seen) == 6
    with pytest.raises(ValueError, match="resize: expected one of \\['square', 'short_side'\\], got 'crop'"):
        ProbeSettings(resize="crop")


def test_depth_probe_trains_and_predicts_at_the_datasets_own_resolution(backbone):
    import numpy as np

    rng = np.random.default_rng(0)
    items = [(rng.integers(0, 255, (90, 150, 3), dtype=np.uint8), rng.uniform(1, 5, (90, 150)).astype(np.float32)),
             (rng.integers(0, 255, (60, 60, 3), dtype=np.uint8), rng.uniform(1, 5, (60, 60)).astype(np.float32))]
    source = DepthSource("two sizes", items, max_depth=10.0)
    features = RecordingFeatures(backbone, 56)
    head, losses = train_depth_probe(features, source, ProbeSettings(size=56, steps=3, batch_size=2))
    assert native_size(90, 150) == (84, 140) and native_size(60, 60) == (56, 56) and native_size(10, 10) == (28, 28)
    assert features.seen == [(84, 140), (56, 56)] and all(np.isfinite(losses))  # not the 56 x 56 probe size
    features.seen.clear()
    assert predict_depth(features, head, source.load(0)[0]).shape == (90, 150) and features.seen == [(84, 140)]


def test_sliding_window_covers_a_wide_image(backbone):
    features = FrozenFeatures(backbone, 56)
    head, _ = train_segmentation_probe(features, scene_segmentation(4), ProbeSettings(size=56, steps=2))
    wide = PIL.Image.new("RGB", (300, 90), (120, 130, 140))
    assert segment(features, head, wide).shape == (90, 300)
    assert segment(features, head, wide, resize="short_side").shape == (90, 300)
    with pytest.raises(ValueError, match="size: must be a positive multiple of 28, got 50"):
        FrozenFeatures(backbone, 50)


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_probe_recipes_write_results_the_model_card_takes(tmp_path, task):
    import json

    from conftest import load_recipe
    from huggingface_hub import ModelCard

    from versavit_trainer.export.hub import export_folder

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


@pytest.mark.parametrize("resize", ["square", "short_side"])
def test_probes_computing_features_every_step_train_the_cached_probes(backbone, resize):
    settings = ProbeSettings(size=56, resize=resize, steps=6, batch_size=3)
    uncached = ProbeSettings(size=56, resize=resize, steps=6, batch_size=3, cache_features=False)
    features = RecordingFeatures(backbone, 56)
    source = _wide_segmentation(3)
    _, cached_losses = train_segmentation_probe(features, source, settings)
    calls = len(features.seen)
    _, losses = train_segmentation_probe(features, source, uncached)
    assert losses == pytest.approx(cached_losses, rel=1e-5)
    assert len(features.seen) - calls == 6 * 3  # one view per example per step, nothing kept
    depth = scene_depth(4, seed=5000)
    _, cached_losses = train_depth_probe(features, depth, settings)
    _, losses = train_depth_probe(features, depth, uncached)
    assert losses == pytest.approx(cached_losses, rel=1e-5)


def test_the_paper_probe_config_holds_the_papers_and_dinov3s_settings():
    from pathlib import Path

    from versavit_trainer.config import parse_config
    from versavit_trainer.evaluation.probe_runs import ProbeArguments

    config = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "probe_paper.yaml"
    (args,) = parse_config((ProbeArguments,), ["--config", str(config), "--model", "m"])
    assert (args.dataset, args.size, args.resize) == ("ade20k", 560, "square")  # supplement §8.1
    assert (args.steps, args.batch_size, args.learning_rate, args.weight_decay, args.warmup_steps) == (
        40000, 16, 1e-3, 1e-3, 1500)  # DINOv3's linear segmentation settings
    assert args.cache_features is False
