"""Detection metrics: recall and mAP per class at KITTI's IoU thresholds, via torchmetrics.

``MeanAveragePrecision`` (faster-coco-eval backend, COCO's 101-point interpolated AP) is run
once per class with that class's IoU threshold — Car 0.7, Pedestrian and Cyclist 0.5 as in
KITTI — on the detections and targets of that class; recall is its ``mar_100`` (recall with up
to 100 detections per image) at the same threshold. Overall numbers are the means over the
classes present in the targets. Nothing here matches boxes by hand.

KITTI's difficulty levels are honoured the way KITTI's own evaluation does: a ground-truth
object outside the level (too short, too occluded or too truncated) is *ignored* — it is not a
miss, and a detection on it is not a false positive (passed to COCO's matcher as a crowd
region) — and detections shorter than the level's minimum height are dropped. KITTI's minimum
heights are in pixels of its 375-row images; they are scaled to the evaluated image height.
"""

from __future__ import annotations

import torch

from sae.data.records import DETECTION_CLASSES

#: KITTI's IoU thresholds by detection class.
KITTI_IOU = {0: 0.7, 1: 0.5, 2: 0.5}
#: KITTI's difficulty levels: (minimum box height in px at 375 rows, maximum occlusion code,
#: maximum truncation). ``all`` keeps every annotated object.
KITTI_DIFFICULTY = {
    "easy": (40.0, 0, 0.15),
    "moderate": (25.0, 1, 0.30),
    "hard": (25.0, 2, 0.50),
    "all": (0.0, 3, 1.0),
}
#: Row count KITTI's minimum heights refer to.
KITTI_ROWS = 375


def ignored(target: dict, difficulty: str, image_height: int) -> torch.Tensor:
    """Boolean mask of the target's objects that ``difficulty`` ignores.

    ``target`` holds ``boxes`` and, where known, ``occlusion`` (KITTI code) and ``truncation``;
    objects without them are judged by height alone.
    """
    min_h, max_occ, max_trunc = _level(difficulty)
    boxes = target["boxes"].reshape(-1, 4)
    heights = boxes[:, 3] - boxes[:, 1] + 1
    out = heights < min_h * image_height / KITTI_ROWS
    if "occlusion" in target:
        out |= target["occlusion"].reshape(-1) > max_occ
    if "truncation" in target:
        out |= target["truncation"].reshape(-1) > max_trunc + 1e-6
    return out


def _level(difficulty: str):
    if difficulty not in KITTI_DIFFICULTY:
        raise ValueError(f"difficulty must be one of {', '.join(KITTI_DIFFICULTY)}, got {difficulty!r}")
    return KITTI_DIFFICULTY[difficulty]


def evaluate(
    preds: list[dict],
    targets: list[dict],
    iou_thresholds: dict[int, float] | None = None,
    classes=DETECTION_CLASSES,
    difficulty: str = "all",
    image_height: int = KITTI_ROWS,
) -> dict:
    """Recall (%) and AP (%) per class and their means.

    Args:
        preds: per image ``{"boxes" (K, 4) xyxy, "scores" (K,), "labels" (K,)}``.
        targets: per image ``{"boxes" (M, 4), "labels" (M,)}``, optionally ``occlusion`` (M,)
            and ``truncation`` (M,) for the difficulty levels.
        iou_thresholds: class index → IoU threshold (default :data:`KITTI_IOU`).
        difficulty: a key of :data:`KITTI_DIFFICULTY`; ``all`` counts every object.
        image_height: rows of the evaluated images (scales KITTI's minimum heights).

    Returns:
        ``{"recall": %, "mAP": %, "difficulty", "per_class": {name: {"recall", "AP", "objects",
        "iou"}}}`` where ``objects`` counts the objects the level does not ignore.
    """
    from torchmetrics.detection import MeanAveragePrecision

    thresholds = {**KITTI_IOU, **(iou_thresholds or {})}
    min_h = _level(difficulty)[0] * image_height / KITTI_ROWS
    ignore = [ignored(t, difficulty, image_height) for t in targets]
    per_class = {}
    for c, name in enumerate(classes):
        n_obj = sum(int(((t["labels"] == c) & ~ig).sum()) for t, ig in zip(targets, ignore, strict=True))
        if n_obj == 0:
            continue
        metric = MeanAveragePrecision(iou_type="bbox", iou_thresholds=[thresholds[c]], backend="faster_coco_eval")
        p_c, t_c = [], []
        for p, t, ig in zip(preds, targets, ignore, strict=True):
            boxes = p["boxes"].float().reshape(-1, 4)
            mp = (p["labels"] == c) & (boxes[:, 3] - boxes[:, 1] + 1 >= min_h)
            mt = t["labels"] == c
            p_c.append(
                {
                    "boxes": boxes[mp],
                    "scores": p["scores"][mp].float(),
                    "labels": torch.zeros(int(mp.sum()), dtype=torch.long),
                }
            )
            t_c.append(
                {
                    "boxes": t["boxes"][mt].float().reshape(-1, 4),
                    "labels": torch.zeros(int(mt.sum()), dtype=torch.long),
                    "iscrowd": ig[mt].long(),
                }
            )
        metric.update(p_c, t_c)
        r = metric.compute()
        ap = max(float(r["map"]), 0.0) * 100
        rec = max(float(r["mar_100"]), 0.0) * 100
        per_class[name] = {"recall": rec, "AP": ap, "objects": n_obj, "iou": thresholds[c]}
    if not per_class:
        return {"recall": float("nan"), "mAP": float("nan"), "difficulty": difficulty, "per_class": {}}
    return {
        "recall": sum(v["recall"] for v in per_class.values()) / len(per_class),
        "mAP": sum(v["AP"] for v in per_class.values()) / len(per_class),
        "difficulty": difficulty,
        "per_class": per_class,
    }
