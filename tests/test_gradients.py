"""Autograd vs central finite differences of a scalar loss of the rendered image.

Appearance parameters (colour, weather, foliage) are smooth: relative error ≤ 1e-2 in float64.
Geometric ones (translate, rotate, mesh) change pixels discontinuously; the anti-aliasing pass
makes the image continuous in edge positions, and the check is statistical over random cases
(a random car, pose, direction and smooth loss weights) whose finite-difference steps move the
object's farthest vertex by 1, 1.5 and 2 pixels.
"""

import pytest
import torch

from sae.data.street import street_scene
from sae.render import gradcheck
from sae.render.renderer import render
from sae.scene import editor
from sae.scene.ir import Scene


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
        weights = gradcheck.smooth_weights(s.height, s.width, gen)
        direction = torch.randn(editor.theta_shape(s, name), generator=gen, dtype=torch.float64)
        auto, fd = gradcheck.check(gradcheck.Case(s, name, direction, weights, 1e-6), multiples=(1.0,))
        assert auto != 0.0
        assert abs(auto - fd) <= 1e-2 * abs(fd), (name, auto, fd)


def _geometric_cases(name: str, cases: int, seed: int, h: int = 375, w: int = 1242):
    """(autograd, finite difference) of ``cases`` random cases (:mod:`sae.render.gradcheck`)."""
    return [gradcheck.check(c) for c in gradcheck.random_cases(name, cases, seed, h, w)]


def _agreement(results) -> list[bool]:
    """The issue's criterion per case: same sign and within 25 %."""
    return [gradcheck.agrees(a, f) for a, f in results]


def test_slopes_from_samples_separate_a_jump_from_the_derivative():
    """On L(t) = 3t + t³ plus a jump J inside every window, the finite difference of L carries
    the jump's J·Σh / Σ2h², the one of the integrated derivative does not."""
    step, jump = 0.5, 0.8
    ts = [step * 2 * (2 * i / 80 - 1) for i in range(81)]
    losses = [3 * t + t**3 + (jump if t > 0.3 * step else 0.0) for t in ts]
    derivatives = [3 + 3 * t * t for t in ts]
    fd, fd_continuous = gradcheck.slopes_from_samples(ts, losses, derivatives, step)
    hs = [k * step for k in gradcheck.MULTIPLES]
    smooth = sum(6 * h * h + 2 * h**4 for h in hs) / sum(2 * h * h for h in hs)
    assert fd == pytest.approx(smooth + jump * sum(hs) / sum(2 * h * h for h in hs), rel=1e-12)
    assert fd_continuous == pytest.approx(smooth, rel=1e-3)  # the trapezoid rule's error only
    assert gradcheck.agrees(3.0, fd_continuous) and not gradcheck.agrees(3.0, -fd)


def test_profile_repeats_the_check_at_its_grid_points():
    """The decomposition's finite difference is the check's own (its samples include ±k·step),
    and its derivative at t = 0 is the check's autograd."""
    (case,) = gradcheck.random_cases("translate", 1, seed=5, h=94, w=310)
    auto, fd = gradcheck.check(case)
    prof = gradcheck.profile(case, samples=8)
    assert prof.auto == pytest.approx(auto, rel=1e-12)
    assert prof.fd == pytest.approx(fd, rel=1e-9)
    assert prof.fd_continuous != 0.0
    with pytest.raises(ValueError, match="multiple of 8"):
        gradcheck.profile(case, samples=10)


def test_a_supersampled_case_is_the_same_loss_of_a_finer_image():
    """The reference renders S× larger with each pixel's weight spread over its S² sub-pixels: the
    background's loss is the same to rounding, the car's contribution the same to its edge
    pixels' share, the car lands on the same pixels, and the step is the case's."""
    (case,) = gradcheck.random_cases("translate", 1, seed=5, h=94, w=310)
    assert gradcheck.supersampled(case, 1) is case
    big = gradcheck.supersampled(case, 3)
    assert big.scene.height == 3 * 94 and big.scene.width == 3 * 310 and big.step == case.step
    assert big.weights.sum().item() == pytest.approx(case.weights.sum().item(), rel=1e-12)
    empty = case.scene.replace(obj_valid=torch.zeros_like(case.scene.obj_valid))
    empty_big = big.scene.replace(obj_valid=torch.zeros_like(big.scene.obj_valid))
    bg = (render(empty).image * case.weights).sum().item()
    assert (render(empty_big).image * big.weights).sum().item() == pytest.approx(bg, rel=1e-12)
    small_l, big_l = case.loss(0.0)[0], big.loss(0.0)[0]
    assert abs(big_l - small_l) <= 0.05 * abs(small_l - bg), (small_l, big_l, bg)
    small_mask = render(case.scene).face_map[0] >= 0
    big_mask = (render(big.scene).face_map[0] >= 0).double().reshape(94, 3, 310, 3).mean(dim=(1, 3))
    assert ((big_mask > 0.5) == small_mask).double().mean() > 0.995
    with pytest.raises(ValueError, match="positive"):
        gradcheck.supersampled(case, 0)


@pytest.mark.parametrize("name", ["translate", "rotate", "mesh"])
def test_geometric_gradients_agree_with_finite_differences(name):
    """Regression guard at the level reached so far (see the slow test for the target)."""
    results = _geometric_cases(name, 16, seed={"translate": 1, "rotate": 2, "mesh": 3}[name])
    same_sign = [a * f > 0 for a, f in results]
    rel = sorted(abs(a - f) / abs(f) for a, f in results)
    assert sum(same_sign) >= 0.8 * len(results), results
    assert rel[len(rel) // 2] <= 0.2, rel
    assert sum(_agreement(results)) >= 0.75 * len(results), results


_BELOW_TARGET = (
    "below the issue's 90 %: {} of 120 cases within 25 %, {} without the image's jumps "
    "(sae render gradcheck --decompose); an 8x supersampled reference reaches about {} "
    "(--reference 8): the 1-D pair filter's derivative falls short"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "translate",
        pytest.param("rotate", marks=pytest.mark.xfail(strict=True, reason=_BELOW_TARGET.format(97, 104, 112))),
        pytest.param("mesh", marks=pytest.mark.xfail(strict=True, reason=_BELOW_TARGET.format(102, 106, 109))),
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

    Measured in session 24 (``sae render gradcheck --decompose --samples 40``, these 120 cases):
    removing every jump would not reach the target. Sampling L and dL/dt at 41 points along each
    direction and taking the finite difference of the integrated derivative (the image as it would
    be with no jumps, the same derivatives) gives rotate 104, mesh 106 and translate 113 of 120
    (translate's 9 misses: 5 the jumps', 4 would remain). Of rotate's 23 misses, 11 are the jumps'
    doing and 12 would remain; 4 of the 97 agreeing cases agree only thanks to a jump. Mesh: 7 and
    11 of 18. What remains is the derivative varying within the window: dL/dt over ±2 px moves in
    steps (traced: a thin, darker trim face turning away along a 45° silhouette changes dL/dt by
    +4.6 at once; a van's side seen from behind turns front-facing 0.15 px into the window and
    triples dL/dt for 0.3 px; a light's bevel inset in the body panel, hidden by it, leaves a column
    of pairs with no boundary to blend, dL/dt 0, until its face covers a centre). The first two are
    true kinks of a flat-shaded polygonal image, which no renderer removes; a central difference
    over pixels averages them and the derivative at θ does not. Also measured: rendering 2× or 3×
    larger and box-filtering down (the same 1-D filter on sub-pixels, 4× and 9× the cost) gives
    rotate 104 and 105; a 1-D tent filter instead of the box (each pair's segment weighed by 1 − x
    and x) 95 / 103 (mesh), translate 111; following slivers through 8 faces instead of 3 (branch
    ``wip/sliver-follow``: a van's side panel seen edge-on is a folded fan of four same-colour
    triangles along 0.9 px, which the pair dropped) 97 / 103 / 111; falling back to the front face's
    own edge where the same-colour walk finds none 93 / 99 / 112.

    Measured in session 25 (``sae render gradcheck --reference S``: the same cases rendered S×
    larger on each axis and box-filtered back, the loss of a finer image at this resolution, which a
    renderer's derivative can at best match). At S = 4 the reference agrees with itself in 105
    (rotate) and 101 (mesh) of 120; at S = 8, 7 of rotate's 15 remaining misses and 8 of mesh's 19
    agree too, while all 20 rotate cases drawn from the 105 still agree (mesh's 101 not rerun): the
    box-filtered image reaches about 112 and 109, so the target is within reach of exact coverage,
    and the true kinks (a face turning edge-on inside the window: in rotate's case 0 two small faces
    flip 0.03 px from θ, and dL/dt goes from -35 to +40) are only part of the misses. Our autograd
    agrees with the 4× reference's finite difference in 93 / 99 cases, and in 1 of rotate's 15 and 8
    of mesh's 19 with the 8× one: what falls short is the 1-D pair filter's derivative (its jumps,
    and the steps it takes as pairs switch edges), which corrects the paragraph above ("no renderer
    removes" holds for the kinks, not for most of the variation). Also measured: a sliver walk that
    may leave through an edge up to 63° from the pair's cross axis, not only a dominant one (a
    sliver along a 45° silhouette has one edge on each side of 45°, so neither pair direction
    followed it and a pixel jumped by 0.08 of a colour when its centre crossed the sliver's edge),
    98 / 103 / 111; through any edge 95 / 97 / 107; central differences over 1 px alone 88 / 99.
    """

    good = _agreement(_geometric_cases(name, 120, seed=gradcheck.GEOMETRIC[name]))
    print(f"{name}: {sum(good)}/{len(good)} cases agree")
    assert sum(good) >= 0.9 * len(good), good


def test_no_parameter_is_dead(half_scene):
    """Every parameter that changes pixels gets a non-zero gradient, for every visible object."""
    s = half_scene
    out = render(s)
    theta = editor.zero_theta(s, requires_grad=True)
    weights = gradcheck.smooth_weights(s.height, s.width, torch.Generator().manual_seed(1))
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
