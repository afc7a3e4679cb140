"""Object geometry: packing the scene's templates and posing them in camera space.

All valid objects of a batch are packed into one triangle soup so that every later stage works
on flat tensors with no Python loop over objects: vertex ``i`` belongs to object
``vert_obj[i]`` (a flat index ``b * N + n``), face ``f`` to ``face_obj[f]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from sae.scene.ffd import NUM_CONTROL, deform, ffd_weights
from sae.scene.ir import Scene
from sae.scene.templates import MATERIAL_ALBEDO, templates


@dataclass(frozen=True)
class PackedMeshes:
    """The batch's object meshes, packed. ``Vt`` vertices, ``Ft`` faces in all.

    Attributes:
        vert_local: ``(Vt, 3)`` unit-frame template vertices.
        vert_obj: ``(Vt,)`` flat object index ``b * N + n``.
        vert_weights: ``(Vt, P)`` FFD Bernstein weights.
        faces: ``(Ft, 3)`` indices into the packed vertices.
        face_obj: ``(Ft,)`` flat object index.
        face_material: ``(Ft,)`` :class:`~sae.scene.templates.Material` id.
        face_neighbours: ``(Ft, 3)`` packed id of the face across edge ``k`` (vertices ``k`` and
            ``k + 1``), -1 on an open boundary.
        face_group: ``(Ft,)`` packed id of the face's flat surface (:func:`flat_groups`): faces
            of one group are shaded with one normal, so they keep one colour under deformation.
        num_groups: number of groups in the batch (``face_group.max() + 1``).
    """

    vert_local: torch.Tensor
    vert_obj: torch.Tensor
    vert_weights: torch.Tensor
    faces: torch.Tensor
    face_obj: torch.Tensor
    face_material: torch.Tensor
    face_neighbours: torch.Tensor
    face_group: torch.Tensor
    num_groups: int

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]


_PACK_CACHE: dict = {}


@torch.no_grad()
def pack_meshes(scene: Scene) -> PackedMeshes:
    """Pack the templates of the scene's valid objects (cached on the object layout)."""
    tmpl = scene.obj_template.detach().cpu().numpy()
    valid = scene.obj_valid.detach().cpu().numpy()
    key = (tmpl.tobytes(), valid.tobytes(), tmpl.shape, str(scene.device), scene.dtype)
    hit = _PACK_CACHE.get(key)
    if hit is not None:
        return hit
    all_t = templates()
    n_slots = tmpl.shape[1]
    verts, vobj, weights, faces, fobj, fmat, fnbr, fgrp = [], [], [], [], [], [], [], []
    offset = face_offset = group_offset = 0
    for flat in np.flatnonzero(valid.reshape(-1)):
        t = all_t[int(tmpl.reshape(-1)[flat])] if 0 <= tmpl.reshape(-1)[flat] < len(all_t) else None
        if t is None:
            b, n = divmod(int(flat), n_slots)
            raise ValueError(f"Scene.obj_template[{b}, {n}] = {tmpl[b, n]} is not a template id (0..{len(all_t) - 1})")
        verts.append(t.vertices)
        vobj.append(np.full(len(t.vertices), flat))
        ffd_w, nbr, groups = _template_tables(t.name)
        weights.append(ffd_w)
        faces.append(t.faces + offset)
        fobj.append(np.full(len(t.faces), flat))
        fmat.append(t.materials)
        fnbr.append(np.where(nbr >= 0, nbr + face_offset, -1))
        fgrp.append(groups + group_offset)
        offset += len(t.vertices)
        face_offset += len(t.faces)
        group_offset += int(groups.max()) + 1
    dev, dt = scene.device, scene.dtype
    if not verts:
        empty_f = torch.zeros(0, dtype=dt, device=dev)
        empty_i = torch.zeros(0, dtype=torch.int64, device=dev)
        packed = PackedMeshes(
            empty_f.reshape(0, 3),
            empty_i,
            empty_f.reshape(0, NUM_CONTROL),
            empty_i.reshape(0, 3),
            empty_i,
            empty_i,
            empty_i.reshape(0, 3),
            empty_i,
            0,
        )
    else:
        packed = PackedMeshes(
            vert_local=torch.as_tensor(np.concatenate(verts), dtype=dt, device=dev),
            vert_obj=torch.as_tensor(np.concatenate(vobj), dtype=torch.int64, device=dev),
            vert_weights=torch.as_tensor(np.concatenate(weights), dtype=dt, device=dev),
            faces=torch.as_tensor(np.concatenate(faces), dtype=torch.int64, device=dev),
            face_obj=torch.as_tensor(np.concatenate(fobj), dtype=torch.int64, device=dev),
            face_material=torch.as_tensor(np.concatenate(fmat), dtype=torch.int64, device=dev),
            face_neighbours=torch.as_tensor(np.concatenate(fnbr), dtype=torch.int64, device=dev),
            face_group=torch.as_tensor(np.concatenate(fgrp), dtype=torch.int64, device=dev),
            num_groups=group_offset,
        )
    if len(_PACK_CACHE) > 64:
        _PACK_CACHE.clear()
    _PACK_CACHE[key] = packed
    return packed


@cache
def _template_tables(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A template's FFD weights ``(V, P)``, face neighbours ``(F, 3)`` and flat groups ``(F,)``,
    computed once."""
    t = next(t for t in templates() if t.name == name)
    nbr = face_neighbours(t.faces)
    return ffd_weights(t.vertices), nbr, flat_groups(t.vertices, t.faces, t.materials, nbr)


def face_neighbours(faces: np.ndarray) -> np.ndarray:
    """``(F, 3)`` the face across each edge ``(v_k, v_k+1)`` of a consistently wound mesh
    (the face holding the reversed edge), -1 where there is none."""
    owner = {}
    for f, tri in enumerate(faces.tolist()):
        for k in range(3):
            owner[(tri[k], tri[(k + 1) % 3])] = f
    out = np.full(faces.shape, -1, dtype=np.int64)
    for f, tri in enumerate(faces.tolist()):
        for k in range(3):
            out[f, k] = owner.get((tri[(k + 1) % 3], tri[k]), -1)
    return out


#: Two unit face normals closer than this (1 − cos of the angle) count as one plane.
_COPLANAR = 1e-9


def flat_groups(vertices: np.ndarray, faces: np.ndarray, materials: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """``(F,)`` group id (0 .. G−1) of each face: the connected flat surfaces of one material.

    Two faces sharing an edge are in one group when they have the same material and lie in one
    plane in the template (a quad's two triangles, a wheel cap's fan, the panels of a flat car
    side). Coplanarity is kept by the scene's scaling, yaw and translation, so a rigidly posed
    group stays flat; only the FFD bends it. Shading a group with one normal keeps its faces
    one colour under a deformation too, so the edges inside it never become colour edges.
    """
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    parent = np.arange(len(faces))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for f, g in zip(*np.nonzero(neighbours >= 0), strict=True):
        other = neighbours[f, g]
        if materials[f] == materials[other] and 1.0 - float(n[f] @ n[other]) <= _COPLANAR:
            a, b = root(int(f)), root(int(other))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([root(i) for i in range(len(faces))], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def rotation_y(angle: torch.Tensor) -> torch.Tensor:
    """KITTI yaw rotation matrices ``(..., 3, 3)`` about the camera ``y`` axis."""
    c, s = torch.cos(angle), torch.sin(angle)
    z, o = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([c, z, s, z, o, z, -s, z, c], dim=-1).reshape(angle.shape + (3, 3))


def pose_vertices(scene: Scene, packed: PackedMeshes) -> torch.Tensor:
    """Camera-space vertex positions ``(Vt, 3)``: FFD, scale to ``(l, h, w)``, yaw, translate.

    Differentiable with respect to ``obj_ffd``, ``obj_dims``, ``obj_rotation_y`` and
    ``obj_location``.
    """
    obj = packed.vert_obj
    b_n = scene.obj_valid.numel()
    ffd = scene.obj_ffd.reshape(b_n, -1, 3)[obj]  # (Vt, P, 3)
    local = deform(packed.vert_local.unsqueeze(1), packed.vert_weights.unsqueeze(1), ffd).squeeze(1)
    dims = scene.obj_dims.reshape(b_n, 3)[obj]  # (h, w, l)
    scaled = local * dims[:, [2, 0, 1]]
    ry = scene.obj_rotation_y.reshape(b_n)[obj]
    c, s = torch.cos(ry), torch.sin(ry)
    x = c * scaled[:, 0] + s * scaled[:, 2]
    z = -s * scaled[:, 0] + c * scaled[:, 2]
    posed = torch.stack([x, scaled[:, 1], z], dim=-1)
    return posed + scene.obj_location.reshape(b_n, 3)[obj]


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of camera points ``(M, 3)`` with per-point intrinsics ``(M, 3, 3)``.

    Returns ``(M, 3)``: pixel ``u``, ``v`` (pixel centres at integer coordinates, KITTI's
    convention) and the z-depth.
    """
    z = points[:, 2]
    u = K[:, 0, 0] * points[:, 0] / z + K[:, 0, 1] * points[:, 1] / z + K[:, 0, 2]
    v = K[:, 1, 1] * points[:, 1] / z + K[:, 1, 2]
    return torch.stack([u, v, z], dim=-1)


def face_albedo(scene: Scene, packed: PackedMeshes) -> torch.Tensor:
    """Per-face albedo ``(Ft, 3)``: the object's colour code for paint, fixed otherwise."""
    table = torch.as_tensor(MATERIAL_ALBEDO, dtype=scene.dtype, device=scene.device)
    fixed = table[packed.face_material]
    paint = scene.obj_color.reshape(-1, 3)[packed.face_obj]
    is_paint = (packed.face_material == 0).unsqueeze(1)
    return torch.where(is_paint, paint, fixed)
