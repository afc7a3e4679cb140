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


def _td(boxes, labels, occlusion, truncation):
    d = _t(boxes, labels)
    d["occlusion"] = torch.tensor(occlusion)
    d["truncation"] = torch.tensor(truncation, dtype=torch.float32)
    return d


def test_difficulty_ignores_short_occluded_and_truncated_objects():
    # at 375 rows: a 30-px car (moderate), a 20-px car (too short for moderate), an occluded
    # (code 2) car, a 40%-truncated car; only the first is missed by the detector
    boxes = [[0, 0, 60, 29], [100, 0, 140, 19], [200, 0, 260, 49], [300, 0, 360, 49]]
    targets = [_td(boxes, [0, 0, 0, 0], [0, 0, 2, 0], [0.0, 0.0, 0.0, 0.4])]
    preds = [_p(boxes[1:], [0.9, 0.8, 0.7], [0, 0, 0])]
    moderate = evaluate(preds, targets, difficulty="moderate")
    # one object counts and it is missed; the three detections on ignored objects are not false positives
    assert moderate["per_class"]["Car"]["objects"] == 1 and moderate["recall"] == pytest.approx(0)
    hard = evaluate(preds, targets, difficulty="hard")  # occluded and 40%-truncated cars count now
    assert hard["per_class"]["Car"]["objects"] == 3 and hard["recall"] == pytest.approx(200 / 3)
    everything = evaluate(preds, targets, difficulty="all")
    assert everything["recall"] == pytest.approx(75)
    # KITTI's heights scale with the image: at 188 rows, 20 px is tall enough for "moderate"
    assert evaluate(preds, targets, difficulty="moderate", image_height=188)["per_class"]["Car"]["objects"] == 2


def test_difficulty_drops_short_detections_and_ignored_objects_are_no_false_positives():
    targets = [_td([[0, 0, 60, 49], [100, 0, 130, 9]], [0, 0], [0, 0], [0.0, 0.0])]
    # the found object, a detection on the 10-px (ignored) object scored higher, and a 10-px
    # false positive elsewhere: at "moderate" neither costs precision
    preds = [_p([[0, 0, 60, 49], [100, 0, 130, 9], [400, 0, 430, 9]], [0.5, 0.9, 0.95], [0, 0, 0])]
    assert evaluate(preds, targets, difficulty="moderate")["mAP"] == pytest.approx(100)
    assert evaluate(preds, targets, difficulty="all")["mAP"] < 80


def test_unknown_difficulty_is_named():
    with pytest.raises(ValueError, match="difficulty"):
        evaluate([_p([], [], [])], [_t([], [])], difficulty="medium")


def test_stored_detections_recompute_the_same_metrics(tmp_path):
    from sae.data.kitti import read_label
    from sae.metrics.store import load_detections, save_detections, write_kitti_detections

    boxes = [[0, 0, 60, 29], [100, 0, 140, 19], [200, 0, 260, 49]]
    targets = [_td(boxes, [0, 1, 2], [0, 1, 2], [0.0, 0.1, 0.2]), _td([], [], [], [])]
    preds = [_p(boxes[:2], [0.9, 0.4], [0, 1]), _p([[5, 5, 20, 30]], [0.3], [2])]
    save_detections(tmp_path / "d.npz", ["a/b", "c"], preds, targets, size=(188, 621), source_size=(375, 1242))
    stored = load_detections(tmp_path / "d.npz")
    assert stored["names"] == ["a/b", "c"] and stored["size"] == (188, 621)
    for level in ("all", "moderate", "hard"):
        assert evaluate(stored["preds"], stored["targets"], difficulty=level, image_height=188) == evaluate(
            preds, targets, difficulty=level, image_height=188
        )
    write_kitti_detections(tmp_path / "kitti", stored["names"], stored["preds"], (188, 621), (375, 1242))
    rows = read_label(tmp_path / "kitti" / "a_b.txt")
    assert [r.label for r in rows] == ["Car", "Pedestrian"]
    # boxes come back in the source image's pixels (pixel centres scale about -0.5)
    assert rows[0].box[2] == pytest.approx((60 + 0.5) * 1242 / 621 - 0.5, abs=0.01)
    assert rows[0].box[3] == pytest.approx((29 + 0.5) * 375 / 188 - 0.5, abs=0.01)
    assert (tmp_path / "kitti" / "c.txt").read_text().startswith("Cyclist ")


def test_a_corrupt_detections_file_is_named(tmp_path):
    from sae.metrics.store import load_detections

    bad = tmp_path / "detections.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="detections.npz"):
        load_detections(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_detections(tmp_path / "nothing.npz")


def test_direct_coco_evaluation_equals_torchmetrics_mean_average_precision():
    """Our direct faster-coco-eval call gives torchmetrics' map / mar_100 on random data: empty
    images, images without detections, crowd (ignored) objects, overlapping detections."""
    from torchmetrics.detection import MeanAveragePrecision

    from sae.metrics.detection import coco_ap_recall

    gen = torch.Generator().manual_seed(0)

    def boxes(n):
        xy = torch.rand(n, 2, generator=gen) * 200
        return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=gen) * 60], dim=1)

    for trial in range(6):
        preds, targets = [], []
        for image in range(8):
            gt = boxes(int(torch.randint(0, 5, (), generator=gen)))
            crowd = torch.rand(len(gt), generator=gen) < 0.2
            if len(gt):
                near = gt[torch.randint(0, len(gt), (int(torch.randint(0, 7, (), generator=gen)),), generator=gen)]
                det = torch.cat([near + torch.randn(near.shape, generator=gen) * 4, boxes(2)])
            else:
                det = boxes(1)
            if image == 3:
                det = det[:0]
            preds.append((det, torch.rand(len(det), generator=gen)))
            targets.append((gt, crowd))
        for iou in (0.5, 0.7):
            metric = MeanAveragePrecision(iou_type="bbox", iou_thresholds=[iou], backend="faster_coco_eval")
            metric.update(
                [{"boxes": b, "scores": s, "labels": torch.zeros(len(b), dtype=torch.long)} for b, s in preds],
                [
                    {"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long), "iscrowd": c.long()}
                    for b, c in targets
                ],
            )
            ref = metric.compute()
            ap, recall = coco_ap_recall(preds, targets, iou)
            assert ap == pytest.approx(max(float(ref["map"]), 0) * 100, abs=1e-4), (trial, iou)
            assert recall == pytest.approx(max(float(ref["mar_100"]), 0) * 100, abs=1e-4), (trial, iou)


def test_image_matches_reaccumulate_exactly_what_evaluate_gives_on_resampled_images():
    """The bootstrap's fast path: per-image matches accumulated for a multiset of images equal
    a full faster-coco-eval evaluation of those images, repeated (to 1e-9, summation order) — with three
    classes, occluded/short (ignored) objects, tied scores, an image of 130 detections (100 are
    kept), images without objects or without detections, and resamples that leave a class out."""
    import numpy as np

    from sae.metrics.detection import ImageMatches

    gen = torch.Generator().manual_seed(1)

    def boxes(n):
        xy = torch.rand(n, 2, generator=gen) * 300
        return torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=gen) * 70], dim=1)

    preds, targets = [], []
    for image in range(24):
        n = int(torch.randint(0, 6, (), generator=gen)) if image != 5 else 0
        gt = boxes(n)
        labels = torch.randint(0, 3, (n,), generator=gen) if image != 7 else torch.zeros(n, dtype=torch.long)
        near = (
            gt[torch.randint(0, max(n, 1), (int(torch.randint(0, 8, (), generator=gen)),), generator=gen)] if n else gt
        )
        det = torch.cat(
            [near + torch.randn(near.shape, generator=gen) * 5, boxes(int(torch.randint(0, 4, (), generator=gen)))]
        )
        if image == 9:
            det = torch.cat([det, boxes(130)])
        if image == 11:
            det = det[:0]
        scores = torch.rand(len(det), generator=gen)
        if image in (2, 3) and len(det):
            scores[:] = 0.5  # ties, also across images
        dl = torch.randint(0, 3, (len(det),), generator=gen)
        if n:
            dl[: len(near)] = labels[torch.randint(0, n, (len(near),), generator=gen)]
        preds.append({"boxes": det, "scores": scores, "labels": dl})
        targets.append(
            {
                "boxes": gt,
                "labels": labels,
                "occlusion": torch.randint(0, 3, (n,), generator=gen),
                "truncation": torch.rand(n, generator=gen) * 0.4,
            }
        )
    rng = np.random.default_rng(0)
    for difficulty in ("moderate", "all"):
        matches = ImageMatches(preds, targets, difficulty=difficulty, image_height=375)
        for trial in range(12):
            rows = np.arange(24) if trial == 0 else rng.integers(0, 24 if trial % 3 else 6, size=24)
            want = evaluate([preds[i] for i in rows], [targets[i] for i in rows], difficulty=difficulty)
            got = matches.metrics(rows)
            assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-9), (difficulty, trial)
            assert got["recall"] == pytest.approx(want["recall"], abs=1e-9), (difficulty, trial)
            assert set(got["per_class"]) == set(want["per_class"])
