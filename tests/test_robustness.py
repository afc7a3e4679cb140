"""Attacks never produce NaN or Inf: random θ of every parameter family, then degenerate scenes.

The sweep draws θ of one family at a time with log-uniform magnitudes over six decades (far
outside any ε-ball: colours of ±1000, yaws of ±1000 π, moves of ±10 km, FFD offsets of a
thousand object sizes), renders γ(α(s, θ)), computes a tiny SqueezeDet's loss terms against
the renderer's own targets and back-propagates to θ; then it does the same with Π(θ). Every
rendered pixel and depth, every loss term and every gradient element must be finite. Scenes
are tiny (16×48) and batched so that thousands of draws fit in seconds; the full count (10 000
per family) is marked ``slow``.
"""

from __future__ import annotations

import time

import pytest
import torch
from scenes import one_object_scene

from sae.attacks.semantic import SemanticConfig, render_targets, semantic_attack
from sae.data.street import street_scene
from sae.detectors.squeezedet import SqueezeDet, SqueezeDetConfig
from sae.render.renderer import render
from sae.scene import editor
from sae.scene.ir import Scene

H, W = 16, 48
#: Magnitudes of the raw draws, in the parameters' units: log-uniform over [10^LOG_MIN, 10^LOG_MAX].
LOG_MIN, LOG_MAX = -3.0, 3.0
#: Π's ball in the sweep: the reach of the paper's 6-step iterative sFGSM.
BALL = {k: 6 * v for k, v in editor.PAPER_EPS.items()}
#: Draws per family of the always-run sweep (the ``slow`` one makes 10 000).
ALWAYS_DRAWS = 64


def _victim(h: int = H, w: int = W) -> SqueezeDet:
    torch.manual_seed(0)
    det = SqueezeDet(SqueezeDetConfig(image_size=(h, w), width=0.125, dropout=0.0)).eval()
    for p in det.parameters():
        p.requires_grad_(False)
    return det


def _scenes(batch: int) -> Scene:
    """``batch`` tiny streets (road, buildings, trees, sky), each with one object: a car, a
    pedestrian or a cyclist in turn (nine streets, repeated)."""
    base = [
        street_scene(
            seed=s, height=H, width=W, n_cars=int(s % 3 == 0), n_pedestrians=int(s % 3 == 1), n_cyclists=int(s % 3 == 2)
        )
        for s in range(9)
    ]
    return Scene.cat([base[i % len(base)] for i in range(batch)])


def _draw(shape, gen: torch.Generator, dtype) -> torch.Tensor:
    """Random signs times log-uniform magnitudes in [10^LOG_MIN, 10^LOG_MAX]."""
    mag = 10.0 ** (LOG_MIN + (LOG_MAX - LOG_MIN) * torch.rand(shape, generator=gen, dtype=torch.float64))
    sign = torch.randint(0, 2, shape, generator=gen).to(torch.float64) * 2 - 1
    return (mag * sign).to(dtype)


def _check(victim, scenes: Scene, name: str, theta: torch.Tensor) -> list[str]:
    """Render, score and differentiate one batch; the list of what was not finite (empty = ok)."""
    leaf = theta.detach().requires_grad_(True)
    edited = editor.apply(scenes, {name: leaf})
    out = render(edited)
    targets = render_targets(edited, out, (scenes.height, scenes.width))
    terms = victim.loss(victim(out.image_chw), targets, reduction="none")
    (grad,) = torch.autograd.grad(terms["total"].sum(), leaf)
    bad = []
    for what, t in [("image", out.image), ("depth", out.depth), ("grad", grad), *terms.items()]:
        if not torch.isfinite(t).all():
            rows = (~torch.isfinite(t)).reshape(len(t), -1).any(1).nonzero().flatten()[:3].tolist()
            bad.append(f"{name}: {what} not finite in examples {rows}")
    return bad


def sweep(draws: int, batch: int, seed: int = 0, log=None) -> dict[str, int]:
    """``draws`` random θ per family, each checked raw and after Π; returns the draws done per
    family. Fails with the first non-finite quantity found; ``log(name, count)`` after each batch."""
    victim = _victim()
    scenes = _scenes(batch)
    gen = torch.Generator().manual_seed(seed)
    done = {}
    for name in editor.PARAMETERS:
        count = 0
        while count < draws:
            n = min(batch, draws - count)
            s = scenes[slice(0, n)]
            raw = _draw(editor.theta_shape(s, name), gen, s.dtype)
            projected = editor.project({name: raw}, s, BALL)[name]
            assert torch.isfinite(projected).all(), f"{name}: Π returned non-finite θ"
            for kind, theta in (("raw", raw), ("projected", projected)):
                bad = _check(victim, s, name, theta)
                assert not bad, f"{kind} θ: {bad}"
            count += n
            if log is not None:
                log(name, count)
        done[name] = count
    return done


def test_random_theta_of_every_family_stays_finite():
    t = time.perf_counter()
    done = sweep(draws=ALWAYS_DRAWS, batch=ALWAYS_DRAWS)
    assert done == dict.fromkeys(editor.PARAMETERS, ALWAYS_DRAWS)
    print(f"{sum(done.values())} draws (raw and projected) in {time.perf_counter() - t:.1f} s")


@pytest.mark.slow
def test_ten_thousand_random_theta_per_family_stay_finite():
    t = time.perf_counter()
    done = sweep(draws=10_000, batch=500, seed=1)
    assert done == dict.fromkeys(editor.PARAMETERS, 10_000)
    print(f"{sum(done.values())} draws (raw and projected) in {time.perf_counter() - t:.1f} s")


# ------------------------------------------------------------------------------ degenerate scenes

DH, DW = 32, 96
ALL = "+".join(editor.PARAMETERS)


def _car(location, bg_depth: float | None = None, dims=(1.5, 1.8, 4.4)) -> Scene:
    kwargs = {} if bg_depth is None else {"bg_depth": bg_depth}
    return one_object_scene(0, location, 0.3, (0.6, 0.1, 0.1), DH, DW, dims=dims, **kwargs)


def _two_cars_in_line() -> Scene:
    """A car 30 m ahead fully hidden by a van-sized box 8 m ahead on the same line of sight."""
    near, far = _car((0.0, 1.65, 8.0), dims=(3.0, 2.5, 5.0)), _car((0.0, 1.65, 30.0))
    both = Scene.cat([near, far])
    merged = {
        f: torch.cat([getattr(both, f)[0:1], getattr(both, f)[1:2]], dim=1)
        for f in ("obj_valid", "obj_class", "obj_template", "obj_dims", "obj_location", "obj_rotation_y")
        + ("obj_ffd", "obj_color")
    }
    merged["obj_track_id"] = torch.tensor([[0, 1]])
    return near.replace(**merged).validate()


DEGENERATE = {
    "no objects": lambda: street_scene(seed=4, height=DH, width=DW, n_cars=0, n_pedestrians=0, n_cyclists=0),
    "behind the camera": lambda: _car((0.5, 1.65, -12.0)),
    "straddling the camera plane": lambda: _car((0.0, 1.65, 0.4)),
    "hidden by the background": lambda: _car((0.0, 1.65, 25.0), bg_depth=6.0),
    "hidden by another car": _two_cars_in_line,
    "at the frame's edge": lambda: _car((9.0, 1.65, 8.0)),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_scenes_render_and_attack_with_finite_outputs(case):
    scene = DEGENERATE[case]().to(dtype=torch.float32)
    out = render(scene)
    assert torch.isfinite(out.image).all() and torch.isfinite(out.depth).all()
    if case in ("behind the camera", "hidden by the background"):
        assert not out.visible.any(), out.pixel_count
    if case == "hidden by another car":
        assert out.visible[0].tolist() == [True, False], out.pixel_count
    victim = _victim(DH, DW)
    config = SemanticConfig(combo=ALL, method="isfgsm", steps=2)
    result = semantic_attack(victim, scene, config)
    for name, theta in result.params.items():
        assert torch.isfinite(theta).all(), name
    assert torch.isfinite(result.images).all()
    assert torch.isfinite(result.trace).all(), result.trace
    assert torch.isfinite(result.loss_after).all()
    for name, value in result.sensitivity.items():
        assert torch.isfinite(value).all(), name


def test_an_object_translated_out_of_the_frame_stays_finite():
    """A car near the right edge is pushed off screen by translate: the renderer loses it, the
    targets go empty, and the attack's images, losses and gradients stay finite throughout."""
    scene = _car((6.0, 1.65, 8.0)).to(dtype=torch.float32)
    victim = _victim(DH, DW)
    theta = editor.zero_theta(scene, ["translate"])
    seen = []
    for dx in (0.0, 0.5, 1.0, 2.0, 5.0):  # units of 10 m along the ground's x
        theta["translate"][0, 0, 0] = dx
        leaf = theta["translate"].clone().requires_grad_(True)
        edited = editor.apply(scene, {"translate": leaf})
        out = render(edited)
        targets = render_targets(edited, out, (DH, DW))
        terms = victim.loss(victim(out.image_chw), targets, reduction="none")
        (grad,) = torch.autograd.grad(terms["confidence"].sum(), leaf)
        assert torch.isfinite(out.image).all() and torch.isfinite(grad).all(), dx
        assert all(torch.isfinite(v).all() for v in terms.values()), dx
        seen.append(int(out.pixel_count[0, 0]))
    assert seen[0] > 0 and seen[-1] == 0, seen
    config = SemanticConfig(combo="translate", method="isfgsm", steps=3, eps={"translate": 0.5})
    result = semantic_attack(victim, scene, config)
    assert torch.isfinite(result.trace).all() and torch.isfinite(result.params["translate"]).all()
