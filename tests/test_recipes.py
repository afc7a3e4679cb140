"""The augmentation recipes: what each model starts from and trains on."""

import pytest

from sae.detectors.recipes import RECIPES, VALIDATION_SETS, lineage, recipe, training_data

BENIGN = [("finetune/vkitti2", 1.0), ("pretrain/kitti", 0.5)]
SETS = {"sae": "sets/sae/augment/vkitti2", "pixel": "sets/pixel/augment/kitti"}


def test_the_papers_seven_recipes_and_our_control():
    assert set(RECIPES) == {
        "baseline",
        "retrained-sae",
        "tuned-sae",
        "retrained-pixel",
        "tuned-pixel",
        "hybrid-sae-then-pixel",
        "hybrid-pixel-then-sae",
        "retrained-benign",
    }
    assert VALIDATION_SETS == ("benign", "sae", "pixel")


def test_retrained_models_continue_the_victim_on_benign_data_mixed_with_their_set():
    # the paper "incrementally (re)trained the benign SqueezeDet model": from the victim's weights
    for kind in ("sae", "pixel"):
        r = recipe(f"retrained-{kind}")
        assert lineage(r.name) == ["pretrain", "finetune", r.name]
        assert r.schedule == "retrain" and r.adversarial == kind
        assert training_data(r.name, BENIGN, SETS, 0.5) == [*BENIGN, (SETS[kind], 0.5)]


def test_the_control_retrains_the_victim_on_the_benign_mix_alone():
    r = recipe("retrained-benign")
    assert lineage(r.name) == ["pretrain", "finetune", r.name] and r.schedule == "retrain"
    assert training_data(r.name, BENIGN, SETS, 0.5) == BENIGN  # the same schedule, no adversarial set
    assert training_data(r.name, BENIGN, {}, 0.5) == BENIGN  # and it needs none


def test_tuned_models_start_from_the_victim_and_see_only_the_adversarial_set():
    for kind in ("sae", "pixel"):
        assert lineage(f"tuned-{kind}") == ["pretrain", "finetune", f"tuned-{kind}"]
        assert training_data(f"tuned-{kind}", BENIGN, SETS, 0.5) == [(SETS[kind], 1.0)]


def test_hybrids_tune_a_tuned_model_on_the_other_set():
    # Table 5's "Tuned (SAE)" is the pixel-robust model tuned on SAEs, and the reverse
    assert lineage("hybrid-pixel-then-sae") == ["pretrain", "finetune", "tuned-pixel", "hybrid-pixel-then-sae"]
    assert training_data("hybrid-pixel-then-sae", BENIGN, SETS, 0.5) == [(SETS["sae"], 1.0)]
    assert lineage("hybrid-sae-then-pixel")[-2] == "tuned-sae"
    assert training_data("hybrid-sae-then-pixel", BENIGN, SETS, 0.5) == [(SETS["pixel"], 1.0)]


def test_the_baseline_is_the_victim_itself_and_bad_names_are_refused():
    assert lineage("baseline") == ["pretrain", "finetune"]
    with pytest.raises(ValueError, match="trains nothing"):
        training_data("baseline", BENIGN, SETS, 0.5)
    with pytest.raises(KeyError, match="known: baseline"):
        recipe("retrained")
    with pytest.raises(KeyError, match="'pixel' augmentation set"):
        training_data("tuned-pixel", BENIGN, {"sae": "x"}, 0.5)
    with pytest.raises(ValueError, match="positive"):
        training_data("retrained-sae", BENIGN, SETS, 0.0)
