"""Procedural street scenes as IR: the seed of the embedded Virtual-KITTI-like data set.

:func:`street_scene` ray-casts an analytic street seen from a level KITTI-like camera — a
three-lane road with lane markings, kerbs and sidewalks, grass verges, building façades with
windows, trees and bushes, a sky — into the IR's background layers (colour, z-depth, semantic
classes), and places cars (sedans, hatchbacks, SUVs) in lanes and parked, pedestrians on the
sidewalks and cyclists at the road edge, without overlaps. Everything is drawn from one seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sae.render.effects import noise_texture
from sae.scene.ir import FAR_DEPTH, SEM, Scene
from sae.scene.templates import CAR_TEMPLATES, template_id, templates

#: Virtual KITTI 2 intrinsics at 1242 × 375.
VKITTI_SIZE = (375, 1242)
VKITTI_F, VKITTI_CX, VKITTI_CY = 725.0087, 620.5, 187.0
CAMERA_HEIGHT = 1.65
#: Virtual KITTI 2's stereo baseline: Camera_1 sits this far to the right of Camera_0 (m).
STEREO_BASELINE = 0.532725

#: VKITTI2 ``info.txt`` colour names and typical paint (linear RGB).
CAR_COLORS = {
    "Red": (0.62, 0.07, 0.06),
    "Silver": (0.62, 0.63, 0.65),
    "Blue": (0.08, 0.18, 0.52),
    "Black": (0.05, 0.05, 0.06),
    "White": (0.86, 0.86, 0.84),
    "Brown": (0.33, 0.2, 0.1),
    "Grey": (0.32, 0.33, 0.35),
}
#: Cross-section of the street (|x| in metres from the camera's lane centre): three driving
#: lanes, then on each side a bike lane, a parking lane, a sidewalk and a grass verge.
LANES = (-3.5, 0.0, 3.5)
LANE_EDGE = 5.25
BIKE_LANE = (5.25, 6.25)
PARKING = (6.25, 8.25)
ROAD_HALF = PARKING[1]
SIDEWALK = (8.25, 10.75)


def intrinsics(height: int, width: int) -> torch.Tensor:
    """VKITTI2's camera scaled to ``height × width`` (pixel centres at integer coordinates)."""
    sx, sy = width / VKITTI_SIZE[1], height / VKITTI_SIZE[0]
    return torch.tensor(
        [
            [VKITTI_F * sx, 0.0, (VKITTI_CX + 0.5) * sx - 0.5],
            [0.0, VKITTI_F * sy, (VKITTI_CY + 0.5) * sy - 0.5],
            [0.0, 0.0, 1.0],
        ],
        dtype=torch.float64,
    )


@dataclass(frozen=True)
class StreetLayout:
    """Random choices of one street (metres, camera coordinates)."""

    left_x: float
    right_x: float
    buildings: list  # (side, z0, z1, height, rgb)
    trees: list  # (x, z, canopy_y, radius)
    bushes: list  # (x, z, radius)


def _layout(gen: torch.Generator) -> StreetLayout:
    def u(a, b):
        return a + (b - a) * float(torch.rand((), generator=gen, dtype=torch.float64))

    left_x, right_x = -u(13.5, 17.0), u(13.5, 17.0)
    facades = [(0.62, 0.55, 0.45), (0.55, 0.32, 0.25), (0.7, 0.68, 0.62), (0.45, 0.46, 0.48), (0.68, 0.6, 0.5)]
    buildings = []
    for side in (-1, 1):
        z = u(-2.0, 6.0)
        while z < 140:
            length = u(10, 28)
            rgb = facades[int(torch.randint(len(facades), (), generator=gen))]
            buildings.append((side, z, z + length, u(6, 18), rgb))
            z += length + (u(3, 10) if torch.rand((), generator=gen) < 0.45 else 0.0)
    trees, bushes = [], []
    for side, edge in ((-1, left_x), (1, right_x)):
        z = u(4, 12)
        while z < 90:
            trees.append((side * (SIDEWALK[1] + u(0.6, 1.6)), z, -u(3.6, 5.5), u(1.4, 2.4)))
            z += u(9, 20)
        z = u(3, 10)
        while z < 70:
            bushes.append((side * u(SIDEWALK[1] + 1.0, abs(edge) - 0.6), z, u(0.5, 1.0)))
            z += u(6, 16)
    return StreetLayout(left_x, right_x, buildings, trees, bushes)


def _background(layout: StreetLayout, K: torch.Tensor, h: int, w: int, camera_z: float = 0.0, camera_x: float = 0.0):
    """Ray-cast the street's background layers at ``h × w`` for a camera at world ``(camera_x, ·, camera_z)``:
    colour, z-depth, semantics. The layout is in world coordinates."""
    dt = torch.float64
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dt), torch.arange(w, dtype=dt), indexing="ij")
    dx = (xs - K[0, 2]) / K[0, 0]
    dy = (ys - K[1, 2]) / K[1, 1]
    inf = torch.full((h, w), float("inf"), dtype=dt)
    depth = inf.clone()
    sem = torch.full((h, w), SEM["Sky"], dtype=torch.int64)
    color = torch.zeros(h, w, 3, dtype=dt)
    fine = noise_texture(h, w, "foliage", dtype=dt)
    coarse = noise_texture(h, w, "cloud", dtype=dt)

    def paint(mask, z, cls, rgb, win=(slice(None), slice(None))):
        hit = mask & (z > 0.05) & (z < depth[win])
        depth[win] = torch.where(hit, z, depth[win])
        sem[win][hit] = cls
        color[win][hit] = rgb[hit] if rgb.dim() == 3 else rgb.to(dt)

    def window(corners):
        """Pixel window (rows, cols) covering the projection of 3-D points (camera frame)."""
        pts = torch.tensor(corners, dtype=dt)
        if (pts[:, 2] <= 0.1).all():
            return None
        if (pts[:, 2] <= 0.1).any():
            return (slice(None), slice(None))
        u = K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]
        v = K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]
        c0, c1 = max(int(u.min()) - 1, 0), min(int(u.max()) + 2, w)
        r0, r1 = max(int(v.min()) - 1, 0), min(int(v.max()) + 2, h)
        if c0 >= c1 or r0 >= r1:
            return None
        return (slice(r0, r1), slice(c0, c1))

    def box_corners(x0, x1, y0, y1, z0, z1):
        return [(x, y, z) for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)]

    # Ground plane y = CAMERA_HEIGHT.
    zg = torch.where(dy > 1e-6, CAMERA_HEIGHT / dy.clamp_min(1e-6), inf)
    gx, gz = dx * zg + camera_x, zg + camera_z  # world x, z on the ground
    ax = gx.abs()
    grain = (0.85 + 0.3 * fine).unsqueeze(-1)
    asphalt = torch.tensor([0.27, 0.27, 0.28], dtype=dt) * grain
    dash = ((gz % 9.0) < 3.0) & ((ax - 1.75).abs() < 0.075)
    edge_line = ((ax - LANE_EDGE).abs() < 0.07) | ((ax - BIKE_LANE[1]).abs() < 0.05)
    asphalt = torch.where((dash | edge_line).unsqueeze(-1), torch.tensor([0.85, 0.85, 0.82], dtype=dt), asphalt)
    paint(ax < ROAD_HALF, zg, SEM["Road"], asphalt)
    tiles = (((gz % 1.5) < 0.06) | (((ax - SIDEWALK[0]) % 1.5) < 0.06)).unsqueeze(-1)
    side = torch.tensor([0.56, 0.55, 0.52], dtype=dt) * grain
    side = torch.where(tiles, side * 0.75, side)
    kerb = ax < SIDEWALK[0] + 0.2
    side = torch.where(kerb.unsqueeze(-1), torch.tensor([0.68, 0.68, 0.66], dtype=dt).expand_as(side), side)
    paint((ax >= ROAD_HALF) & (ax < SIDEWALK[1]), zg, SEM["Sidewalk"], side)
    grass = torch.tensor([0.22, 0.38, 0.12], dtype=dt) * (0.7 + 0.6 * fine).unsqueeze(-1)
    paint(ax >= SIDEWALK[1], zg, SEM["Terrain"], grass)

    # Building façades: planes x = left_x / right_x, with floors of windows.
    for side_sign, z0, z1, height, rgb in layout.buildings:
        px = (layout.left_x if side_sign < 0 else layout.right_x) - camera_x
        win = window(box_corners(px, px, CAMERA_HEIGHT - height, CAMERA_HEIGHT, z0 - camera_z, z1 - camera_z))
        if win is None:
            continue
        wdx, wdy = dx[win], dy[win]
        zb = torch.where(wdx * side_sign > 1e-6, px / torch.where(wdx == 0, torch.full_like(wdx, 1e-9), wdx), inf[win])
        y = wdy * zb
        inside = (zb + camera_z >= z0) & (zb + camera_z <= z1) & (y <= CAMERA_HEIGHT) & (y >= CAMERA_HEIGHT - height)
        up = CAMERA_HEIGHT - y  # height above ground
        along = zb + camera_z - z0
        window_px = ((up % 3.0) > 1.0) & ((up % 3.0) < 2.3) & ((along % 2.6) > 0.7) & ((along % 2.6) < 1.9) & (up > 2.5)
        base = torch.tensor(rgb, dtype=dt) * (0.9 + 0.2 * coarse[win]).unsqueeze(-1)
        glass = torch.tensor([0.16, 0.2, 0.26], dtype=dt) * (0.8 + 0.5 * fine[win]).unsqueeze(-1)
        facade = torch.where(window_px.unsqueeze(-1), glass, base) * (0.85 if side_sign > 0 else 1.0)
        paint(inside, zb, SEM["Building"], facade, win)

    # Trees: vertical trunk cylinders and spherical canopies; bushes on the verges.
    leaves_full = torch.tensor([0.16, 0.34, 0.1], dtype=dt) * (0.55 + 0.8 * fine).unsqueeze(-1)
    bark = torch.tensor([0.25, 0.18, 0.12], dtype=dt)

    def sphere(cx_, cy_, cz_, r, cls, rgb_full):
        win = window(box_corners(cx_ - r, cx_ + r, cy_ - r, cy_ + r, cz_ - r, cz_ + r))
        if win is None:
            return
        wdx, wdy = dx[win], dy[win]
        d2 = wdx * wdx + wdy * wdy + 1.0
        bq = wdx * cx_ + wdy * cy_ + cz_
        cq = cx_ * cx_ + cy_ * cy_ + cz_ * cz_ - r * r
        disc = bq * bq - d2 * cq
        t = (bq - disc.clamp_min(0).sqrt()) / d2
        paint(disc > 0, t, cls, rgb_full[win], win)

    for tx, tz, cy, r in layout.trees:
        tx, tz = tx - camera_x, tz - camera_z
        cy_abs = CAMERA_HEIGHT + cy
        sphere(tx, cy_abs, tz, r, SEM["Tree"], leaves_full)
        # trunk: (t dx - tx)^2 + (t - tz)^2 = 0.18^2, below the canopy
        win = window(box_corners(tx - 0.18, tx + 0.18, cy_abs, CAMERA_HEIGHT, tz - 0.18, tz + 0.18))
        if win is None:
            continue
        wdx, wdy = dx[win], dy[win]
        a = wdx * wdx + 1.0
        bt = wdx * tx + tz
        ct = tx * tx + tz * tz - 0.18**2
        disc = bt * bt - a * ct
        t = (bt - disc.clamp_min(0).sqrt()) / a
        yy = wdy * t
        paint((disc > 0) & (yy <= CAMERA_HEIGHT) & (yy >= cy_abs), t, SEM["Tree"], bark, win)
    for bx, bz, r in layout.bushes:
        sphere(bx - camera_x, CAMERA_HEIGHT - r * 0.6, bz - camera_z, r, SEM["Vegetation"], leaves_full * 1.1)

    sky = sem == SEM["Sky"]
    horizon = (dy.clamp(max=0.0) / -0.35).clamp(0, 1).unsqueeze(-1)
    sky_rgb = torch.tensor([0.72, 0.82, 0.93], dtype=dt) + horizon * (
        torch.tensor([0.33, 0.52, 0.84], dtype=dt) - torch.tensor([0.72, 0.82, 0.93], dtype=dt)
    )
    color[sky] = sky_rgb[sky]
    depth[sky] = FAR_DEPTH
    return color.clamp(0, 1), depth.clamp(max=FAR_DEPTH), sem


def _place_objects(gen: torch.Generator, n_cars: int, n_pedestrians: int, n_cyclists: int):
    """Objects as dicts (template, class, dims, location, rotation_y, colour), without overlaps."""

    def u(a, b):
        return a + (b - a) * float(torch.rand((), generator=gen, dtype=torch.float64))

    def choice(seq):
        return seq[int(torch.randint(len(seq), (), generator=gen))]

    placed: list[dict] = []

    def free(x, z, half_len, half_wid):
        for o in placed:
            if (
                abs(o["location"][0] - x) < half_wid + o["half"][1] + 0.3
                and abs(o["location"][2] - z) < half_len + o["half"][0] + 1.0
            ):
                return False
        return True

    all_t = templates()
    slots = (
        [("car", i) for i in range(n_cars)]
        + [("ped", i) for i in range(n_pedestrians)]
        + [("cyc", i) for i in range(n_cyclists)]
    )
    for kind, _ in slots:
        for _attempt in range(50):
            if kind == "car":
                tid = choice(CAR_TEMPLATES)
                parked = torch.rand((), generator=gen) < 0.35
                if parked:
                    x = choice((-1, 1)) * (PARKING[0] + PARKING[1]) / 2
                    ry = choice((-math.pi / 2, math.pi / 2))
                else:
                    x = choice(LANES) + u(-0.35, 0.35)
                    ry = math.pi / 2 if x < -1.75 else -math.pi / 2
                z = u(7.0 if abs(x) < 1.75 else 5.0, 60.0)
                ry += u(-0.08, 0.08)
                colour_name = choice(list(CAR_COLORS))
                rgb = [min(1.0, max(0.0, c + u(-0.04, 0.04))) for c in CAR_COLORS[colour_name]]
            elif kind == "ped":
                tid = template_id("pedestrian")
                x = choice((-1, 1)) * u(SIDEWALK[0] + 0.5, SIDEWALK[1] - 0.4)
                z = u(5.0, 40.0)
                ry = u(-math.pi, math.pi)
                rgb = [u(0.05, 0.9) for _ in range(3)]
            else:
                tid = template_id("cyclist")
                x = choice((-1, 1)) * u(BIKE_LANE[0] + 0.35, BIKE_LANE[1] - 0.35)
                z = u(6.0, 45.0)
                ry = -math.pi / 2 if x > 0 else math.pi / 2
                rgb = [u(0.05, 0.9) for _ in range(3)]
            t = all_t[tid]
            h, wd, ln = (d * u(0.93, 1.07) for d in t.default_dims)
            if free(x, z, ln / 2, wd / 2):
                placed.append(
                    {
                        "template": tid,
                        "class": int(t.object_class),
                        "dims": (h, wd, ln),
                        "location": (x, CAMERA_HEIGHT, z),
                        "rotation_y": ry,
                        "color": rgb,
                        "half": (ln / 2, wd / 2),
                    }
                )
                break
    return placed


#: ``info.txt`` model names of the templates (VKITTI2 names where one fits).
MODEL_NAMES = {
    "sedan": "Sedan4Door",
    "hatchback": "Hatchback",
    "suv": "SUV",
    "pedestrian": "Pedestrian",
    "cyclist": "Cyclist",
}


def color_name(rgb) -> str:
    """The nearest VKITTI2 colour name of an RGB paint."""
    return min(CAR_COLORS, key=lambda n: sum((a - b) ** 2 for a, b in zip(CAR_COLORS[n], rgb, strict=True)))


@dataclass(frozen=True)
class StreetWorld:
    """A street and its objects in world coordinates (the camera starts at the origin and drives
    along +z); objects move by ``velocity`` (m per frame, along x and z)."""

    seed: int
    layout: StreetLayout
    objects: tuple
    sun_azimuth: float


def street_world(seed: int = 0, n_cars: int = 8, n_pedestrians: int = 2, n_cyclists: int = 1) -> StreetWorld:
    """A random street with objects and their motion, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    layout = _layout(gen)
    objects = _place_objects(gen, n_cars, n_pedestrians, n_cyclists)
    sun = 0.6 + 0.8 * float(torch.rand((), generator=gen))
    # Everything in one corridor moves at that corridor's speed (no one drives through anyone):
    # the camera's lane at the default camera speed, the others at their own pace; parked cars
    # stand; pedestrians stroll along their sidewalk.
    lane_speed = {
        -1: -(0.8 + 0.6 * float(torch.rand((), generator=gen))),
        0: 1.0,
        1: 0.6 + 0.8 * float(torch.rand((), generator=gen)),
    }
    bike_speed = {-1: -0.4, 1: 0.4}
    for o in objects:
        x = o["location"][0]
        if o["class"] == 1:
            vz = (0.08 + 0.06 * float(torch.rand((), generator=gen))) * (
                1 if math.cos(o["rotation_y"] + math.pi / 2) > 0 else -1
            )
        elif abs(x) < LANE_EDGE:
            vz = lane_speed[round(x / 3.5)]
        elif abs(x) < BIKE_LANE[1]:
            vz = bike_speed[1 if x > 0 else -1]
        else:
            vz = 0.0
        o["velocity"] = (0.0, vz)
    return StreetWorld(seed, layout, tuple(objects), sun)


def world_scene(
    world: StreetWorld,
    frame: int = 0,
    height: int = 375,
    width: int = 1242,
    camera_speed: float = 1.0,
    max_objects: int | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
    camera: int = 0,
) -> Scene:
    """The IR of ``world`` seen at ``frame`` (the camera has driven ``frame × camera_speed`` m)
    by ``camera`` 0 (left) or 1 (right, :data:`STEREO_BASELINE` to the right, as in VKITTI2).

    Every object keeps its slot (and track id) in every frame; slots whose object is behind the
    camera or beyond 80 m are invalid. The background colour is quantised to 1/255 and its depth
    to millimetres, so that a scene can be stored compactly and exactly.
    """
    camera_z = frame * camera_speed
    camera_x = camera * STEREO_BASELINE
    K = intrinsics(height, width)
    color, depth, sem = _background(world.layout, K, height, width, camera_z, camera_x)
    color = torch.round(color * 255.0) / 255.0
    depth = torch.round(depth * 1000.0) / 1000.0
    placed = []
    for i, o in enumerate(world.objects):
        x = o["location"][0] + frame * o["velocity"][0] - camera_x
        z = o["location"][2] + frame * o["velocity"][1] - camera_z
        placed.append({**o, "location": (x, CAMERA_HEIGHT, z), "track_id": i, "valid": 1.0 < z < 80.0})
    scene = Scene.from_objects(color, depth, sem, K, placed, CAMERA_HEIGHT, world.sun_azimuth, max_objects)
    return scene.to(device=device, dtype=dtype).validate()


def street_scene(
    seed: int = 0,
    height: int = 375,
    width: int = 1242,
    n_cars: int = 8,
    n_pedestrians: int = 2,
    n_cyclists: int = 1,
    max_objects: int | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Scene:
    """One procedural street (frame 0 of :func:`street_world`) as a batch-of-one :class:`Scene`."""
    world = street_world(seed, n_cars, n_pedestrians, n_cyclists)
    return world_scene(world, 0, height, width, max_objects=max_objects, dtype=dtype, device=device)
