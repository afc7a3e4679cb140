import itertools

import pytest
import torch

from sae.render.renderer import render
from sae.scene import editor
from sae.scene.ffd import MAX_OFFSET, bottom_layer_mask
from sae.scene.ir import Scene


def _random_theta(scene: Scene, scale: float, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    theta = {}
    for p in editor.PARAMETERS:
        t = torch.rand(editor.theta_shape(scene, p), generator=gen, dtype=torch.float64) * 2 - 1
        theta[p] = (t * scale * editor.PAPER_EPS[p] / 0.05).to(scene.dtype)
    theta["weather"] = theta["weather"].abs()  # fog, cloud, dusk start at 0: stay in range
    return theta


def test_zero_theta_is_the_identity(small_scene):
    zero = editor.zero_theta(small_scene)
    edited = editor.apply(small_scene, zero)
    for name in small_scene.__dataclass_fields__:
        assert torch.equal(getattr(edited, name), getattr(small_scene, name)), name
    a, b = render(small_scene), render(edited)
    assert torch.equal(a.image, b.image)
    assert torch.equal(a.boxes, b.boxes)


def test_composition_law_holds_for_every_parameter(small_scene):
    for p in editor.PARAMETERS:
        t1 = {p: _random_theta(small_scene, 0.05, 1)[p]}
        t2 = {p: _random_theta(small_scene, 0.05, 2)[p]}
        once = render(editor.apply(small_scene, {p: t1[p] + t2[p]})).image
        twice = render(editor.apply(editor.apply(small_scene, t1), t2)).image
        assert (once - twice).abs().max() <= 1e-5, p
    # and all six at once
    t1, t2 = _random_theta(small_scene, 0.05, 3), _random_theta(small_scene, 0.05, 4)
    once = render(editor.apply(small_scene, {k: t1[k] + t2[k] for k in t1})).image
    twice = render(editor.apply(editor.apply(small_scene, t1), t2)).image
    assert (once - twice).abs().max() <= 1e-5


def test_perturbations_change_the_image(small_scene):
    base = render(small_scene).image
    for p in editor.PARAMETERS:
        theta = editor.project({p: _random_theta(small_scene, 1.0, 5)[p]}, small_scene, editor.PAPER_EPS)
        img = render(editor.apply(small_scene, theta)).image
        assert (img - base).abs().max() > 1e-3, p


def test_projection_keeps_theta_in_the_ball_and_feasible(small_scene):
    s = small_scene
    eps = {p: 0.5 for p in editor.PARAMETERS}
    theta = editor.project(_random_theta(s, 20.0, 6), s, eps)
    for p, t in theta.items():
        assert t.abs().max() <= eps[p] + 1e-12, p
    moved = editor.apply(s, theta)
    assert moved.obj_color.min() >= 0 and moved.obj_color.max() <= 1
    assert moved.weather[:, 0].min() >= 0  # fog
    assert (moved.weather[:, :3] <= 1).all() and (moved.weather[:, 3].abs() <= 1).all()
    assert moved.foliage.abs().max() <= 1
    assert moved.obj_ffd.abs().max() <= MAX_OFFSET + 1e-12
    assert (moved.obj_ffd[..., torch.as_tensor(bottom_layer_mask()), 1] == 0).all()
    # on the ground, in front of the camera, and out of each other's way
    assert torch.allclose(moved.obj_location[..., 1], s.obj_location[..., 1])
    assert (moved.obj_location[..., 2][s.obj_valid] >= editor.EditorConfig().min_depth_m).all()
    clash = editor.overlaps(moved, editor.EditorConfig().clearance_m) & ~editor.overlaps(
        s, editor.EditorConfig().clearance_m
    )
    assert not clash.any()
    # idempotent
    again = editor.project(theta, s, eps)
    for p in theta:
        assert torch.allclose(again[p], theta[p]), p


def test_projection_stops_a_car_driving_into_another():
    from sae.data.street import street_scene

    s = street_scene(seed=0, height=20, width=60, n_cars=2, n_pedestrians=0, n_cyclists=0, dtype=torch.float64)
    # two cars in one lane, 8 m apart; push the rear one 10 m forward
    loc = torch.tensor([[[0.0, 1.65, 20.0], [0.0, 1.65, 28.0]]], dtype=torch.float64)
    s = s.replace(obj_location=loc, obj_rotation_y=torch.full((1, 2), -torch.pi / 2, dtype=torch.float64))
    theta = {"translate": torch.tensor([[[0.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)}
    out = editor.project(theta, s, {"translate": 1.0})
    moved = editor.apply(s, out)
    assert not editor.overlaps(moved).any()
    assert 0 < out["translate"][0, 0, 1] < 1.0


def test_targets_restrict_object_parameters(small_scene):
    targets = torch.zeros_like(small_scene.obj_valid)
    targets[0, 0] = True
    theta = _random_theta(small_scene, 1.0, 7)
    moved = editor.apply(small_scene, theta, targets=targets)
    for field in ("obj_color", "obj_location", "obj_rotation_y", "obj_ffd"):
        a, b = getattr(moved, field)[0, 1:], getattr(small_scene, field)[0, 1:]
        assert torch.equal(a, b), field
        assert not torch.equal(getattr(moved, field)[0, 0], getattr(small_scene, field)[0, 0]), field


def test_combinations():
    assert editor.parse_combo("mesh+translate+rotate") == ("rotate", "translate", "mesh")
    with pytest.raises(ValueError, match="colour"):
        editor.parse_combo("colour+mesh")
    combos = [c for r in range(1, 7) for c in itertools.combinations(editor.PARAMETERS, r)]
    assert len(combos) == 63 and len([c for c in combos if len(c) > 1]) == 57
