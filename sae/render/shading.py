"""Lighting from the weather code and Lambertian + ambient shading of object faces.

The weather code ``(fog, cloud, dusk, tint)`` (see :data:`sae.scene.ir.WEATHER_FIELDS`) sets one
light per image: a sun whose elevation and intensity fall from clear noon (``dusk = 0``) to dusk
(``dusk = 1``), whose direct light clouds dim, an ambient sky term, and a light colour (warm at
dusk, shifted blue/orange by ``tint``). Every function is smooth in the code, so the ``weather``
parameter has gradients everywhere; at code zero the background is drawn exactly as stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sae.render.raster import gather_rows

#: Sun elevation (rad) at clear noon and at dusk.
NOON_ELEVATION = math.radians(58.0)
DUSK_ELEVATION = math.radians(4.0)
#: Direct-light weight relative to the ambient term when the background was lit.
_BG_DIRECT = 0.6
_WARM = (1.0, 0.70, 0.48)


@dataclass(frozen=True)
class Lighting:
    """Per-image lighting, ``B`` images.

    Attributes:
        sun_dir: ``(B, 3)`` unit vector towards the sun, camera coordinates.
        sun: ``(B,)`` direct sun intensity.
        ambient: ``(B,)`` ambient (sky) intensity.
        color: ``(B, 3)`` light colour.
        bg_gain: ``(B, 3)`` multiplier of the stored background (1 at code zero).
    """

    sun_dir: torch.Tensor
    sun: torch.Tensor
    ambient: torch.Tensor
    color: torch.Tensor
    bg_gain: torch.Tensor


def _intensities(weather: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cloud, dusk = weather[:, 1], weather[:, 2]
    sun = (1.0 - 0.6 * dusk) * (1.0 - 0.5 * cloud)
    ambient = (0.36 + 0.14 * cloud) * (1.0 - 0.35 * dusk)
    return sun, ambient


def lighting(weather: torch.Tensor, sun_azimuth: torch.Tensor) -> Lighting:
    """Lighting ``B`` images from weather codes ``(B, 4)`` and sun azimuths ``(B,)``."""
    dusk, tint = weather[:, 2], weather[:, 3]
    elevation = NOON_ELEVATION + (DUSK_ELEVATION - NOON_ELEVATION) * dusk
    ce = torch.cos(elevation)
    sun_dir = torch.stack([ce * torch.sin(sun_azimuth), -torch.sin(elevation), ce * torch.cos(sun_azimuth)], dim=1)
    sun, ambient = _intensities(weather)
    warm = torch.as_tensor(_WARM, dtype=weather.dtype, device=weather.device)
    color = 1.0 + dusk.unsqueeze(1) * (warm - 1.0)
    shift = torch.stack([0.18 * tint, torch.zeros_like(tint), -0.18 * tint], dim=1)
    color = color * (1.0 + shift)
    ref_sun, ref_amb = _intensities(torch.zeros_like(weather[:1]))
    ref = ref_amb + _BG_DIRECT * ref_sun
    level = (ambient + _BG_DIRECT * sun) / ref
    return Lighting(sun_dir, sun, ambient, color, level.unsqueeze(1) * color)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit outward normals ``(F, 3)`` of triangles (counter-clockwise seen from outside)."""
    tri = gather_rows(verts, faces)
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)


def group_normals(verts: torch.Tensor, faces: torch.Tensor, face_group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Unit normal ``(F, 3)`` of each face's flat group: the area-weighted mean of the group's
    face normals (:func:`~sae.render.geometry.flat_groups`), equal to the face's own normal for a
    group of one face and, up to rounding, for a group that is still flat."""
    tri = gather_rows(verts, faces)
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)  # 2 · area · normal
    total = torch.zeros(num_groups, 3, dtype=n.dtype, device=n.device).index_add(0, face_group, n)
    total = total / total.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return gather_rows(total, face_group)


#: Half-width of the smoothed terminator: ``n·l`` within it gets a quadratic ramp instead of
#: the kink of ``max(0, n·l)``, so that a face turning towards the sun brightens with a continuous
#: derivative (a large face sitting at the kink would otherwise make a geometric gradient jump).
_TERMINATOR = 0.1


def soft_clamp_min(x: torch.Tensor, width: float) -> torch.Tensor:
    """``max(0, x)`` with the kink replaced by ``(x + w)² / 4w`` on ``|x| < w`` (C¹, exact
    outside)."""
    ramp = (x + width).clamp_min(0.0) ** 2 / (4 * width)
    return torch.where(x >= width, x, ramp)


def shade_faces(albedo: torch.Tensor, normals: torch.Tensor, face_batch: torch.Tensor, light: Lighting) -> torch.Tensor:
    """Flat Lambertian + ambient shading: ``albedo · (ambient + sun · max(0, n·l)) · colour``,
    the ``max`` smoothed within :data:`_TERMINATOR` of the terminator (:func:`soft_clamp_min`).

    Args:
        albedo: ``(F, 3)``. normals: ``(F, 3)``. face_batch: ``(F,)`` image of each face.

    Returns:
        ``(F, 3)`` shaded linear RGB.
    """
    l = gather_rows(light.sun_dir, face_batch)
    lambert = soft_clamp_min((normals * l).sum(dim=1), _TERMINATOR)
    level = gather_rows(light.ambient, face_batch) + gather_rows(light.sun, face_batch) * lambert
    return albedo * level.unsqueeze(1) * gather_rows(light.color, face_batch)
