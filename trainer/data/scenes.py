# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Generated 3D scenes: the embedded default data, with exact labels for all three tasks and no downloads.

A scene is a few primitives (spheres, boxes, cylinders) of a colour, a size and a material, resting on a
checkered ground plane, seen by a pinhole camera pitched down. A `SceneStyle` says what a scene may hold: the
"simple" style (the default, the demo's data) is the one just described; the "cluttered" style (the proving
ground's) adds cones, tiny objects, striped materials, more objects that hide each other, a random light, ground
tint, and a camera whose height and pitch vary per scene, at 192 x 144 px; the "room" style (the proving ground's
default) is the cluttered one inside three walls (a back wall 9-10 m away, side walls 3-4 m to each side, no sky),
so every pixel's depth is bounded as in NYUv2's indoor scenes (under 10 m).

Rendering is exact ray casting in numpy, so each image comes with:

- `depth`: the camera-frame z-depth of every pixel (`inf` where the ray sees the sky, as real depth sensors leave
  holes);
- `instances`: the id of the object each pixel sees (0 = ground, -1 = the background: the sky, or a room's walls,
  k = objects[k - 1]);
- `expressions`: referring expressions, each unique within its scene, with the mask of exactly the referred
  object's visible pixels;
- `caption` and `qa`: a description and question-answer pairs derived from the scene's objects;
- `texts`: the same facts at the granularities a staged curriculum distinguishes (`SCENE_TEXTS`, SAILViT's three
  stages): a short caption (what kinds of object, how many), a detailed caption with each object's place plus
  grounding turns (bounding boxes, counts, attributes), and instruction turns (questions and requests that need
  comparisons across objects).

Everything is a function of the seed: the same seed gives identical bytes.
"""

from dataclasses import dataclass, field, replace

import numpy as np

COLORS = {
    "red": (200, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (220, 200, 40),
    "purple": (130, 50, 170),
    "gray": (128, 128, 128),
}
SHAPES = ("sphere", "box", "cylinder")
SIZES = {"small": 0.35, "large": 0.6, "tiny": 0.22}  # the primitive's radius or half width, in metres
MATERIALS = ("matte", "metal")
PLURALS = {"sphere": "spheres", "box": "boxes", "cylinder": "cylinders", "cone": "cones", "object": "objects"}
LIGHT = (0.4, 0.8, -0.45)  # the simple style's light direction (towards the light)
NUMBERS = ("no", "one", "two", "three", "four", "five", "six")
CAPTION_PROMPT = "Describe the image."


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at height `height` above the ground, pitched down by `pitch` radians, looking along +z; `x`
    moves it sideways and `yaw` turns it about the vertical (positive: to the left), for second views of a scene."""

    width: int = 128
    height_px: int = 96
    focal: float = 110.0
    height: float = 1.6
    pitch: float = 0.35
    x: float = 0.0
    yaw: float = 0.0

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel centre: the ray direction in the camera frame (z = 1) and in the world frame, `(H, W, 3)`."""
        u = np.arange(self.width) + 0.5
        v = np.arange(self.height_px) + 0.5
        uu, vv = np.meshgrid(u, v)
        camera = np.stack(
            [(uu - self.width / 2) / self.focal, -(vv - self.height_px / 2) / self.focal, np.ones_like(uu)], axis=-1
        )
        return camera, camera @ self.rotation.T

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation. Columns: the camera's right, up and forward axes in the world; pitched down,
        forward = (0, -sin, cos) before the yaw."""
        c, s = np.cos(self.pitch), np.sin(self.pitch)
        rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        if self.yaw:  # a yaw of 0 leaves the default camera's rays bit for bit as they were
            cy, sy = np.cos(self.yaw), np.sin(self.yaw)
            rotation = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]]) @ rotation
        return rotation

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.x, self.height, 0.0])

    def unproject(self, rows: np.ndarray, cols: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """World points `(N, 3)` of pixel centres `(rows, cols)` (integers) at their z-depths."""
        camera = np.stack([(cols + 0.5 - self.width / 2) / self.focal, -(rows + 0.5 - self.height_px / 2) / self.focal,
                           np.ones(len(rows))], axis=-1)
        return self.origin + depth[:, None] * (camera @ self.rotation.T)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Continuous pixel coordinates `(rows, cols)` (pixel centres at integer + 0.5 offsets removed: row r's centre
        is r) and z-depths of world `points` `(N, 3)`."""
        camera = (points - self.origin) @ self.rotation
        z = camera[:, 2]
        cols = camera[:, 0] / z * self.focal + self.width / 2 - 0.5
        rows = -camera[:, 1] / z * self.focal + self.height_px / 2 - 0.5
        return rows, cols, z


@dataclass(frozen=True)
class Walls:
    """A room's three walls, vertical and unbounded upwards: the back wall at z = `back`, the side walls at x =
    -`half_width` and +`half_width`, all of colour `colour` (RGB) shaded by the light."""

    back: float
    half_width: float
    colour: tuple[float, float, float] = (200.0, 190.0, 172.0)

    def intersect(self, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter `t` of the first wall hit (`inf` if none) and the wall's normal (facing the room)."""
        t = np.full(directions.shape[:-1], np.inf)
        normal = np.zeros(directions.shape)
        planes = ((2, self.back, (0.0, 0.0, -1.0)), (0, -self.half_width, (1.0, 0.0, 0.0)),
                  (0, self.half_width, (-1.0, 0.0, 0.0)))
        for axis, position, facing in planes:
            with np.errstate(divide="ignore", invalid="ignore"):
                hit = (position - origin[axis]) / directions[..., axis]
            closer = (hit > 1e-6) & np.isfinite(hit) & (hit < t)
            t = np.where(closer, hit, t)
            normal = np.where(closer[..., None], np.array(facing), normal)
        return t, normal


@dataclass(frozen=True)
class SceneStyle:
    """What a style's scenes may hold. `height_range` / `pitch_range` (None: the camera as given) and
    `random_light` / `ground_tint` vary per scene, drawn from the scene's seed; `back_wall` / `side_walls` (ranges of
    the back wall's distance and the side walls' half width, in metres; None: no walls, open ground under the sky)
    put the scene in a room, drawn per scene too."""

    name: str
    shapes: tuple[str, ...] = SHAPES
    sizes: tuple[str, ...] = ("small", "large")
    materials: tuple[str, ...] = MATERIALS
    min_objects: int = 2
    max_objects: int = 5
    camera: Camera = Camera()
    height_range: tuple[float, float] | None = None
    pitch_range: tuple[float, float] | None = None
    random_light: bool = False
    ground_tint: bool = False
    back_wall: tuple[float, float] | None = None
    side_walls: tuple[float, float] | None = None

    @property
    def background(self) -> str:
        """What instance -1 shows: a room's "wall", else the "sky"."""
        return "sky" if self.back_wall is None else "wall"

    @property
    def max_depth(self) -> float:
        """The depth range its scenes are scored in: NYUv2's 10 m in a room (every pixel but a few far corners),
        otherwise 30 m (the open ground reaches hundreds of metres at the horizon; KITTI-like)."""
        return 30.0 if self.back_wall is None else 10.0

    def scene_camera(self, rng: np.random.Generator) -> Camera:
        camera = self.camera
        if self.height_range is not None:
            camera = replace(camera, height=float(rng.uniform(*self.height_range)))
        if self.pitch_range is not None:
            camera = replace(camera, pitch=float(rng.uniform(*self.pitch_range)))
        return camera


_CLUTTERED = SceneStyle(
    "cluttered", shapes=SHAPES + ("cone",), sizes=("tiny", "small", "large"),
    materials=MATERIALS + ("striped",), min_objects=4, max_objects=8,
    camera=Camera(width=192, height_px=144, focal=165.0), height_range=(1.1, 2.4), pitch_range=(0.25, 0.55),
    random_light=True, ground_tint=True,
)
# Objects stand at |x| <= 2.8 and z <= 8.6 (`_place_objects`), so the walls never cut one.
SCENE_STYLES = {
    "simple": SceneStyle("simple"),
    "cluttered": _CLUTTERED,
    "room": replace(_CLUTTERED, name="room", back_wall=(9.0, 10.0), side_walls=(3.0, 4.0)),
}


def scene_style(style: "str | SceneStyle") -> SceneStyle:
    """A `SceneStyle` or the name of one in `SCENE_STYLES` (an unknown name is an error naming the choices)."""
    if isinstance(style, SceneStyle):
        return style
    if style not in SCENE_STYLES:
        raise ValueError(f"scene_style: unknown style {style!r} (choose among {sorted(SCENE_STYLES)}).")
    return SCENE_STYLES[style]


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    material: str
    x: float
    z: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.x, self.radius, self.z])  # every primitive rests on the ground

    def intersect(self, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter `t` of the first hit (`inf` if none) and the surface normal there, for `(..., 3)` rays."""
        r = self.radius
        oc = origin - self.centre
        if self.shape == "sphere":
            a = (directions**2).sum(-1)
            b = 2 * (directions @ oc)
            c = oc @ oc - r * r
            disc = b * b - 4 * a * c
            t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
            t = np.where(t > 1e-6, t, np.inf)
            normal = origin + t[..., None] * directions - self.centre
            return t, normal / r
        if self.shape == "box":  # axis-aligned cube of half width r (slab method)
            with np.errstate(divide="ignore", invalid="ignore"):
                t1 = (-r - oc) / directions
                t2 = (r - oc) / directions
            near = np.minimum(t1, t2).max(-1)
            far = np.maximum(t1, t2).min(-1)
            t = np.where((near <= far) & (near > 1e-6), near, np.inf)
            hit = origin + np.nan_to_num(t, posinf=0.0)[..., None] * directions - self.centre
            axis = np.abs(hit / r).argmax(-1)
            normal = np.zeros_like(hit)
            np.put_along_axis(normal, axis[..., None], np.take_along_axis(np.sign(hit), axis[..., None], -1), -1)
            return t, normal
        if self.shape == "cone":  # vertical cone, base radius r on the ground, apex 2r above it (side only)
            k2, top = 0.25, 2 * r  # (radius / height)^2
            ox, oy, oz = oc[0], oc[1] + r, oc[2]  # relative to the centre of the base
            dx, dy, dz = directions[..., 0], directions[..., 1], directions[..., 2]
            a = dx * dx + dz * dz - k2 * dy * dy
            b = 2 * (ox * dx + oz * dz) + 2 * k2 * (top - oy) * dy
            c = ox * ox + oz * oz - k2 * (top - oy) ** 2
            disc = b * b - 4 * a * c
            with np.errstate(divide="ignore", invalid="ignore"):
                roots = [(-b - sign * np.sqrt(np.maximum(disc, 0))) / (2 * a) for sign in (1, -1)]
            t = np.full(a.shape, np.inf)
            for root in roots:
                y = oy + root * dy
                ok = (disc >= 0) & (root > 1e-6) & (y >= 0) & (y <= top) & np.isfinite(root)
                t = np.where(ok & (root < t), root, t)
            hit = origin + np.nan_to_num(t, posinf=0.0)[..., None] * directions
            normal = np.stack([hit[..., 0] - self.x, k2 * (top - hit[..., 1]), hit[..., 2] - self.z], -1)
            return t, normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)
        # Vertical cylinder of radius r and height 2r: the side, then the top cap.
        dx, dz = directions[..., 0], directions[..., 2]
        ox, oz = oc[0], oc[2]
        a = dx * dx + dz * dz
        b = 2 * (dx * ox + dz * oz)
        c = ox * ox + oz * oz - r * r
        disc = b * b - 4 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = np.where((disc >= 0) & (a > 0), (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
            y_side = origin[1] + t_side * directions[..., 1]
            t_side = np.where((t_side > 1e-6) & (y_side >= 0) & (y_side <= 2 * r), t_side, np.inf)
            t_top = (2 * r - origin[1]) / directions[..., 1]
        top_hit = origin + np.nan_to_num(t_top, posinf=0.0, neginf=0.0)[..., None] * directions
        inside = (top_hit[..., 0] - self.x) ** 2 + (top_hit[..., 2] - self.z) ** 2 <= r * r
        t_top = np.where((t_top > 1e-6) & inside, t_top, np.inf)
        t = np.minimum(t_side, t_top)
        hit = origin + np.nan_to_num(t, posinf=0.0)[..., None] * directions
        side_normal = np.stack([hit[..., 0] - self.x, np.zeros_like(t), hit[..., 2] - self.z], -1) / r
        normal = np.where((t_top <= t_side)[..., None], np.array([0.0, 1.0, 0.0]), side_normal)
        return t, normal

    def noun(self) -> str:
        return self.shape


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, inf for sky
    instances: np.ndarray  # (H, W) int16: -1 sky, 0 ground, k = objects[k - 1]
    objects: list[SceneObject]
    expressions: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (text, (H, W) bool mask)
    caption: str = ""
    qa: list[tuple[str, str]] = field(default_factory=list)
    camera: Camera | None = None  # what it was rendered with: `render(objects, camera, light, ground)`
    light: tuple[float, float, float] = LIGHT
    ground: tuple[float, float, float] = (1.0, 1.0, 1.0)
    walls: Walls | None = None  # a room's (`render(..., walls)`)
    # SCENE_TEXTS kind -> conversation turns (user, assistant); "default" is the caption + qa above
    texts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def _place_objects(rng: np.random.Generator, count: int, style: SceneStyle) -> list[SceneObject]:
    objects: list[SceneObject] = []
    attempts = 0
    while len(objects) < count and attempts < 200:
        attempts += 1
        size = str(rng.choice(style.sizes))
        candidate = SceneObject(
            shape=str(rng.choice(style.shapes)),
            color=str(rng.choice(list(COLORS))),
            size=size,
            material=str(rng.choice(style.materials)),
            x=float(rng.uniform(-2.2, 2.2)),
            z=float(rng.uniform(3.5, 8.0)),
        )
        # Keep a gap (footprints are at most sqrt(2) r wide for boxes) so objects do not interpenetrate.
        if all(
            np.hypot(candidate.x - o.x, candidate.z - o.z) > 1.5 * (candidate.radius + o.radius) + 0.2 for o in objects
        ):
            objects.append(candidate)
    return objects


def render(objects: list[SceneObject], camera: Camera, light: tuple[float, float, float] = LIGHT,
           ground: tuple[float, float, float] = (1.0, 1.0, 1.0),
           walls: Walls | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast the scene: `(image uint8, depth float32, instances int16)`; `light` points towards the light,
    `ground` tints the checkered floor (per channel), `walls` (a room's) replace the sky behind the floor."""
    camera_dirs, world_dirs = camera.rays()
    origin = camera.origin
    with np.errstate(divide="ignore"):
        t_ground = np.where(world_dirs[..., 1] < 0, -origin[1] / world_dirs[..., 1], np.inf)
    best_t = t_ground.copy()
    instances = np.where(np.isfinite(t_ground), 0, -1).astype(np.int16)
    normals = np.broadcast_to(np.array([0.0, 1.0, 0.0]), world_dirs.shape).copy()
    on_wall = np.zeros(instances.shape, dtype=bool)
    if walls is not None:
        t_wall, wall_normal = walls.intersect(origin, world_dirs)
        on_wall = t_wall < best_t
        best_t = np.where(on_wall, t_wall, best_t)
        instances = np.where(on_wall, -1, instances).astype(np.int16)
        normals = np.where(on_wall[..., None], wall_normal, normals)
    for index, obj in enumerate(objects, start=1):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            t, normal = obj.intersect(origin, world_dirs)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        instances = np.where(closer, index, instances).astype(np.int16)
        normals = np.where(closer[..., None], normal, normals)
        on_wall &= ~closer
    depth = (best_t * camera_dirs[..., 2]).astype(np.float32)  # camera_dirs has z = 1: z-depth = t

    light = np.array(light, dtype=np.float64)
    light /= np.linalg.norm(light)
    lambert = np.clip((normals * light).sum(-1), 0, 1)
    hit = origin + np.nan_to_num(best_t, posinf=0.0)[..., None] * world_dirs
    checker = ((np.floor(hit[..., 0] * 1.5) + np.floor(hit[..., 2] * 1.5)) % 2)[..., None]
    colour = np.where(checker > 0, 190.0, 150.0) * np.array(ground)
    if walls is not None:
        colour[on_wall] = walls.colour
    specular = np.zeros(instances.shape)
    for index, obj in enumerate(objects, start=1):
        here = instances == index
        colour[here] = COLORS[obj.color]
        if obj.material == "striped":  # horizontal white bands, 4 per object height
            bands = (np.floor(hit[..., 1] / obj.radius * 2) % 2 == 1) & here
            colour[bands] = 0.35 * np.array(COLORS[obj.color]) + 0.65 * 235.0
        if obj.material == "metal":
            reflected = world_dirs - 2 * (world_dirs * normals).sum(-1, keepdims=True) * normals
            highlight = np.clip((reflected * light).sum(-1), 0, 1) ** 20
            specular = np.where(here, highlight * 160.0, specular)
    shaded = colour * (0.35 + 0.65 * lambert[..., None]) + specular[..., None]
    sky = np.array([150.0, 190.0, 235.0]) * (1 - 0.3 * (np.arange(camera.height_px) / camera.height_px))[:, None, None]
    shaded = np.where(((instances < 0) & ~on_wall)[..., None], sky, shaded)
    return np.clip(np.rint(shaded), 0, 255).astype(np.uint8), depth, instances


def corresponding_pixels(depth_a: np.ndarray, camera_a, depth_b: np.ndarray, camera_b,
                         rows: np.ndarray, cols: np.ndarray, tolerance: float = 0.02) -> tuple[np.ndarray, ...]:
    """Where view B sees the 3D points that pixels `(rows, cols)` of view A see (finite depth): their continuous
    `(rows_b, cols_b)` in B, and whether B really sees them there: inside B's frame, in front of it, and B's depth at
    the nearest pixel within `tolerance` (relative) of the point's z-depth in B (not occluded).

    The cameras are `Camera`s or anything with the same `unproject(rows, cols, depth)`, `project(points)`,
    `height_px` and `width` (NAVI's views, `readers.NaviView`)."""
    points = camera_a.unproject(rows, cols, depth_a[rows, cols])
    rows_b, cols_b, z = camera_b.project(points)
    visible = (z > 0) & np.isfinite(rows_b) & np.isfinite(cols_b)
    near_r = np.rint(np.where(visible, rows_b, -1)).astype(int)
    near_c = np.rint(np.where(visible, cols_b, -1)).astype(int)
    visible &= (near_r >= 0) & (near_r < camera_b.height_px) & (near_c >= 0) & (near_c < camera_b.width)
    seen = depth_b[near_r[visible], near_c[visible]]
    visible[visible] = np.abs(seen - z[visible]) <= tolerance * z[visible]
    return rows_b, cols_b, visible


def _describe(objects: list[SceneObject], index: int, columns: list[float]) -> str | None:
    """The shortest description of objects[index] that fits no other object of the scene, or None.

    `columns` are the objects' mean image columns, to tell look-alikes apart as "on the left" / "on the right"."""
    target = objects[index]
    candidates = [
        (target.shape,),
        (target.color, target.shape),
        (target.size, target.shape),
        (target.material, target.shape),
        (target.size, target.color, target.shape),
        (target.color, target.material, target.shape),
        (target.size, target.color, target.material, target.shape),
    ]
    for words in candidates:
        if all(not set(words) <= {o.shape, o.color, o.size, o.material} for j, o in enumerate(objects) if j != index):
            return "the " + " ".join(words)
    # Look-alikes: tell them apart by where they appear among the objects of the same colour and shape.
    same = sorted(columns[j] for j, o in enumerate(objects) if (o.color, o.shape) == (target.color, target.shape))
    if columns[index] == same[0]:
        return f"the {target.color} {target.shape} on the left"
    if columns[index] == same[-1]:
        return f"the {target.color} {target.shape} on the right"
    return None


def _phrase(obj: SceneObject) -> str:
    return f"a {obj.size} {obj.color} {obj.material} {obj.shape}"


def _caption_and_qa(objects: list[SceneObject], rng: np.random.Generator,
                    shapes: tuple[str, ...] = SHAPES) -> tuple[str, list[tuple[str, str]]]:
    nearest_first = sorted(objects, key=lambda o: o.z)
    listed = [_phrase(o) for o in nearest_first]
    if not listed:
        body = "nothing on it"
    else:
        body = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    caption = f"A checkered floor with {body}."
    qa = []
    for shape in shapes:
        count = sum(o.shape == shape for o in objects)
        qa.append((f"How many {PLURALS[shape]} are there?", NUMBERS[count] if count < len(NUMBERS) else str(count)))
    for shape in shapes:
        same = [o for o in objects if o.shape == shape]
        if len(same) == 1:
            qa.append((f"What color is the {shape}?", same[0].color))
    colour = str(rng.choice(list(COLORS)))
    qa.append((f"Is there anything {colour}?", "yes" if any(o.color == colour for o in objects) else "no"))
    return caption, qa


# The conversation kinds a scene's `texts` holds: "default" (the caption and qa, what the VersaViT runs train on),
# then coarse to fine as SAILViT's stages use them: "short" captions (coarse alignment), "detailed" captions plus
# grounding (fine alignment), "instructions" (world-knowledge / instruction stage); "spatial": CV-Bench-style questions
# (depth order, left / right, counts) with exact answers, VisPer-LM's measure.
SCENE_TEXTS = ("default", "short", "detailed", "instructions", "spatial")
SHORT_PROMPT = "Describe the image in a few words."
DETAILED_PROMPT = "Describe the image in detail, saying where each object is."


def _count_phrase(count: int, shape: str) -> str:
    number = NUMBERS[count] if count < len(NUMBERS) else str(count)
    return f"{number} {shape if count == 1 else PLURALS[shape]}"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _stage_texts(objects: list[SceneObject], instances: np.ndarray, described: list[tuple[int, str]],
                 caption: str, qa: list[tuple[str, str]], rng: np.random.Generator,
                 shapes: tuple[str, ...], distances: list[float]) -> dict[str, list[tuple[str, str]]]:
    """The scene's conversations of every `SCENE_TEXTS` kind (see there); `described` pairs an object's index with
    its referring expression, `rng` draws the instruction turns' choices, `distances` are the objects' median
    rendered depths."""
    height, width = instances.shape
    boxes, columns = [], []
    for k in range(1, len(objects) + 1):
        rows, cols = np.nonzero(instances == k)
        columns.append(float(cols.mean()))
        # Qwen2-VL's grounding format: corners in [0, 1000) of the image's width and height
        boxes.append((int(cols.min() * 1000 // width), int(rows.min() * 1000 // height),
                      int(cols.max() * 1000 // width), int(rows.max() * 1000 // height)))
    counts = [(shape, sum(o.shape == shape for o in objects)) for shape in shapes]
    kinds = [_count_phrase(count, shape) for shape, count in counts if count]
    short = f"{_listing(kinds).capitalize()} on a checkered floor." if kinds else "An empty checkered floor."

    def place(k: int) -> str:
        third = "on the left" if columns[k] < width / 3 else "on the right" if columns[k] > 2 * width / 3 else \
            "in the middle"
        distance = "near the camera" if objects[k].z < 5.0 else "far back" if objects[k].z > 6.5 else "further back"
        return f"{third}, {distance}"

    nearest_first = sorted(range(len(objects)), key=lambda k: objects[k].z)
    if objects:
        detailed = (f"A checkered floor with {_count_phrase(len(objects), 'object')}: "
                    + "; ".join(f"{_phrase(objects[k])} {place(k)}" for k in nearest_first) + ".")
    else:
        detailed = "An empty checkered floor with no objects on it."
    grounding = [("How many objects are there?", NUMBERS[len(objects)] if len(objects) < len(NUMBERS)
                  else str(len(objects)))]
    for k, text in described:
        x0, y0, x1, y1 = boxes[k]
        grounding.append((f"Give the bounding box of {text}.", f"({x0},{y0}),({x1},{y1})"))
        grounding.append((f"What material is {text}?", objects[k].material))
        grounding.append((f"What size is {text}?", objects[k].size))

    instructions = list(qa)
    if objects:
        instructions.append(("Which object is closest to the camera?", "the " + _phrase(objects[nearest_first[0]])[2:]))
        left_to_right = sorted(range(len(objects)), key=lambda k: columns[k])
        instructions.append(("List the objects from left to right.",
                             _listing([_phrase(objects[k]) for k in left_to_right]) + "."))
        colour = objects[int(rng.integers(len(objects)))].color
        count = sum(o.color == colour for o in objects)
        instructions.append((f"How many {colour} objects are there?", NUMBERS[count] if count < len(NUMBERS)
                             else str(count)))
    if len(described) >= 2:
        a, b = (described[int(i)] for i in rng.choice(len(described), size=2, replace=False))
        instructions.append((f"Is {a[1]} to the left of {b[1]}?", "yes" if columns[a[0]] < columns[b[0]] else "no"))
    # Drawn after every other kind's choices, so that adding it changed none of them.
    spatial = _spatial_questions(objects, described, columns, distances, width, rng, shapes)
    return {
        "default": [(CAPTION_PROMPT, caption), *qa],
        "short": [(SHORT_PROMPT, short)],
        "detailed": [(DETAILED_PROMPT, detailed), *grounding],
        "instructions": instructions,
        "spatial": spatial,
    }


# CV-Bench-style spatial questions (VisPer-LM's benchmark): their fixed openings (`evaluation.qa.question_kind`)
SPATIAL_DEPTH = "Which is closer to the camera"
SPATIAL_RELATION = "Left or right"
SPATIAL_COUNT = "How many"


def _spatial_questions(objects: list[SceneObject], described: list[tuple[int, str]], columns: list[float],
                       distances: list[float], width: int, rng: np.random.Generator,
                       shapes: tuple[str, ...]) -> list[tuple[str, str]]:
    """Questions with exact answers about depth order, relative position and counts: at most two of each of the
    first two kinds, between referable objects whose median rendered depths differ by at least 0.5 (depth) or whose
    centres
    are at least 1/16 of the width apart (relation), so that the answer is unambiguous; one count of a shape. The
    pair's order is drawn, so each answer ("first" / "second", "left" / "right") is as likely."""
    turns = []
    pairs = [(a, b) for i, a in enumerate(described) for b in described[i + 1:]]
    order = [pairs[int(k)] for k in rng.permutation(len(pairs))] if pairs else []
    deep = [(a, b) for a, b in order if abs(distances[a[0]] - distances[b[0]]) >= 0.5][:2]
    apart = [(a, b) for a, b in order if abs(columns[a[0]] - columns[b[0]]) >= width / 16][:2]
    for a, b in deep:
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        closer = "first" if distances[a[0]] < distances[b[0]] else "second"
        turns.append((f"{SPATIAL_DEPTH}: {a[1]} or {b[1]}? Answer first or second.", closer))
    for a, b in apart:
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        side = "left" if columns[a[0]] < columns[b[0]] else "right"
        turns.append((f"{SPATIAL_RELATION}: where is {a[1]} compared to {b[1]}?", side))
    shape = shapes[int(rng.integers(len(shapes)))]
    count = sum(o.shape == shape for o in objects)
    turns.append((f"{SPATIAL_COUNT} {PLURALS[shape]} are in the image?",
                  NUMBERS[count] if count < len(NUMBERS) else str(count)))
    return turns


def generate_scene(
    seed: int, camera: Camera | None = None, min_objects: int | None = None, max_objects: int | None = None,
    min_visible_pixels: int = 20, style: str | SceneStyle = "simple",
) -> Scene:
    """One scene of `style` ("simple", "cluttered" or a `SceneStyle`), a pure function of its arguments.

    `camera` replaces the style's camera and its per-scene variation (second views of a scene pass theirs);
    `min_objects` / `max_objects` replace the style's counts. Objects showing fewer than `min_visible_pixels` pixels
    (hidden behind others or out of view) are removed before the final render, so the caption, the answers and the
    expressions speak only of what the image shows."""
    style = scene_style(style)
    rng = np.random.default_rng(seed)
    low = style.min_objects if min_objects is None else min_objects
    high = style.max_objects if max_objects is None else max_objects
    objects = _place_objects(rng, int(rng.integers(low, high + 1)), style)
    # The style's variations come from a second stream, so the simple style's scenes stay as they always were.
    varied = np.random.default_rng([seed, 1])
    if camera is None:
        camera = style.scene_camera(varied)
    light, ground = LIGHT, (1.0, 1.0, 1.0)
    if style.random_light:
        azimuth, elevation = varied.uniform(-np.pi, np.pi), varied.uniform(0.35, 1.2)
        light = (np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth))
    if style.ground_tint:
        ground = tuple(float(v) for v in varied.uniform(0.75, 1.1, size=3))
    walls = None
    if style.back_wall is not None:  # a fourth stream: the cluttered style's scenes stay as they were
        room = np.random.default_rng([seed, 3])
        walls = Walls(float(room.uniform(*style.back_wall)), float(room.uniform(*style.side_walls)),
                      tuple(float(v) for v in room.uniform(150.0, 225.0, size=3)))
    _, _, instances = render(objects, camera, light, ground, walls)
    objects = [o for i, o in enumerate(objects, start=1) if (instances == i).sum() >= min_visible_pixels]
    image, depth, instances = render(objects, camera, light, ground, walls)  # removing objects uncovers the others
    columns = [float(np.nonzero(instances == i)[1].mean()) for i in range(1, len(objects) + 1)]
    expressions, described = [], []
    for index in range(len(objects)):
        text = _describe(objects, index, columns)
        if text is not None:
            expressions.append((text, instances == index + 1))
            described.append((index, text))
    caption, qa = _caption_and_qa(objects, rng, style.shapes)
    # A third stream for the staged texts' choices: the other fields stay as they always were.
    distances = [float(np.median(depth[instances == i])) for i in range(1, len(objects) + 1)]
    texts = _stage_texts(objects, instances, described, caption, qa, np.random.default_rng([seed, 2]), style.shapes,
                         distances)
    return Scene(image, depth, instances, objects, expressions, caption, qa, camera, light, ground, walls, texts)


__all__ = [
    "CAPTION_PROMPT", "COLORS", "Camera", "MATERIALS", "SCENE_STYLES", "SCENE_TEXTS", "SHAPES", "SIZES", "Scene",
    "SPATIAL_COUNT", "SPATIAL_DEPTH", "SPATIAL_RELATION", "SceneObject", "SceneStyle", "Walls",
    "generate_scene", "render", "scene_style",
]
