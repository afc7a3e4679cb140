"""Attacks on a victim detector: semantic (sFGSM, iterative sFGSM, sPGD, semantic C&W, random
search over Θ) and pixel (FGSM, PGD), all through :mod:`sae.attacks.core`.

Semantic attacks perturb θ of the editor α over any non-empty subset of the six parameters;
images are γ(α(scene, θ)) and the ground truth of every iterate comes from the renderer (a
moved or re-shaped car keeps a correct box). The objective is a chosen subset of the victim's
named loss terms — default its confidence term (SqueezeDet's ``confidence``, the paper's
choice; YOLOv3's ``objectness``) — untargeted, against that ground truth; any callable
``(raw, targets, images) -> (B,)`` can replace it. The victim is put in eval mode for the
attack and its mode restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sae.attacks.core import AttackResult, carlini_wagner, random_search, sign_gradient
from sae.constants import ball_multiple, default_steps
from sae.render.renderer import render
from sae.scene import editor
from sae.scene.editor import PAPER_EPS, EditorConfig, parse_combo
from sae.scene.ir import Scene

#: Semantic methods: the paper's sFGSM (1 step), iterative sFGSM (6 steps, best iterate), sPGD,
#: semantic C&W, and the random-search baseline.
SEMANTIC_METHODS = ("sfgsm", "isfgsm", "spgd", "cw", "random")
#: KITTI-scale minimum box height (px at 375 rows) of an object the objective counts.
MIN_TARGET_HEIGHT = 12.0


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """The model in eval mode, with frozen parameters, for the duration; restored afterwards."""
    was = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was)
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)


class LossTerms:
    """The default objective: the sum of some of the victim's named loss terms, per image."""

    def __init__(self, victim, terms: tuple[str, ...] | None = None):
        self.victim = victim
        self.terms = tuple(terms) if terms else (victim.confidence_term,)

    def __call__(self, raw: dict, targets: list[dict], images: torch.Tensor) -> torch.Tensor:
        values = self.victim.loss(raw, targets, reduction="none")
        unknown = set(self.terms) - set(values)
        if unknown:
            raise KeyError(f"the victim has no loss term(s) {sorted(unknown)}; it has {sorted(values)}")
        return sum(values[t] for t in self.terms)


def render_targets(scene: Scene, out, size: tuple[int, int], min_height: float = MIN_TARGET_HEIGHT) -> list[dict]:
    """Ground truth from a rendering: the box of every valid, visible object at least
    ``min_height`` px tall (KITTI scale), scaled to the detector's ``size``."""
    h0, w0 = scene.height, scene.width
    h, w = size
    min_px = min_height * h0 / 375
    targets = []
    for b in range(scene.batch_size):
        boxes = out.boxes[b].to(torch.float32)
        keep = scene.obj_valid[b] & (out.pixel_count[b] > 0) & (boxes[:, 3] - boxes[:, 1] + 1 >= min_px)
        bx = boxes[keep].clone()
        bx[:, 0::2] = (bx[:, 0::2] + 0.5) * (w / w0) - 0.5
        bx[:, 1::2] = (bx[:, 1::2] + 0.5) * (h / h0) - 0.5
        targets.append({"boxes": bx, "labels": scene.obj_class[b][keep].long()})
    return targets


@dataclass
class SemanticConfig:
    """One semantic attack.

    Attributes:
        combo: the parameters, e.g. ``"translate+rotate+mesh"``.
        method: one of :data:`SEMANTIC_METHODS`.
        eps: per-parameter ε (default: the paper's).
        steps: gradient steps (sFGSM: 1; the paper's iterative sFGSM: 6); for ``random``, the
            number of draws is ``steps`` so the query count matches the gradient attacks.
        radius: per-parameter ball radius in multiples of ε — sFGSM: 1; iterative sFGSM: the
            ball its ``steps`` steps can reach (``steps``); sPGD: 1 (the paper's B(θ0, ε)).
            sFGSM's one step always goes to its ball's surface (step = radius · ε), so
            ``method="sfgsm", radius=6`` is sFGSM at 6ε: the gradient's answer over the ball
            that iterative sFGSM and random search cover.
            None = those defaults.
        step_fraction: sPGD's step as a fraction of ε (1 = the paper's update equation).
        cw_c, cw_lr: semantic C&W's trade-off constant and Adam step (in units of ε).
        terms: loss terms of the objective (None = the victim's confidence term).
        min_target_height: objects shorter than this (px at 375 rows) are not targets.
        seed: random stream (random search, random start).
    """

    combo: str = "translate+rotate+mesh"
    method: str = "isfgsm"
    eps: dict[str, float] = field(default_factory=lambda: dict(PAPER_EPS))
    steps: int | None = None
    radius: float | None = None
    step_fraction: float = 0.25
    cw_c: float = 1.0
    cw_lr: float = 0.5
    terms: tuple[str, ...] | None = None
    min_target_height: float = MIN_TARGET_HEIGHT
    seed: int = 0

    def __post_init__(self):
        self.params = parse_combo(self.combo)
        if self.method not in SEMANTIC_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(SEMANTIC_METHODS)}")
        missing = [p for p in self.params if p not in self.eps]
        if missing:
            raise KeyError(f"no ε for {missing}")
        if self.steps is None:
            self.steps = default_steps(self.method)
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        if self.radius is not None and not self.radius > 0:
            raise ValueError(f"radius must be > 0 (a multiple of ε), got {self.radius}")

    @property
    def radius_mult(self) -> float:
        return ball_multiple(self.method, self.steps, self.radius)

    def ball(self) -> dict[str, float]:
        """Per-parameter radius of the ε-ball."""
        return {p: self.eps[p] * self.radius_mult for p in self.params}


def semantic_attack(
    victim,
    scenes: Scene,
    config: SemanticConfig,
    size: tuple[int, int] | None = None,
    objective: Callable | None = None,
    editor_config: EditorConfig = EditorConfig(),
    callback: Callable | None = None,
) -> AttackResult:
    """Attack a batch of scenes. Returns an :class:`AttackResult` whose ``params`` is θ* and
    whose ``aux`` holds the renderer's targets of the chosen images.

    Args:
        victim: a :class:`~sae.detectors.base.Detector`.
        scenes: the IR batch (β(x)).
        size: the detector's ``(height, width)``; images are resized to it when the IR's
            differs (default: the IR's).
        objective: ``(raw, targets, images) -> (B,)``; default :class:`LossTerms` of
            ``config.terms``.
        callback: ``callback(query, theta, images, loss)`` at every query.
    """
    size = tuple(size or (scenes.height, scenes.width))
    objective_fn = objective or LossTerms(victim, config.terms)
    ball = config.ball()
    eps = {p: config.eps[p] for p in config.params}

    def make(theta):
        edited = editor.apply(scenes, theta, editor_config)
        out = render(edited)
        images = out.image_chw
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return images, render_targets(edited, out, size, config.min_target_height)

    def obj(images, targets):
        return objective_fn(victim(images), targets, images)

    def project(theta):
        return editor.project(theta, scenes, ball, editor_config)

    init = editor.zero_theta(scenes, config.params)
    gen = torch.Generator().manual_seed(config.seed)
    with eval_mode(victim):
        if config.method == "sfgsm":  # one step to the ball's surface
            return sign_gradient(make, obj, init, ball, project, steps=config.steps, callback=callback)
        if config.method == "isfgsm":
            return sign_gradient(make, obj, init, eps, project, steps=config.steps, keep_best=True, callback=callback)
        if config.method == "spgd":
            step = {p: e * config.step_fraction for p, e in eps.items()}
            return sign_gradient(make, obj, init, step, project, steps=config.steps, callback=callback)
        if config.method == "cw":
            return carlini_wagner(
                make, obj, init, eps, project, steps=config.steps, c=config.cw_c, lr=config.cw_lr, callback=callback
            )
        return random_search(make, obj, init, ball, project, queries=config.steps + 1, generator=gen, callback=callback)


@dataclass
class PixelConfig:
    """Pixel FGSM (``steps=1``) or ℓ∞ PGD.

    Attributes:
        eps: ℓ∞ radius in [0, 1] pixel units.
        steps: 1 = FGSM (step = ε); more = PGD.
        step: PGD's step (default ``2.5 · eps / steps``, Madry et al.'s rule).
        random_start: PGD's uniform start in the ε-ball.
        terms: loss terms of the objective (None = the victim's confidence term).
    """

    eps: float = 8 / 255
    steps: int = 1
    step: float | None = None
    random_start: bool = False
    terms: tuple[str, ...] | None = None
    seed: int = 0

    def step_size(self) -> float:
        if self.step is not None:
            return self.step
        return self.eps if self.steps == 1 else 2.5 * self.eps / self.steps


def pixel_attack(
    victim,
    images: torch.Tensor,
    targets: list[dict],
    config: PixelConfig,
    objective: Callable | None = None,
    callback: Callable | None = None,
    size: tuple[int, int] | None = None,
) -> AttackResult:
    """FGSM / PGD on ``images`` ``(B, 3, H, W)`` in [0, 1] against ``targets``; ``params`` of the
    result is ``{"delta": δ}`` and its images are ``x + δ`` (in [0, 1]). With ``size`` (the
    detector's ``(height, width)``) differing from the images', δ lives at the images' size and
    the detector sees them resized."""
    objective_fn = objective or LossTerms(victim, config.terms)
    x0 = images.detach()
    size = tuple(size or x0.shape[-2:])

    def make(p):
        return (x0 + p["delta"]).clamp(0, 1), targets

    def obj(x, tg):
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return objective_fn(victim(x), tg, x)

    def project(p):
        d = p["delta"].clamp(-config.eps, config.eps)
        return {"delta": (x0 + d).clamp(0, 1) - x0}

    gen = torch.Generator().manual_seed(config.seed)
    start = {"delta": config.eps} if config.random_start else None
    with eval_mode(victim):
        return sign_gradient(
            make,
            obj,
            {"delta": torch.zeros_like(x0)},
            {"delta": config.step_size()},
            project,
            steps=config.steps,
            random_start=start,
            generator=gen,
            callback=callback,
        )


def physical_theta(
    theta: dict[str, torch.Tensor], scenes: Scene, editor_config: EditorConfig = EditorConfig()
) -> list[dict]:
    """θ in physical units, per example: mean |yaw| (degrees) and ground motion (metres) over
    the moved objects, mean |colour| change (RGB in [0, 1]), weather (fog, cloud, dusk, tint)
    and foliage (hue °, saturation, brightness, pattern) changes, and the FFD's largest offset
    in metres."""
    out = []
    valid = scenes.obj_valid
    for b in range(scenes.batch_size):
        row = {}
        n = valid[b]
        if "rotate" in theta:
            row["rotate_deg"] = float(
                (theta["rotate"][b][n].abs() * math.degrees(editor_config.rotate_unit_rad)).mean().nan_to_num()
            )
        if "translate" in theta:
            row["translate_m"] = float(
                (theta["translate"][b][n].norm(dim=-1) * editor_config.translate_unit_m).mean().nan_to_num()
            )
        if "color" in theta:
            row["color_rgb"] = float(theta["color"][b][n].abs().mean().nan_to_num())
        if "mesh" in theta:
            dims = scenes.obj_dims[b][n][:, [2, 0, 1]]  # KITTI (h, w, l) → the lattice's (length, height, width)
            metres = theta["mesh"][b][n].abs() * dims.unsqueeze(1)
            row["mesh_max_m"] = float(metres.amax()) if metres.numel() else 0.0
        if "weather" in theta:
            w = theta["weather"][b]
            row.update({"fog": float(w[0]), "cloud": float(w[1]), "dusk": float(w[2]), "tint": float(w[3])})
        if "foliage" in theta:
            f = theta["foliage"][b]
            row.update(
                {
                    "foliage_hue_deg": float(f[0] * 180),
                    "foliage_sat": float(f[1]),
                    "foliage_bright": float(f[2]),
                    "foliage_pattern": float(f[3]),
                }
            )
        out.append(row)
    return out
