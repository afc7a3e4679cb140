"""KITTI object detection layout: ``training/image_2/NNNNNN.png`` + ``label_2/NNNNNN.txt``.

``label_2`` rows have 15 fields (16 with a ``score`` in results files)::

    type truncated occluded alpha left top right bottom height width length x y z rotation_y

written with 2 decimals as the ground truth is. ``calib/NNNNNN.txt`` holds the projection
matrices (``P2`` is the left colour camera's, from which the reader takes the intrinsics).
Errors name the file and line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from sae.data.records import Frame, ObjectAnnotation
from sae.data.vkitti import FormatError, _atomic_write_text, _read_image
from sae.io import atomic_path

KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")


def format_label(o: ObjectAnnotation) -> str:
    """One ``label_2`` line."""
    if o.label == "DontCare":
        left, top, right, bottom = o.box
        return f"DontCare -1 -1 -10 {left:.2f} {top:.2f} {right:.2f} {bottom:.2f} -1 -1 -1 -1000 -1000 -1000 -10"
    h, w, ln = o.dims
    x, y, z = o.location
    left, top, right, bottom = o.box
    return (
        f"{o.label} {o.truncation:.2f} {int(o.occlusion)} {o.alpha:.2f} {left:.2f} {top:.2f} {right:.2f} "
        f"{bottom:.2f} {h:.2f} {w:.2f} {ln:.2f} {x:.2f} {y:.2f} {z:.2f} {o.rotation_y:.2f}"
    )


def write_label(path: Path, objects: list[ObjectAnnotation]) -> None:
    _atomic_write_text(Path(path), "".join(format_label(o) + "\n" for o in objects))


def read_label(path: Path) -> list[ObjectAnnotation]:
    """Parse a ``label_2`` file; DontCare regions come back with ``label == "DontCare"``."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from exc
    out = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) not in (15, 16):
            raise FormatError(f"{path}:{number}: expected 15 fields (16 with a score), got {len(parts)}")
        if parts[0] not in KITTI_TYPES:
            raise FormatError(f"{path}:{number}: unknown type {parts[0]!r}")
        try:
            v = [float(p) for p in parts[1:15]]
        except ValueError as exc:
            raise FormatError(f"{path}:{number}: {exc}") from None
        trunc, occ, alpha, left, top, right, bottom, h, w, ln, x, y, z, ry = v
        out.append(
            ObjectAnnotation(
                track_id=-1,
                label=parts[0],
                box=(left, top, right, bottom),
                dims=(h, w, ln),
                location=(x, y, z),
                rotation_y=ry,
                alpha=alpha,
                truncation=trunc,
                occlusion=int(occ),
            )
        )
    return out


def write_calib(path: Path, K: np.ndarray) -> None:
    P = np.zeros((3, 4))
    P[:, :3] = K
    p_line = " ".join(f"{v:.12e}" for v in P.reshape(-1))
    eye = " ".join(f"{v:.12e}" for v in np.eye(3).reshape(-1))
    tr = " ".join(f"{v:.12e}" for v in np.eye(4)[:3].reshape(-1))
    text = (
        "".join(f"P{i}: {p_line}\n" for i in range(4)) + f"R0_rect: {eye}\nTr_velo_to_cam: {tr}\nTr_imu_to_velo: {tr}\n"
    )
    _atomic_write_text(Path(path), text)


def read_calib(path: Path) -> np.ndarray:
    """``K`` (3×3) from the ``P2`` line of a KITTI calib file."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("P2:"):
            vals = line.split()[1:]
            if len(vals) != 12:
                raise FormatError(f"{path}:{number}: P2 needs 12 values, got {len(vals)}")
            try:
                return np.array([float(v) for v in vals]).reshape(3, 4)[:, :3]
            except ValueError as exc:
                raise FormatError(f"{path}:{number}: {exc}") from None
    raise FormatError(f"{path}: no P2 line")


def write_frame(root: Path, index: int, frame: Frame) -> None:
    """Write ``training/{image_2,label_2,calib}/NNNNNN`` for one frame (atomically)."""
    root = Path(root) / "training"
    name = f"{index:06d}"
    with atomic_path(root / "image_2" / f"{name}.png") as tmp:
        Image.fromarray(frame.rgb).save(tmp, format="PNG")
    write_label(root / "label_2" / f"{name}.txt", frame.objects)
    write_calib(root / "calib" / f"{name}.txt", frame.K)


class KITTI:
    """A KITTI object ``training/`` folder (or its parent) as a list of frames."""

    def __init__(self, root: str | os.PathLike, default_K: np.ndarray | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"KITTI folder not found: {root}")
        self.root = root / "training" if (root / "training").is_dir() else root
        self.image_dir = self.root / "image_2"
        self.label_dir = self.root / "label_2"
        if not self.image_dir.is_dir() or not self.label_dir.is_dir():
            raise FormatError(f"{self.root}: expected image_2/ and label_2/ folders")
        images = {p.stem: p for p in self.image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg")}
        labels = {p.stem for p in self.label_dir.glob("*.txt")}
        missing = sorted(set(images) - labels)
        if missing:
            raise FormatError(f"{self.label_dir}: no label for image(s) {missing[:5]}")
        orphans = sorted(labels - set(images))
        if orphans:
            raise FormatError(
                f"{self.image_dir}: no image for label(s) {orphans[:5]} "
                f"({len(images)} images, {len(labels)} labels in {self.label_dir})"
            )
        self.names = sorted(images)
        self._images = images
        self.default_K = default_K

    def __len__(self) -> int:
        return len(self.names)

    def name(self, i: int) -> str:
        """The frame's name (its file stem)."""
        return self.names[i]

    def __getitem__(self, i: int) -> Frame:
        name = self.names[i]
        rgb = _read_image(self._images[name], "RGB")
        calib = self.root / "calib" / f"{name}.txt"
        if calib.is_file():
            K = read_calib(calib)
        elif self.default_K is not None:
            K = self.default_K
        else:
            raise FileNotFoundError(f"{calib}: missing (pass default_K for folders without calib)")
        return Frame(rgb=rgb, objects=read_label(self.label_dir / f"{name}.txt"), K=K, name=name)
