"""3D correspondence (the paper's Table 8): exact scene correspondences from a second camera, nearest-neighbour
matching of dense features, recall within thresholds, the SPair-71k reader and the recipe."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import QWEN2_VISION, load_recipe

from versavit_trainer.data.readers import scene_correspondences, spair
from versavit_trainer.data.scenes import Camera, corresponding_pixels, generate_scene, render
from versavit_trainer.evaluation.correspondence import match_points


def test_scene_correspondences_see_the_same_3d_point_from_both_cameras():
    """A pixel of view A and its position in view B back-project to the same 3D point (up to B's pixel
    discretisation) on the same object; occluded and out-of-frame points are left out."""
    camera, second = Camera(), Camera(x=0.6, yaw=0.12)
    for seed in range(3):
        scene = generate_scene(seed, camera)
        _, depth_b, instances_b = render(scene.objects, second)
        rows, cols = np.nonzero(scene.instances > 0)
        rows_b, cols_b, visible = corresponding_pixels(scene.depth, camera, depth_b, second, rows, cols)
        assert 0.3 < visible.mean() < 1.0
        points = camera.unproject(rows[visible], cols[visible], scene.depth[rows[visible], cols[visible]])
        near_r, near_c = np.rint(rows_b[visible]).astype(int), np.rint(cols_b[visible]).astype(int)
        again = second.unproject(near_r, near_c, depth_b[near_r, near_c])
        assert np.median(np.linalg.norm(points - again, axis=1) / points[:, 2]) < 0.01
        assert (instances_b[near_r, near_c] == scene.instances[rows[visible], cols[visible]]).mean() > 0.98
        # Projecting A's own points into A gives the pixels back.
        back_r, back_c, _ = camera.project(points)
        np.testing.assert_allclose(back_r, rows[visible], atol=1e-6)
        np.testing.assert_allclose(back_c, cols[visible], atol=1e-6)
    source = scene_correspondences(4, seed=0, points=10)
    image_a, image_b, points_a, points_b, scale = source.load(0)
    assert image_a.size == image_b.size == (128, 96) and points_a.shape == points_b.shape == (10, 2) and scale == 128
    assert not np.array_equal(np.asarray(image_a), np.asarray(image_b))


def test_matching_finds_a_shifted_copy_of_the_features():
    """B's feature grid is A's shifted by (1, 2) cells: every cell centre of A matches the shifted centre in B."""
    generator = torch.Generator().manual_seed(0)
    grid_a = torch.randn(16, 6, 6, generator=generator)
    grid_b = torch.randn(16, 6, 6, generator=generator)
    grid_b[:, 1:, 2:] = grid_a[:, :5, :4]
    size, patch = 84, 14
    cells = np.array([(r, c) for r in range(5) for c in range(4)])
    points = (cells + 0.5) * patch - 0.5
    matches = match_points(grid_a, grid_b, points, size)
    np.testing.assert_allclose(matches, points + np.array([1, 2]) * patch)


def test_spair_reader(tmp_path):
    (tmp_path / "JPEGImages" / "cat").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        PIL.Image.new("RGB", (50, 40)).save(tmp_path / "JPEGImages" / "cat" / name)
    (tmp_path / "PairAnnotation" / "test").mkdir(parents=True)
    pair = {"src_imname": "a.jpg", "trg_imname": "b.jpg", "category": "cat", "src_kps": [[10, 5], [20, 30]],
            "trg_kps": [[12, 6], [22, 31]], "trg_bndbox": [5, 2, 45, 32]}
    (tmp_path / "PairAnnotation" / "test" / "0001.json").write_text(json.dumps(pair))
    source = spair(tmp_path)
    image_a, image_b, points_a, points_b, scale = source.load(0)
    np.testing.assert_array_equal(points_a, [[5, 10], [30, 20]])  # (row, col)
    np.testing.assert_array_equal(points_b, [[6, 12], [31, 22]])
    assert scale == 40 and image_a.size == (50, 40)
    pair["trg_kps"] = [[1, 2]]
    (tmp_path / "PairAnnotation" / "test" / "0001.json").write_text(json.dumps(pair))
    with pytest.raises(ValueError, match="must be matching"):
        spair(tmp_path)
    with pytest.raises(FileNotFoundError, match="SPair split 'val'"):
        spair(tmp_path, "val")


def test_the_recipe_writes_recall(tmp_path):
    recipe = load_recipe("eval_correspondence")
    summary = recipe.main(["--vision_config", json.dumps(QWEN2_VISION), "--num_pairs", "3", "--size", "56",
                           "--output_dir", str(tmp_path)])
    metrics = json.loads((tmp_path / "results.json").read_text())["results"]
    assert metrics == summary["results"] and metrics["num_pairs"] == 3 and metrics["num_points"] == 120
    recalls = [metrics[f"recall@{t}"] for t in ("0.05", "0.1", "0.2")]
    assert all(0 <= r <= 1 for r in recalls) and recalls == sorted(recalls)
    assert len(json.loads((tmp_path / "model_index.json").read_text())) == 3
    with pytest.raises(SystemExit, match="data_root: spair needs"):
        recipe.main(["--vision_config", json.dumps(QWEN2_VISION), "--dataset", "spair", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="dataset: expected one of"):
        recipe.main(["--vision_config", json.dumps(QWEN2_VISION), "--dataset", "navi", "--output_dir", str(tmp_path)])
