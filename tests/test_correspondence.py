"""3D correspondence (the paper's Table 8): exact scene correspondences from a second camera, nearest-neighbour
matching of dense features, recall within thresholds, the SPair-71k reader and the recipe."""

import json
import math
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import QWEN2_VISION, load_recipe

from versavit_trainer.data.readers import navi, navi_depth, scene_correspondences, spair
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
        recipe.main(["--vision_config", json.dumps(QWEN2_VISION), "--dataset", "navy", "--output_dir", str(tmp_path)])
    navi_folder(tmp_path / "navi")
    summary = recipe.main(["--vision_config", json.dumps(QWEN2_VISION), "--dataset", "navi", "--data_root",
                           str(tmp_path / "navi"), "--size", "56", "--output_dir", str(tmp_path / "out")])
    assert summary["results"]["num_pairs"] == 1 and summary["results"]["num_points"] == 40
    assert summary["model_index"][0]["dataset_type"] == "navi" and summary["results"]["pairs_without_points"] == 0
    # an all-zero depth map (no depth anywhere) gives its pair no point: left out and counted, never a NaN recall
    navi_folder(tmp_path / "navi3", cameras=(Camera(), Camera(x=0.6, yaw=0.12), Camera(x=1.2, yaw=0.24)))
    depth = tmp_path / "navi3" / "toy_object" / "wild_set" / "depth" / "000.png"
    PIL.Image.fromarray(np.zeros((96, 128), np.uint16)).save(depth)
    argv = ["--vision_config", json.dumps(QWEN2_VISION), "--dataset", "navi", "--data_root", str(tmp_path / "navi3"),
            "--size", "56", "--output_dir", str(tmp_path / "out3")]
    results = recipe.main(argv)["results"]
    assert results["num_pairs"] == 1 and results["pairs_without_points"] == 1 and results["num_points"] == 40
    assert all(math.isfinite(value) for value in results.values())
    assert json.loads((tmp_path / "out3" / "results.json").read_text())["results"] == results
    shutil.copy(depth, depth.with_name("001.png"))  # every pair empty: an error, no results.json
    with pytest.raises(SystemExit, match=r"navi-wild_set: no pair to evaluate \(2 pairs, none with a corresponding "
                                         r"point: check the depth maps\)"):
        recipe.main([*argv[:-1], str(tmp_path / "out4")])
    assert not (tmp_path / "out4" / "results.json").exists()


# ------------------------------------------------------------------------------------------------- NAVI
def navi_folder(root, seed: int = 0, cameras=(Camera(), Camera(x=0.6, yaw=0.12)), name: str = "toy_object"):
    """A NAVI-layout collection (`<object>/wild_set/annotations.json`, `images/`, `depth/`) of one generated scene
    rendered from `cameras`, written the way NAVI stores it: depth as the 16-bit disparity 655350 / millimetres,
    poses as OpenCV world-to-camera `[w, x, y, z]` quaternions and translations in millimetres."""
    from scipy.spatial.transform import Rotation

    scene = generate_scene(seed, cameras[0])
    folder = root / name / "wild_set"
    (folder / "images").mkdir(parents=True)
    (folder / "depth").mkdir()
    entries, depths = [], []
    for k, camera in enumerate(cameras):
        image, depth, _ = render(scene.objects, camera)
        PIL.Image.fromarray(image).save(folder / "images" / f"{k:03d}.png")
        millimetres = depth.astype(np.float64) * 1000
        with np.errstate(divide="ignore"):
            encoded = np.where(np.isfinite(millimetres), np.clip(np.rint(655350 / millimetres), 1, 65535), 0)
        PIL.Image.fromarray(encoded.astype(np.uint16)).save(folder / "depth" / f"{k:03d}.png")
        # World -> camera with the camera's axes right, down, forward. The renderer's world (x right, y up, z forward)
        # is left-handed: the object frame NAVI's poses start from is that world with z negated.
        world_to_camera = (camera.rotation @ np.diag([1.0, -1.0, 1.0])).T
        x, y, z, w = Rotation.from_matrix(world_to_camera @ np.diag([1.0, 1.0, -1.0])).as_quat()
        entries.append({"object_id": name, "filename": f"{k:03d}.png", "image_size": [camera.height_px, camera.width],
                        "camera": {"q": [w, x, y, z], "t": (-world_to_camera @ camera.origin * 1000).tolist(),
                                   "focal_length": camera.focal, "camera_model": "toy"},
                        "scene_name": "wild_set", "split": "val", "occluded": False})
        depths.append(depth)
    (folder / "annotations.json").write_text(json.dumps(entries))
    return scene, depths


def test_navi_depth_maps_decode_as_navi_writes_them(tmp_path):
    values = np.array([[0, 1, 655], [6553, 65535, 1000]], dtype=np.uint16)
    PIL.Image.fromarray(values).save(tmp_path / "d.png")
    depth = navi_depth(tmp_path / "d.png")
    assert np.isinf(depth[0, 0])
    np.testing.assert_allclose(depth[values > 0], 65535 * 10 / values[values > 0].astype(float))
    PIL.Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png: a NAVI depth map has one channel"):
        navi_depth(tmp_path / "rgb.png")


def test_navi_correspondences_match_the_renderer_s_own_geometry(tmp_path):
    """The reader's correspondences, from NAVI's stored depth and poses alone, agree with the ones the renderer's
    camera model computes from the exact scene (an independent path: its own rays, meters, OpenGL-like up axis)."""
    cameras = (Camera(), Camera(x=0.6, yaw=0.12))
    scene, (_, depth_b) = navi_folder(tmp_path, cameras=cameras)
    source = navi(tmp_path, points=60)
    assert source.name == "navi-wild_set" and len(source) == 1  # the next view within 120 degrees; the last has none
    image_a, image_b, points_a, points_b, scale = source.load(0)
    assert image_a.size == image_b.size == (128, 96) and points_a.shape == points_b.shape == (60, 2) and scale == 128
    rows, cols = points_a[:, 0].astype(int), points_a[:, 1].astype(int)
    rows_b, cols_b, visible = corresponding_pixels(scene.depth, cameras[0], depth_b, cameras[1], rows, cols)
    assert visible.mean() > 0.95
    error = np.hypot(rows_b - points_b[:, 0], cols_b - points_b[:, 1])
    assert np.median(error) < 0.1 and error[visible].max() < 0.5  # the 16-bit disparity quantises the depth
    again = source.load(0)
    np.testing.assert_array_equal(again[2], points_a)  # each pair draws its points from its own seed


def test_navi_pairs_file_and_bad_layouts(tmp_path):
    navi_folder(tmp_path)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("toy_object/wild_set/images/001.png toy_object/wild_set/images/000.png 6.9\n\n")
    source = navi(tmp_path, pairs=str(pairs), points=5)
    assert len(source) == 1 and source.items[0][0].image.name == "001.png"
    official = tmp_path / "custom_splits" / "pairwise_pixel_correspondences"
    official.mkdir(parents=True)
    (official / "pairs-wild_set.txt").write_text(pairs.read_text() * 2)
    assert len(navi(tmp_path)) == 2  # NAVI's own pairs file is read when present
    pairs.write_text("toy_object/wild_set/images/007.png toy_object/wild_set/images/000.png 3\n")
    with pytest.raises(ValueError, match=r"pairs.txt:1: toy_object/wild_set/images/007.png is not an annotated"):
        navi(tmp_path, pairs=str(pairs))
    with pytest.raises(ValueError, match="collection: expected one of"):
        navi(tmp_path, collection="wild")
    with pytest.raises(ValueError, match="no NAVI multiview collection"):
        navi(tmp_path, collection="multiview")
    annotations = tmp_path / "toy_object" / "wild_set" / "annotations.json"
    entries = json.loads(annotations.read_text())
    entries[1]["camera"]["q"] = [0, 0, 0]
    annotations.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"entry 1 \(001.png\): camera.q must be 4 finite numbers"):
        navi(tmp_path)
    entries[1]["camera"]["q"] = entries[0]["camera"]["q"]
    entries[1]["image_size"] = [100, 128]
    annotations.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"001.png: annotations.json gives image_size \[100, 128\], but the image"):
        navi(tmp_path).load(0)
    entries[1]["image_size"] = ["x", "y"]
    annotations.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"entry 1 \(001.png\): image_size must be \[height, width\], two positive "
                                         r"integers, got \['x', 'y'\]"):
        navi(tmp_path)
    del entries[0]["camera"]
    annotations.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="entry 0 is not a NAVI annotation"):
        navi(tmp_path)


def test_cluttered_scene_pairs_use_the_scene_s_own_camera_and_light():
    """A scene records what it was rendered with, so its second view has the same light and ground tint; cluttered
    pairs start from each scene's own camera (drawn height and pitch) and move it as the default pair does."""
    scene = generate_scene(3, style="cluttered")
    again, _, _ = render(scene.objects, scene.camera, scene.light, scene.ground)
    np.testing.assert_array_equal(again, scene.image)
    source = scene_correspondences(3, seed=9000, camera=None, second=None, points=10, style="cluttered")
    assert source.name == "scenes-cluttered" and len(source) == 3
    image_a, image_b, points_a, points_b, scale = source.load(0)
    assert image_a.size == image_b.size == (192, 144) and scale == 192 and points_a.shape == (10, 2)
    default = scene_correspondences(2, seed=0, points=10)
    moved = scene_correspondences(2, seed=0, camera=None, second=None, points=10)
    for k in range(2):  # for the simple style, camera=None / second=None are the default cameras
        for a, b in zip(default.items[k], moved.items[k]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
