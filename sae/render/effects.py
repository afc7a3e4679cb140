"""Image-space effects of the weather and foliage codes (kornia-style pure functions).

* :func:`retexture_foliage` — hue, saturation, brightness and a dappling pattern of the
  vegetation/terrain pixels, in YIQ space (hue is a rotation of the I/Q chroma plane).
* :func:`add_clouds` — cloud cover over the sky pixels.
* :func:`apply_fog` — atmospheric scattering ``I·t + A·(1 − t)``, ``t = exp(−β·depth)``.

The region effects work on gathered pixel lists ``(P, 3)`` (only the pixels of their semantic
regions), so their cost follows the region's area. Every effect is the identity at code zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Fog extinction (1/m) at ``fog = 1``: meteorological visibility 3/β ≈ 40 m.
FOG_BETA = 0.075
FOG_COLOR = (0.74, 0.76, 0.79)
CLOUD_COLOR = (0.86, 0.87, 0.89)

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ.double())

_NOISE_CACHE: dict = {}


def noise_texture(height: int, width: int, kind: str, device=None, dtype=torch.float32) -> torch.Tensor:
    """A fixed fractal value-noise texture ``(height, width)`` in [0, 1], deterministic.

    ``kind`` is ``"cloud"`` (wide, horizontally stretched) or ``"foliage"`` (fine, dappled).
    """
    key = (height, width, kind, str(device), dtype)
    if key in _NOISE_CACHE:
        return _NOISE_CACHE[key]
    gen = torch.Generator().manual_seed({"cloud": 7, "foliage": 11}[kind])
    octaves = [(2, 6), (4, 12), (8, 24), (16, 48)] if kind == "cloud" else [(12, 36), (24, 72), (48, 144), (96, 288)]
    total = torch.zeros(1, 1, height, width, dtype=torch.float64)
    amp, norm = 1.0, 0.0
    for gh, gw in octaves:
        grid = torch.rand(1, 1, gh + 1, gw + 1, generator=gen, dtype=torch.float64)
        total += amp * F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
        norm += amp
        amp *= 0.55
    tex = total[0, 0] / norm
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    out = tex.to(device=device, dtype=dtype)
    _NOISE_CACHE[key] = out
    return out


def retexture_foliage(rgb: torch.Tensor, code: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Re-texture foliage pixels.

    Args:
        rgb: ``(P, 3)`` colours of the region's pixels.
        code: ``(P, 4)`` the foliage code of each pixel's image: hue (±1 = ±180°), saturation
            (chroma × (1 + s)), brightness (luma × (1 + 0.6 b)), pattern (dappling amplitude).
        pattern: ``(P,)`` the foliage noise texture at those pixels, in [0, 1].
    """
    m = _RGB2YIQ.to(rgb)
    yiq = rgb @ m.T
    angle = math.pi * code[:, 0]
    c, s = torch.cos(angle), torch.sin(angle)
    sat = 1.0 + code[:, 1]
    i = (c * yiq[:, 1] - s * yiq[:, 2]) * sat
    q = (s * yiq[:, 1] + c * yiq[:, 2]) * sat
    y = yiq[:, 0] * (1.0 + 0.6 * code[:, 2]) * (1.0 + 0.9 * code[:, 3] * (pattern - 0.5))
    return torch.stack([y, i, q], dim=1) @ _YIQ2RGB.to(rgb).T


def add_clouds(rgb: torch.Tensor, cover: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
    """Blend sky pixels ``(P, 3)`` towards cloud colour by ``cover (P,) × (0.2 + 0.8 texture)``."""
    alpha = (cover * (0.2 + 0.8 * texture)).unsqueeze(1)
    cloud = torch.as_tensor(CLOUD_COLOR, dtype=rgb.dtype, device=rgb.device)
    return rgb + alpha * (cloud - rgb)


def apply_fog(image: torch.Tensor, depth: torch.Tensor, fog: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
    """Atmospheric scattering on ``(B, H, W, 3)`` images with z-depth ``(B, H, W)`` (m).

    ``fog (B,)`` scales the extinction :data:`FOG_BETA`; ``airlight (B, 3)`` is the fog colour
    under the scene's light. Exactly the input where ``fog = 0``.
    """
    t = torch.exp(-(FOG_BETA * fog).view(-1, 1, 1) * depth).unsqueeze(-1)
    a = airlight.view(-1, 1, 1, 3)
    return torch.addcmul(a, image - a, t)


def fog_airlight(bg_gain: torch.Tensor) -> torch.Tensor:
    """Fog colour ``(B, 3)`` under the light: the neutral fog colour times the background gain."""
    return torch.as_tensor(FOG_COLOR, dtype=bg_gain.dtype, device=bg_gain.device) * bg_gain
