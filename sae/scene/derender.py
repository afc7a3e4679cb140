"""The de-renderer β: a real annotated frame → a scene IR that γ can re-render and α can edit.

From a :class:`~sae.data.records.Frame` (an image plus the data set's ground truth):

* **objects** from the annotations: a template chosen by class and ``info.txt`` model, the
  annotated dimensions, location and ``rotation_y``, and a paint colour estimated from the
  object's own pixels;
* **background** with the objects inpainted out (OpenCV, Telea), so that a moved or turned car
  reveals plausible road; its depth from the ground-truth depth map, inpainted likewise and kept
  behind the objects; its semantics from the class map, object pixels filled from the nearest
  background class;
* **camera** from the frame's intrinsics (scaled to the working size) and a ground plane at the
  objects' median bottom height.

A KITTI frame has boxes but no depth, class or instance maps: β then takes the objects' pixels
from their 2-D boxes, the depth from the ground plane (objects at their annotated distance) and
leaves the classes ``Undefined``.

Identity re-rendering γ(β(x)) differs from the photo x (our templates are not the real cars):
:func:`identity_report` measures by how much (PSNR, and the IoU of the re-rendered boxes with the
annotated ones).
"""

from __future__ import annotations

import numpy as np
import torch

from sae.data.records import Frame
from sae.scene.ir import FAR_DEPTH, SEM, Scene
from sae.scene.templates import ObjectClass, template_id

#: ``info.txt`` models → our templates; anything else by class (cars → sedan).
MODEL_TEMPLATES = {
    "sedan4door": "sedan",
    "sedan2door": "sedan",
    "hybrid": "sedan",
    "hatchback": "hatchback",
    "suv": "suv",
    "minivan": "suv",
    "renault_kangoo": "suv",
    "ford_f600_cargovan": "suv",
    "pedestrian": "pedestrian",
    "cyclist": "cyclist",
}
_CLASS_TEMPLATE = {ObjectClass.CAR: "sedan", ObjectClass.PEDESTRIAN: "pedestrian", ObjectClass.CYCLIST: "cyclist"}
#: Shading level a lit paint shows on average (to turn pixel colour back into paint).
_MEAN_SHADING = 0.85


def _semantic_index(frame: Frame) -> np.ndarray:
    """Frame classes → our :data:`~sae.scene.ir.SEMANTIC_CLASSES` indices (unknown → Misc)."""
    lookup = np.array([SEM.get(name, SEM["Misc"]) for name in frame.class_names], dtype=np.int64)
    return lookup[frame.classes]


def derender(frame: Frame, size: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32) -> Scene:
    """β: an IR of ``frame`` at ``size = (height, width)`` (default: the frame's own size)."""
    import cv2

    h0, w0 = frame.rgb.shape[:2]
    h, w = size if size is not None else (h0, w0)
    objects = [o for o in frame.objects if o.detection_class >= 0]
    frame = _complete(frame, objects)
    # Pixels of annotated objects, slightly grown so that their anti-aliased rims go too.
    object_mask = np.isin(frame.instance, [o.track_id for o in objects if o.track_id >= 0])
    grown = cv2.dilate(object_mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    mask8 = grown.astype(np.uint8) * 255
    rgb = cv2.inpaint(np.ascontiguousarray(frame.rgb), mask8, 5, cv2.INPAINT_TELEA)
    depth = np.ascontiguousarray(frame.depth.astype(np.float32))
    depth_bg = cv2.inpaint(depth, mask8, 5, cv2.INPAINT_TELEA)
    # keep the background behind the objects it replaces
    depth_bg = np.where(grown, np.maximum(depth_bg, depth + 0.5), depth)
    sem = _semantic_index(frame)
    if grown.any() and (~grown).any():
        _, labels = cv2.distanceTransformWithLabels(mask8, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        # label i ↔ the i-th zero pixel of the input in scan order
        zeros = np.flatnonzero(~grown.reshape(-1))
        sem = sem.reshape(-1)[zeros[labels.reshape(-1) - 1]].reshape(h0, w0)
    if (h, w) != (h0, w0):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        depth_bg = cv2.resize(depth_bg, (w, h), interpolation=cv2.INTER_NEAREST)
        sem = cv2.resize(sem.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    K = frame.K.astype(np.float64).copy()
    sx, sy = w / w0, h / h0
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5

    placed = []
    for o in objects:
        c = ObjectClass(o.detection_class)
        name = MODEL_TEMPLATES.get(o.model.lower(), _CLASS_TEMPLATE[c]) if c == ObjectClass.CAR else _CLASS_TEMPLATE[c]
        pixels = frame.rgb[frame.instance == o.track_id] if o.track_id >= 0 else np.zeros((0, 3))
        paint = np.clip(np.median(pixels, axis=0) / 255.0 / _MEAN_SHADING, 0, 1) if len(pixels) else (0.5,) * 3
        placed.append(
            {
                "class": int(c),
                "template": template_id(name),
                "dims": o.dims,
                "location": o.location,
                "rotation_y": o.rotation_y,
                "color": paint,
                "track_id": o.track_id,
            }
        )
    ground_y = float(np.median([o.location[1] for o in objects])) if objects else 1.65
    scene = Scene.from_objects(
        rgb.astype(np.float64) / 255.0,
        np.minimum(depth_bg, FAR_DEPTH).astype(np.float64),
        sem,
        K,
        placed,
        ground_y,
        0.8,
    )
    return scene.to(dtype=dtype).validate()


def _complete(frame: Frame, objects) -> Frame:
    """Fill what a KITTI frame lacks (it has boxes, but no depth, class or instance maps):
    instances from the 2-D boxes (nearer objects on top), depth from the ground plane below the
    horizon and far above it, classes ``Undefined`` (so no sky or foliage effects apply)."""
    import dataclasses

    h0, w0 = frame.rgb.shape[:2]
    changes = {}
    if frame.instance is None:
        instance = np.full((h0, w0), -1, dtype=np.int64)
        for k, o in sorted(enumerate(objects), key=lambda ko: -ko[1].location[2]):
            o.track_id = o.track_id if o.track_id >= 0 else k
            left, top, right, bottom = (int(round(v)) for v in o.box)
            instance[max(top, 0) : bottom + 1, max(left, 0) : right + 1] = o.track_id
        changes["instance"] = instance
    if frame.depth is None:
        fy, cy = frame.K[1, 1], frame.K[1, 2]
        height = float(np.median([o.location[1] for o in objects])) if objects else 1.65
        rows = (np.arange(h0, dtype=np.float64) - cy) / fy
        ground = np.where(rows > 1e-3, height / np.maximum(rows, 1e-3), FAR_DEPTH)
        depth = np.repeat(np.minimum(ground, FAR_DEPTH)[:, None], w0, axis=1).astype(np.float32)
        for o in objects:  # object pixels at the object's distance
            left, top, right, bottom = (int(round(v)) for v in o.box)
            depth[max(top, 0) : bottom + 1, max(left, 0) : right + 1] = o.location[2]
        changes["depth"] = depth
    if frame.classes is None:
        changes["class_names"] = ("Undefined",)
        changes["classes"] = np.zeros((h0, w0), dtype=np.int64)
    return dataclasses.replace(frame, **changes) if changes else frame


def box_iou(a, b) -> float:
    """IoU of inclusive pixel boxes ``(left, top, right, bottom)``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return float(inter / (area_a + area_b - inter))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def identity_report(frames, size: tuple[int, int] | None = None) -> dict:
    """How far γ(β(x)) is from x over ``frames``: mean PSNR, and the mean IoU of re-rendered boxes
    with the annotated ones (objects not truncated and at least 75 % visible)."""
    import cv2

    from sae.render.renderer import render

    psnrs, ious = [], []
    for frame in frames:
        scene = derender(frame, size)
        with torch.no_grad():
            out = render(scene)
        img = (out.image[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        h0, w0 = frame.rgb.shape[:2]
        ref = (
            frame.rgb
            if img.shape[:2] == (h0, w0)
            else cv2.resize(frame.rgb, img.shape[1::-1], interpolation=cv2.INTER_AREA)
        )
        psnrs.append(psnr(img, ref))
        sx, sy = img.shape[1] / w0, img.shape[0] / h0
        by_track = {int(scene.obj_track_id[0, n]): n for n in range(scene.max_objects) if scene.obj_valid[0, n]}
        for o in frame.objects:
            if o.detection_class < 0 or o.truncation > 0 or o.occupancy < 0.75 or o.track_id not in by_track:
                continue
            n = by_track[o.track_id]
            if out.pixel_count[0, n] == 0:
                ious.append(0.0)
                continue
            gt = (o.box[0] * sx, o.box[1] * sy, (o.box[2] + 1) * sx - 1, (o.box[3] + 1) * sy - 1)
            ious.append(box_iou(gt, out.boxes[0, n].tolist()))
    return {
        "frames": len(psnrs),
        "psnr_db": float(np.mean(psnrs)) if psnrs else float("nan"),
        "box_iou": float(np.mean(ious)) if ious else float("nan"),
        "boxes": len(ious),
    }


def write_report(report: dict, out, source: str = "") -> None:
    """Write :func:`identity_report`'s numbers as Markdown (``out``) and CSV (same stem)."""
    import csv
    import io
    from pathlib import Path

    from sae.data.vkitti import _atomic_write_text

    out = Path(out)
    rows = [
        ("frames", report["frames"]),
        ("PSNR (dB)", f"{report['psnr_db']:.2f}"),
        ("box IoU", f"{report['box_iou']:.3f}"),
        ("boxes", report["boxes"]),
    ]
    md = [f"# Identity re-rendering γ(β(x)) of {source}", "", "| measure | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in rows]
    _atomic_write_text(out, "\n".join(md) + "\n")
    buf = io.StringIO()
    csv.writer(buf).writerows([("measure", "value"), *rows])
    _atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
