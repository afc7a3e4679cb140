"""Procedural object templates: cars (sedan, hatchback, SUV/van), a pedestrian, a cyclist.

Every template lives in the *unit object frame* of KITTI's 3-D boxes:

* ``x`` along the object's length, front at ``x = +0.5``;
* ``y`` pointing **down**, the ground contact at ``y = 0`` and the top at ``y = -1``;
* ``z`` along the width, in ``[-0.5, 0.5]``.

A scene scales a template by its dimensions ``(l, h, w)`` along ``(x, y, z)``, rotates it by
KITTI ``rotation_y`` about the camera's ``y`` axis and moves its bottom-centre to the KITTI
location, so the template's unit box becomes the object's 3-D box exactly.

Meshes are built from closed parts (lofted bodies, boxes, cylinders, spheres), each part's faces
wound counter-clockwise seen from outside (outward normals), and every face carries a material id
(:class:`Material`). Materials whose albedo comes from the object's colour code are ``PAINT``
(car body, pedestrian top, bicycle frame); the others have fixed albedos (:data:`MATERIAL_ALBEDO`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import numpy as np


class Material(IntEnum):
    PAINT = 0  # albedo = the object's colour code
    GLASS = 1
    TYRE = 2
    RIM = 3
    HEADLIGHT = 4
    TAILLIGHT = 5
    SKIN = 6
    TROUSERS = 7
    HAIR = 8
    SHOE = 9
    GRILLE = 10


#: Fixed albedos (linear RGB in [0, 1]) of the non-paint materials, indexed by :class:`Material`.
MATERIAL_ALBEDO = np.array(
    [
        [0.0, 0.0, 0.0],  # PAINT: replaced by the colour code
        [0.10, 0.13, 0.17],  # GLASS
        [0.05, 0.05, 0.05],  # TYRE
        [0.62, 0.63, 0.65],  # RIM
        [0.98, 0.96, 0.85],  # HEADLIGHT
        [0.80, 0.06, 0.05],  # TAILLIGHT
        [0.85, 0.66, 0.53],  # SKIN
        [0.16, 0.18, 0.30],  # TROUSERS
        [0.18, 0.12, 0.08],  # HAIR
        [0.08, 0.08, 0.08],  # SHOE
        [0.12, 0.12, 0.12],  # GRILLE
    ],
    dtype=np.float64,
)


class ObjectClass(IntEnum):
    CAR = 0
    PEDESTRIAN = 1
    CYCLIST = 2


CLASS_NAMES = ("Car", "Pedestrian", "Cyclist")


@dataclass(frozen=True)
class Template:
    """A triangle mesh in the unit object frame.

    Attributes:
        name: e.g. ``"sedan"``.
        object_class: the :class:`ObjectClass` it depicts.
        vertices: ``(V, 3)`` float64 in the unit object frame.
        faces: ``(F, 3)`` int64 vertex indices, counter-clockwise seen from outside.
        materials: ``(F,)`` int64 :class:`Material` ids.
        default_dims: typical ``(h, w, l)`` in metres (KITTI order).
    """

    name: str
    object_class: ObjectClass
    vertices: np.ndarray
    faces: np.ndarray
    materials: np.ndarray
    default_dims: tuple[float, float, float]


class _MeshBuilder:
    """Accumulates closed parts; orients each part's faces outward."""

    def __init__(self) -> None:
        self.vertices: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.materials: list[np.ndarray] = []
        self._count = 0

    def add_part(self, verts: np.ndarray, faces: np.ndarray, materials: np.ndarray | int, convex: bool = True) -> None:
        verts = np.asarray(verts, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64).copy()
        mats = np.broadcast_to(np.asarray(materials, dtype=np.int64), (len(faces),)).copy()
        tri = verts[faces]
        if convex:
            # Star-shaped about the centroid: a face whose normal points inward is flipped.
            centre = verts.mean(axis=0)
            normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            inward = ((tri.mean(axis=1) - centre) * normal).sum(axis=1) < 0
            faces[inward] = faces[inward][:, ::-1]
        else:
            # Consistently wound by construction: flip the whole part if it is inside out.
            volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
            if volume < 0:
                faces = faces[:, ::-1].copy()
        self.vertices.append(verts)
        self.faces.append(faces + self._count)
        self.materials.append(mats)
        self._count += len(verts)

    def build(self, name: str, cls: ObjectClass, dims: tuple[float, float, float]) -> Template:
        verts = np.concatenate(self.vertices)
        faces = np.concatenate(self.faces)
        mats = np.concatenate(self.materials)
        # Normalise into the unit box (the object's 3-D box is the mesh's bounding box).
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        verts = (verts - lo) / (hi - lo)
        verts = verts + np.array([-0.5, -1.0, -0.5])
        return Template(name, cls, verts, faces, mats, dims)


def _loft(rings: np.ndarray, ring_materials: np.ndarray | None = None, cap_material: int = 0):
    """Quad-strip surface through ``rings`` ``(S, R, 3)`` (S stations, R points per closed ring),
    closed by triangle fans at both ends. Returns vertices, faces, materials."""
    s, r, _ = rings.shape
    verts = rings.reshape(-1, 3)
    faces, mats = [], []
    for i in range(s - 1):
        for j in range(r):
            a, b = i * r + j, i * r + (j + 1) % r
            c, d = (i + 1) * r + (j + 1) % r, (i + 1) * r + j
            faces += [[a, b, c], [a, c, d]]
            m = cap_material if ring_materials is None else ring_materials[i, j]
            mats += [m, m]
    centres = (len(verts), len(verts) + 1)
    verts = np.concatenate([verts, rings[0].mean(0, keepdims=True), rings[-1].mean(0, keepdims=True)])
    for end, centre in zip((0, s - 1), centres, strict=True):
        for j in range(r):
            a, b = end * r + j, end * r + (j + 1) % r
            faces.append([centre, a, b] if end else [centre, b, a])  # both caps wound like the strips
            mats.append(cap_material)
    return verts, np.array(faces), np.array(mats)


def _box(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads]
    return corners, np.array(faces)


def _cylinder(centre, radius, half_width, axis: int = 2, segments: int = 12):
    """A closed cylinder; the axis is along coordinate ``axis``. Returns verts, faces and a
    boolean mask of the cap faces (for hub/rim materials)."""
    ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    circle = np.stack([np.cos(ang) * radius, np.sin(ang) * radius], axis=1)
    rings = []
    for offset in (-half_width, half_width):
        ring = np.zeros((segments, 3))
        other = [k for k in range(3) if k != axis]
        ring[:, other[0]] = circle[:, 0]
        ring[:, other[1]] = circle[:, 1]
        ring[:, axis] = offset
        rings.append(ring + np.asarray(centre))
    verts, faces, mats = _loft(np.stack(rings), cap_material=1)
    mats[: 2 * segments] = 0
    return verts, faces, mats.astype(bool)


def _sphere(centre, radii, rings: int = 6, segments: int = 10):
    centre, radii = np.asarray(centre, float), np.asarray(radii, float)
    verts = [centre + radii * [0, -1, 0]]
    for i in range(1, rings):
        phi = np.pi * i / rings
        for j in range(segments):
            th = 2 * np.pi * j / segments
            verts.append(centre + radii * [np.sin(phi) * np.cos(th), -np.cos(phi), np.sin(phi) * np.sin(th)])
    verts.append(centre + radii * [0, 1, 0])
    faces = []
    for j in range(segments):
        faces.append([0, 1 + j, 1 + (j + 1) % segments])
    for i in range(rings - 2):
        for j in range(segments):
            a = 1 + i * segments + j
            b = 1 + i * segments + (j + 1) % segments
            faces += [[a, b, b + segments], [a, b + segments, a + segments]]
    last = len(verts) - 1
    base = 1 + (rings - 2) * segments
    for j in range(segments):
        faces.append([last, base + (j + 1) % segments, base + j])
    return np.array(verts), np.array(faces)


# --------------------------------------------------------------------------------------------
# Cars
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CarProfile:
    """Side profile of a car body in metres: stations along the length with the roof/hood line,
    the belt line (bottom of the windows) and whether the station is inside the glasshouse."""

    length: float
    width: float
    height: float
    stations: tuple[float, ...]  # x from the rear (0) to the front (length)
    top: tuple[float, ...]  # height of the upper line at each station
    belt: tuple[float, ...]  # height of the belt line at each station
    clearance: float = 0.18
    wheel_radius: float = 0.32
    wheel_x: tuple[float, float] = (0.75, 3.55)  # rear and front axle positions


_SEDAN = _CarProfile(
    length=4.5,
    width=1.8,
    height=1.45,
    stations=(0.0, 0.15, 0.55, 1.05, 1.55, 2.2, 2.85, 3.3, 4.05, 4.4, 4.5),
    top=(0.72, 0.92, 0.98, 1.06, 1.42, 1.45, 1.40, 1.02, 0.90, 0.80, 0.62),
    belt=(0.72, 0.92, 0.98, 1.02, 1.0, 0.98, 0.97, 0.96, 0.90, 0.80, 0.62),
    wheel_x=(0.85, 3.55),
)
_HATCHBACK = _CarProfile(
    length=3.9,
    width=1.72,
    height=1.48,
    stations=(0.0, 0.08, 0.25, 0.8, 1.45, 2.1, 2.55, 3.3, 3.8, 3.9),
    top=(0.75, 1.05, 1.40, 1.47, 1.48, 1.44, 1.05, 0.90, 0.78, 0.62),
    belt=(0.75, 0.98, 1.00, 1.0, 0.99, 0.98, 0.97, 0.88, 0.78, 0.62),
    wheel_x=(0.65, 3.2),
)
_SUV = _CarProfile(
    length=4.7,
    width=1.9,
    height=1.85,
    stations=(0.0, 0.1, 0.3, 1.0, 2.0, 3.0, 3.45, 3.95, 4.6, 4.7),
    top=(0.95, 1.70, 1.82, 1.85, 1.85, 1.82, 1.55, 1.15, 1.05, 0.85),
    belt=(0.95, 1.15, 1.18, 1.18, 1.17, 1.16, 1.15, 1.12, 1.05, 0.85),
    clearance=0.25,
    wheel_radius=0.38,
    wheel_x=(0.85, 3.8),
)


def _car(name: str, p: _CarProfile) -> Template:
    b = _MeshBuilder()
    half_w = p.width / 2
    # Ring (counter-clockwise seen from the front) at each station, y up here (flipped later).
    # Points: sill L, belt L, roof L, roof R, belt R, sill R, floor R, floor L.
    rings, ring_mats = [], []
    n_st = len(p.stations)
    for i, (x, top, belt) in enumerate(zip(p.stations, p.top, p.belt, strict=True)):
        shoulder = min(belt, top)
        glass_house = top - belt > 0.12
        roof_w = half_w * (0.78 if glass_house else 0.97)
        end = i in (0, n_st - 1)
        bottom = p.clearance + (0.1 if end else 0.0)
        w_body = half_w * (0.92 if end else 1.0)
        ring = [
            (x, bottom + 0.12, -w_body),
            (x, shoulder, -w_body),
            (x, top, -roof_w),
            (x, top, roof_w),
            (x, shoulder, w_body),
            (x, bottom + 0.12, w_body),
            (x, bottom, w_body * 0.9),
            (x, bottom, -w_body * 0.9),
        ]
        rings.append(ring)
        ring_mats.append(glass_house)
    rings = np.array(rings)
    mats = np.zeros((n_st - 1, 8), dtype=np.int64)
    for i in range(n_st - 1):
        if ring_mats[i] and ring_mats[i + 1]:
            mats[i, 1] = Material.GLASS  # left side windows
            mats[i, 3] = Material.GLASS  # right side windows
        elif ring_mats[i] != ring_mats[i + 1]:
            # windscreen / rear window: the sloped segment between body and glasshouse
            mats[i, 1] = mats[i, 3] = Material.PAINT
            mats[i, 2] = Material.GLASS
    # B-pillar: the station nearest the middle of the glasshouse keeps paint on its segment.
    gh = [i for i in range(n_st - 1) if ring_mats[i] and ring_mats[i + 1]]
    if len(gh) >= 3:
        mid = gh[len(gh) // 2]
        mats[mid, 1] = mats[mid, 3] = Material.PAINT
    verts, faces, fmats = _loft(rings, mats, cap_material=Material.PAINT)
    b.add_part(verts, faces, fmats, convex=False)

    # Wheels: cylinders along the width, flush with the body sides.
    r, ww = p.wheel_radius, 0.24
    for wx in p.wheel_x:
        for side in (-1, 1):
            v, f, cap = _cylinder((wx, r, side * (half_w - ww / 2 + 0.02)), r, ww / 2, axis=2, segments=12)
            b.add_part(v, f, np.where(cap, Material.RIM, Material.TYRE))
    # Lights and grille: thin plates (decals) on the flat front and rear faces, so that no
    # protruding part pops out from behind the body's outline as the car turns.
    t = 0.015
    front_top, rear_top = p.top[-1], p.top[0]
    for side in (-1, 1):
        zc = side * half_w * 0.6
        v, f = _box((p.length - t, front_top - 0.2, zc - 0.2), (p.length + t, front_top - 0.07, zc + 0.2))
        b.add_part(v, f, Material.HEADLIGHT)
        v, f = _box((-t, rear_top - 0.2, zc - 0.2), (t, rear_top - 0.07, zc + 0.2))
        b.add_part(v, f, Material.TAILLIGHT)
    v, f = _box((p.length - t, front_top - 0.3, -0.28), (p.length + t, front_top - 0.09, 0.28))
    b.add_part(v, f, Material.GRILLE)

    # Our construction is y-up; the unit frame is y-down.
    for k in range(len(b.vertices)):
        b.vertices[k] = b.vertices[k] * np.array([1.0, -1.0, 1.0])
        b.faces[k] = b.faces[k][:, ::-1]
    return b.build(name, ObjectClass.CAR, (p.height, p.width, p.length))


# --------------------------------------------------------------------------------------------
# Pedestrian and cyclist (built y-up in metres, then flipped)
# --------------------------------------------------------------------------------------------


def _limb(b: _MeshBuilder, start, end, radius, material, segments: int = 6):
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    length = np.linalg.norm(axis)
    d = axis / length
    ref = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 0, 1.0])
    u = np.cross(d, ref)
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    rings = np.stack([p + radius * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v) for p in (start, end)])
    verts, faces, _ = _loft(rings, cap_material=0)
    b.add_part(verts, faces, material)


def _person(b: _MeshBuilder, hip, knee_l, foot_l, knee_r, foot_r, shoulder_h, hand_l, hand_r, lean=0.0):
    """A stick-and-box person: legs, torso, arms, head, hair, shoes."""
    hip = np.asarray(hip, float)
    for knee, foot, side in ((knee_l, foot_l, -1), (knee_r, foot_r, 1)):
        h = hip + [0, 0, side * 0.1]
        _limb(b, h, knee, 0.075, Material.TROUSERS)
        _limb(b, knee, foot, 0.06, Material.TROUSERS)
        foot = np.asarray(foot, float)
        v, f = _box(foot + [-0.06, -0.05, -0.05], foot + [0.16, 0.03, 0.05])
        b.add_part(v, f, Material.SHOE)
    top = hip + [lean, shoulder_h - hip[1], 0]
    # torso: a tapered loft from hips to shoulders
    rings = []
    for c, hw, hd in ((hip, 0.17, 0.11), ((hip + top) / 2, 0.18, 0.12), (top, 0.21, 0.11)):
        rings.append([c + [sx * hd, 0, sz * hw] for sx, sz in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    verts, faces, _ = _loft(np.array(rings), cap_material=0)
    b.add_part(verts, faces, Material.PAINT)
    for hand, side in ((hand_l, -1), (hand_r, 1)):
        sh = top + [0, -0.04, side * 0.23]
        _limb(b, sh, hand, 0.05, Material.PAINT)
        v, _f = _sphere(hand, (0.045, 0.045, 0.045), rings=3, segments=5)
        b.add_part(v, _f, Material.SKIN)
    neck = top + [0, 0.05, 0]
    v, f = _sphere(neck + [0, 0.12, 0], (0.1, 0.12, 0.09), rings=5, segments=8)
    b.add_part(v, f, Material.SKIN)
    v, f = _sphere(neck + [-0.015, 0.19, 0], (0.1, 0.065, 0.095), rings=3, segments=8)
    b.add_part(v, f, Material.HAIR)


def _pedestrian() -> Template:
    b = _MeshBuilder()
    _person(
        b,
        hip=(0.0, 0.9, 0.0),
        knee_l=(0.12, 0.48, -0.1),
        foot_l=(0.2, 0.07, -0.1),
        knee_r=(-0.08, 0.47, 0.1),
        foot_r=(-0.18, 0.07, 0.1),
        shoulder_h=1.43,
        hand_l=(-0.16, 0.85, -0.27),
        hand_r=(0.17, 0.86, 0.27),
    )
    for k in range(len(b.vertices)):
        b.vertices[k] = b.vertices[k] * np.array([1.0, -1.0, 1.0])
        b.faces[k] = b.faces[k][:, ::-1]
    return b.build("pedestrian", ObjectClass.PEDESTRIAN, (1.75, 0.62, 0.8))


def _cyclist() -> Template:
    b = _MeshBuilder()
    r = 0.34
    rear, front = np.array([-0.55, r, 0.0]), np.array([0.55, r, 0.0])
    for c in (rear, front):
        v, f, cap = _cylinder(c, r, 0.025, axis=2, segments=14)
        b.add_part(v, f, np.where(cap, Material.RIM, Material.TYRE))
    seat = np.array([-0.2, 0.92, 0.0])
    crank = np.array([0.0, 0.32, 0.0])
    bar = np.array([0.42, 1.02, 0.0])
    for s, e in (
        (rear, crank),
        (crank, seat),
        (seat, rear),
        (seat, bar + [-0.05, -0.08, 0]),
        (crank, bar + [-0.05, -0.08, 0]),
        (front, bar),
    ):
        _limb(b, s, e, 0.022, Material.PAINT, segments=4)
    _limb(b, bar + [0, 0, -0.25], bar + [0, 0, 0.25], 0.02, Material.GRILLE, segments=4)
    _person(
        b,
        hip=seat + [0, 0.05, 0],
        knee_l=(0.2, 0.72, -0.12),
        foot_l=(0.08, 0.2, -0.12),
        knee_r=(0.1, 0.62, 0.12),
        foot_r=(-0.08, 0.42, 0.12),
        shoulder_h=1.5,
        hand_l=bar + [0, 0, -0.22],
        hand_r=bar + [0, 0, 0.22],
        lean=0.28,
    )
    for k in range(len(b.vertices)):
        b.vertices[k] = b.vertices[k] * np.array([1.0, -1.0, 1.0])
        b.faces[k] = b.faces[k][:, ::-1]
    return b.build("cyclist", ObjectClass.CYCLIST, (1.72, 0.6, 1.76))


@lru_cache(maxsize=1)
def templates() -> tuple[Template, ...]:
    """All templates, indexed by the IR's ``obj_template`` id."""
    return (
        _car("sedan", _SEDAN),
        _car("hatchback", _HATCHBACK),
        _car("suv", _SUV),
        _pedestrian(),
        _cyclist(),
    )


TEMPLATE_NAMES = ("sedan", "hatchback", "suv", "pedestrian", "cyclist")
CAR_TEMPLATES = (0, 1, 2)


def template_id(name: str) -> int:
    """Template index by name (``"sedan"``, ``"hatchback"``, ``"suv"``, ``"pedestrian"``, ``"cyclist"``)."""
    try:
        return TEMPLATE_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown template {name!r}; known: {', '.join(TEMPLATE_NAMES)}") from None


def signed_volume(t: Template) -> float:
    """Signed volume of the template's mesh; positive when faces are wound outward."""
    tri = t.vertices[t.faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)
