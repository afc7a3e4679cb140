"""The intermediate representation (IR) of a batch of driving scenes.

A :class:`Scene` is a set of batched tensors (DESIGN §3): background layers, a KITTI-style
camera, padded objects with a validity mask, and global weather/foliage codes. It is what the
de-renderer β produces, what the editor α perturbs and what the renderer γ draws.

Conventions (KITTI camera coordinates): ``x`` right, ``y`` down, ``z`` forward, metres.
Object ``location`` is the bottom-face centre of its 3-D box, ``dims`` are ``(h, w, l)``,
``rotation_y`` is KITTI's yaw about the camera ``y`` axis (0 when the object's front faces +x).

Scenes serialise to a single ``.npz`` with ``allow_pickle=False`` (see :meth:`Scene.save`):
every tensor keeps its dtype and values bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from sae.io import atomic_path
from sae.scene.ffd import NUM_CONTROL

#: Semantic classes of the background map: Virtual KITTI 2's ``colors.txt`` categories in file
#: order, then ``Sidewalk`` (VKITTI2 folds it into ``Road``/``Misc`` when exporting),
#: ``Pedestrian`` and ``Cyclist``.
SEMANTIC_CLASSES = (
    "Terrain",
    "Sky",
    "Tree",
    "Vegetation",
    "Building",
    "Road",
    "GuardRail",
    "TrafficSign",
    "TrafficLight",
    "Pole",
    "Misc",
    "Truck",
    "Car",
    "Van",
    "Undefined",
    "Sidewalk",
    "Pedestrian",
    "Cyclist",
)
SEM = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
#: Regions the ``foliage`` parameter re-textures.
FOLIAGE_CLASSES = (SEM["Tree"], SEM["Vegetation"], SEM["Terrain"])

#: Weather code components, each in its range (see :data:`WEATHER_RANGE`); all zero = clear noon.
WEATHER_FIELDS = ("fog", "cloud", "dusk", "tint")
WEATHER_RANGE = ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (-1.0, 1.0))
#: Foliage code components, each in [-1, 1]; all zero = the scene's own vegetation.
FOLIAGE_FIELDS = ("hue", "saturation", "brightness", "pattern")
FOLIAGE_RANGE = ((-1.0, 1.0),) * 4

#: Depth (m) stored for the sky: Virtual KITTI 2's far plane.
FAR_DEPTH = 655.35

_FORMAT_VERSION = 1


@dataclass
class Scene:
    """A batch of ``B`` scenes at working resolution ``H × W`` with up to ``N`` objects each.

    Background:
        bg_color: ``(B, H, W, 3)`` float, linear RGB in [0, 1], lit as at clear noon.
        bg_depth: ``(B, H, W)`` float, z-depth in metres (:data:`FAR_DEPTH` for sky).
        bg_semantic: ``(B, H, W)`` int64 indices into :data:`SEMANTIC_CLASSES`.
    Camera:
        K: ``(B, 3, 3)`` pinhole intrinsics at the working resolution.
        ground: ``(B, 4)`` ground plane ``(n, d)`` with ``n·p + d = 0`` for ground points ``p``,
            ``n`` the unit up vector (``(0, -1, 0)`` for a level camera, ``d`` its height).
        sun_azimuth: ``(B,)`` rad, direction the sunlight comes from, about the camera ``y`` axis.
    Objects (padded to ``N``; ``obj_valid`` marks real ones):
        obj_valid: ``(B, N)`` bool.
        obj_class: ``(B, N)`` int64 :class:`~sae.scene.templates.ObjectClass`.
        obj_template: ``(B, N)`` int64 index into :func:`~sae.scene.templates.templates`.
        obj_dims: ``(B, N, 3)`` ``(h, w, l)`` metres.
        obj_location: ``(B, N, 3)`` bottom-face centre, camera coordinates, metres.
        obj_rotation_y: ``(B, N)`` rad.
        obj_ffd: ``(B, N, P, 3)`` FFD offsets in units of the object's size.
        obj_color: ``(B, N, 3)`` paint colour code, RGB in [0, 1].
        obj_track_id: ``(B, N)`` int64 identity (VKITTI ``trackID``), -1 for padding.
    Globals:
        weather: ``(B, 4)`` :data:`WEATHER_FIELDS`.
        foliage: ``(B, 4)`` :data:`FOLIAGE_FIELDS`.
    """

    bg_color: torch.Tensor
    bg_depth: torch.Tensor
    bg_semantic: torch.Tensor
    K: torch.Tensor
    ground: torch.Tensor
    sun_azimuth: torch.Tensor
    obj_valid: torch.Tensor
    obj_class: torch.Tensor
    obj_template: torch.Tensor
    obj_dims: torch.Tensor
    obj_location: torch.Tensor
    obj_rotation_y: torch.Tensor
    obj_ffd: torch.Tensor
    obj_color: torch.Tensor
    obj_track_id: torch.Tensor
    weather: torch.Tensor
    foliage: torch.Tensor

    # ---------------------------------------------------------------- shape and validation
    @property
    def batch_size(self) -> int:
        return self.bg_color.shape[0]

    @property
    def height(self) -> int:
        return self.bg_color.shape[1]

    @property
    def width(self) -> int:
        return self.bg_color.shape[2]

    @property
    def max_objects(self) -> int:
        return self.obj_valid.shape[1]

    @property
    def device(self) -> torch.device:
        return self.bg_color.device

    @property
    def dtype(self) -> torch.dtype:
        return self.bg_color.dtype

    def validate(self) -> Scene:
        """Check every field's shape and dtype; raise ``ValueError`` naming the field."""
        b, h, w, n = self.batch_size, self.height, self.width, self.max_objects
        expect = {
            "bg_color": (b, h, w, 3),
            "bg_depth": (b, h, w),
            "bg_semantic": (b, h, w),
            "K": (b, 3, 3),
            "ground": (b, 4),
            "sun_azimuth": (b,),
            "obj_valid": (b, n),
            "obj_class": (b, n),
            "obj_template": (b, n),
            "obj_dims": (b, n, 3),
            "obj_location": (b, n, 3),
            "obj_rotation_y": (b, n),
            "obj_ffd": (b, n, NUM_CONTROL, 3),
            "obj_color": (b, n, 3),
            "obj_track_id": (b, n),
            "weather": (b, len(WEATHER_FIELDS)),
            "foliage": (b, len(FOLIAGE_FIELDS)),
        }
        ints = {"bg_semantic", "obj_class", "obj_template", "obj_track_id"}
        for name, shape in expect.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"Scene.{name} must be a torch.Tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise ValueError(f"Scene.{name} has shape {tuple(t.shape)}, expected {shape}")
            if name == "obj_valid" and t.dtype != torch.bool:
                raise ValueError(f"Scene.{name} must be bool, got {t.dtype}")
            if name in ints and t.dtype != torch.int64:
                raise ValueError(f"Scene.{name} must be int64, got {t.dtype}")
            if name not in ints and name != "obj_valid" and not t.is_floating_point():
                raise ValueError(f"Scene.{name} must be floating point, got {t.dtype}")
        return self

    # ---------------------------------------------------------------- functional helpers
    def replace(self, **changes: torch.Tensor) -> Scene:
        """A new scene with some fields replaced (no copy of the others)."""
        return dataclasses.replace(self, **changes)

    def apply(self, fn) -> Scene:
        """Apply ``fn`` to every tensor field."""
        return Scene(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device=None, dtype: torch.dtype | None = None) -> Scene:
        """Move to ``device``; cast floating fields to ``dtype`` when given."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return self.apply(move)

    def detach(self) -> Scene:
        return self.apply(lambda t: t.detach())

    def clone(self) -> Scene:
        return self.apply(lambda t: t.clone())

    def __getitem__(self, index) -> Scene:
        """Select scenes along the batch axis (an int keeps the batch axis)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self.apply(lambda t: t[index])

    @staticmethod
    def cat(scenes: list[Scene]) -> Scene:
        """Concatenate along the batch axis, padding objects to the largest ``N``."""
        n = max(s.max_objects for s in scenes)
        padded = [s.pad_objects(n) for s in scenes]
        return Scene(**{f.name: torch.cat([getattr(s, f.name) for s in padded]) for f in fields(Scene)})

    def pad_objects(self, n: int) -> Scene:
        """Pad the object axis to ``n`` slots (invalid, zero, track id -1)."""
        extra = n - self.max_objects
        if extra < 0:
            raise ValueError(f"cannot pad {self.max_objects} objects down to {n}")
        if extra == 0:
            return self
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if f.name.startswith("obj_"):
                pad = torch.zeros((t.shape[0], extra) + tuple(t.shape[2:]), dtype=t.dtype, device=t.device)
                if f.name == "obj_track_id":
                    pad -= 1
                t = torch.cat([t, pad], dim=1)
            out[f.name] = t
        return Scene(**out)

    @staticmethod
    def from_objects(
        bg_color: torch.Tensor,
        bg_depth: torch.Tensor,
        bg_semantic: torch.Tensor,
        K: torch.Tensor,
        objects: list[dict],
        camera_height: float = 1.65,
        sun_azimuth: float = 0.8,
        max_objects: int | None = None,
    ) -> Scene:
        """A batch-of-one float64 scene from unbatched background layers ``(H, W, …)``, intrinsics
        ``(3, 3)`` and per-object dicts with keys ``class``, ``template``, ``dims`` (h, w, l),
        ``location``, ``rotation_y``, ``color`` and optionally ``track_id`` (default: the index)
        and ``valid`` (default True). Weather, foliage and FFD offsets start at zero; the ground
        is level at ``camera_height`` below the camera."""
        n = max_objects if max_objects is not None else max(1, len(objects))
        f64 = torch.float64
        fields_ = {
            "obj_valid": torch.zeros(1, n, dtype=torch.bool),
            "obj_class": torch.zeros(1, n, dtype=torch.int64),
            "obj_template": torch.zeros(1, n, dtype=torch.int64),
            "obj_dims": torch.zeros(1, n, 3, dtype=f64),
            "obj_location": torch.zeros(1, n, 3, dtype=f64),
            "obj_rotation_y": torch.zeros(1, n, dtype=f64),
            "obj_color": torch.zeros(1, n, 3, dtype=f64),
            "obj_track_id": torch.full((1, n), -1, dtype=torch.int64),
        }
        for i, o in enumerate(objects[:n]):
            fields_["obj_valid"][0, i] = bool(o.get("valid", True))
            fields_["obj_class"][0, i] = int(o["class"])
            fields_["obj_template"][0, i] = int(o["template"])
            fields_["obj_dims"][0, i] = torch.as_tensor(o["dims"], dtype=f64)
            fields_["obj_location"][0, i] = torch.as_tensor(o["location"], dtype=f64)
            fields_["obj_rotation_y"][0, i] = float(o["rotation_y"])
            fields_["obj_color"][0, i] = torch.as_tensor(o["color"], dtype=f64)
            fields_["obj_track_id"][0, i] = int(o.get("track_id", i))
        return Scene(
            bg_color=torch.as_tensor(bg_color, dtype=f64).unsqueeze(0),
            bg_depth=torch.as_tensor(bg_depth, dtype=f64).unsqueeze(0),
            bg_semantic=torch.as_tensor(bg_semantic, dtype=torch.int64).unsqueeze(0),
            K=torch.as_tensor(K, dtype=f64).unsqueeze(0),
            ground=torch.tensor([[0.0, -1.0, 0.0, camera_height]], dtype=f64),
            sun_azimuth=torch.tensor([sun_azimuth], dtype=f64),
            obj_ffd=torch.zeros(1, n, NUM_CONTROL, 3, dtype=f64),
            weather=torch.zeros(1, len(WEATHER_FIELDS), dtype=f64),
            foliage=torch.zeros(1, len(FOLIAGE_FIELDS), dtype=f64),
            **fields_,
        ).validate()

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the scene to ``path`` (``.npz``), atomically, without pickle."""
        path = Path(path)
        arrays = {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}
        meta = {"format": "sae-scene", "version": _FORMAT_VERSION}
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @staticmethod
    def load(path: str | os.PathLike, device=None) -> Scene:
        """Read a scene written by :meth:`save`; errors name the file and the field."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"scene file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # zipfile/np errors on a truncated or foreign file
            raise ValueError(f"{path}: not a readable scene file ({exc})") from exc
        meta_raw = arrays.pop("__meta__", None)
        if meta_raw is None:
            raise ValueError(f"{path}: not a sae scene file (no __meta__ entry)")
        meta = json.loads(bytes(meta_raw).decode())
        if meta.get("format") != "sae-scene" or meta.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported scene format {meta}")
        names = [f.name for f in fields(Scene)]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
        scene = Scene(**{n: torch.from_numpy(arrays[n]).to(device) for n in names})
        try:
            return scene.validate()
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
