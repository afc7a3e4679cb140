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
from sae.scene.ffd import NUM_CONTROL
from sae.scene.ir import FAR_DEPTH, SEM, Scene
from sae.scene.templates import CAR_TEMPLATES, template_id, templates

#: Virtual KITTI 2 intrinsics at 1242 × 375.
VKITTI_SIZE = (375, 1242)
VKITTI_F, VKITTI_CX, VKITTI_CY = 725.0087, 620.5, 187.0
CAMERA_HEIGHT = 1.65

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
ROAD_HALF = 5.25
LANES = (-3.5, 0.0, 3.5)
SIDEWALK = (5.25, 7.75)


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

    left_x, right_x = -u(10.5, 14.0), u(10.5, 14.0)
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


def _background(layout: StreetLayout, K: torch.Tensor, h: int, w: int, seed: int):
    """Ray-cast the street's background layers at ``h × w``: colour, z-depth, semantics."""
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

    def paint(mask, z, cls, rgb):
        nonlocal depth
        hit = mask & (z > 0.05) & (z < depth)
        depth = torch.where(hit, z, depth)
        sem[hit] = cls
        color[hit] = rgb[hit] if rgb.dim() == 3 else rgb.to(dt)

    # Ground plane y = CAMERA_HEIGHT.
    zg = torch.where(dy > 1e-6, CAMERA_HEIGHT / dy.clamp_min(1e-6), inf)
    gx, gz = dx * zg, zg
    ax = gx.abs()
    grain = (0.85 + 0.3 * fine).unsqueeze(-1)
    asphalt = torch.tensor([0.27, 0.27, 0.28], dtype=dt) * grain
    dash = ((gz % 9.0) < 3.0) & ((ax - 1.75).abs() < 0.075)
    edge_line = (ax - (ROAD_HALF - 0.25)).abs() < 0.07
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
        px = layout.left_x if side_sign < 0 else layout.right_x
        zb = torch.where(dx * side_sign > 1e-6, px / torch.where(dx == 0, torch.full_like(dx, 1e-9), dx), inf)
        y = dy * zb
        inside = (zb >= z0) & (zb <= z1) & (y <= CAMERA_HEIGHT) & (y >= CAMERA_HEIGHT - height)
        up = CAMERA_HEIGHT - y  # height above ground
        along = zb - z0
        window = ((up % 3.0) > 1.0) & ((up % 3.0) < 2.3) & ((along % 2.6) > 0.7) & ((along % 2.6) < 1.9) & (up > 2.5)
        base = torch.tensor(rgb, dtype=dt) * (0.9 + 0.2 * coarse).unsqueeze(-1)
        glass = torch.tensor([0.16, 0.2, 0.26], dtype=dt) * (0.8 + 0.5 * fine).unsqueeze(-1)
        facade = torch.where(window.unsqueeze(-1), glass, base) * (0.85 if side_sign > 0 else 1.0)
        paint(inside, zb, SEM["Building"], facade)

    # Trees: vertical trunk cylinders and spherical canopies; bushes on the verges.
    leaves = torch.tensor([0.16, 0.34, 0.1], dtype=dt) * (0.55 + 0.8 * fine).unsqueeze(-1)
    bark = torch.tensor([0.25, 0.18, 0.12], dtype=dt)
    d2 = dx * dx + dy * dy + 1.0
    for tx, tz, cy, r in layout.trees:
        # canopy: |t d - c|^2 = r^2, d = (dx, dy, 1), c = (tx, CAMERA_HEIGHT + cy, tz)
        cy_abs = CAMERA_HEIGHT + cy
        bq = dx * tx + dy * cy_abs + tz
        cq = tx * tx + cy_abs * cy_abs + tz * tz - r * r
        disc = bq * bq - d2 * cq
        t = (bq - disc.clamp_min(0).sqrt()) / d2
        paint(disc > 0, t, SEM["Tree"], leaves)
        # trunk: (t dx - tx)^2 + (t - tz)^2 = 0.18^2, below the canopy
        a = dx * dx + 1.0
        bt = dx * tx + tz
        ct = tx * tx + tz * tz - 0.18**2
        disc = bt * bt - a * ct
        t = (bt - disc.clamp_min(0).sqrt()) / a
        yy = dy * t
        paint((disc > 0) & (yy <= CAMERA_HEIGHT) & (yy >= cy_abs), t, SEM["Tree"], bark)
    for bx, bz, r in layout.bushes:
        cy_abs = CAMERA_HEIGHT - r * 0.6
        bq = dx * bx + dy * cy_abs + bz
        cq = bx * bx + cy_abs * cy_abs + bz * bz - r * r
        disc = bq * bq - d2 * cq
        t = (bq - disc.clamp_min(0).sqrt()) / d2
        paint(disc > 0, t, SEM["Vegetation"], leaves * 1.1)

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
                    x = choice((-1, 1)) * (ROAD_HALF - 1.1)
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
                x = choice((-1, 1)) * u(ROAD_HALF - 0.9, ROAD_HALF - 0.5)
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
    """One procedural street as a batch-of-one :class:`Scene`, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    layout = _layout(gen)
    K = intrinsics(height, width)
    color, depth, sem = _background(layout, K, height, width, seed)
    objects = _place_objects(gen, n_cars, n_pedestrians, n_cyclists)
    n = max_objects if max_objects is not None else max(1, len(objects))
    objects = objects[:n]
    valid = torch.zeros(1, n, dtype=torch.bool)
    cls = torch.zeros(1, n, dtype=torch.int64)
    tmpl = torch.zeros(1, n, dtype=torch.int64)
    dims = torch.zeros(1, n, 3, dtype=torch.float64)
    loc = torch.zeros(1, n, 3, dtype=torch.float64)
    ry = torch.zeros(1, n, dtype=torch.float64)
    rgb = torch.zeros(1, n, 3, dtype=torch.float64)
    track = torch.full((1, n), -1, dtype=torch.int64)
    for i, o in enumerate(objects):
        valid[0, i] = True
        cls[0, i] = o["class"]
        tmpl[0, i] = o["template"]
        dims[0, i] = torch.tensor(o["dims"], dtype=torch.float64)
        loc[0, i] = torch.tensor(o["location"], dtype=torch.float64)
        ry[0, i] = o["rotation_y"]
        rgb[0, i] = torch.tensor(o["color"], dtype=torch.float64)
        track[0, i] = i
    scene = Scene(
        bg_color=color.unsqueeze(0),
        bg_depth=depth.unsqueeze(0),
        bg_semantic=sem.unsqueeze(0),
        K=K.unsqueeze(0),
        ground=torch.tensor([[0.0, -1.0, 0.0, CAMERA_HEIGHT]], dtype=torch.float64),
        sun_azimuth=torch.tensor([0.6 + 0.8 * float(torch.rand((), generator=gen))], dtype=torch.float64),
        obj_valid=valid,
        obj_class=cls,
        obj_template=tmpl,
        obj_dims=dims,
        obj_location=loc,
        obj_rotation_y=ry,
        obj_ffd=torch.zeros(1, n, NUM_CONTROL, 3, dtype=torch.float64),
        obj_color=rgb,
        obj_track_id=track,
        weather=torch.zeros(1, 4, dtype=torch.float64),
        foliage=torch.zeros(1, 4, dtype=torch.float64),
    )
    return scene.to(device=device, dtype=dtype).validate()
