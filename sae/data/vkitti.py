"""Virtual KITTI 2: the on-disk layout, written and read to the letter of the public format.

Layout under a root (``../shared/formats/vkitti2-kitti.md``)::

    SceneXX/<variation>/frames/rgb/Camera_<c>/rgb_%05d.jpg
    SceneXX/<variation>/frames/depth/Camera_<c>/depth_%05d.png                16-bit, cm
    SceneXX/<variation>/frames/classSegmentation/Camera_<c>/classgt_%05d.png   RGB, colors.txt
    SceneXX/<variation>/frames/instanceSegmentation/Camera_<c>/instancegt_%05d.png  P, trackID+1
    SceneXX/<variation>/{bbox,colors,extrinsic,info,intrinsic,pose}.txt

plus, for data this package generates, the exact IR of each frame at
``SceneXX/<variation>/frames/ir/Camera_<c>/ir_%05d.npz``. The reader accepts the merged layout
and the per-archive one (``vkitti_2.0.3_rgb/SceneXX/…``, ``vkitti_2.0.3_textgt/SceneXX/…``),
matches folder names case-insensitively and accepts CRLF line endings. Errors name the file and
the line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from sae.data.records import Frame, ObjectAnnotation
from sae.io import atomic_path, write_text

VARIATIONS = (
    "15-deg-left",
    "15-deg-right",
    "30-deg-left",
    "30-deg-right",
    "clone",
    "fog",
    "morning",
    "overcast",
    "rain",
    "sunset",
)
HEADERS = {
    "intrinsic": "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]",
    "extrinsic": "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1",
    "info": "trackID label model color",
    "bbox": "frame cameraID trackID left right top bottom number_pixels truncation_ratio occupancy_ratio isMoving",
    "pose": "frame cameraID trackID alpha width height length world_space_X world_space_Y world_space_Z "
    "rotation_world_space_y rotation_world_space_x rotation_world_space_z camera_space_X camera_space_Y "
    "camera_space_Z rotation_camera_space_y rotation_camera_space_x rotation_camera_space_z",
    "colors": "Category r g b",
}
#: ``colors.txt`` of Virtual KITTI 2, in file order.
COLORS = (
    ("Terrain", (210, 0, 200)),
    ("Sky", (90, 200, 255)),
    ("Tree", (0, 199, 0)),
    ("Vegetation", (90, 240, 0)),
    ("Building", (140, 140, 140)),
    ("Road", (100, 60, 100)),
    ("GuardRail", (250, 100, 255)),
    ("TrafficSign", (255, 255, 0)),
    ("TrafficLight", (200, 200, 0)),
    ("Pole", (255, 130, 0)),
    ("Misc", (80, 80, 80)),
    ("Truck", (160, 60, 60)),
    ("Car", (255, 127, 80)),
    ("Van", (0, 139, 139)),
    ("Undefined", (0, 0, 0)),
)
DEPTH_FAR_CM = 65535
_MODALITIES = {
    "rgb": ("rgb", "rgb_{:05d}.jpg"),
    "depth": ("depth", "depth_{:05d}.png"),
    "classSegmentation": ("classSegmentation", "classgt_{:05d}.png"),
    "instanceSegmentation": ("instanceSegmentation", "instancegt_{:05d}.png"),
    "ir": ("ir", "ir_{:05d}.npz"),
}


class FormatError(ValueError):
    """A file does not follow the format; the message names the file (and line)."""


# ------------------------------------------------------------------------------------------ text


def fmt(value) -> str:
    """A value as Virtual KITTI 2 prints it: up to 7 significant digits, no trailing zeros."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = f"{float(value):.7g}"
    if text == "-0":
        text = "0"
    return text


def _atomic_write_text(path: Path, text: str) -> None:
    write_text(path, text)


def write_table(path: Path, kind: str, rows: list[list]) -> None:
    """Write a ``textgt`` table (header + space-separated rows, LF endings) atomically."""
    lines = [HEADERS[kind]] + [" ".join(fmt(v) for v in row) for row in rows]
    _atomic_write_text(path, "\n".join(lines) + "\n")


def read_table(path: Path, kind: str) -> list[tuple[int, list[str]]]:
    """Rows of a ``textgt`` table as ``(line number, fields)``; checks the header and widths."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from exc
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines or lines[0].strip() != HEADERS[kind]:
        raise FormatError(f"{path}:1: expected header {HEADERS[kind]!r}, got {lines[0].strip() if lines else ''!r}")
    width = len(HEADERS[kind].split())
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != width:
            raise FormatError(f"{path}:{number}: expected {width} fields, got {len(parts)}")
        rows.append((number, parts))
    return rows


def _num(path: Path, line: int, text: str, kind=float):
    try:
        if kind is bool:
            if text in ("True", "1", "true"):
                return True
            if text in ("False", "0", "false"):
                return False
            raise ValueError(text)
        return kind(float(text)) if kind is int else kind(text)
    except ValueError:
        raise FormatError(f"{path}:{line}: not a {kind.__name__}: {text!r}") from None


# ------------------------------------------------------------------------------------------ writer


def frame_path(root: Path, scene: str, variation: str, modality: str, camera: int, index: int) -> Path:
    folder, pattern = _MODALITIES[modality]
    return Path(root) / scene / variation / "frames" / folder / f"Camera_{camera}" / pattern.format(index)


def _save_image(img: Image.Image, path: Path, **kwargs) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format=kwargs.pop("format"), **kwargs)


def class_colors(names: tuple[str, ...] = tuple(n for n, _ in COLORS)) -> np.ndarray:
    table = dict(COLORS)
    return np.array([table[n] for n in names], dtype=np.uint8)


def write_frame_images(
    root: Path, scene: str, variation: str, camera: int, index: int, frame: Frame, jpeg_quality: int = 95
) -> None:
    """Write one frame's rgb, depth, class and instance images (atomically, each)."""
    _save_image(
        Image.fromarray(frame.rgb),
        frame_path(root, scene, variation, "rgb", camera, index),
        format="JPEG",
        quality=jpeg_quality,
    )
    if frame.depth is not None:
        cm = np.clip(np.round(frame.depth.astype(np.float64) * 100.0), 0, DEPTH_FAR_CM).astype(np.uint16)
        _save_image(Image.fromarray(cm), frame_path(root, scene, variation, "depth", camera, index), format="PNG")
    if frame.classes is not None:
        rgb = class_colors(frame.class_names)[frame.classes]
        _save_image(
            Image.fromarray(rgb), frame_path(root, scene, variation, "classSegmentation", camera, index), format="PNG"
        )
    if frame.instance is not None:
        if frame.instance.max(initial=-1) > 254:
            raise ValueError(f"track id {frame.instance.max()} does not fit an 8-bit instance PNG")
        idx = Image.fromarray((frame.instance + 1).astype(np.uint8), mode="P")
        palette = np.random.default_rng(0).integers(0, 256, size=(256, 3), dtype=np.uint8)
        palette[0] = 0
        idx.putpalette(palette.reshape(-1).tolist())
        _save_image(idx, frame_path(root, scene, variation, "instanceSegmentation", camera, index), format="PNG")


def write_textgt(
    root: Path, scene: str, variation: str, frames: dict[tuple[int, int], Frame], info: dict[int, tuple[str, str, str]]
) -> None:
    """Write the six text files of one (scene, variation).

    Args:
        frames: ``(frame index, camera) → Frame`` (with ``extrinsic`` and annotated objects).
        info: ``trackID → (label, model, colour)`` for ``info.txt``.
    """
    folder = Path(root) / scene / variation
    intrinsic, extrinsic, bbox, pose = [], [], [], []
    for index, camera in sorted(frames):
        f = frames[(index, camera)]
        K = f.K
        intrinsic.append([index, camera, K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
        E = f.extrinsic if f.extrinsic is not None else np.eye(4)
        extrinsic.append([index, camera] + list(E.reshape(-1)))
        for o in sorted((o for o in f.objects if o.track_id >= 0), key=lambda o: o.track_id):
            left, top, right, bottom = (int(round(v)) for v in o.box)
            bbox.append(
                [
                    index,
                    camera,
                    o.track_id,
                    left,
                    right,
                    top,
                    bottom,
                    int(o.pixels),
                    o.truncation,
                    o.occupancy,
                    bool(o.moving),
                ]
            )
            h, w, ln = o.dims
            wl = o.world_location if o.world_location is not None else o.location
            wr = o.world_rotation if o.world_rotation is not None else (o.rotation_y, 0.0, 0.0)
            pose.append(
                [
                    index,
                    camera,
                    o.track_id,
                    o.alpha,
                    w,
                    h,
                    ln,
                    *wl,
                    *wr,
                    *o.location,
                    o.rotation_y,
                    *o.camera_rotation_xz,
                ]
            )
    write_table(folder / "intrinsic.txt", "intrinsic", intrinsic)
    write_table(folder / "extrinsic.txt", "extrinsic", extrinsic)
    write_table(folder / "bbox.txt", "bbox", bbox)
    write_table(folder / "pose.txt", "pose", pose)
    write_table(folder / "info.txt", "info", [[t, *info[t]] for t in sorted(info)])
    write_table(folder / "colors.txt", "colors", [[name, *rgb] for name, rgb in COLORS])


# ------------------------------------------------------------------------------------------ reader


def _ci_child(parent: Path, name: str) -> Path | None:
    """The child of ``parent`` whose name equals ``name`` ignoring case, or None."""
    exact = parent / name
    if exact.exists():
        return exact
    if not parent.is_dir():
        return None
    lower = name.lower()
    for child in parent.iterdir():
        if child.name.lower() == lower:
            return child
    return None


_SCENE = re.compile(r"^scene\d+$", re.IGNORECASE)


@dataclass(frozen=True)
class SequenceKey:
    scene: str
    variation: str


class VKITTI2:
    """A Virtual KITTI 2 folder (merged or per-archive layout) as a list of frames.

    Args:
        root: the folder.
        scenes / variations: restrict to these (case-insensitive names); default all found.
        cameras: camera ids to include (default ``(0,)``).
    """

    def __init__(self, root: str | os.PathLike, scenes=None, variations=None, cameras=(0,)):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Virtual KITTI 2 folder not found: {self.root}")
        self.cameras = tuple(cameras)
        self._bases = self._find_bases()
        if not self._bases:
            raise FormatError(f"{self.root}: no SceneXX folders found (merged or vkitti_2.0.3_<type>/SceneXX layout)")
        want_s = {s.lower() for s in scenes} if scenes else None
        want_v = {v.lower() for v in variations} if variations else None
        self.sequences: list[SequenceKey] = []
        for scene_dir in sorted({p.name for base in self._bases for p in base.iterdir() if _SCENE.match(p.name)}):
            if want_s and scene_dir.lower() not in want_s:
                continue
            vars_found = set()
            for base in self._bases:
                sd = _ci_child(base, scene_dir)
                if sd is not None and sd.is_dir():
                    vars_found |= {v.name for v in sd.iterdir() if v.is_dir()}
            for var in sorted(vars_found):
                if want_v and var.lower() not in want_v:
                    continue
                if self._textgt_dir(SequenceKey(scene_dir, var)) is not None:
                    self.sequences.append(SequenceKey(scene_dir, var))
        self.index: list[tuple[SequenceKey, int, int]] = []
        for key in self.sequences:
            frames = sorted({row[0] for row in self.intrinsics(key)})
            for camera in self.cameras:
                self.index += [(key, f, camera) for f in frames]

    # layout discovery
    def _find_bases(self) -> list[Path]:
        bases = []
        if any(_SCENE.match(p.name) for p in self.root.iterdir()):
            bases.append(self.root)
        for child in sorted(self.root.iterdir()):
            if (
                child.is_dir()
                and child.name.lower().startswith("vkitti_2")
                and any(_SCENE.match(p.name) for p in child.iterdir())
            ):
                bases.append(child)
        return bases

    def _seq_dirs(self, key: SequenceKey) -> list[Path]:
        out = []
        for base in self._bases:
            sd = _ci_child(base, key.scene)
            vd = _ci_child(sd, key.variation) if sd is not None else None
            if vd is not None:
                out.append(vd)
        return out

    def _textgt_dir(self, key: SequenceKey) -> Path | None:
        for d in self._seq_dirs(key):
            if _ci_child(d, "bbox.txt") is not None:
                return d
        return None

    def file(self, key: SequenceKey, modality: str, camera: int, index: int) -> Path:
        folder, pattern = _MODALITIES[modality]
        for d in self._seq_dirs(key):
            p = d
            for part in ("frames", folder, f"Camera_{camera}"):
                p = _ci_child(p, part) if p is not None else None
            if p is not None:
                f = _ci_child(p, pattern.format(index))
                if f is not None:
                    return f
        where = f"{key.scene}/{key.variation} Camera_{camera}"
        raise FileNotFoundError(f"{self.root}: missing {modality} file {pattern.format(index)} for {where}")

    def has(self, key: SequenceKey, modality: str, camera: int, index: int) -> bool:
        try:
            self.file(key, modality, camera, index)
            return True
        except FileNotFoundError:
            return False

    # text ground truth
    def _table(self, key: SequenceKey, kind: str):
        return _read_table_cached(self._textgt_dir(key), kind)

    def intrinsics(self, key: SequenceKey) -> list[tuple[int, int, np.ndarray]]:
        path, rows = self._table(key, "intrinsic")
        out = []
        for line, r in rows:
            fx, fy, cx, cy = (_num(path, line, v) for v in r[2:])
            out.append(
                (
                    _num(path, line, r[0], int),
                    _num(path, line, r[1], int),
                    np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64),
                )
            )
        return out

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Frame:
        key, index, camera = self.index[i]
        return self.read_frame(key, index, camera)

    def name(self, i: int) -> str:
        """The frame's name, ``SceneXX/variation/Camera_c/NNNNN``."""
        key, index, camera = self.index[i]
        return f"{key.scene}/{key.variation}/Camera_{camera}/{index:05d}"

    def read_frame(self, key: SequenceKey, index: int, camera: int = 0, dense: bool = True) -> Frame:
        """One frame with its images and annotations (``dense=False``: RGB and annotations only,
        no depth or segmentation maps — what a detector needs)."""
        K = next((k for f, c, k in self.intrinsics(key) if f == index and c == camera), None)
        if K is None:
            path, _ = self._table(key, "intrinsic")
            raise FormatError(f"{path}: no row for frame {index} camera {camera}")
        ext_path, ext_rows = self._table(key, "extrinsic")
        extrinsic = None
        for line, r in ext_rows:
            if _num(ext_path, line, r[0], int) == index and _num(ext_path, line, r[1], int) == camera:
                extrinsic = np.array([_num(ext_path, line, v) for v in r[2:]], dtype=np.float64).reshape(4, 4)
        rgb_path = self.file(key, "rgb", camera, index)
        rgb = _read_image(rgb_path, "RGB")
        h, w = rgb.shape[:2]
        depth = classes = instance = None
        names = tuple(n for n, _ in COLORS)
        if dense and self.has(key, "depth", camera, index):
            p = self.file(key, "depth", camera, index)
            depth = _read_image(p, None).astype(np.float32) / 100.0
            _check_size(p, depth, h, w)
        if dense and self.has(key, "classSegmentation", camera, index):
            p = self.file(key, "classSegmentation", camera, index)
            names, table = self.colors(key)
            classes = _colors_to_index(p, _read_image(p, "RGB"), table)
            _check_size(p, classes, h, w)
        if dense and self.has(key, "instanceSegmentation", camera, index):
            p = self.file(key, "instanceSegmentation", camera, index)
            instance = _read_image(p, "P").astype(np.int64) - 1
            _check_size(p, instance, h, w)
        objects = self.annotations(key, index, camera)
        name = f"{key.scene}/{key.variation}/Camera_{camera}/{index:05d}"
        return Frame(
            rgb=rgb,
            objects=objects,
            K=K,
            depth=depth,
            classes=classes,
            class_names=names,
            instance=instance,
            extrinsic=extrinsic,
            name=name,
            meta={"scene": key.scene, "variation": key.variation, "camera": camera, "frame": index},
        )

    def colors(self, key: SequenceKey) -> tuple[tuple[str, ...], np.ndarray]:
        d = self._textgt_dir(key)
        if _ci_child(d, "colors.txt") is None:
            return tuple(n for n, _ in COLORS), class_colors()
        path, rows = self._table(key, "colors")
        names = tuple(r[0] for _, r in rows)
        table = np.array([[_num(path, line, v, int) for v in r[1:]] for line, r in rows], dtype=np.int64)
        return names, table

    def info(self, key: SequenceKey) -> dict[int, tuple[str, str, str]]:
        path, rows = self._table(key, "info")
        return {_num(path, line, r[0], int): (r[1], r[2], r[3]) for line, r in rows}

    def annotations(self, key: SequenceKey, index: int, camera: int) -> list[ObjectAnnotation]:
        info = self.info(key)
        bpath, brows = self._table(key, "bbox")
        ppath, prows = self._table(key, "pose")
        boxes = {tuple(_num(bpath, line, v, int) for v in r[:3]): (line, r) for line, r in brows}
        poses = {tuple(_num(ppath, line, v, int) for v in r[:3]): (line, r) for line, r in prows}
        if set(boxes) != set(poses):
            extra = sorted(set(boxes) ^ set(poses))[:3]
            raise FormatError(f"{bpath} and {ppath}: rows differ, e.g. (frame, camera, track) {extra}")
        out = []
        for f, c, t in sorted(boxes):
            if f != index or c != camera:
                continue
            bl, b = boxes[(f, c, t)]
            pl, p = poses[(f, c, t)]
            if t not in info:
                raise FormatError(f"{bpath}:{bl}: trackID {t} is not in info.txt")
            label, model, colour = info[t]
            left, right, top, bottom = (_num(bpath, bl, v, int) for v in b[3:7])
            pv = [_num(ppath, pl, v) for v in p[3:]]
            alpha, width, height, length = pv[0:4]
            world, world_rot = tuple(pv[4:7]), tuple(pv[7:10])
            cam, ry, rx, rz = tuple(pv[10:13]), pv[13], pv[14], pv[15]
            occupancy = _num(bpath, bl, b[9])
            out.append(
                ObjectAnnotation(
                    track_id=t,
                    label=label,
                    box=(left, top, right, bottom),
                    dims=(height, width, length),
                    location=cam,
                    rotation_y=ry,
                    alpha=alpha,
                    truncation=_num(bpath, bl, b[8]),
                    occlusion=occlusion_code(occupancy),
                    occupancy=occupancy,
                    pixels=_num(bpath, bl, b[7], int),
                    moving=_num(bpath, bl, b[10], bool),
                    model=model,
                    color=colour,
                    world_location=world,
                    world_rotation=world_rot,
                    camera_rotation_xz=(rx, rz),
                )
            )
        return out

    def check(self) -> None:
        """Verify every sequence: frame counts of each modality match the text files — every
        frame of ``intrinsic.txt`` has its RGB image, and a dense modality (depth, segmentation,
        IR) that a sequence has at all it has for every frame."""
        for key in self.sequences:
            frames = sorted({f for f, c, _ in self.intrinsics(key)})
            for camera in self.cameras:
                for f in frames:
                    self.file(key, "rgb", camera, f)
                for modality in ("depth", "classSegmentation", "instanceSegmentation", "ir"):
                    have = [f for f in frames if self.has(key, modality, camera, f)]
                    if have and len(have) != len(frames):
                        missing = sorted(set(frames) - set(have))
                        pattern = _MODALITIES[modality][1]
                        names = ", ".join(pattern.format(f) for f in missing[:3]) + (" …" if len(missing) > 3 else "")
                        raise FormatError(
                            f"{self.root}: {key.scene}/{key.variation} Camera_{camera} has {len(have)} {modality} "
                            f"files for {len(frames)} frames; missing {names}"
                        )
            bpath, brows = self._table(key, "bbox")
            bad = sorted({_num(bpath, line, r[0], int) for line, r in brows} - set(frames))
            if bad:
                raise FormatError(f"{bpath}: frames {bad[:5]} have boxes but no intrinsic.txt row")


def _read_table_cached(folder: Path, kind: str):
    path = _ci_child(folder, f"{kind}.txt")
    if path is None:
        raise FileNotFoundError(f"{folder}: missing {kind}.txt")
    return path, _read_table_at(path, path.stat().st_mtime_ns, kind)


@lru_cache(maxsize=64)
def _read_table_at(path: Path, mtime_ns: int, kind: str):
    return read_table(path, kind)


def occlusion_code(occupancy: float) -> int:
    """KITTI ``occluded`` from a visible fraction: 0 ≥ 0.75 > 1 ≥ 0.35 > 2."""
    return 0 if occupancy >= 0.75 else (1 if occupancy >= 0.35 else 2)


def _read_image(path: Path, mode: str | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if mode == "P":
                if img.mode not in ("P", "L"):
                    raise FormatError(f"{path}: instance image must be indexed (P), got mode {img.mode}")
                return np.asarray(img)
            return np.asarray(img.convert(mode) if mode else img)
    except FormatError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable or truncated image ({exc})") from exc


def _check_size(path: Path, arr: np.ndarray, h: int, w: int) -> None:
    if arr.shape[:2] != (h, w):
        raise FormatError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the rgb frame's {w}x{h}")


def _colors_to_index(path: Path, rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], code)
    pos = np.clip(pos, 0, len(keys) - 1)
    found = keys[order][pos] == code
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise FormatError(f"{path}: pixel ({x}, {y}) has colour {tuple(rgb[y, x])} not listed in colors.txt")
    return order[pos]
