"""The generated scenes: exact depth against analytic formulas, exact masks, unique expressions, determinism."""

import math

import numpy as np
import pytest

from versavit_trainer.data.scenes import COLORS, MATERIALS, SHAPES, SIZES, Camera, generate_scene

CAMERA = Camera()


def pixel_ray(camera: Camera, row: int, col: int) -> tuple[float, float, float]:
    """World direction of a pixel's ray, with unit forward component in the camera frame, from the camera basis."""
    x = (col + 0.5 - camera.width / 2) / camera.focal
    y = -(row + 0.5 - camera.height_px / 2) / camera.focal
    right, up = (1.0, 0.0, 0.0), (0.0, math.cos(camera.pitch), math.sin(camera.pitch))
    forward = (0.0, -math.sin(camera.pitch), math.cos(camera.pitch))
    return tuple(x * r + y * u + f for r, u, f in zip(right, up, forward))


def sample_pixels(mask, count=40, seed=0):
    rows, cols = np.nonzero(mask)
    picks = np.random.default_rng(seed).choice(len(rows), size=min(count, len(rows)), replace=False)
    return [(int(rows[i]), int(cols[i])) for i in picks]


def scene_with(shape):
    for seed in range(200):
        scene = generate_scene(seed)
        for index, obj in enumerate(scene.objects, start=1):
            if obj.shape == shape and (scene.instances == index).sum() > 100:
                return scene, index, obj
    raise AssertionError(f"no scene with a well visible {shape}")


def test_ground_depth_is_the_analytic_plane_depth():
    scene = generate_scene(1)
    for row, col in sample_pixels(scene.instances == 0):
        _, dy, _ = pixel_ray(CAMERA, row, col)
        expected = CAMERA.height / -dy  # the ray leaves the camera at height h and drops by -dy per unit depth
        assert scene.depth[row, col] == pytest.approx(expected, rel=1e-5)


def test_sphere_depth_is_the_analytic_ray_sphere_depth():
    scene, index, sphere = scene_with("sphere")
    r = SIZES[sphere.size]
    centre = (sphere.x, r, sphere.z)
    for row, col in sample_pixels(scene.instances == index):
        d = pixel_ray(CAMERA, row, col)
        o = (0.0, CAMERA.height, 0.0)
        oc = [o[i] - centre[i] for i in range(3)]
        a = sum(v * v for v in d)
        b = 2 * sum(d[i] * oc[i] for i in range(3))
        c = sum(v * v for v in oc) - r * r
        t = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)  # the nearer root; depth = t (forward component 1)
        assert scene.depth[row, col] == pytest.approx(t, rel=1e-5)


def test_sky_has_no_depth_and_everything_else_does():
    scene = generate_scene(2)
    assert (scene.instances == -1).any() and (scene.instances >= 0).any()
    assert np.isinf(scene.depth[scene.instances == -1]).all()
    finite = scene.depth[scene.instances >= 0]
    assert np.isfinite(finite).all() and (finite > 0).all()


@pytest.mark.parametrize("seed", range(12))
def test_expressions_are_unique_and_their_masks_are_the_objects_visible_pixels(seed):
    scene = generate_scene(seed)
    texts = [text for text, _ in scene.expressions]
    assert len(texts) == len(set(texts))
    for text, mask in scene.expressions:
        side = next((s for s in ("left", "right") if text.endswith(f" on the {s}")), None)
        positional = side is not None
        attributes = set(text.removeprefix("the ").removesuffix(f" on the {side}").split())
        vocabulary = set(COLORS) | set(SHAPES) | set(SIZES) | set(MATERIALS)
        assert attributes <= vocabulary, text
        fits = [i for i, o in enumerate(scene.objects, start=1) if attributes <= {o.shape, o.color, o.size, o.material}]
        # the referred object is the one whose pixels are the mask, exactly
        owners = set(np.unique(scene.instances[mask]).tolist())
        assert len(owners) == 1 and mask.sum() == (scene.instances == owners.pop()).sum()
        referred = int(scene.instances[mask][0])
        assert referred in fits
        if not positional:
            assert fits == [referred], text  # no other object fits the description
        else:
            columns = {i: np.nonzero(scene.instances == i)[1].mean() for i in fits}
            extreme = min(columns, key=columns.get) if side == "left" else max(columns, key=columns.get)
            assert extreme == referred, text


def test_every_object_is_visible_and_described_by_the_caption_and_answers():
    for seed in range(8):
        scene = generate_scene(seed)
        for index, obj in enumerate(scene.objects, start=1):
            assert (scene.instances == index).sum() >= 20
            assert f"a {obj.size} {obj.color} {obj.material} {obj.shape}" in scene.caption
        answers = dict(scene.qa)
        for shape, plural in (("sphere", "spheres"), ("box", "boxes"), ("cylinder", "cylinders")):
            count = sum(o.shape == shape for o in scene.objects)
            expected = ("no", "one", "two", "three", "four", "five")[count]
            assert answers[f"How many {plural} are there?"] == expected


def test_same_seed_same_bytes():
    first, second, other = generate_scene(7), generate_scene(7), generate_scene(8)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.depth.tobytes() == second.depth.tobytes()
    assert first.instances.tobytes() == second.instances.tobytes()
    assert first.caption == second.caption and first.qa == second.qa
    assert [(t, m.tobytes()) for t, m in first.expressions] == [(t, m.tobytes()) for t, m in second.expressions]
    assert first.image.tobytes() != other.image.tobytes()
    assert first.image.shape == (CAMERA.height_px, CAMERA.width, 3) and first.image.dtype == np.uint8


# ------------------------------------------------------------------------------------------- scene styles
def test_the_simple_style_is_the_scenes_as_they_always_were():
    """The demo's data must not change when styles are added: these digests were taken before styles existed."""
    import hashlib

    digest = hashlib.sha256()
    for seed in range(40):
        scene = generate_scene(seed)
        digest.update(scene.image.tobytes())
        digest.update(scene.depth.tobytes())
        digest.update(repr((scene.caption, scene.qa, [text for text, _ in scene.expressions])).encode())
    assert digest.hexdigest() == "892c1d46fe5c968e57c20a96d0b7424cfac8bc79efb4a374f8dfab511a6c9cfd"
    assert generate_scene(3, style="simple").image.tobytes() == generate_scene(3).image.tobytes()


def test_cluttered_scenes_are_a_pure_function_of_the_seed_and_hold_what_the_style_adds():
    from versavit_trainer.data.scenes import SCENE_STYLES

    first, again = generate_scene(11, style="cluttered"), generate_scene(11, style="cluttered")
    assert first.image.tobytes() == again.image.tobytes() and first.caption == again.caption
    assert first.image.shape == (144, 192, 3)
    scenes = [generate_scene(seed, style="cluttered") for seed in range(30)]
    objects = [o for scene in scenes for o in scene.objects]
    assert {o.shape for o in objects} == set(SCENE_STYLES["cluttered"].shapes) == set(SHAPES) | {"cone"}
    assert {"tiny", "small", "large"} <= {o.size for o in objects} and "striped" in {o.material for o in objects}
    assert np.mean([len(scene.objects) for scene in scenes]) > np.mean([len(generate_scene(s).objects)
                                                                        for s in range(30)])
    # the camera varies per scene: the horizon (first ground row) moves
    horizons = {int(np.argmax((scene.instances >= 0).any(1))) for scene in scenes}
    assert len(horizons) > 5
    assert any("cones" in question for scene in scenes for question, _ in scene.qa)


def test_cone_pixels_lie_on_the_analytic_cone():
    """Every pixel a cone shows, unprojected with its depth, satisfies (x-cx)² + (z-cz)² = (r/2r)² (2r - y)² with
    0 <= y <= 2r; its depth is the ray's first hit (no pixel lies behind the near surface)."""
    for seed in range(100):
        scene = generate_scene(seed, style="cluttered")
        camera = cluttered_camera(seed)
        for index, obj in enumerate(scene.objects, start=1):
            if obj.shape != "cone" or (scene.instances == index).sum() < 80:
                continue
            rows, cols = np.nonzero(scene.instances == index)
            points = camera.unproject(rows, cols, scene.depth[rows, cols].astype(np.float64))
            r = obj.radius
            radial = np.hypot(points[:, 0] - obj.x, points[:, 2] - obj.z)
            np.testing.assert_allclose(radial, 0.5 * (2 * r - points[:, 1]), atol=2e-3 * r + 1e-4)
            assert points[:, 1].min() > -1e-4 and points[:, 1].max() < 2 * r + 1e-4
            return
    raise AssertionError("no scene with a well visible cone")


def cluttered_camera(seed):
    """The camera generate_scene draws for a cluttered scene of `seed` (the style's second random stream)."""
    from versavit_trainer.data.scenes import SCENE_STYLES

    return SCENE_STYLES["cluttered"].scene_camera(np.random.default_rng([seed, 1]))


def test_the_cluttered_style_is_unchanged_by_the_room_style():
    """Digest of the cluttered scenes taken before rooms existed (the proving ground's earlier tables used them)."""
    import hashlib

    digest = hashlib.sha256()
    for seed in range(12):
        scene = generate_scene(seed, style="cluttered")
        digest.update(scene.image.tobytes())
        digest.update(scene.depth.tobytes())
        digest.update(repr((scene.caption, scene.qa, scene.texts)).encode())
    assert digest.hexdigest() == "bdccab5748a5d4b667419ca96811742e3a1cf72790b3e73e4d1dcaa17fac92dc"


def test_room_walls_lie_on_their_planes_bound_the_depth_and_hide_no_object():
    """A room scene is the cluttered scene of the same seed inside three walls: the same objects where the cluttered
    one shows them, no sky, every wall pixel (instance -1) on the back plane z = back or a side plane x = ±half
    width, and every depth finite and under 11 m (the style scores up to 10 m)."""
    from versavit_trainer.data.scenes import SCENE_STYLES

    depths = []
    for seed in range(6):
        room, open_ground = generate_scene(seed, style="room"), generate_scene(seed, style="cluttered")
        assert room.objects == open_ground.objects and room.camera == open_ground.camera
        shown = open_ground.instances > 0
        np.testing.assert_array_equal(room.instances[shown], open_ground.instances[shown])
        np.testing.assert_array_equal(room.depth[shown], open_ground.depth[shown])
        assert room.caption == open_ground.caption and room.qa == open_ground.qa
        walls = room.walls
        assert 9.0 <= walls.back <= 10.0 and 3.0 <= walls.half_width <= 4.0
        rows, cols = np.nonzero(room.instances == -1)
        assert len(rows) > 100
        points = room.camera.unproject(rows, cols, room.depth[rows, cols].astype(np.float64))
        on_back = np.isclose(points[:, 2], walls.back, atol=1e-3)
        on_side = np.isclose(np.abs(points[:, 0]), walls.half_width, atol=1e-3)
        assert (on_back | on_side).all() and on_back.any()
        assert (np.abs(points[:, 0]) <= walls.half_width + 1e-3).all() and (points[:, 2] <= walls.back + 1e-3).all()
        depths.append(room.depth)
    depth = np.stack(depths)
    assert np.isfinite(depth).all() and depth.max() < 11.0 and (depth > 10.0).mean() < 0.01
    assert SCENE_STYLES["room"].background == "wall" and SCENE_STYLES["room"].max_depth == 10.0


def test_an_unknown_scene_style_names_the_choices():
    from versavit_trainer.core.options import DataArguments

    choices = r"\(choose among \['cluttered', 'room', 'simple'\]\)"
    with pytest.raises(ValueError, match=r"scene_style: unknown style 'clutered' " + choices):
        generate_scene(0, style="clutered")
    with pytest.raises(ValueError, match="scene_style: unknown style 'clutered'"):
        DataArguments(scene_style="clutered")


def test_class_expressions_name_each_shape_present_once_with_every_object_of_it():
    """The semantic-segmentation form of the scenes' masks: per shape class present, "all <plural>" and exactly the
    pixels of that class's objects, written out here from the instance map."""
    from versavit_trainer.data.scene_tables import class_expressions, scene_datasets
    from versavit_trainer.data.scenes import PLURALS

    for seed in range(6):
        scene = generate_scene(seed, style="room")
        found = class_expressions(scene)
        shapes = sorted({obj.shape for obj in scene.objects})
        assert sorted(text for text, _ in found) == sorted(f"all {PLURALS[shape]}" for shape in shapes)
        for text, mask in found:
            expected = np.zeros_like(mask)
            for index, obj in enumerate(scene.objects):
                if text == f"all {PLURALS[obj.shape]}":
                    expected |= scene.instances == index + 1
            assert mask.dtype == bool and (mask == expected).all() and mask.any()
    def embed(texts):
        return np.ones((len(texts), 4))

    rows = scene_datasets(2, embed, seed=0, style="room", expressions="classes")["segmentation"]
    assert rows[0]["expressions"] == [text for text, _ in class_expressions(generate_scene(0, style="room"))]
    referring = scene_datasets(2, embed, seed=0, style="room")["segmentation"]
    assert referring[0]["expressions"] == [text for text, _ in generate_scene(0, style="room").expressions]
    with pytest.raises(ValueError, match=r"scene_expressions: expected one of \['referring', 'classes'\], got 'class'"):
        scene_datasets(1, embed, expressions="class")


def test_scene_expressions_option_names_the_bad_value():
    from versavit_trainer.core.options import DataArguments

    with pytest.raises(ValueError, match=r"scene_expressions: .* got 'semantic'"):
        DataArguments(scene_expressions="semantic")
    assert DataArguments(scene_expressions="classes").scene_expressions == "classes"


def test_the_tables_keep_each_rendered_scene_by_seed_camera_and_style_read_only():
    """The process-wide scene cache of `scene_datasets`: the same seeds in another style or camera are other scenes,
    and the kept scene cannot be changed by a reader."""
    from versavit_trainer.data.scene_tables import _scene, scene_datasets

    for style in ("simple", "room", "simple"):
        rows = scene_datasets(2, None, seed=40, style=style)["depth"]
        for index in range(2):
            assert (np.asarray(rows[index]["image"]) == generate_scene(40 + index, style=style).image).all()
    moved = Camera(height=2.0)
    assert (_scene(40, moved, "simple").image == generate_scene(40, moved, style="simple").image).all()
    assert not (_scene(40, moved, "simple").image == _scene(40, None, "simple").image).all()
    with pytest.raises(ValueError, match="read-only"):
        _scene(40, None, "room").depth[0, 0] = 0.0
