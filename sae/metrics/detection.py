"""Detection metrics: recall and mAP per class at KITTI's IoU thresholds, via torchmetrics.

``MeanAveragePrecision`` (faster-coco-eval backend, COCO's 101-point interpolated AP) is run
once per class with that class's IoU threshold — Car 0.7, Pedestrian and Cyclist 0.5 as in
KITTI — on the detections and targets of that class; recall is its ``mar_100`` (recall with up
to 100 detections per image) at the same threshold. Overall numbers are the means over the
classes present in the targets. Nothing here matches boxes by hand.
"""

from __future__ import annotations

import torch

from sae.data.records import DETECTION_CLASSES

#: KITTI's IoU thresholds by detection class.
KITTI_IOU = {0: 0.7, 1: 0.5, 2: 0.5}


def evaluate(
    preds: list[dict], targets: list[dict], iou_thresholds: dict[int, float] | None = None, classes=DETECTION_CLASSES
) -> dict:
    """Recall (%) and AP (%) per class and their means.

    Args:
        preds: per image ``{"boxes" (K, 4) xyxy, "scores" (K,), "labels" (K,)}``.
        targets: per image ``{"boxes" (M, 4), "labels" (M,)}``.
        iou_thresholds: class index → IoU threshold (default :data:`KITTI_IOU`).

    Returns:
        ``{"recall": %, "mAP": %, "per_class": {name: {"recall", "AP", "objects"}}}``.
    """
    from torchmetrics.detection import MeanAveragePrecision

    thresholds = iou_thresholds or KITTI_IOU
    per_class = {}
    for c, name in enumerate(classes):
        n_obj = sum(int((t["labels"] == c).sum()) for t in targets)
        if n_obj == 0:
            continue
        metric = MeanAveragePrecision(iou_type="bbox", iou_thresholds=[thresholds[c]], backend="faster_coco_eval")
        p_c, t_c = [], []
        for p, t in zip(preds, targets, strict=True):
            mp, mt = p["labels"] == c, t["labels"] == c
            p_c.append(
                {
                    "boxes": p["boxes"][mp].float().reshape(-1, 4),
                    "scores": p["scores"][mp].float(),
                    "labels": torch.zeros(int(mp.sum()), dtype=torch.long),
                }
            )
            t_c.append(
                {"boxes": t["boxes"][mt].float().reshape(-1, 4), "labels": torch.zeros(int(mt.sum()), dtype=torch.long)}
            )
        metric.update(p_c, t_c)
        r = metric.compute()
        ap = max(float(r["map"]), 0.0) * 100
        rec = max(float(r["mar_100"]), 0.0) * 100
        per_class[name] = {"recall": rec, "AP": ap, "objects": n_obj, "iou": thresholds[c]}
    if not per_class:
        return {"recall": float("nan"), "mAP": float("nan"), "per_class": {}}
    return {
        "recall": sum(v["recall"] for v in per_class.values()) / len(per_class),
        "mAP": sum(v["AP"] for v in per_class.values()) / len(per_class),
        "per_class": per_class,
    }
