"""Detection metrics: recall and mAP per class at KITTI's IoU thresholds, via faster-coco-eval.

COCO's evaluation (faster-coco-eval's ``COCOeval_faster``, 101-point interpolated AP — the
backend of torchmetrics' ``MeanAveragePrecision``, called directly because importing
torchmetrics costs every evaluation job seconds) is run once per class with that class's IoU
threshold — Car 0.7, Pedestrian and Cyclist 0.5 as in KITTI — on the detections and targets of
that class; AP is its precision averaged over the recall points and recall its recall with up to
100 detections per image (torchmetrics' ``map`` and ``mar_100``; a test checks that the two
agree). Overall numbers are the means over the classes present in the targets. Nothing here
matches boxes by hand; :class:`ImageMatches` keeps the library's per-image matches so that a
bootstrap over images re-accumulates them instead of re-running the evaluation.

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
    per_class = {}
    for name, iou, n_obj, p_c, t_c in _per_class(preds, targets, iou_thresholds, classes, difficulty, image_height):
        ap, rec = coco_ap_recall(p_c, t_c, iou)
        per_class[name] = {"recall": rec, "AP": ap, "objects": n_obj, "iou": iou}
    return {**_class_means(per_class), "difficulty": difficulty, "per_class": per_class}


def _class_means(per_class: dict) -> dict:
    """``{"recall", "mAP"}``: the means over the classes of ``per_class`` (NaN when empty)."""
    if not per_class:
        return {"recall": float("nan"), "mAP": float("nan")}
    return {
        "recall": sum(v["recall"] for v in per_class.values()) / len(per_class),
        "mAP": sum(v["AP"] for v in per_class.values()) / len(per_class),
    }


def _per_class(preds, targets, iou_thresholds, classes, difficulty, image_height):
    """Per class with objects at this level: ``(name, IoU threshold, objects, preds, targets)``,
    ``preds`` per image ``(boxes, scores)`` (detections below the level's height dropped),
    ``targets`` per image ``(boxes, ignored)``."""
    thresholds = {**KITTI_IOU, **(iou_thresholds or {})}
    min_h = _level(difficulty)[0] * image_height / KITTI_ROWS
    ignore = [ignored(t, difficulty, image_height) for t in targets]
    for c, name in enumerate(classes):
        n_obj = sum(int(((t["labels"] == c) & ~ig).sum()) for t, ig in zip(targets, ignore, strict=True))
        if n_obj == 0:
            continue
        p_c, t_c = [], []
        for p, t, ig in zip(preds, targets, ignore, strict=True):
            boxes = p["boxes"].float().reshape(-1, 4)
            mp = (p["labels"] == c) & (boxes[:, 3] - boxes[:, 1] + 1 >= min_h)
            mt = t["labels"] == c
            p_c.append((boxes[mp], p["scores"][mp].float()))
            t_c.append((t["boxes"][mt].float().reshape(-1, 4), ig[mt]))
        yield name, thresholds[c], n_obj, p_c, t_c


def _coco(preds, targets):
    """faster-coco-eval ground truth and detections (one category) of per-image lists."""
    from faster_coco_eval import COCO

    def xywh(b: torch.Tensor) -> list[list[float]]:
        b = b.double()
        return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1).tolist()

    images, annotations, detections = [], [], []
    for i, ((pb, ps), (tb, ti)) in enumerate(zip(preds, targets, strict=True)):
        images.append({"id": i + 1})
        for box, crowd in zip(xywh(tb), ti.tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(crowd),
                }
            )
        for box, score in zip(xywh(pb), ps.tolist(), strict=True):
            detections.append(
                {"id": len(detections) + 1, "image_id": i + 1, "category_id": 1, "bbox": box, "score": score}
            )
    for d in detections:
        d.update(area=d["bbox"][2] * d["bbox"][3], iscrowd=0)
    categories = [{"id": 1, "name": "object"}]
    gt = COCO({"images": images, "annotations": annotations, "categories": categories})
    dt = COCO({"images": images, "annotations": detections, "categories": categories})
    return gt, dt, annotations, detections


#: Detections kept per image (COCO's largest ``maxDets``).
_MAX_DETS = 100


def _coco_evaluated(preds, targets, iou: float, extra_calc: bool = False):
    """faster-coco-eval's evaluation of per-image lists at one IoU threshold, over the "all" area
    range with up to 100 detections per image (the only setting read here), evaluated and
    accumulated; ``extra_calc`` also keeps its list of matched detection/object pairs. Returns
    ``(COCOeval_faster, annotations, detections)``."""
    import numpy as np
    from faster_coco_eval import COCOeval_faster

    gt, dt, annotations, detections = _coco(preds, targets)
    ev = COCOeval_faster(gt, dt, iouType="bbox", print_function=lambda *a, **k: None, extra_calc=extra_calc)
    ev.params.iouThrs = np.array([iou], dtype=np.float64)
    ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0.0, 1e10]], ["all"], [_MAX_DETS]
    ev.evaluate()
    ev.accumulate()
    return ev, annotations, detections


def coco_ap_recall(preds, targets, iou: float) -> tuple[float, float]:
    """COCO AP and recall (%, at most 100 detections per image) of one class at one IoU threshold.

    Args:
        preds: per image ``(boxes (K, 4) xyxy, scores (K,))``.
        targets: per image ``(boxes (M, 4) xyxy, ignored (M,) bool)``; ignored objects are COCO
            crowd regions (a detection on one is neither a hit nor a false positive).
    """
    import numpy as np

    ev, _, _ = _coco_evaluated(preds, targets, iou)
    precision = np.asarray(ev.eval["precision"])[0, :, 0, 0, -1]  # recall points, all areas, 100 detections
    recall = float(np.asarray(ev.eval["recall"])[0, 0, 0, -1])
    ap = float(precision[precision > -1].mean()) if (precision > -1).any() else -1.0
    return max(ap, 0.0) * 100, max(recall, 0.0) * 100


class ImageMatches:
    """:func:`evaluate` on any multiset of a fixed list of images, without re-matching boxes.

    faster-coco-eval matches each class's detections to its ground truth once (its
    ``extra_calc`` match list; KITTI's IoU thresholds, the level's ignored objects as crowd
    regions, the "all" area range, 100 detections per image). Each image keeps its detections'
    scores, whether each matched an object and whether that object is ignored, and its count of
    counted objects; :meth:`metrics` then accumulates COCO's way (detections of the chosen
    images in their order, a stable sort by score, cumulative true and false positives,
    monotone precision read at the 101 recall points). Because matching is per image, that is
    exactly what :func:`evaluate` returns on the repeated images (a test checks equality) — the
    bootstrap over frames costs milliseconds per resample instead of a COCO evaluation.
    """

    def __init__(
        self,
        preds: list[dict],
        targets: list[dict],
        iou_thresholds: dict[int, float] | None = None,
        classes=DETECTION_CLASSES,
        difficulty: str = "all",
        image_height: int = KITTI_ROWS,
    ):
        import numpy as np

        self.difficulty, self.images = difficulty, len(preds)
        self.classes = {}
        self.recall_points = None  # the library's own (101 points; a last-ulp difference moves AP)
        for name, iou, _n, p_c, t_c in _per_class(preds, targets, iou_thresholds, classes, difficulty, image_height):
            ev, annotations, detections = _coco_evaluated(p_c, t_c, iou, extra_calc=True)
            self.recall_points = np.asarray(ev.params.recThrs, dtype=np.float64)
            crowd = {a["id"]: bool(a["iscrowd"]) for a in annotations}
            matched = {}
            for pair in ev.eval["matched"]:
                d, g = pair.split("_", 1)
                matched[int(d)] = int(g)
            scores = [[] for _ in range(self.images)]
            hit = [[] for _ in range(self.images)]
            skip = [[] for _ in range(self.images)]
            for d in detections:
                i, g = d["image_id"] - 1, matched.get(d["id"])
                scores[i].append(d["score"])
                hit[i].append(g is not None)
                skip[i].append(g is not None and crowd[g])
            per_image = []
            for i in range(self.images):
                sc = np.asarray(scores[i], dtype=np.float64)
                order = np.argsort(-sc, kind="mergesort")[:_MAX_DETS]
                per_image.append((sc[order], np.asarray(hit[i], bool)[order], np.asarray(skip[i], bool)[order]))
            counted = np.zeros(self.images, dtype=np.int64)
            for a in annotations:
                counted[a["image_id"] - 1] += not a["iscrowd"]
            self.classes[name] = (per_image, counted)

    def metrics(self, rows=None) -> dict:
        """``{"recall", "mAP", "per_class": {name: {"recall", "AP"}}}`` (%) over the images
        ``rows`` (indices, repeats allowed; None = all), as :func:`evaluate` gives them."""
        import numpy as np

        rows = np.arange(self.images) if rows is None else np.asarray(rows, dtype=np.int64)
        per_class = {}
        for name, (per_image, counted) in self.classes.items():
            positives = int(counted[rows].sum())
            if positives == 0:
                continue
            scores = np.concatenate([per_image[r][0] for r in rows])
            order = np.argsort(-scores, kind="mergesort")
            hit = np.concatenate([per_image[r][1] for r in rows])[order]
            skip = np.concatenate([per_image[r][2] for r in rows])[order]
            tp = np.cumsum(hit & ~skip).astype(np.float64)
            fp = np.cumsum(~hit & ~skip).astype(np.float64)
            if len(tp):
                rc = tp / positives
                pr = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[::-1])[::-1]
                at = np.searchsorted(rc, self.recall_points, side="left")
                q = np.where(at < len(pr), pr[np.minimum(at, len(pr) - 1)], 0.0)
                ap, rec = float(q.mean()) * 100, float(rc[-1]) * 100
            else:
                ap = rec = 0.0
            per_class[name] = {"recall": rec, "AP": ap}
        return {**_class_means(per_class), "per_class": per_class}
