"""The editor α: semantic perturbations θ of a scene's IR, and the projection Π.

θ is a dict with any subset of the six parameters (DESIGN §2), each a tensor in dimensionless
units so that the paper's ε values mean the same for every scene:

=========== ================== ===============================================================
name        shape              unit (θ = 1.0 is …)
=========== ================== ===============================================================
color       ``(B, N, 3)``      the full [0, 1] range of an object's paint RGB
weather     ``(B, 4)``         the full range of (fog, cloud, dusk, tint): clear noon → dense fog / dusk
foliage     ``(B, 4)``         the full range of (hue ±180°, saturation, brightness, pattern)
rotate      ``(B, N)``         π rad of yaw
translate   ``(B, N, 2)``      ``translate_unit_m`` metres (default 10) along the ground's x and z
mesh        ``(B, N, P, 3)``   the object's size, per FFD control point and axis
=========== ================== ===============================================================

``apply`` is additive in every parameter: θ = 0 returns the scene's values exactly and
α(α(s, θ1), θ2) = α(s, θ1 + θ2). Object parameters act on *target* objects only (a ``(B, N)``
mask, by default every valid object).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sae.constants import OBJECT_PARAMETERS, PAPER_EPS, PARAMETERS, parse_combo  # noqa: F401 (re-exported)
from sae.scene.ffd import MAX_OFFSET, NUM_CONTROL, bottom_layer_mask
from sae.scene.ir import FOLIAGE_RANGE, WEATHER_RANGE, Scene


@dataclass(frozen=True)
class EditorConfig:
    """Units and feasibility limits of the editor.

    Attributes:
        translate_unit_m: metres of ground motion per unit of ``translate``.
        rotate_unit_rad: radians of yaw per unit of ``rotate``.
        min_depth_m: a moved object's location stays at least this far in front of the camera.
        clearance_m: moved objects keep this gap between their ground footprints.
    """

    translate_unit_m: float = 10.0
    rotate_unit_rad: float = math.pi
    min_depth_m: float = 3.0
    clearance_m: float = 0.1


def theta_shape(scene: Scene, name: str) -> tuple[int, ...]:
    b, n = scene.batch_size, scene.max_objects
    return {
        "color": (b, n, 3),
        "weather": (b, 4),
        "foliage": (b, 4),
        "rotate": (b, n),
        "translate": (b, n, 2),
        "mesh": (b, n, NUM_CONTROL, 3),
    }[name]


def zero_theta(scene: Scene, params=PARAMETERS, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """θ = ⊥ for the given parameters."""
    return {
        p: torch.zeros(theta_shape(scene, p), dtype=scene.dtype, device=scene.device, requires_grad=requires_grad)
        for p in params
    }


def ground_axes(scene: Scene) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors ``(B, 3)`` along the ground plane: camera x and z projected onto it."""
    n = scene.ground[:, :3]
    axes = []
    for k in (0, 2):
        e = torch.zeros_like(n)
        e[:, k] = 1.0
        e = e - (e * n).sum(dim=1, keepdim=True) * n
        axes.append(e / e.norm(dim=1, keepdim=True))
    return axes[0], axes[1]


def default_targets(scene: Scene) -> torch.Tensor:
    return scene.obj_valid


def apply(
    scene: Scene,
    theta: dict[str, torch.Tensor],
    config: EditorConfig = EditorConfig(),
    targets: torch.Tensor | None = None,
) -> Scene:
    """α(s, θ): the edited scene (differentiable in θ)."""
    unknown = set(theta) - set(PARAMETERS)
    if unknown:
        raise KeyError(f"unknown parameter(s) {sorted(unknown)}; parameters are {', '.join(PARAMETERS)}")
    mask = (default_targets(scene) if targets is None else targets).to(scene.dtype)
    changes = {}
    if "color" in theta:
        changes["obj_color"] = scene.obj_color + theta["color"] * mask.unsqueeze(-1)
    if "weather" in theta:
        changes["weather"] = scene.weather + theta["weather"]
    if "foliage" in theta:
        changes["foliage"] = scene.foliage + theta["foliage"]
    if "rotate" in theta:
        changes["obj_rotation_y"] = scene.obj_rotation_y + config.rotate_unit_rad * theta["rotate"] * mask
    if "translate" in theta:
        e1, e2 = ground_axes(scene)
        t = theta["translate"] * mask.unsqueeze(-1) * config.translate_unit_m
        move = t[..., :1] * e1.unsqueeze(1) + t[..., 1:] * e2.unsqueeze(1)
        changes["obj_location"] = scene.obj_location + move
    if "mesh" in theta:
        changes["obj_ffd"] = scene.obj_ffd + theta["mesh"] * mask.view(mask.shape + (1, 1))
    return scene.replace(**changes)


def _clamp_range(code: torch.Tensor, theta: torch.Tensor, ranges) -> torch.Tensor:
    lo = torch.tensor([r[0] for r in ranges], dtype=code.dtype, device=code.device)
    hi = torch.tensor([r[1] for r in ranges], dtype=code.dtype, device=code.device)
    return torch.maximum(torch.minimum(theta, hi - code), lo - code)


def _footprints(scene: Scene) -> torch.Tensor:
    """Ground-plane rectangles ``(B, N, 4, 2)`` (x, z corners) of the objects' 3-D boxes."""
    l, w = scene.obj_dims[..., 2], scene.obj_dims[..., 1]
    c, s = torch.cos(scene.obj_rotation_y), torch.sin(scene.obj_rotation_y)
    corners = []
    for sx, sz in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
        lx, lz = sx * l / 2, sz * w / 2
        corners.append(torch.stack([c * lx + s * lz, -s * lx + c * lz], dim=-1))
    return torch.stack(corners, dim=2) + scene.obj_location[..., [0, 2]].unsqueeze(2)


def overlaps(scene: Scene, clearance: float = 0.0) -> torch.Tensor:
    """``(B, N, N)`` bool: valid objects whose ground footprints (grown by ``clearance``) overlap."""
    rect = _footprints(scene)  # (B, N, 4, 2)
    a = rect.unsqueeze(2)  # (B, N, 1, 4, 2)
    b = rect.unsqueeze(1)  # (B, 1, N, 4, 2)
    separated = torch.zeros(a.shape[:2] + (b.shape[2],), dtype=torch.bool, device=rect.device)
    for poly in (a, b):  # separating-axis test on the rectangles' edge normals
        for k in range(2):
            edge = poly[..., k + 1, :] - poly[..., k, :]
            axis = torch.stack([-edge[..., 1], edge[..., 0]], dim=-1)
            axis = (axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-9)).unsqueeze(-2)
            pa, pb = (a * axis).sum(-1), (b * axis).sum(-1)
            gap = torch.maximum(pb.min(-1).values - pa.max(-1).values, pa.min(-1).values - pb.max(-1).values)
            separated |= gap >= clearance
    valid = scene.obj_valid.unsqueeze(2) & scene.obj_valid.unsqueeze(1)
    eye = torch.eye(scene.max_objects, dtype=torch.bool, device=rect.device)
    return ~separated & valid & ~eye


@torch.no_grad()
def project(
    theta: dict[str, torch.Tensor],
    scene: Scene,
    eps: dict[str, float],
    config: EditorConfig = EditorConfig(),
    targets: torch.Tensor | None = None,
    max_halvings: int = 6,
) -> dict[str, torch.Tensor]:
    """Π: the point of the ε-ball (ℓ∞ per parameter, around θ = 0) ∩ feasible set.

    Feasible means: colours in [0, 1]; weather and foliage codes in their ranges (fog ≥ 0);
    FFD offsets within ±:data:`~sae.scene.ffd.MAX_OFFSET` (the lattice cannot fold) with the
    ground layer's vertical offsets at zero (wheels and feet stay on the ground); moved objects
    stay on the ground plane (by construction), at least ``min_depth_m`` ahead, and out of each
    other's footprints — an object whose move creates an overlap has its ``rotate`` and
    ``translate`` halved until it does not (zeroed after ``max_halvings``).
    """
    missing = set(theta) - set(eps)
    if missing:
        raise KeyError(f"no ε given for {sorted(missing)}")
    out = {k: v.detach().clamp(-eps[k], eps[k]) for k, v in theta.items()}
    if "color" in out:
        out["color"] = torch.clamp(out["color"], -scene.obj_color, 1.0 - scene.obj_color)
    if "weather" in out:
        out["weather"] = _clamp_range(scene.weather, out["weather"], WEATHER_RANGE)
    if "foliage" in out:
        out["foliage"] = _clamp_range(scene.foliage, out["foliage"], FOLIAGE_RANGE)
    if "mesh" in out:
        m = torch.clamp(out["mesh"], -MAX_OFFSET - scene.obj_ffd, MAX_OFFSET - scene.obj_ffd)
        bottom = torch.as_tensor(bottom_layer_mask(), device=m.device)
        m[..., bottom, 1] = -scene.obj_ffd[..., bottom, 1]
        out["mesh"] = m
    if "translate" in out or "rotate" in out:
        _project_placement(out, scene, config, targets, max_halvings)
    return out


def _project_placement(out, scene, config, targets, max_halvings) -> None:
    geo = {k: out[k] for k in ("translate", "rotate") if k in out}
    before = overlaps(scene, config.clearance_m)
    scale = torch.ones(scene.obj_valid.shape, dtype=scene.dtype, device=scene.device)
    for _ in range(max_halvings + 1):
        scaled = {k: v * (scale.unsqueeze(-1) if k == "translate" else scale) for k, v in geo.items()}
        moved = apply(scene, scaled, config, targets)
        too_close = moved.obj_location[..., 2] < config.min_depth_m
        moving = (scaled.get("translate", torch.zeros(1)).abs().sum(-1) if "translate" in scaled else 0) + (
            scaled["rotate"].abs() if "rotate" in scaled else 0
        )
        new_clash = (overlaps(moved, config.clearance_m) & ~before).any(dim=2)
        bad = (too_close | new_clash) & (torch.as_tensor(moving) > 0)
        if not bad.any():
            break
        scale = torch.where(bad, scale * 0.5, scale)
    else:
        scale = torch.where(bad, torch.zeros_like(scale), scale)
    for k, v in geo.items():
        out[k] = v * (scale.unsqueeze(-1) if k == "translate" else scale)
