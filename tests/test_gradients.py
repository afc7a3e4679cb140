"""Autograd vs central finite differences of a scalar loss of the rendered image.

Appearance parameters (colour, weather, foliage) are smooth: relative error ≤ 1e-2 in float64.
Geometric ones (translate, rotate, mesh) change pixels discontinuously; the anti-aliasing pass
makes the image continuous in edge positions, and the check is statistical over random cases
(a random car, pose, direction and smooth loss weights) whose finite-difference steps move the
object's farthest vertex by 1, 1.5 and 2 pixels.
"""

import math

import pytest
import torch
from scenes import one_object_scene

from sae.data.street import street_scene
from sae.render.geometry import pack_meshes, pose_vertices, project
from sae.render.renderer import render
from sae.scene import editor
from sae.scene.ffd import bottom_layer_mask
from sae.scene.ir import Scene


def _smooth_weights(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(1, 3, 8, 24, generator=gen, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").permute(0, 2, 3, 1)


def _directional(
    scene: Scene, name: str, direction: torch.Tensor, weights: torch.Tensor, step: float, multiples=(1.0,)
):
    """(autograd, central finite difference) of L = Σ weights · image along ``direction``.

    With several ``multiples`` of ``step``, the finite difference is the least-squares slope
    through the symmetric samples, i.e. the k²-weighted mean of the central differences at each
    ``k · step``: robust to the isolated jumps of a rasterised image.
    """

    def loss(theta):
        return (render(editor.apply(scene, theta)).image * weights).sum()

    theta = editor.zero_theta(scene, [name], requires_grad=True)
    loss(theta).backward()
    auto = (theta[name].grad * direction).sum().item()
    num = den = 0.0
    with torch.no_grad():
        for k in multiples:
            h = k * step
            num += h * (loss({name: h * direction}) - loss({name: -h * direction})).item()
            den += 2 * h * h
    return auto, num / den


@pytest.mark.parametrize("name", ["color", "weather", "foliage"])
def test_appearance_gradients_match_finite_differences(half_scene, name):
    gen = torch.Generator().manual_seed(0)
    s = half_scene
    # start inside the code ranges so the clamps of Π are not at play
    s = s.replace(
        weather=torch.tensor([[0.2, 0.3, 0.4, 0.1]], dtype=torch.float64),
        foliage=torch.tensor([[0.1, -0.2, 0.1, 0.3]], dtype=torch.float64),
    )
    for _ in range(3):
        weights = _smooth_weights(s.height, s.width, gen)
        direction = torch.randn(editor.theta_shape(s, name), generator=gen, dtype=torch.float64)
        auto, fd = _directional(s, name, direction, weights, 1e-6)
        assert auto != 0.0
        assert abs(auto - fd) <= 1e-2 * abs(fd), (name, auto, fd)


def _car_scene(gen: torch.Generator, h: int, w: int) -> Scene:
    """One random car (template, pose, distance 8–30 m) over a uniform background."""

    def u(a, b):
        return a + (b - a) * torch.rand((), generator=gen, dtype=torch.float64).item()

    template = int(torch.randint(0, 3, (1, 1), generator=gen))
    location = (u(-4, 4), 1.65, u(8, 30))
    rotation_y = u(-math.pi, math.pi)
    color = torch.rand(3, generator=gen, dtype=torch.float64)
    return one_object_scene(template, location, rotation_y, color, h, w)


def _pixel_step(scene: Scene, name: str, direction: torch.Tensor, obj: int, pixels: float = 1.0) -> float:
    """Step along ``direction`` that moves object ``obj``'s farthest-moving vertex by ``pixels``."""

    def screen(theta):
        sc = editor.apply(scene, theta)
        packed = pack_meshes(sc)
        return project(pose_vertices(sc, packed), sc.K[packed.vert_obj // sc.max_objects]), packed

    a, packed = screen({name: 0 * direction})
    b, _ = screen({name: 1e-5 * direction})
    mine = packed.vert_obj == obj
    return pixels * 1e-5 / (b - a)[mine][:, :2].norm(dim=1).max().item()


def _geometric_cases(name: str, cases: int, seed: int, h: int = 375, w: int = 1242):
    gen = torch.Generator().manual_seed(seed)
    results = []
    for _ in range(cases):
        s = _car_scene(gen, h, w)
        direction = torch.randn(editor.theta_shape(s, name), generator=gen, dtype=torch.float64)
        if name == "mesh":
            direction[..., torch.as_tensor(bottom_layer_mask()), 1] = 0
        step = _pixel_step(s, name, direction, 0)
        auto, fd = _directional(s, name, direction, _smooth_weights(h, w, gen), step, multiples=(1.0, 1.5, 2.0))
        results.append((auto, fd))
    return results


def _agreement(results) -> list[bool]:
    """The issue's criterion per case: same sign and within 25 %."""
    return [a * f > 0 and abs(a - f) <= 0.25 * abs(f) for a, f in results]


@pytest.mark.parametrize("name", ["translate", "rotate", "mesh"])
def test_geometric_gradients_agree_with_finite_differences(name):
    """Regression guard at the level reached so far (see the slow test for the target)."""
    results = _geometric_cases(name, 16, seed={"translate": 1, "rotate": 2, "mesh": 3}[name])
    same_sign = [a * f > 0 for a, f in results]
    rel = sorted(abs(a - f) / abs(f) for a, f in results)
    assert sum(same_sign) >= 0.8 * len(results), results
    assert rel[len(rel) // 2] <= 0.2, rel
    assert sum(_agreement(results)) >= 0.75 * len(results), results


_BELOW_TARGET = "below the issue's 90 %: {} of 120 cases within 25 % (1-D anti-aliasing leaves pixel jumps)"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "translate",
        pytest.param("rotate", marks=pytest.mark.xfail(strict=True, reason=_BELOW_TARGET.format(97))),
        pytest.param("mesh", marks=pytest.mark.xfail(strict=True, reason=_BELOW_TARGET.format(102))),
    ],
)
def test_geometric_gradients_meet_the_target(name):
    """The renderer issue's target: same sign and within 25 % in ≥ 90 % of random cases (120 cases
    per parameter at 1242×375 in float64, about three minutes for the three: ``-m slow``; the
    default suite keeps the 16-case guard above). Measured: translate 111, rotate 97, mesh 102 of
    120. The first 40 cases alone gave 37, 36 and 35, which overstated translate and rotate: the
    share is a rate, and 40 cases estimate it to about ±5 %. A strict xfail turns into a failure
    when a parameter reaches the target, so the marker is updated with the renderer.

    Where rotate's 23 misses are: in the cases whose finite difference is small for the car's
    size (the loss weights' changes over the car nearly cancel). Ranked by |fd| / √(car's pixel
    area), the lowest quarter agrees in 14 of 30 cases, the other three quarters in 83 of 90
    (92 %); the car's size alone does not matter (22–25 of 30 per area quarter), nor does a face
    turning towards or away from the camera inside the difference's window (a true kink of the
    image: 12 of 17 such cases agree, 85 of 103 others). So the misses are where the jumps the
    anti-aliasing leaves (which the finite difference sees and autograd cannot) weigh against a
    derivative near zero.

    What the jumps are (measured by bisecting each pixel's change of visible face to 1e-6 px of the
    farthest vertex's motion, 64 crossings in each of 12 rotate cases, 6 missed and 6 agreeing):
    the image is continuous across about three quarters of the crossings (|Δ| ≈ 1e-9 summed over
    RGB), and jumps by more than 0.01 across the others (79 of 384 in the missed cases, 92 of 384
    in the agreeing ones; 121 above 0.1, up to a whole pixel's colour) — as often where the
    derivative agrees as where it misses, so what decides a case is the derivative's size (above),
    not the jumps' number. Traced jumps share one cause: the 1-D anti-aliasing lets a pair of
    pixels use only the first colour-changing edge along its segment, and only if that edge is
    dominant for the pair's direction; where that edge changes at a centre crossing, the pair's
    blend changes at once. Three traced kinds: (1) at a vertex, where the silhouette or crease
    that bounds the front face along the segment switches from one edge to the next (a vertical
    crease's crossing changes the blend with the face above its end vertex by 0.87 summed over RGB); (2) at edges
    near 45°, where the walk stops at a non-dominant edge and drops the pair, so a thin face
    (0.23 px) between two others is blended as its neighbour on one side of the crossing and as
    itself on the other (0.94); (3) at stacks of faces thinner than a pixel along a silhouette (a
    roof's bevel seen edge-on: 0.06 px), which the sliver walk leaves when its exit edge is not
    dominant (0.32 in luminance). Prototypes that walk on through non-dominant edges (95 of 120) or follow
    longer sliver stacks (97) do not help: the blend needs a crossing rule that is continuous where
    the first boundary switches edges, not more cases of the binary one. (Bisecting below ~1e-10
    px also finds cracks of the rasteriser's rounding at shared edges; they are not in these
    numbers.)

    Measured since (session 16, rotate / mesh of these 120 cases): longer finite-difference steps
    do not average the jumps away (2, 3 and 4 px: 95 / 99; 4 px alone 93 / 96), so a miss is not
    noise a wider window would hide. Shares instead of the binary split (each edge used by both
    pair directions, weighted so the shares sum to 1) make dominance flips continuous but let the
    minor direction's crossings race along shallow edges: cos² shares 89 / 97, cos⁸ 92 (rotate);
    shares only within a band about 45° (slopes 0.8–1.25, binary outside) 99 / 101 and translate
    112, inside the ±5 % that 120 cases carry. Fading a pair's share to 0 within a pixel of its
    edge's end vertices (continuous where the boundary switches edges) is worse, 76–84: a fade over
    a pixel is a steep ramp, which the finite difference sees wherever it lies and autograd only
    where it sits. Counted in one missed mesh case (2 px of motion in steps of 0.005 px): 327 pixel
    changes above 0.02 (summed RGB), 150 where the pixel's face changed, 102 next to such a pixel,
    75 with none within a pixel; about half involve a face shown at no more than 4 pixels. Traced:
    a sliver whose exit edge is not dominant is dropped, so when it covers the back pixel's centre
    the pair's far colour switches (0.41); slivers the back pixel's surface hides; depth-order
    switches of nearly coplanar faces. The 1-D pair filter cannot be made continuous case by case;
    what would be is a 2-D coverage filter over the silhouette pixels.

    Tried (session 17, branch ``wip/coverage-2d``, first 30 rotate cases, where the 1-D filter
    agrees in 27): a 2-D filter re-colouring every pixel whose 3×3 neighbourhood shows more than
    one face by the exact area of each overlapping triangle inside its square (Green's theorem
    over the triangle clipped to the square, checked against Monte Carlo to 5e-4; autograd
    matches 1e-4-px differences exactly), candidates from a conservative rasterisation of the
    band, occlusion approximated front to back by "each layer fills what the nearer ones left".
    It agrees in 10–13 of 30, whatever the layers (faces, connected parts, flat groups) and the
    depth order (at the pixel centre, at each layer's centroid, at the smallest layer's centroid),
    and costs 2.3× the 1-D filter (γ forward+backward, b8 1242×375: 9.2 vs 20.9 images/s). Why:
    the fill assumes the layers overlap as little as possible, which is wrong exactly at a
    silhouette, where a front-facing face behind the side (the car's end, seen nearly edge-on)
    shares the silhouette edge — the pixel's coverage saturates at 1 and the edge's motion gets
    no derivative — and where a decal (a light) sits on a slanted panel, whose order flips with
    the reference point. An exact filter needs each pair of overlapping triangles' common area in
    the square (convex clipping of two triangles and the square), several times the cost again,
    which the attack's time budget (issue 6's ratio) does not allow on CPU.
    """

    good = _agreement(_geometric_cases(name, 120, seed={"translate": 11, "rotate": 12, "mesh": 13}[name]))
    print(f"{name}: {sum(good)}/{len(good)} cases agree")
    assert sum(good) >= 0.9 * len(good), good


def test_no_parameter_is_dead(half_scene):
    """Every parameter that changes pixels gets a non-zero gradient, for every visible object."""
    s = half_scene
    out = render(s)
    theta = editor.zero_theta(s, requires_grad=True)
    weights = _smooth_weights(s.height, s.width, torch.Generator().manual_seed(1))
    (render(editor.apply(s, theta)).image * weights).sum().backward()
    for name in ("weather", "foliage"):
        assert theta[name].grad.abs().sum() > 0, name
    for n in torch.nonzero(out.pixel_count[0] > 30).squeeze(1).tolist():
        for name in ("color", "rotate", "translate", "mesh"):
            assert theta[name].grad[0, n].abs().sum() > 0, (name, n)
    # and an object nobody can see gets none
    hidden = (~out.visible[0]) & s.obj_valid[0]
    for n in torch.nonzero(hidden).squeeze(1).tolist():
        assert theta["translate"].grad[0, n].abs().sum() == 0


def test_soft_terminator_is_c1_and_exact_away_from_the_kink():
    from sae.render.shading import soft_clamp_min

    x = torch.linspace(-0.5, 0.5, 2001, dtype=torch.float64, requires_grad=True)
    y = soft_clamp_min(x, 0.1)
    (g,) = torch.autograd.grad(y.sum(), x)
    far = x.detach().abs() >= 0.1
    assert torch.equal(y.detach()[far], x.detach().clamp_min(0.0)[far])
    assert (g[1:] - g[:-1]).abs().max() < 0.01  # no jump in the derivative
    assert 0.0 <= g.min() and g.max() <= 1.0


def test_gradients_repeat_bit_for_bit_on_cpu_in_deterministic_mode():
    """Two backward passes through the renderer give the same bits once the CLI's
    :func:`sae.cli.deterministic_on_cpu` is on (float32, two threads: the backward of the
    renderer's gathers otherwise adds with atomics, and the last bits wander)."""
    from sae.cli import deterministic_on_cpu

    scene = Scene.cat([street_scene(seed=s, height=94, width=310) for s in (1, 2)])

    def grads():
        theta = editor.zero_theta(scene, ["foliage", "color", "translate"], requires_grad=True)
        render(editor.apply(scene, theta)).image.pow(2).mean().backward()
        return [theta[k].grad.clone() for k in sorted(theta)]

    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        deterministic_on_cpu("cpu")
        first = grads()
        for _ in range(4):
            assert all(torch.equal(a, b) for a, b in zip(first, grads(), strict=True))
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])
