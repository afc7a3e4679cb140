"""Metrics on hand-checked cases."""

import pytest
import torch

from sae.metrics.detection import evaluate


def _t(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}


def _p(boxes, scores, labels):
    d = _t(boxes, labels)
    d["scores"] = torch.tensor(scores, dtype=torch.float32)
    return d


def _shift_to_iou(box, iou):
    """The box shifted right so that its IoU with ``box`` is ``iou`` (same size)."""
    x1, y1, x2, y2 = box
    w = x2 - x1
    dx = w * (1 - iou) / (1 + iou)
    return [x1 + dx, y1, x2 + dx, y2]


def test_perfect_detections_score_100():
    targets = [_t([[10, 10, 60, 40], [100, 20, 120, 70]], [0, 1]), _t([[200, 10, 260, 80]], [2])]
    preds = [_p([[10, 10, 60, 40], [100, 20, 120, 70]], [0.9, 0.8], [0, 1]), _p([[200, 10, 260, 80]], [0.7], [2])]
    r = evaluate(preds, targets)
    assert r["mAP"] == pytest.approx(100) and r["recall"] == pytest.approx(100)
    assert set(r["per_class"]) == {"Car", "Pedestrian", "Cyclist"}


def test_car_needs_iou_0_7_pedestrian_0_5():
    car = [0.0, 0.0, 100.0, 50.0]
    r69 = evaluate([_p([_shift_to_iou(car, 0.69)], [0.9], [0])], [_t([car], [0])])
    r71 = evaluate([_p([_shift_to_iou(car, 0.71)], [0.9], [0])], [_t([car], [0])])
    assert r69["mAP"] == pytest.approx(0) and r69["recall"] == pytest.approx(0)
    assert r71["mAP"] == pytest.approx(100) and r71["recall"] == pytest.approx(100)
    ped = [0.0, 0.0, 20.0, 60.0]
    r = evaluate([_p([_shift_to_iou(ped, 0.55)], [0.9], [1])], [_t([ped], [1])])
    assert r["per_class"]["Pedestrian"]["AP"] == pytest.approx(100)


def test_a_missed_object_lowers_recall_by_its_share():
    targets = [_t([[0, 0, 50, 30], [100, 0, 150, 30], [200, 0, 250, 30], [300, 0, 350, 30]], [0, 0, 0, 0])]
    preds = [_p([[0, 0, 50, 30], [100, 0, 150, 30], [200, 0, 250, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    r = evaluate(preds, targets)
    assert r["recall"] == pytest.approx(75)
    # AP: precision 1 up to recall 0.75, nothing beyond → 76 of 101 recall points
    assert r["mAP"] == pytest.approx(100 * 76 / 101, abs=0.01)


def test_a_duplicate_detection_is_a_false_positive():
    targets = [_t([[0, 0, 50, 30], [100, 0, 150, 30]], [0, 0])]
    preds = [_p([[0, 0, 50, 30], [1, 0, 51, 30], [100, 0, 150, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    r = evaluate(preds, targets)
    assert r["recall"] == pytest.approx(100)
    # precision 1 up to recall 0.5 (51 points), then 2/3 up to recall 1 (50 points)
    assert r["mAP"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101, abs=0.01)


def test_wrong_class_is_not_a_detection():
    r = evaluate([_p([[0, 0, 50, 30]], [0.9], [1])], [_t([[0, 0, 50, 30]], [0])])
    assert r["per_class"]["Car"]["AP"] == pytest.approx(0)
