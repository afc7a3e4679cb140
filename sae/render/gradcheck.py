"""Gradient checks of γ: autograd against central finite differences of a loss of the image.

The loss is ``L = Σ weights · image`` with smooth random weights (an 8 × 24 grid of normal values,
bilinearly upsampled), so that every pixel matters and no edge is favoured. A *case* is one random
car (template, distance 8–30 m, yaw, colour) over a uniform road, one random direction of a
parameter's θ, and one set of weights, in float64. For the geometric parameters the step is
scaled so that the car's farthest-moving vertex moves by one pixel, and the finite difference is
the least-squares slope through the symmetric samples at 1, 1.5 and 2 such steps (the k²-weighted
mean of the central differences): the renderer issue's criterion is that autograd has the same
sign and is within 25 % of it in at least 90 % of cases.

A finite difference over pixels of motion sees two things autograd cannot: *jumps* of the image
(where a discrete choice of the rasteriser or of the anti-aliasing changes) and the *variation*
of the derivative within the window (a thin face turning away along the silhouette, a large face
seen edge-on: true kinks of a polygonal image, which the central difference averages and the
derivative at θ does not). :func:`profile` separates them: it samples ``L`` and ``dL/dt`` along
the direction and recomputes the finite difference from the integral of the derivative, i.e. what
it would be if the image had no jumps. A miss that agrees with that is the jumps' doing; one that
does not would remain with a perfectly continuous image.

What an exact renderer would get: :func:`supersampled` renders a case ``S`` × larger on each axis
and box-filters it back (the same loss of a finer image). Its autograd against its own finite
difference approaches, as ``S`` grows, the criterion's ceiling for the exactly box-filtered image,
whose true kinks remain; our autograd against its finite difference says how far γ's derivative
is from that image's.

``sae render gradcheck`` prints the table; ``tests/test_gradients.py`` asserts on the same cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from sae.data.street import intrinsics
from sae.render.geometry import pack_meshes, pose_vertices, project
from sae.render.renderer import render
from sae.scene import editor
from sae.scene.ffd import bottom_layer_mask
from sae.scene.ir import FAR_DEPTH, SEM, Scene

#: Parameters a case can differentiate, and each one's default seed (the slow test's).
GEOMETRIC = {"translate": 11, "rotate": 12, "mesh": 13}

#: Multiples of the one-pixel step the finite difference samples.
MULTIPLES = (1.0, 1.5, 2.0)

#: Relative tolerance of the criterion.
TOLERANCE = 0.25


def smooth_weights(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """``(1, h, w, 3)`` loss weights: an 8 × 24 grid of normal values, bilinearly upsampled."""
    coarse = torch.randn(1, 3, 8, 24, generator=gen, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").permute(0, 2, 3, 1)


def one_object_scene(
    template: int, location, rotation_y: float, color, h: int, w: int, bg_depth: float = FAR_DEPTH, dims=(1.5, 1.8, 4.4)
) -> Scene:
    """One car-class object (a template id, KITTI location and yaw, ``dims`` h × w × l in metres)
    over a uniform grey road at ``bg_depth`` metres, ``h × w``, float64, sun azimuth 0.7."""
    return Scene.from_objects(
        torch.full((h, w, 3), 0.5),
        torch.full((h, w), bg_depth),
        torch.full((h, w), SEM["Road"]),
        intrinsics(h, w),
        [
            {
                "class": 0,
                "template": template,
                "dims": dims,
                "location": location,
                "rotation_y": rotation_y,
                "color": color,
                "track_id": 0,
            }
        ],
        camera_height=1.65,
        sun_azimuth=0.7,
    )


def random_car(gen: torch.Generator, h: int, w: int) -> Scene:
    """A random car: template, lateral offset ±4 m, distance 8–30 m, any yaw, any colour."""

    def u(a, b):
        return a + (b - a) * torch.rand((), generator=gen, dtype=torch.float64).item()

    template = int(torch.randint(0, 3, (1, 1), generator=gen))
    location = (u(-4, 4), 1.65, u(8, 30))
    rotation_y = u(-math.pi, math.pi)
    color = torch.rand(3, generator=gen, dtype=torch.float64)
    return one_object_scene(template, location, rotation_y, color, h, w)


def pixel_step(scene: Scene, name: str, direction: torch.Tensor, obj: int = 0, pixels: float = 1.0) -> float:
    """The step along ``direction`` that moves object ``obj``'s farthest-moving vertex by ``pixels``."""

    def screen(theta):
        sc = editor.apply(scene, theta)
        packed = pack_meshes(sc)
        return project(pose_vertices(sc, packed), sc.K[packed.vert_obj // sc.max_objects]), packed

    a, packed = screen({name: 0 * direction})
    b, _ = screen({name: 1e-5 * direction})
    mine = packed.vert_obj == obj
    return pixels * 1e-5 / (b - a)[mine][:, :2].norm(dim=1).max().item()


@dataclass
class Case:
    """One case: its scene, the parameter, the direction in θ, the loss weights and the step."""

    scene: Scene
    name: str
    direction: torch.Tensor
    weights: torch.Tensor
    step: float

    def loss(self, t: float, grad: bool = False, renderer: Callable = render) -> tuple[float, float | None]:
        """``L`` at ``θ = t · direction`` and, with ``grad``, its autograd derivative along it."""
        theta = editor.zero_theta(self.scene, [self.name], requires_grad=grad)
        with torch.set_grad_enabled(grad):
            if t:
                theta = {self.name: (theta[self.name] + t * self.direction).detach().requires_grad_(grad)}
            value = (renderer(editor.apply(self.scene, theta)).image * self.weights).sum()
            if not grad:
                return value.item(), None
            value.backward()
        return value.item(), (theta[self.name].grad * self.direction).sum().item()


def random_cases(name: str, cases: int, seed: int | None = None, h: int = 375, w: int = 1242) -> list[Case]:
    """``cases`` random cases of geometric parameter ``name`` (``seed`` defaults to
    :data:`GEOMETRIC`'s), drawn in a fixed order from one generator, so the same seed gives the
    same cases."""
    gen = torch.Generator().manual_seed(GEOMETRIC[name] if seed is None else seed)
    out = []
    for _ in range(cases):
        s = random_car(gen, h, w)
        direction = torch.randn(editor.theta_shape(s, name), generator=gen, dtype=torch.float64)
        if name == "mesh":  # the bottom layer stays on the ground (Π)
            direction[..., torch.as_tensor(bottom_layer_mask()), 1] = 0
        step = pixel_step(s, name, direction, 0)
        out.append(Case(s, name, direction, smooth_weights(h, w, gen), step))
    return out


def least_squares_slope(loss_at: Callable[[float], float], step: float, multiples: Sequence[float] = MULTIPLES):
    """The least-squares slope through the symmetric samples ``loss_at(±k · step)``."""
    num = den = 0.0
    for k in multiples:
        h = k * step
        num += h * (loss_at(h) - loss_at(-h))
        den += 2 * h * h
    return num / den


def check(case: Case, multiples: Sequence[float] = MULTIPLES, renderer: Callable = render) -> tuple[float, float]:
    """(autograd, finite difference) of one case."""
    _, auto = case.loss(0.0, grad=True, renderer=renderer)
    fd = least_squares_slope(lambda t: case.loss(t, renderer=renderer)[0], case.step, multiples)
    return auto, fd


def supersampled(case: Case, factor: int) -> Case:
    """The same case rendered ``factor`` × larger on each axis and box-filtered back: the camera's
    focal lengths and principal point scaled (pixel centres at integer coordinates), the
    background layers repeated, and each pixel's loss weight spread evenly over its
    ``factor²`` sub-pixels, so that ``L`` is the loss of the box-filtered large image at the
    case's resolution. The step is the case's (one pixel of the farthest vertex's motion at that
    resolution), so its finite difference spans the same motion. As ``factor`` grows, the
    anti-aliasing's jumps shrink (each covers one sub-pixel) and the case's ``L`` approaches the
    loss of the exactly box-filtered image: the reference a renderer's derivative can at best
    match, kinks included."""
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if factor == 1:
        return case
    sc = case.scene

    def big(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(factor, 1).repeat_interleave(factor, 2)

    K = sc.K.clone()
    K[:, 0, 0] *= factor
    K[:, 1, 1] *= factor
    K[:, :2, 2] = (K[:, :2, 2] + 0.5) * factor - 0.5
    scene = sc.replace(bg_color=big(sc.bg_color), bg_depth=big(sc.bg_depth), bg_semantic=big(sc.bg_semantic), K=K)
    return Case(scene, case.name, case.direction, big(case.weights) / factor**2, case.step)


def cumulative_trapezoid(ts: Sequence[float], values: Sequence[float]) -> list[float]:
    """``∫_{ts[0]}^{ts[i]} f`` for each ``i`` by the trapezoid rule over the samples ``values``."""
    out = [0.0]
    for i in range(1, len(ts)):
        out.append(out[-1] + 0.5 * (values[i] + values[i - 1]) * (ts[i] - ts[i - 1]))
    return out


def slopes_from_samples(ts, losses, derivatives, step: float, multiples: Sequence[float] = MULTIPLES):
    """From ``L`` and ``dL/dt`` sampled at ``ts`` (symmetric about 0, containing ``±k · step``):
    the finite difference of ``L`` and the one of the integral of ``dL/dt`` (no jumps)."""
    index = {round(t / step, 9): i for i, t in enumerate(ts)}
    integral = cumulative_trapezoid(ts, derivatives)

    def at(samples):
        return lambda t: samples[index[round(t / step, 9)]]

    return least_squares_slope(at(losses), step, multiples), least_squares_slope(at(integral), step, multiples)


@dataclass
class Profile:
    """A case's autograd derivative, finite difference, and finite difference without jumps, and
    the samples they come from: ``L`` and ``dL/dt`` at ``ts`` (θ = t · direction)."""

    auto: float
    fd: float
    fd_continuous: float
    ts: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    derivatives: list[float] = field(default_factory=list)
    step: float = 1.0


def profile(case: Case, samples: int = 80, renderer: Callable = render) -> Profile:
    """Sample ``L`` and ``dL/dt`` at ``samples + 1`` points over ±2 steps (``samples`` a multiple
    of 8, so the finite difference's points are on the grid) and return the three slopes."""
    if samples % 8:
        raise ValueError(f"samples must be a multiple of 8, got {samples}")
    span = max(MULTIPLES)
    ts = [case.step * span * (2 * i / samples - 1) for i in range(samples + 1)]
    losses, derivatives = [], []
    for t in ts:
        value, d = case.loss(t, grad=True, renderer=renderer)
        losses.append(value)
        derivatives.append(d)
    fd, fd_continuous = slopes_from_samples(ts, losses, derivatives, case.step)
    return Profile(derivatives[samples // 2], fd, fd_continuous, ts, losses, derivatives, case.step)


def agrees(auto: float, fd: float, tolerance: float = TOLERANCE) -> bool:
    """The criterion: the same sign and within ``tolerance`` of the finite difference."""
    return auto * fd > 0 and abs(auto - fd) <= tolerance * abs(fd)


def summarise(name: str, results: list, decomposed: bool, reference: list | None = None) -> dict:
    """One table row from a parameter's (auto, fd) pairs or :class:`Profile` s, and, with
    ``reference`` (the same cases' (auto, fd) pairs :func:`supersampled`), how often autograd
    agrees with the reference's finite difference and the reference with itself (the ceiling)."""
    pairs = [(r.auto, r.fd) if decomposed else r for r in results]
    good = [agrees(a, f) for a, f in pairs]
    rel = sorted(abs(a - f) / abs(f) if f else math.inf for a, f in pairs)
    row = {
        "parameter": name,
        "cases": len(pairs),
        "agree": sum(good),
        "median_rel_error": rel[len(rel) // 2] if rel else math.nan,
    }
    if decomposed:
        kinds = [miss_kind(r) for r in results]
        row["agree_without_jumps"] = sum(agrees(r.auto, r.fd_continuous) for r in results)
        row["misses_from_jumps"] = kinds.count("jumps")
        row["misses_from_variation"] = kinds.count("variation")
    if reference is not None:
        row["agree_with_reference_fd"] = sum(agrees(a, rf) for (a, _), (_, rf) in zip(pairs, reference, strict=True))
        row["reference_agrees"] = sum(agrees(ra, rf) for ra, rf in reference)
    return row


def miss_kind(p: Profile) -> str:
    """``agree``, ``jumps`` (a miss that agrees without the jumps) or ``variation``."""
    if agrees(p.auto, p.fd):
        return "agree"
    return "jumps" if agrees(p.auto, p.fd_continuous) else "variation"


def profile_figure(profiles: dict[str, list[Profile]], out, per_kind: int = 2):
    """For each parameter, the first ``per_kind`` misses of each kind: ``L(t) − L(0)`` as rendered,
    the integral of autograd's ``dL/dt`` (the same without jumps), the tangent autograd gives at
    0 and the finite difference's slope, against the farthest vertex's motion in pixels."""
    from sae.figures import pyplot, save_figure

    plt = pyplot()
    chosen = {
        name: [p for kind in ("jumps", "variation") for p in [q for q in ps if miss_kind(q) == kind][:per_kind]]
        for name, ps in profiles.items()
    }
    cols = max([len(v) for v in chosen.values()] + [1])
    fig, axes = plt.subplots(len(chosen), cols, figsize=(3.6 * cols, 2.8 * len(chosen)), squeeze=False)
    for row, (name, ps) in enumerate(chosen.items()):
        for col in range(cols):
            ax = axes[row][col]
            if col >= len(ps):
                ax.axis("off")
                continue
            p = ps[col]
            px = [t / p.step for t in p.ts]
            zero = p.losses[len(p.losses) // 2]
            integral = cumulative_trapezoid(p.ts, p.derivatives)
            mid = integral[len(integral) // 2]
            ax.plot(px, [v - zero for v in p.losses], color="black", lw=1.2, label="L(t) − L(0), rendered")
            ax.plot(px, [v - mid for v in integral], color="tab:blue", lw=1.0, ls="--", label="∫ dL/dt (no jumps)")
            span = [px[0], px[-1]]
            ax.plot(span, [p.auto * s * p.step for s in span], color="tab:red", lw=0.8, label="autograd at 0")
            ax.plot(span, [p.fd * s * p.step for s in span], color="tab:green", lw=0.8, label="finite difference")
            ax.set_title(f"{name}: miss from {miss_kind(p)}", fontsize=9)
            ax.set_xlabel("farthest vertex's motion (px)", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == 0 and col == 0:
                ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return save_figure(fig, out)


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    decomposed = any("agree_without_jumps" in r for r in rows)
    referenced = any("reference_agrees" in r for r in rows)
    head = ["parameter", "cases", "agree", "share", "median rel. error"]
    if decomposed:
        head += ["agree without jumps", "misses from jumps", "misses from variation"]
    if referenced:
        head += ["agree with the reference's fd", "reference agrees with itself"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["parameter"], str(r["cases"]), str(r["agree"]), f"{r['agree'] / max(r['cases'], 1):.1%}"]
        cells.append(f"{r['median_rel_error']:.3f}")
        if decomposed:
            cells += [str(r["agree_without_jumps"]), str(r["misses_from_jumps"]), str(r["misses_from_variation"])]
        if referenced:
            cells += [str(r["agree_with_reference_fd"]), str(r["reference_agrees"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
