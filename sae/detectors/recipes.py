"""The paper's augmentation recipes (§5.2, Appendix A): which weights each model starts from and
which data it trains on.

Every recipe is one ``sae train`` run over the fixed augmentation sets — SAEs (``sae``) and pixel
perturbations (``pixel``) made once against the fine-tuned victim from the fine-tuning split:

==========================  ==================  ==========================  ==========
recipe                      starts from         trains on                   schedule
==========================  ==================  ==========================  ==========
``baseline``                —                   — (the fine-tuned victim)   —
``retrained-sae``           fine-tuned          benign mix + SAEs           retrain
``tuned-sae``               fine-tuned          SAEs                        tune
``retrained-pixel``         fine-tuned          benign mix + pixel          retrain
``tuned-pixel``             fine-tuned          pixel                       tune
``hybrid-sae-then-pixel``   ``tuned-sae``       pixel                       tune
``hybrid-pixel-then-sae``   ``tuned-pixel``     SAEs                        tune
``retrained-benign``        fine-tuned          benign mix                  retrain
==========================  ==================  ==========================  ==========

The paper "incrementally (re)trained the benign SqueezeDet model" on 4792 benign + 1547 SAE images
for 24 000 iterations and tuned it for 6000 on the 1547 SAEs alone: both start from the benign
(fine-tuned) model, and differ in their data and length. Table 5 calls ``hybrid-pixel-then-sae``
"Tuned (SAE)" and ``hybrid-sae-then-pixel`` "Tuned (Pixel)".

``retrained-benign`` is ours, not the paper's: the retraining schedule on the benign mix alone, the
control that tells what retraining with an adversarial set gains from that set and what it gains
from training the victim further at all (the fixed sets were made against the victim's own
weights, so any change of them weakens the attack a little).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """One way of (re)training the victim.

    Attributes:
        name: the recipe's name (a workflow wildcard).
        init: where its weights start: ``"pretrain"``, ``"finetune"`` or another recipe's name;
            None for the baseline, which is the fine-tuned victim itself.
        adversarial: the augmentation set it trains on (``"sae"`` or ``"pixel"``), or None (the
            baseline, and the benign-only control).
        with_benign: train on the benign fine-tuning mix as well (retraining) or on the
            adversarial set alone (tuning).
        schedule: ``"retrain"`` or ``"tune"``: which schedule of the config it runs.
        label: the paper's name for it.
    """

    name: str
    init: str | None
    adversarial: str | None
    with_benign: bool
    schedule: str | None
    label: str


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("baseline", None, None, False, None, "Baseline"),
        Recipe("retrained-sae", "finetune", "sae", True, "retrain", "Retrained (SAE + Benign)"),
        Recipe("tuned-sae", "finetune", "sae", False, "tune", "Tuned (SAE)"),
        Recipe("retrained-pixel", "finetune", "pixel", True, "retrain", "Retrained (Pixel + Benign)"),
        Recipe("tuned-pixel", "finetune", "pixel", False, "tune", "Tuned (Pixel)"),
        Recipe("hybrid-sae-then-pixel", "tuned-sae", "pixel", False, "tune", "SAE-tuned, then Tuned (Pixel)"),
        Recipe("hybrid-pixel-then-sae", "tuned-pixel", "sae", False, "tune", "Pixel-tuned, then Tuned (SAE)"),
        Recipe("retrained-benign", "finetune", None, True, "retrain", "Retrained (benign only; ours, the control)"),
    )
}
#: The validation sets every model is evaluated on.
VALIDATION_SETS = ("benign", "sae", "pixel")


def recipe(name: str) -> Recipe:
    """The recipe called ``name``; the error lists the known ones."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def lineage(name: str) -> list[str]:
    """The chain of weights a recipe's model descends from, oldest first, e.g.
    ``["pretrain", "finetune", "tuned-pixel", "hybrid-pixel-then-sae"]`` (the baseline *is* the
    fine-tuned model: ``["pretrain", "finetune"]``)."""
    chain = ["finetune" if name == "baseline" else name]
    while (parent := _parent(chain[0])) is not None:
        if parent in chain:
            raise ValueError(f"recipe {name!r}: its initialisation chain loops ({' → '.join([parent, *chain])})")
        chain.insert(0, parent)
    return chain


def _parent(stage: str) -> str | None:
    if stage == "pretrain":
        return None
    return "pretrain" if stage == "finetune" else recipe(stage).init


def training_data(
    name: str, benign: list[tuple[str, float]], sets: dict[str, str], adversarial_weight: float
) -> list[tuple[str, float]]:
    """The ``(path, weight)`` mixture a recipe trains on: the benign mixture and the recipe's
    adversarial set (retraining), the set alone (tuning), or the benign mixture alone (the
    ``retrained-benign`` control, which needs no set).

    Args:
        benign: the benign fine-tuning mixture (what the victim was fine-tuned on).
        sets: ``{"sae": folder, "pixel": folder}`` of the augmentation sets.
        adversarial_weight: the adversarial set's sampling weight beside the benign mixture's
            weights (retraining only; a tuned model trains on the set alone).
    """
    r = recipe(name)
    if r.init is None:
        raise ValueError(f"recipe {name!r} trains nothing: it is the fine-tuned model itself")
    if r.adversarial is None:
        return list(benign)
    if r.adversarial not in sets:
        raise KeyError(f"recipe {name!r} needs the {r.adversarial!r} augmentation set")
    if adversarial_weight <= 0:
        raise ValueError(f"adversarial_weight must be positive, got {adversarial_weight}")
    adversarial = [(sets[r.adversarial], float(adversarial_weight) if r.with_benign else 1.0)]
    return [*benign, *adversarial] if r.with_benign else adversarial
