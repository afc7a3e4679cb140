"""The claims table's statistics: bootstrap intervals over frames, paired and unpaired differences."""

import numpy as np
import pytest
import torch

from sae.claims import Bootstrap, Estimate, Evaluation, _sig, _verdict
from sae.metrics.store import save_detections

HEIGHT = 188


def _frames(n: int, seed: int = 0):
    """``n`` frames with two well-separated, tall Cars each (moderate difficulty keeps them)."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(n):
        x = torch.rand(2, generator=gen) * 200 + torch.tensor([0.0, 300.0])
        boxes = torch.stack([x, torch.full((2,), 40.0), x + 60, torch.full((2,), 120.0)], dim=1)
        targets.append({"boxes": boxes, "labels": torch.zeros(2, dtype=torch.long)})
    return targets


def _store(tmp_path, name, targets, found) -> Evaluation:
    """Stored detections that hit each target object where ``found[i][j]`` and miss it otherwise."""
    preds = []
    for t, f in zip(targets, found, strict=True):
        keep = torch.tensor(f, dtype=torch.bool)
        preds.append(
            {"boxes": t["boxes"][keep], "scores": torch.full((int(keep.sum()),), 0.9), "labels": t["labels"][keep]}
        )
    names = [f"Scene01/clone/Camera_0/{i:05d}" for i in range(len(targets))]
    save_detections(tmp_path / name / "detections.npz", names, preds, targets, (HEIGHT, 621))
    return Evaluation(tmp_path / name, "moderate")


def test_perfect_detections_have_a_degenerate_interval_at_100(tmp_path):
    targets = _frames(12)
    ev = _store(tmp_path, "perfect", targets, [[True, True]] * 12)
    est = Bootstrap(resamples=30).value(ev)
    assert (est.value, est.low, est.high) == (100.0, 100.0, 100.0)
    assert Bootstrap(resamples=30).value(ev, "recall").value == 100.0


def test_a_difference_with_itself_is_exactly_zero_when_paired(tmp_path):
    targets = _frames(16)
    found = [[i % 3 != 0, True] for i in range(16)]
    a = _store(tmp_path, "a", targets, found)
    b = _store(tmp_path, "b", targets, found)
    d = Bootstrap(resamples=40).difference(a, b)
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0)


def test_missing_half_the_objects_is_a_significant_drop(tmp_path):
    targets = _frames(20)
    benign = _store(tmp_path, "benign", targets, [[True, True]] * 20)
    attacked = _store(tmp_path, "attacked", targets, [[True, i % 2 == 0] for i in range(20)])
    bs = Bootstrap(resamples=60)
    d = bs.difference(attacked, benign, "recall")
    # 10 of 40 objects missed: recall 75 %, a drop of 25 points; every resample drops
    assert d.value == pytest.approx(-25.0) and d.below_zero and d.high < 0
    assert _sig(d, "below") is True and _sig(d, "above") is False
    v = bs.value(attacked, "recall")
    assert v.low <= 75.0 <= v.high and v.low < v.high


def test_intervals_repeat_with_the_seed_and_change_with_it(tmp_path):
    targets = _frames(20, seed=3)
    rng = np.random.default_rng(0)
    found = [[bool(rng.random() < 0.7), bool(rng.random() < 0.7)] for _ in range(20)]
    ev = _store(tmp_path, "x", targets, found)
    a, b = Bootstrap(resamples=50, seed=1).value(ev), Bootstrap(resamples=50, seed=1).value(ev)
    c = Bootstrap(resamples=50, seed=2).value(ev)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_evaluations_of_other_frames_are_resampled_independently(tmp_path):
    """A pixel set (KITTI names) against a benign set (VKITTI2 names): no pairs, still an interval."""
    targets = _frames(10)
    a = _store(tmp_path, "a", targets, [[True, True]] * 10)
    b = _store(tmp_path, "b", targets, [[True, i % 2 == 0] for i in range(10)])
    b.names = [f"{i:06d}" for i in range(10)]
    b._index = {n: i for i, n in enumerate(b.names)}
    d = Bootstrap(resamples=40).difference(a, b, "recall")
    assert d.value == pytest.approx(25.0) and d.low > 0


def test_verdicts():
    assert _verdict([True, True]) == "yes"
    assert _verdict([True, False]) == "partly" and _verdict([None, False]) == "partly"
    assert _verdict([False, False]) == "no"
    straddles = Estimate(-2.0, -5.0, 1.0)
    assert _sig(straddles, "below") is None and _sig(straddles, "above") is False
    assert straddles.text(True) == "-2.0 [-5.0, +1.0]"


def test_c1_quotes_the_headline_attacks_step_agreement(tmp_path):
    import json

    from sae.claims import _step_agreement

    attack = tmp_path / "attack"
    (attack / "eval").mkdir(parents=True)
    (attack / "summary.json").write_text(json.dumps({"step_agreement": {"rotate": 0.4937, "mesh": 1.0}}))
    text = _step_agreement(attack / "eval")
    assert "rotate 0.49, mesh 1.00" in text and "random walk" in text
    # a one-step attack (null) or a summary from before the diagnostic: nothing to quote
    (attack / "summary.json").write_text(json.dumps({"step_agreement": {"rotate": None}}))
    assert _step_agreement(attack / "eval") == ""
    (attack / "summary.json").write_text(json.dumps({"queries": 7}))
    assert _step_agreement(attack / "eval") == ""


def test_c7_is_judged_in_features_the_attacks_did_not_target():
    from sae.claims import fid_claim

    # a fid.json from before the views: the victim's features, as they were
    old = {"features": "detector:v.pt", "fid": {"sae": 0.5, "pixel": 2.0}}
    row = fid_claim(old, "squeezedet", "fid.json")
    assert row["holds"] == "no" and "squeezedet (the victim): sae 0.5, pixel 2" in row["ours"]
    # with a second view, the detector that was not attacked decides; both are quoted
    views = [
        {"detector": "squeezedet", "fid": {"sae": 0.5, "pixel": 2.0}},
        {"detector": "yolov3", "fid": {"sae": 0.3, "pixel": 0.1}},
    ]
    row = fid_claim({**old, "views": views}, "squeezedet", "fid.json")
    assert row["holds"] == "yes", row
    assert "squeezedet (the victim): sae 0.5" in row["ours"]
    assert "yolov3 (not attacked): sae 0.3, pixel 0.1" in row["ours"]
    views[1]["fid"] = {"sae": 0.05, "pixel": 0.1}
    assert fid_claim({**old, "views": views}, "squeezedet", "fid.json")["holds"] == "no"
    with pytest.raises(ValueError, match="fid.json: expected FIDs of the 'sae' and 'pixel' sets"):
        fid_claim({"views": [{"detector": "yolov3", "fid": {"sae": 1.0}}]}, "squeezedet", "fid.json")


def test_c3_needs_retrained_sae_to_beat_the_benign_only_control(tmp_path):
    """C3 on a hand-made layout: both SAE recipes recover the SAEs' missed half-objects and keep
    benign mAP. It holds only while the control, trained on benign frames alone, does not recover
    as much; without the control's folder it is judged on the recipes alone."""
    import shutil

    from sae.claims import Layout, c3_claim

    targets = _frames(30)
    layout = Layout(tmp_path, "squeezedet", "sfgsm", "translate+rotate+mesh", [])
    everything, half = [[True, True]] * 30, [[True, i % 2 == 0] for i in range(30)]

    def store(recipe, valset, found):
        return _store(tmp_path, f"eval/squeezedet/{recipe}/{valset}", targets, found)

    s_eval, b_eval = store("baseline", "sae", half), store("baseline", "benign", everything)
    for recipe in ("retrained-sae", "tuned-sae"):
        store(recipe, "sae", everything)
        store(recipe, "benign", everything)

    def row():
        return c3_claim(layout, lambda p: Evaluation(p, "moderate"), Bootstrap(resamples=40), s_eval, b_eval)

    store("retrained-benign", "benign", everything)
    store("retrained-benign", "sae", half)  # the control gains nothing on SAEs
    held = row()
    assert held["holds"] == "yes", held
    assert "retrained-benign (the control): on SAEs +0.0" in held["ours"]
    assert "beats the control" in held["criterion"]
    store("retrained-benign", "sae", everything)  # the control gains as much without an SAE
    assert row()["holds"] == "partly"
    shutil.rmtree(tmp_path / "eval/squeezedet/retrained-benign")
    alone = row()
    assert alone["holds"] == "yes" and "control" not in alone["ours"] and "control" not in alone["criterion"]
