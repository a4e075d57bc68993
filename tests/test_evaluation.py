"""Evaluation recipes: zero-shot relative depth, referring segmentation, and the encoder comparison."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import load_recipe

from modeling_versavit import VersaViTConfig, VersaViTModel


def test_eval_depth_on_scenes_and_a_real_image(tmp_path, dense_checkpoint):
    summary = load_recipe("eval_depth").main(
        [
            "--model",
            str(dense_checkpoint),
            "--size",
            "56",
            "--num_eval_scenes",
            "3",
            "--output_dir",
            str(tmp_path / "a"),
        ]
    )
    assert summary["images"] == 3 and summary["abs_rel"] > 0 and 0 <= summary["delta1"] <= 1
    index = json.loads((tmp_path / "a" / "model_index.json").read_text())
    assert [r["metric_type"] for r in index] == ["abs_rel", "delta1"]
    real = load_recipe("eval_depth").main(["--model", str(dense_checkpoint), "--size", "56", "--dataset",
                                           "stereo_motorcycle", "--space", "disparity", "--output_dir", str(tmp_path)])
    assert real["images"] == 1
    with pytest.raises(SystemExit, match="split: nyuv2 needs the split file"):
        load_recipe("eval_depth").main(["--model", str(dense_checkpoint), "--dataset", "nyuv2"])
    VersaViTModel.from_pretrained(dense_checkpoint).save_pretrained(tmp_path / "backbone")
    with pytest.raises(SystemExit, match=r"has no depth weights"):
        load_recipe("eval_depth").main(["--model", str(tmp_path / "backbone")])


def test_eval_depth_feeds_each_image_at_its_own_aspect_ratio(dense_checkpoint):
    import torch.nn.functional as F

    from modeling_versavit import VersaViTForDepthEstimation, VersaViTImageProcessor
    from versavit_trainer.evaluation.probes import keep_aspect_size

    assert keep_aspect_size(352, 1216, 532) == (532, 1848)  # KITTI: 1216 * 532 / 352 = 1837.8 -> 66 blocks of 28
    assert keep_aspect_size(480, 640, 532) == (532, 700)  # NYUv2
    model = VersaViTForDepthEstimation.from_pretrained(dense_checkpoint, dtype=torch.float32).eval()
    grids = []
    model.register_forward_pre_hook(lambda _, args, kwargs: grids.append(kwargs["image_grid_thw"].tolist()),
                                    with_kwargs=True)
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 180, 3), dtype=np.uint8))
    processor = VersaViTImageProcessor()
    with torch.no_grad():
        prediction = load_recipe("eval_depth").predict(model, processor, image, 56, (60, 180))
        # the reference, written out: 56 x 168 pixels (aspect 1:3 kept), not 56 x 56
        inputs = processor(images=[image.resize((168, 56), PIL.Image.BICUBIC)], do_resize=False, return_tensors="pt")
        expected = F.interpolate(model(**inputs).predicted_depth[:, None], size=(60, 180), mode="bilinear",
                                 align_corners=False)[0, 0]
    assert grids[0] == [[1, 4, 12]]
    torch.testing.assert_close(prediction, expected)


def test_eval_refseg_matches_the_training_run_metric(tmp_path, dense_checkpoint):
    from modeling_versavit import SentenceEmbedder, VersaViTForMultiTask
    from versavit_trainer.core.options import DataArguments
    from versavit_trainer.core.sources import EVAL_SCENE_SEED_OFFSET
    from versavit_trainer.data.assets import minilm_path
    from versavit_trainer.data.scene_tables import scene_datasets
    from versavit_trainer.metrics import evaluate_segmentation
    from versavit_trainer.objectives.dense import eval_batches

    summary = load_recipe("eval_refseg").main(
        ["--model", str(dense_checkpoint), "--size", "56", "--num_eval_scenes", "3", "--output_dir", str(tmp_path)]
    )
    rows = scene_datasets(3, SentenceEmbedder(minilm_path()), seed=EVAL_SCENE_SEED_OFFSET)["segmentation"]
    model = VersaViTForMultiTask.from_pretrained(dense_checkpoint).eval()
    with torch.no_grad():
        expected = evaluate_segmentation(model, eval_batches(DataArguments(segmentation_size=56), "segmentation", rows))
    assert summary["ciou"] == pytest.approx(expected["ciou"]) and summary["miou"] == pytest.approx(expected["miou"])
    assert summary["expressions"] == expected["expressions"] > 0


def save_small_encoder(folder) -> None:
    torch.manual_seed(0)
    vision = {"model_type": "qwen2_vl_vision", "depth": 2, "embed_dim": 64, "num_heads": 2, "hidden_size": 64}
    VersaViTModel(VersaViTConfig(vision_config=vision)).save_pretrained(folder)


def test_compare_two_encoders_writes_the_table_and_the_figure(tmp_path):
    save_small_encoder(tmp_path / "encoder")
    summary = load_recipe("compare").main(
        [
            "--encoders",
            str(tmp_path / "encoder"),
            "random",
            "--names",
            "ours",
            "baseline",
            "--size",
            "56",
            "--steps",
            "20",
            "--num_scenes",
            "8",
            "--num_eval_scenes",
            "3",
            "--num_examples",
            "2",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    table = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    assert table[0] == "| Method | scenes mIoU ↑ | scenes RMSE ↓ | scenes AbsRel ↓ |"
    assert table[2].startswith("| ours | ") and table[3].startswith("| baseline | ") and "(" in table[3]
    assert [row["name"] for row in summary["rows"]] == ["ours", "baseline"]
    figure = PIL.Image.open(tmp_path / "out" / "examples.png")
    assert figure.size[0] > figure.size[1] > 100  # 2 rows of 7 panels
    with pytest.raises(SystemExit, match="two or more --encoders"):
        load_recipe("compare").main(["--encoders", str(tmp_path / "encoder")])
    with pytest.raises(SystemExit, match="'random' takes the shape of an encoder listed before it"):
        load_recipe("compare").main(["--encoders", "random", str(tmp_path / "encoder")])


def test_compare_adds_the_out_of_task_columns(tmp_path):
    save_small_encoder(tmp_path / "encoder")
    summary = load_recipe("compare").main([
        "--encoders", str(tmp_path / "encoder"), "random", "--size", "56", "--steps", "5", "--num_scenes", "6",
        "--num_eval_scenes", "3", "--num_examples", "1", "--out_of_task", "correspondence", "retrieval",
        "classification", "--output_dir", str(tmp_path / "out"),
    ])
    header = (tmp_path / "out" / "comparison.md").read_text().splitlines()[0]
    assert header.endswith("| scene correspondence R@10% ↑ | scene retrieval mean R ↑ | scene zero-shot top-1 ↑ |")
    for row in summary["rows"]:
        assert all(0 <= row[key] <= 1 for key in ("correspondence", "retrieval", "classification")), row
    with pytest.raises(SystemExit, match="out_of_task: \\['navi'\\]"):
        load_recipe("compare").main(["--encoders", str(tmp_path / "encoder"), "random", "--out_of_task", "navi"])


def test_eval_depth_on_a_da2k_layout(tmp_path, dense_checkpoint):
    """DA-2K's layout (annotations.json + images/<scene>/...), pairs taken from a generated scene's exact depth."""
    from versavit_trainer.data.scenes import generate_scene

    scene = generate_scene(7)
    (tmp_path / "images" / "outdoor").mkdir(parents=True)
    PIL.Image.fromarray(scene.image).save(tmp_path / "images" / "outdoor" / "0.png")
    depth = scene.depth
    rows, cols = np.nonzero(np.isfinite(depth))
    pairs = []
    for a, b in [(0, len(rows) - 1), (len(rows) // 3, 2 * len(rows) // 3), (5, len(rows) // 2)]:
        p1, p2 = [int(rows[a]), int(cols[a])], [int(rows[b]), int(cols[b])]
        if depth[tuple(p1)] != depth[tuple(p2)]:
            pairs.append({"point1": p1, "point2": p2,
                          "closer_point": "point1" if depth[tuple(p1)] < depth[tuple(p2)] else "point2"})
    (tmp_path / "annotations.json").write_text(json.dumps({"images/outdoor/0.png": pairs}))
    load_recipe("eval_depth").main(
        [
            "--model",
            str(dense_checkpoint),
            "--size",
            "56",
            "--dataset",
            "da2k",
            "--data_root",
            str(tmp_path),
            "--space",
            "depth",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["pairs"] == len(pairs) and saved["images"] == 1 and 0 <= saved["accuracy"] <= 1
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index[0]["metric_type"] == "accuracy" and index[0]["dataset_type"] == "depth-anything/DA-2K"
    (tmp_path / "annotations.json").write_text(json.dumps({"images/outdoor/0.png": [{"point1": [1, 2]}]}))
    with pytest.raises(SystemExit, match=r"pair 0 of images/outdoor/0.png needs point1 and point2"):
        load_recipe("eval_depth").main(["--model", str(dense_checkpoint), "--dataset", "da2k", "--data_root",
                                        str(tmp_path)])


def test_eval_depth_aligns_in_the_space_the_model_was_trained_in(tmp_path, dense_checkpoint):
    import shutil

    from versavit_trainer.core.models import build_model
    from versavit_trainer.core.options import ModelArguments

    args = ["--size", "56", "--num_eval_scenes", "2", "--output_dir", str(tmp_path / "out")]
    assert load_recipe("eval_depth").main(["--model", str(dense_checkpoint), *args])["space"] == "depth"
    disparity = tmp_path / "disparity"
    shutil.copytree(dense_checkpoint, disparity)
    config = json.loads((disparity / "config.json").read_text())
    (disparity / "config.json").write_text(json.dumps({**config, "depth_label_space": "disparity"}))
    summary = load_recipe("eval_depth").main(["--model", str(disparity), *args])
    assert summary["space"] == "disparity"
    forced = load_recipe("eval_depth").main(["--model", str(disparity), "--space", "depth", *args])
    assert forced["space"] == "depth" and forced["abs_rel"] != summary["abs_rel"]
    # continuing training on data of the other space is refused
    with pytest.raises(ValueError, match="was trained on disparity labels, the depth data are depth"):
        build_model(ModelArguments(model_name_or_path=str(disparity)), ["depth"], depth_label_space="depth")
