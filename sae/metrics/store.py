"""Stored detections: the raw output of ``sae eval``, so metrics can be recomputed without the detector.

``detections.npz`` (no pickle) holds, for every evaluated frame, its name, the detections
(boxes at the working size, scores, labels) and the ground truth (boxes, labels, KITTI
occlusion code, truncation), plus the working and source image sizes. ``kitti/`` holds the same
detections as KITTI result files (``label_2`` lines with a trailing score, boxes in the source
image's pixels) that any KITTI tool can score.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sae.data.records import DETECTION_CLASSES
from sae.io import atomic_path
from sae.metrics.detection import KITTI_DIFFICULTY, evaluate

DETECTIONS_FILE = "detections.npz"


def _cat(rows: list[torch.Tensor], shape: tuple, dtype) -> np.ndarray:
    arrays = [r.detach().cpu().numpy().reshape(-1, *shape).astype(dtype) for r in rows]
    return np.concatenate(arrays) if arrays else np.zeros((0, *shape), dtype)


def save_detections(
    path: str | os.PathLike,
    names: list[str],
    preds: list[dict],
    targets: list[dict],
    size: tuple[int, int],
    source_size: tuple[int, int] | None = None,
) -> Path:
    """Write ``detections.npz`` atomically; ``size``/``source_size`` are ``(height, width)``."""
    path = Path(path)
    if not (len(names) == len(preds) == len(targets)):
        raise ValueError("names, preds and targets must have one entry per frame")
    n_det = np.array([len(p["boxes"]) for p in preds], dtype=np.int64)
    n_gt = np.array([len(t["boxes"]) for t in targets], dtype=np.int64)

    def gt_field(key, dtype, default):
        return _cat([t[key] if key in t else torch.full((len(t["boxes"]),), default) for t in targets], (), dtype)

    arrays = {
        "names": np.array(names, dtype=str),
        "size": np.array(size, dtype=np.int64),
        "source_size": np.array(source_size or size, dtype=np.int64),
        "det_count": n_det,
        "det_boxes": _cat([p["boxes"] for p in preds], (4,), np.float32),
        "det_scores": _cat([p["scores"] for p in preds], (), np.float32),
        "det_labels": _cat([p["labels"] for p in preds], (), np.int64),
        "gt_count": n_gt,
        "gt_boxes": _cat([t["boxes"] for t in targets], (4,), np.float32),
        "gt_labels": _cat([t["labels"] for t in targets], (), np.int64),
        "gt_occlusion": gt_field("occlusion", np.int64, 0),
        "gt_truncation": gt_field("truncation", np.float32, 0.0),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def _detections_file(path: str | os.PathLike) -> Path:
    """``path``, or the ``detections.npz`` inside it when it is a folder."""
    path = Path(path)
    return path / DETECTIONS_FILE if path.is_dir() else path


def stored_names(path: str | os.PathLike) -> list[str] | None:
    """The frame names of a ``detections.npz`` (or the folder holding one), without loading its
    detections; None when there is no such file."""
    path = _detections_file(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return [str(n) for n in z["names"]]
    except Exception as exc:
        raise ValueError(f"{path}: not a readable detections file ({exc})") from exc


def load_detections(path: str | os.PathLike) -> dict:
    """``{"names", "preds", "targets", "size", "source_size"}`` from a ``detections.npz``
    (or the folder holding one); errors name the file."""
    path = _detections_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"stored detections not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except Exception as exc:
        raise ValueError(f"{path}: not a readable detections file ({exc})") from exc
    missing = {"names", "size", "det_count", "det_boxes", "gt_count", "gt_boxes"} - set(a)
    if missing:
        raise ValueError(f"{path}: missing arrays {sorted(missing)}")
    preds, targets = [], []
    d_off = np.concatenate([[0], np.cumsum(a["det_count"])])
    g_off = np.concatenate([[0], np.cumsum(a["gt_count"])])
    for i in range(len(a["names"])):
        d, g = slice(d_off[i], d_off[i + 1]), slice(g_off[i], g_off[i + 1])
        preds.append(
            {
                "boxes": torch.from_numpy(a["det_boxes"][d]),
                "scores": torch.from_numpy(a["det_scores"][d]),
                "labels": torch.from_numpy(a["det_labels"][d]),
            }
        )
        targets.append(
            {
                "boxes": torch.from_numpy(a["gt_boxes"][g]),
                "labels": torch.from_numpy(a["gt_labels"][g]),
                "occlusion": torch.from_numpy(a["gt_occlusion"][g]),
                "truncation": torch.from_numpy(a["gt_truncation"][g]),
            }
        )
    return {
        "names": [str(n) for n in a["names"]],
        "preds": preds,
        "targets": targets,
        "size": tuple(int(v) for v in a["size"]),
        "source_size": tuple(int(v) for v in a["source_size"]),
    }


def write_kitti_detections(
    folder: str | os.PathLike, names: list[str], preds: list[dict], size: tuple[int, int], source_size: tuple[int, int]
) -> Path:
    """One KITTI result file per frame (``label_2`` fields, unknown 3-D fields as KITTI's
    placeholders, then the score), boxes rescaled from ``size`` to ``source_size`` pixels.
    File names are the frame names with ``/`` replaced by ``_``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sy, sx = source_size[0] / size[0], source_size[1] / size[1]
    for name, p in zip(names, preds, strict=True):
        lines = []
        for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True):
            x1, y1, x2, y2 = (
                (box[0] + 0.5) * sx - 0.5,
                (box[1] + 0.5) * sy - 0.5,
                (box[2] + 0.5) * sx - 0.5,
                (box[3] + 0.5) * sy - 0.5,
            )
            lines.append(
                f"{DETECTION_CLASSES[int(label)]} -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
                f"-1 -1 -1 -1000 -1000 -1000 -10 {score:.4f}"
            )
        target = folder / (name.replace("/", "_") + ".txt")
        with atomic_path(target) as tmp:
            Path(tmp).write_text("".join(line + "\n" for line in lines))
    return folder


def metrics_all_levels(preds, targets, image_height: int, iou_thresholds: dict[int, float] | None = None) -> dict:
    """:func:`evaluate` at every KITTI difficulty level, keyed by level."""
    return {
        level: evaluate(preds, targets, iou_thresholds, difficulty=level, image_height=image_height)
        for level in KITTI_DIFFICULTY
    }


def format_metrics(levels: dict) -> str:
    """A Markdown table: one row per difficulty level, AP and recall per class and their means."""
    names = [c for c in DETECTION_CLASSES if any(c in r["per_class"] for r in levels.values())]
    head = "| difficulty | mAP | recall | " + " | ".join(f"{c} AP | {c} recall" for c in names) + " |"
    rows = [head, "|" + "---|" * (3 + 2 * len(names))]
    for level, r in levels.items():
        cells = []
        for c in names:
            v = r["per_class"].get(c)
            cells += [f"{v['AP']:.1f}", f"{v['recall']:.1f}"] if v else ["–", "–"]
        rows.append(f"| {level} | {r['mAP']:.1f} | {r['recall']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
