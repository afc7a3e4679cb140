"""The iterative sign-gradient core that pixel FGSM/PGD and semantic sFGSM/iterative sFGSM/sPGD
share, the semantic Carlini–Wagner optimiser, and the random-search baseline.

Every attack here works on a dict of named parameter tensors whose first dimension is the
batch, through two callables:

* ``make(params) -> (images, aux)``: the perturbed images ``(B, 3, H, W)`` (differentiable in
  ``params``) and whatever the objective needs besides them (e.g. the targets the renderer
  placed);
* ``objective(images, aux) -> (B,)``: the loss each image's attack maximises.

Gradients are taken in two stages — objective → images, then images → parameters — which gives
the same gradient as one backward pass and lets the time be split between the image maker
(the renderer for semantic attacks) and the objective (the detector). One *query* is one
evaluation of the objective; an attack of ``steps`` gradient steps makes ``steps + 1`` queries
(the last evaluates the final iterate), and the random search is given the same number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Params = dict[str, torch.Tensor]
Make = Callable[[Params], tuple[torch.Tensor, object]]
Objective = Callable[[torch.Tensor, object], torch.Tensor]
Project = Callable[[Params], Params]


@dataclass
class Timer:
    """Seconds spent making images (rendering), in the objective (detector) and elsewhere."""

    make: float = 0.0
    objective: float = 0.0
    total: float = 0.0

    @property
    def other(self) -> float:
        return max(self.total - self.make - self.objective, 0.0)

    def as_dict(self) -> dict[str, float]:
        return {"render": self.make, "detector": self.objective, "other": self.other, "total": self.total}


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        params: the chosen iterate per example (detached).
        images: its images ``(B, 3, H, W)`` (detached).
        aux: the ``aux`` that ``make`` returned for them.
        loss_before: objective at the unperturbed parameters ``(B,)``.
        loss_after: objective at the chosen iterate ``(B,)``.
        trace: ``(queries, B)`` objective at every query, in order.
        sensitivity: per parameter, ``(B,)`` first-order gain ``Σ|∂L/∂p| · step`` at the start —
            how much one sign step of that parameter is predicted to raise the objective.
        queries: objective evaluations made.
        time: :class:`Timer` (seconds for the whole batch).
        step_agreement: per parameter, ``(B,)`` share of its gradient's signs that agree with the
            previous step's (over every pair of consecutive gradient steps and every element
            where both gradients are non-zero): 1 is a steady climb, about ½ a random walk, in
            which ε-sized sign steps go back and forth and end near the start. NaN where there
            is no such pair (one-step attacks); empty for attacks without sign steps.
    """

    params: Params
    images: torch.Tensor
    aux: object
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    trace: torch.Tensor
    sensitivity: dict[str, torch.Tensor] = field(default_factory=dict)
    queries: int = 0
    time: Timer = field(default_factory=Timer)
    step_agreement: dict[str, torch.Tensor] = field(default_factory=dict)


def _sync(t: torch.Tensor) -> None:
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


def _value_and_grad(make: Make, objective: Objective, params: Params, timer: Timer, need_grad: bool = True):
    """Objective ``(B,)``, gradients w.r.t. ``params`` (or None), images and aux at ``params``."""
    leaves = {k: v.detach().requires_grad_(need_grad) for k, v in params.items()}
    t = time.perf_counter()
    with torch.set_grad_enabled(need_grad):
        images, aux = make(leaves)
    _sync(images)
    timer.make += time.perf_counter() - t
    t = time.perf_counter()
    with torch.set_grad_enabled(need_grad):
        x = images.detach().requires_grad_(need_grad)
        loss = objective(x, aux)
        if need_grad:
            (g_img,) = torch.autograd.grad(loss.sum(), x)
    _sync(loss)
    timer.objective += time.perf_counter() - t
    grads = None
    if need_grad:
        t = time.perf_counter()
        names = list(leaves)
        # J^T g as the gradient of the scalar Σ images · g: the same bits (the product's backward
        # hands g on unchanged), without passing grad_outputs, whose shape check imports sympy
        # (torch.fx's symbolic shapes: 1.5 s per process, a tenth of a smoke-scale attack job)
        got = torch.autograd.grad((images * g_img).sum(), [leaves[k] for k in names], allow_unused=True)
        grads = {k: (torch.zeros_like(leaves[k]) if g is None else g) for k, g in zip(names, got, strict=True)}
        _sync(images)
        timer.make += time.perf_counter() - t
    return loss.detach(), grads, images.detach(), aux


def _sensitivity(grads: Params, step: dict[str, float]) -> dict[str, torch.Tensor]:
    """Per parameter and example, ``Σ|∂L/∂p| · step``: what one sign step is predicted to add."""
    return {n: g.abs().reshape(len(g), -1).sum(1) * step[n] for n, g in grads.items()}


class _Agreement:
    """Counts, per parameter and example, how many gradient signs agree with the previous step's
    (see :attr:`AttackResult.step_agreement`)."""

    def __init__(self):
        self.previous = None
        self.agree, self.pairs = {}, {}

    def add(self, grads: Params) -> None:
        signs = {n: g.detach().sign().reshape(len(g), -1) for n, g in grads.items()}
        for n, now in signs.items():
            before = now if self.previous is None else self.previous[n]
            both = (now != 0) & (before != 0) & (self.previous is not None)
            self.agree[n] = self.agree.get(n, 0) + ((now == before) & both).sum(1)
            self.pairs[n] = self.pairs.get(n, 0) + both.sum(1)
        self.previous = signs

    def result(self) -> dict[str, torch.Tensor]:
        """Per parameter, ``(B,)`` agreeing share; NaN where no element had a pair of steps."""
        return {
            n: torch.where(pairs > 0, self.agree[n] / pairs.clamp_min(1), float("nan")).double().cpu()
            for n, pairs in self.pairs.items()
        }


def _choose(best: Params, cand: Params, better: torch.Tensor) -> Params:
    out = {}
    for k, v in cand.items():
        m = better.view((-1,) + (1,) * (v.dim() - 1))
        out[k] = torch.where(m, v, best[k])
    return out


def sign_gradient(
    make: Make,
    objective: Objective,
    init: Params,
    step: dict[str, float],
    project: Project,
    steps: int = 1,
    keep_best: bool = False,
    random_start: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, Params, torch.Tensor, torch.Tensor], None] | None = None,
) -> AttackResult:
    """Iterative sign-gradient ascent: ``p ← Π(p + step · sign(∇_p L))``, ``steps`` times.

    Args:
        make, objective: see the module docstring.
        init: the starting (unperturbed) parameters, e.g. θ = ⊥ or δ = 0.
        step: per parameter, the step size (the paper's ε for sFGSM).
        project: Π, onto the parameters' ball ∩ feasible set.
        steps: gradient steps (1 = FGSM / sFGSM).
        keep_best: return each example's iterate with the highest objective among
            ``1 … steps`` (the paper's iterative sFGSM); otherwise the last one (PGD).
        random_start: per parameter, the half-width of a uniform random start (projected);
            None starts at ``init``.
        generator: random stream of the random start.
        callback: called as ``callback(query, params, images, loss)`` at every query
            (diagnostics, tests of the invariants).
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    missing = set(init) - set(step)
    if missing:
        raise KeyError(f"no step size for {sorted(missing)}")
    timer = Timer()
    t_start = time.perf_counter()
    params = {k: v.detach().clone() for k, v in init.items()}
    trace, sensitivity = [], {}
    if random_start:
        params = project(
            {
                k: v
                + (torch.rand(v.shape, generator=generator, dtype=v.dtype).to(v.device) * 2 - 1)
                * random_start.get(k, 0.0)
                for k, v in params.items()
            }
        )
    loss_before = None
    best = _Best()
    agreement = _Agreement()
    for k in range(steps + 1):
        last = k == steps
        loss, grads, images, aux = _value_and_grad(make, objective, params, timer, need_grad=not last)
        trace.append(loss)
        if callback is not None:
            callback(k, params, images, loss)
        if k == 0:
            loss_before = loss
            if grads is not None:
                sensitivity = _sensitivity(grads, step)
        if k > 0 and keep_best:
            best.offer(params, loss, loss, images, aux)
        if last:
            break
        agreement.add(grads)
        params = project({n: params[n] + step[n] * grads[n].sign() for n in params})
    if keep_best:
        params, loss, images, aux = best.params, best.loss, best.images, best.aux
    timer.total = time.perf_counter() - t_start
    return AttackResult(
        params=params,
        images=images,
        aux=aux,
        loss_before=loss_before,
        loss_after=loss,
        trace=torch.stack(trace),
        sensitivity=sensitivity,
        step_agreement=agreement.result(),
        queries=len(trace),
        time=timer,
    )


class _Best:
    """Each example's best iterate so far, by a score (higher is better)."""

    def __init__(self):
        self.params = self.score = self.loss = self.images = self.aux = None

    def offer(self, params: Params, score: torch.Tensor, loss: torch.Tensor, images: torch.Tensor, aux) -> None:
        if self.params is None:
            self.params, self.score, self.loss, self.images, self.aux = params, score, loss, images, aux
            return
        better = score > self.score
        self.params = _choose(self.params, params, better)
        self.images = torch.where(better.view(-1, 1, 1, 1), images, self.images)
        self.score = torch.where(better, score, self.score)
        self.loss = torch.where(better, loss, self.loss)
        self.aux = _merge_aux(self.aux, aux, better)


def _merge_aux(old, new, better: torch.Tensor):
    """Per-example choice between two ``aux`` values (lists are chosen item by item)."""
    if isinstance(old, list) and isinstance(new, list):
        return [n if b else o for o, n, b in zip(old, new, better.tolist(), strict=True)]
    return new if bool(better.all()) else old


def random_search(
    make: Make,
    objective: Objective,
    init: Params,
    radius: dict[str, float],
    project: Project,
    queries: int,
    generator: torch.Generator | None = None,
    corners: bool = True,
    callback: Callable[[int, Params, torch.Tensor, torch.Tensor], None] | None = None,
) -> AttackResult:
    """Gradient-free baseline: ``queries − 1`` random draws in the same ball, keep each
    example's best (the first query evaluates ``init``, giving the loss before).

    Args:
        radius: per parameter, the ball's half-width; draws are projected by ``project``.
        corners: draw ``± radius`` per element (where sign-gradient steps land), else uniform.
    """
    if queries < 2:
        raise ValueError(f"random search needs ≥ 2 queries, got {queries}")
    timer = Timer()
    t_start = time.perf_counter()
    base = {k: v.detach().clone() for k, v in init.items()}
    loss0, _, images0, aux0 = _value_and_grad(make, objective, base, timer, need_grad=False)
    trace = [loss0]
    if callback is not None:
        callback(0, base, images0, loss0)
    best = _Best()
    for _ in range(queries - 1):
        draw = {}
        for k, v in base.items():
            u = torch.rand(v.shape, generator=generator, dtype=v.dtype).to(v.device)
            noise = torch.where(u < 0.5, -1.0, 1.0).to(v.dtype) if corners else u * 2 - 1
            draw[k] = v + noise * radius[k]
        draw = project(draw)
        loss, _, images, aux = _value_and_grad(make, objective, draw, timer, need_grad=False)
        trace.append(loss)
        if callback is not None:
            callback(len(trace) - 1, draw, images, loss)
        best.offer(draw, loss, loss, images, aux)
    timer.total = time.perf_counter() - t_start
    return AttackResult(best.params, best.images, best.aux, loss0, best.loss, torch.stack(trace), {}, len(trace), timer)


def carlini_wagner(
    make: Make,
    objective: Objective,
    init: Params,
    scale: dict[str, float],
    project: Project,
    steps: int = 6,
    c: float = 1.0,
    lr: float = 0.5,
    callback: Callable[[int, Params, torch.Tensor, torch.Tensor], None] | None = None,
) -> AttackResult:
    """Semantic Carlini–Wagner (the paper's recipe: δ → θ, x + δ → τ(x, θ)): minimise
    ``Σ_p mean((p / scale_p)²) − c · L(τ(x, θ))`` with Adam over ``steps`` steps, projecting
    onto the feasible set after each, and keep each example's iterate with the lowest value of
    that objective. ``scale`` (the per-parameter ε) makes the norm dimensionless; ``lr`` is in
    the same units (0.5 moves a parameter by about half its ε per step at first)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    timer = Timer()
    t_start = time.perf_counter()
    base = {k: v.detach().clone() for k, v in init.items()}
    u = {k: torch.zeros_like(v, requires_grad=True) for k, v in base.items()}
    opt = torch.optim.Adam(list(u.values()), lr=lr)

    def penalty(params: Params) -> torch.Tensor:
        total = 0
        for k, v in params.items():
            d = (v - base[k]) / scale[k]
            total = total + d.pow(2).flatten(1).mean(1)
        return total

    trace = []
    best = _Best()
    loss_before = sensitivity = None
    for k in range(steps + 1):
        params = project({n: base[n] + u[n].detach() * scale[n] for n in base})
        with torch.no_grad():
            for n in u:
                u[n].copy_((params[n] - base[n]) / scale[n])
        last = k == steps
        loss, grads, images, aux = _value_and_grad(make, objective, params, timer, need_grad=not last)
        trace.append(loss)
        if callback is not None:
            callback(k, params, images, loss)
        value = penalty(params) - c * loss
        if k == 0:
            loss_before = loss
            sensitivity = _sensitivity(grads or {}, scale)
        else:
            best.offer(params, -value, loss, images, aux)  # C&W minimises its objective
        if last:
            break
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            pen = penalty({n: base[n] + u[n] * scale[n] for n in base}).sum()
            pen.backward()
        for n in u:  # chain rule through θ = base + u · scale for the detector term
            u[n].grad = u[n].grad - c * grads[n] * scale[n]
        opt.step()
    timer.total = time.perf_counter() - t_start
    return AttackResult(
        best.params, best.images, best.aux, loss_before, best.loss, torch.stack(trace), sensitivity, len(trace), timer
    )
