"""The renderer γ: IR → image, depth, instance masks and 2-D boxes, differentiable end to end.

Stages, each a small function with one job (PyTorch3D's rasteriser → shader → compositor
shape), passing named tensors:

0. the weather and foliage codes clamped to their ranges (:func:`feasible_codes`);
1. background: foliage re-texturing and clouds on their semantic regions, then the light's gain;
2. geometry: pose the templates (FFD, scale, yaw, location) and project them;
3. rasterisation: hard z-buffer per face screen box against the background depth (no grad);
4. shading: flat Lambert + ambient from the weather's sun, one normal per flat group of faces;
5. compositing: objects over the background, depth likewise;
6. fog from the composited depth (the background's cached with it, the objects' pixels fogged
   over it);
7. anti-aliasing along edges (positions' gradients), then clamp to [0, 1]. Stages 6–7 work on
   the objects' pixels and their neighbours only; the rest of the image is the background's.

:class:`RenderBackend` is the interface the attacks see; :class:`TorchRenderer` is the pure
PyTorch backend. Another backend (PyTorch3D, Mitsuba 3) only has to map a :class:`Scene` to a
:class:`RenderOutput`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from sae.render import effects
from sae.render.antialias import antialias
from sae.render.geometry import face_albedo, pack_meshes, pose_vertices, project
from sae.render.raster import NEAR_PLANE, Fragments, depth_planes, gather_rows, interpolate_depth, rasterize
from sae.render.shading import Lighting, face_normals, group_normals, lighting, shade_faces
from sae.scene.ir import FOLIAGE_CLASSES, FOLIAGE_RANGE, SEM, SEMANTIC_CLASSES, WEATHER_RANGE, Scene


@dataclass
class RenderOutput:
    """What γ returns for a batch of ``B`` scenes with ``N`` object slots at ``H × W``.

    Attributes:
        image: ``(B, H, W, 3)`` RGB in [0, 1] (differentiable).
        depth: ``(B, H, W)`` z-depth in metres (differentiable).
        instance: ``(B, H, W)`` int64 object slot ``n`` visible at each pixel, -1 for none.
        boxes: ``(B, N, 4)`` tight box ``(left, top, right, bottom)`` of each object's visible
            pixels, inclusive integer pixel coordinates; ``-1`` where nothing is visible.
        pixel_count: ``(B, N)`` int64 visible pixels per object.
        boxes_projected: ``(B, N, 4)`` box of the projected mesh, not clipped to the image
            (for truncation ratios); ``-1`` for invalid slots.
        face_map: ``(B, H, W)`` int64 visible packed face id, -1 for background.

    The labels (``instance``, ``boxes``, ``pixel_count``, ``boxes_projected``) are computed on
    first access from the rasteriser's output, so an attack's iterations, which read only the
    image, do not pay for them.
    """

    image: torch.Tensor
    depth: torch.Tensor
    face_map: torch.Tensor
    _make_labels: Callable[[], tuple] = field(repr=False)
    _labels: tuple | None = field(default=None, init=False, repr=False)

    def _label(self, i: int) -> torch.Tensor:
        if self._labels is None:
            self._labels = self._make_labels()
            self._make_labels = None  # free what the closure holds
        return self._labels[i]

    @property
    def instance(self) -> torch.Tensor:
        return self._label(0)

    @property
    def boxes(self) -> torch.Tensor:
        return self._label(1)

    @property
    def pixel_count(self) -> torch.Tensor:
        return self._label(2)

    @property
    def boxes_projected(self) -> torch.Tensor:
        return self._label(3)

    @property
    def image_chw(self) -> torch.Tensor:
        """``(B, 3, H, W)`` view of :attr:`image`, the layout detectors take."""
        return self.image.permute(0, 3, 1, 2)

    @property
    def visible(self) -> torch.Tensor:
        """``(B, N)`` bool: the object has at least one visible pixel."""
        return self.pixel_count > 0

    def masks(self) -> torch.Tensor:
        """``(B, N, H, W)`` bool instance masks."""
        n = self.boxes.shape[1]
        slots = torch.arange(n, device=self.instance.device).view(1, n, 1, 1)
        return self.instance.unsqueeze(1) == slots


class RenderBackend(Protocol):
    """Anything that renders a :class:`Scene` into a :class:`RenderOutput`."""

    name: str

    def __call__(self, scene: Scene) -> RenderOutput: ...


def shade_background(scene: Scene, light: Lighting) -> torch.Tensor:
    """Background colour ``(B, H·W, 3)``: foliage and clouds on their regions, then the light."""
    b, h, w = scene.batch_size, scene.height, scene.width
    flat = scene.bg_color.reshape(-1, 3)
    sem = scene.bg_semantic.reshape(-1)
    with torch.no_grad():
        foliage = torch.zeros(len(SEMANTIC_CLASSES), dtype=torch.bool, device=sem.device)
        foliage[list(FOLIAGE_CLASSES)] = True
        foliage_idx = torch.nonzero(foliage.index_select(0, sem)).squeeze(1)  # (a table: isin is 10× slower)
        sky_idx = torch.nonzero(sem == SEM["Sky"]).squeeze(1)
    idx, values = [], []
    if foliage_idx.numel():
        tex = effects.noise_texture(h, w, "foliage", scene.device, scene.dtype).reshape(-1)
        code = gather_rows(scene.foliage, foliage_idx // (h * w))
        idx.append(foliage_idx)
        values.append(
            effects.retexture_foliage(gather_rows(flat, foliage_idx), code, gather_rows(tex, foliage_idx % (h * w)))
        )
    if sky_idx.numel():
        tex = effects.noise_texture(h, w, "cloud", scene.device, scene.dtype).reshape(-1)
        cover = gather_rows(scene.weather[:, 1], sky_idx // (h * w))
        idx.append(sky_idx)
        values.append(effects.add_clouds(gather_rows(flat, sky_idx), cover, gather_rows(tex, sky_idx % (h * w))))
    if idx:
        flat = flat.index_copy(0, torch.cat(idx), torch.cat(values))
    return flat.reshape(b, h * w, 3) * light.bg_gain.unsqueeze(1)


def feasible_codes(scene: Scene) -> Scene:
    """The scene with its weather ``(B, 4)`` and foliage ``(B, 4)`` codes clamped to their ranges
    (:data:`~sae.scene.ir.WEATHER_RANGE`, :data:`~sae.scene.ir.FOLIAGE_RANGE`).

    The renderer draws a code only inside its range: a negative fog density would make the
    transmittance ``exp(−β·fog·depth)`` overflow at the sky's 655 m, and a code outside its range
    has no physical meaning. Values inside the ranges pass unchanged, bit for bit, with gradient 1
    (boundaries included, so an attack can leave clear weather); outside, the gradient is zero —
    Π keeps attacks inside anyway.
    """
    out = {}
    for name, ranges in (("weather", WEATHER_RANGE), ("foliage", FOLIAGE_RANGE)):
        code = getattr(scene, name)
        lo = torch.tensor([r[0] for r in ranges], dtype=code.dtype, device=code.device)
        hi = torch.tensor([r[1] for r in ranges], dtype=code.dtype, device=code.device)
        out[name] = torch.clamp(code, lo, hi)
    return scene.replace(**out)


class _BackgroundCache:
    """The last batch's lighting and shaded background (also fogged, and fogged and clamped),
    reused while their inputs are the same tensors, unchanged and outside autograd.

    An attack over geometry and colour queries γ again and again with the background, weather,
    foliage and sun untouched (the editor passes them on as the same tensor objects); shading a
    1242×375 background is a fifth of γ's forward time there. The key holds the input tensors
    themselves (so none can be freed and its memory reused by another) and their in-place version
    counters; the value is what the same computation gave, so a hit changes no bit. With grad
    enabled and any input requiring grad (an attack on weather or foliage), nothing is cached.
    """

    _FIELDS = ("bg_color", "bg_semantic", "bg_depth", "weather", "foliage", "sun_azimuth")

    def __init__(self):
        self.key: tuple | None = None
        self.inputs: tuple = ()
        self.value: tuple | None = None

    def _key(self, scene: Scene, inputs: tuple) -> tuple | None:
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            return None
        return (scene.height, scene.width, tuple(t._version for t in inputs))

    def get(self, scene: Scene):
        inputs = tuple(getattr(scene, f) for f in self._FIELDS)
        key = self._key(scene, inputs)
        if key is not None and key == self.key and all(a is b for a, b in zip(inputs, self.inputs, strict=True)):
            return self.value
        clamped = feasible_codes(scene)
        light = lighting(clamped.weather, clamped.sun_azimuth)
        background = shade_background(clamped, light)
        airlight = effects.fog_airlight(light.bg_gain)
        shaped = background.reshape(clamped.bg_depth.shape + (3,))
        fogged = effects.apply_fog(shaped, clamped.bg_depth, clamped.weather[:, 0], airlight)
        value = (light, background, airlight, fogged, fogged.clamp(0.0, 1.0))
        self.key, self.inputs, self.value = (key, inputs, value) if key is not None else (None, (), None)
        return value

    def clear(self) -> None:
        self.key, self.inputs, self.value = None, (), None


_BACKGROUND = _BackgroundCache()


def clear_background_cache() -> None:
    """Drop the background :class:`TorchRenderer` keeps from its last call (its memory)."""
    _BACKGROUND.clear()


class TorchRenderer:
    """The pure-PyTorch deferred renderer (CPU and CUDA, float32 and float64).

    It keeps the last batch's shaded background while the scene's background, weather, foliage
    and sun are the same unchanged tensors outside autograd (:class:`_BackgroundCache`:
    bit-identical, a fifth of the forward time of an attack on geometry);
    :func:`clear_background_cache` frees it.
    """

    name = "torch"

    def __call__(self, scene: Scene) -> RenderOutput:
        b, h, w, n = scene.batch_size, scene.height, scene.width, scene.max_objects
        light, background, airlight, fogged, fogged_clamped = _BACKGROUND.get(scene)
        scene = feasible_codes(scene)

        packed = pack_meshes(scene)
        verts = pose_vertices(scene, packed)
        vert_batch = packed.vert_obj // n
        screen = project(verts, gather_rows(scene.K, vert_batch))
        faces = packed.faces
        face_batch = packed.face_obj // n
        normals = face_normals(verts, faces)
        with torch.no_grad():
            centroid = gather_rows(verts, faces).mean(dim=1)
            nearest = gather_rows(screen[:, 2], faces).min(dim=1).values
            front = ((normals * centroid).sum(dim=1) < 0) & (nearest > NEAR_PLANE)
        frags = rasterize(screen.detach(), faces, face_batch, front, scene.bg_depth)

        shading_normals = group_normals(verts, faces, packed.face_group, packed.num_groups)
        colors = shade_faces(face_albedo(scene, packed), shading_normals, face_batch, light)
        planes = depth_planes(screen, faces)
        z = interpolate_depth(planes, frags, w, h)
        depth = scene.bg_depth.reshape(-1).index_copy(0, frags.pixels, z)
        # fog: the background's (cached with it) with the objects' pixels fogged over it, the
        # same arithmetic as effects.apply_fog on the composited image, element for element
        fog_beta = effects.FOG_BETA * scene.weather[:, 0]
        pixel_img = frags.pixels // (h * w)
        air_px = gather_rows(airlight, pixel_img)
        t_px = torch.exp(-gather_rows(fog_beta, pixel_img) * z).unsqueeze(-1)
        fogged_px = torch.addcmul(air_px, gather_rows(colors, frags.pixel_faces) - air_px, t_px)
        # Only the objects' pixels and their 4-neighbours can differ from the (fogged, clamped)
        # background, so the rest of γ works on those rows alone (`near`, sorted flat indices).
        with torch.no_grad():
            covered = frags.face_map >= 0
            around = covered.clone()
            around[:, :, 1:] |= covered[:, :, :-1]
            around[:, :, :-1] |= covered[:, :, 1:]
            around[:, 1:, :] |= covered[:, :-1, :]
            around[:, :-1, :] |= covered[:, 1:, :]
            near = torch.nonzero(around.reshape(-1)).squeeze(1)
            row_map = torch.cumsum(around.reshape(-1), 0) - 1  # row of each pixel of `near`

        def rows(idx: torch.Tensor) -> torch.Tensor:
            return row_map.index_select(0, idx)

        compact = fogged.reshape(-1, 3).index_select(0, near).index_copy(0, rows(frags.pixels), fogged_px)
        depth = depth.reshape(b, h, w)
        bg_flat, bg_depth = background.reshape(-1, 3), scene.bg_depth.reshape(-1)

        def background_at(idx: torch.Tensor) -> torch.Tensor:
            img = idx // (h * w)
            fog = gather_rows(scene.weather[:, 0], img)
            t = torch.exp(-effects.FOG_BETA * fog * gather_rows(bg_depth, idx)).unsqueeze(1)
            air = gather_rows(airlight, img)
            return air + (gather_rows(bg_flat, idx) - air) * t

        depth_flat = depth.reshape(-1)
        neg_beta = -effects.FOG_BETA * scene.weather[:, 0]

        def face_color_at(face_ids: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            img = idx // (h * w)
            air = gather_rows(airlight, img)
            t = torch.exp(gather_rows(neg_beta, img) * gather_rows(depth_flat, idx)).unsqueeze(1)
            return air + (gather_rows(colors, face_ids) - air) * t

        compact = antialias(
            compact,
            frags.face_map,
            depth,
            screen,
            faces,
            planes,
            packed.face_neighbours,
            front,
            face_color_at,
            background_at,
            rows,
        )
        image = fogged_clamped.reshape(-1, 3).index_copy(0, near, compact.clamp(0.0, 1.0)).reshape(b, h, w, 3)

        screen_d, face_obj, vert_obj = screen.detach(), packed.face_obj, packed.vert_obj

        def labels() -> tuple:
            instance, boxes, count = _instances(frags, face_obj, b, n, h, w)
            return instance, boxes, count, _projected_boxes(screen_d, vert_obj, b, n)

        return RenderOutput(image, depth, frags.face_map, labels)


@torch.no_grad()
def _instances(frags: Fragments, face_obj: torch.Tensor, b: int, n: int, h: int, w: int):
    obj = face_obj.index_select(0, frags.pixel_faces)  # flat b * N + n
    instance = torch.full((b * h * w,), -1, dtype=torch.int64, device=frags.pixels.device)
    instance[frags.pixels] = obj % n
    xs = frags.pixels % w
    ys = (frags.pixels // w) % h
    big = torch.iinfo(torch.int64).max
    lo_x = torch.full((b * n,), big, dtype=torch.int64, device=xs.device).scatter_reduce(0, obj, xs, "amin")
    lo_y = torch.full((b * n,), big, dtype=torch.int64, device=xs.device).scatter_reduce(0, obj, ys, "amin")
    hi_x = torch.full((b * n,), -1, dtype=torch.int64, device=xs.device).scatter_reduce(0, obj, xs, "amax")
    hi_y = torch.full((b * n,), -1, dtype=torch.int64, device=xs.device).scatter_reduce(0, obj, ys, "amax")
    count = torch.bincount(obj, minlength=b * n)
    boxes = torch.stack([lo_x, lo_y, hi_x, hi_y], dim=1).to(torch.float32)
    boxes[count == 0] = -1
    return instance.reshape(b, h, w), boxes.reshape(b, n, 4), count.reshape(b, n)


@torch.no_grad()
def _projected_boxes(screen: torch.Tensor, vert_obj: torch.Tensor, b: int, n: int) -> torch.Tensor:
    out = torch.full((b * n, 4), -1.0, dtype=screen.dtype, device=screen.device)
    if vert_obj.numel():
        inf = float("inf")
        u, v = screen[:, 0], screen[:, 1]
        lo_u = torch.full((b * n,), inf, dtype=screen.dtype, device=screen.device).scatter_reduce(
            0, vert_obj, u, "amin"
        )
        lo_v = torch.full((b * n,), inf, dtype=screen.dtype, device=screen.device).scatter_reduce(
            0, vert_obj, v, "amin"
        )
        hi_u = torch.full((b * n,), -inf, dtype=screen.dtype, device=screen.device).scatter_reduce(
            0, vert_obj, u, "amax"
        )
        hi_v = torch.full((b * n,), -inf, dtype=screen.dtype, device=screen.device).scatter_reduce(
            0, vert_obj, v, "amax"
        )
        present = torch.isfinite(lo_u)
        out[present] = torch.stack([lo_u, lo_v, hi_u, hi_v], dim=1)[present]
    return out.reshape(b, n, 4)


BACKENDS: dict[str, type] = {"torch": TorchRenderer}


def get_renderer(name: str = "torch") -> RenderBackend:
    """A renderer backend by name (``"torch"``)."""
    try:
        return BACKENDS[name]()
    except KeyError:
        raise KeyError(f"unknown renderer backend {name!r}; available: {', '.join(BACKENDS)}") from None


def render(scene: Scene) -> RenderOutput:
    """Render with the default backend."""
    return TorchRenderer()(scene)
