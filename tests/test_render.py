import math

import pytest
import torch
from scenes import one_object_scene

from sae.data.street import street_scene
from sae.render.renderer import get_renderer, render
from sae.scene import editor
from sae.scene.ir import FAR_DEPTH, SEM, Scene
from sae.scene.templates import template_id


def _one_object_scene(
    template: str = "sedan",
    z: float = 12.0,
    x: float = 0.0,
    ry: float = -math.pi / 2,
    h: int = 94,
    w: int = 311,
    bg_depth: float = FAR_DEPTH,
) -> Scene:
    return one_object_scene(template_id(template), (x, 1.65, z), ry, (0.7, 0.1, 0.1), h, w, bg_depth)


def test_boxes_are_the_tight_boxes_of_the_masks(half_scene):
    out = render(half_scene)
    masks = out.masks()[0]
    seen = 0
    for n in range(half_scene.max_objects):
        m = masks[n]
        if not m.any():
            assert out.pixel_count[0, n] == 0 and (out.boxes[0, n] == -1).all()
            continue
        seen += 1
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert out.boxes[0, n].tolist() == [xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item()]
        assert out.pixel_count[0, n] == m.sum()
    assert seen >= 3
    # and the visible box lies inside the projected (amodal) box, up to a pixel
    vis = out.visible[0]
    proj, box = out.boxes_projected[0][vis], out.boxes[0][vis].double()
    assert (box[:, :2] >= torch.clamp(proj[:, :2], min=0).floor() - 1).all()
    assert (box[:, 2:] <= proj[:, 2:].ceil() + 1).all()


def test_projected_box_matches_kitti_geometry():
    """A car's projected box equals the projection of its KITTI 3-D box corners."""
    s = _one_object_scene(z=15.0, x=1.0, ry=0.3)
    out = render(s)
    h, w, l = s.obj_dims[0, 0].tolist()
    x, y, z = s.obj_location[0, 0].tolist()
    ry = s.obj_rotation_y[0, 0].item()
    corners = []
    for dx in (-l / 2, l / 2):
        for dy in (0.0, -h):
            for dz in (-w / 2, w / 2):
                cx = math.cos(ry) * dx + math.sin(ry) * dz + x
                cz = -math.sin(ry) * dx + math.cos(ry) * dz + z
                corners.append((cx, dy + y, cz))
    K = s.K[0]
    us = [K[0, 0].item() * c[0] / c[2] + K[0, 2].item() for c in corners]
    vs = [K[1, 1].item() * c[1] / c[2] + K[1, 2].item() for c in corners]
    proj = out.boxes_projected[0, 0].tolist()
    # the mesh fills its box, so its projection lies within the corners' projection
    assert proj[0] >= min(us) - 1e-6 and proj[2] <= max(us) + 1e-6
    assert proj[1] >= min(vs) - 1e-6 and proj[3] <= max(vs) + 1e-6
    assert proj[2] - proj[0] > 0.8 * (max(us) - min(us))
    assert abs(proj[3] - max(vs)) < 0.5  # wheels touch the ground: the bottom matches


def test_depth_of_object_pixels_is_exact():
    """A car seen from behind: its rear face is the plane z = location - l/2."""
    s = _one_object_scene(z=12.0, ry=-math.pi / 2)
    out = render(s)
    l = s.obj_dims[0, 0, 2].item()
    mask = out.masks()[0, 0]
    d = out.depth[0][mask]
    assert d.min() == pytest.approx(12.0 - l / 2, abs=0.05)
    assert (d <= 12.0 + l / 2 + 1e-6).all()
    assert torch.equal(out.depth[0][~mask], s.bg_depth[0][~mask])


def test_background_geometry_hides_objects_behind_it():
    s = _one_object_scene(z=20.0, bg_depth=FAR_DEPTH)
    assert render(s).pixel_count[0, 0] > 0
    wall = _one_object_scene(z=20.0, bg_depth=10.0)
    out = render(wall)
    assert out.pixel_count[0, 0] == 0
    assert torch.allclose(out.image, wall.bg_color)


def test_empty_scene_reproduces_the_background():
    s = _one_object_scene().replace(obj_valid=torch.zeros(1, 1, dtype=torch.bool))
    out = render(s)
    assert torch.equal(out.image, s.bg_color.clamp(0, 1))
    assert (out.instance == -1).all()


def test_float32_matches_float64(small_scene):
    a = render(small_scene).image
    b = render(small_scene.to(dtype=torch.float32)).image
    # rare pixel-centre ties may flip; everything else agrees to float32 precision
    close = (a.float() - b).abs().amax(-1) < 1e-4
    assert close.float().mean() > 0.995


def test_batch_renders_like_single_scenes():
    a = street_scene(seed=1, height=47, width=155, dtype=torch.float64)
    b = street_scene(seed=2, height=47, width=155, dtype=torch.float64)
    both = render(Scene.cat([a, b]))
    for i, s in enumerate((a, b)):
        single = render(s)
        n = s.max_objects
        assert torch.allclose(both.image[i], single.image[0], atol=1e-12)
        assert torch.equal(both.boxes[i, :n], single.boxes[0])


def test_weather_darkens_and_fogs():
    s = street_scene(seed=4, height=47, width=155, dtype=torch.float64)
    base = render(s).image
    fog = render(s.replace(weather=torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64))).image
    dusk = render(s.replace(weather=torch.tensor([[0.0, 0, 1.0, 0]], dtype=torch.float64))).image
    # pixels away from every object (the anti-aliasing pass blends those next to an edge)
    occupied = (render(s).instance[0] >= 0).double()[None, None]
    free = torch.nn.functional.max_pool2d(occupied, 3, 1, 1)[0, 0] == 0
    sky = (s.bg_semantic[0] == SEM["Sky"]) & free
    road = (s.bg_semantic[0] == SEM["Road"]) & free
    # fog: far pixels (sky) become the airlight; near road keeps more of its colour than far road
    air = torch.tensor([0.74, 0.76, 0.79], dtype=torch.float64)
    assert (fog[0][sky] - air).abs().max() < 1e-3
    depth = s.bg_depth[0]
    near, far = road & (depth < 10), road & (depth > 30)
    assert near.any() and far.any()
    assert (fog[0][near] - air).abs().mean() > 2 * (fog[0][far] - air).abs().mean()
    # dusk: darker and warmer
    assert dusk.mean() < 0.8 * base.mean()
    assert dusk[..., 0].mean() / dusk[..., 2].mean() > base[..., 0].mean() / base[..., 2].mean()


def test_backend_registry():
    assert get_renderer("torch").name == "torch"
    with pytest.raises(KeyError, match="mitsuba"):
        get_renderer("mitsuba")


@pytest.mark.gpu
def test_cuda_matches_cpu(small_scene):
    cpu = render(small_scene)
    gpu = render(small_scene.to("cuda"))
    assert torch.allclose(gpu.image.cpu(), cpu.image, atol=1e-6)
    theta = editor.zero_theta(small_scene.to("cuda"), requires_grad=True)
    render(editor.apply(small_scene.to("cuda"), theta)).image.sum().backward()
    assert all(t.grad is not None for t in theta.values())


def test_a_deformed_flat_group_keeps_one_shading_normal(half_scene):
    """Under FFD the faces of a flat group bend apart, but they are shaded with one normal (so a
    quad's diagonal never becomes a colour edge); a rigid pose changes nothing."""
    from sae.render.geometry import pack_meshes, pose_vertices
    from sae.render.shading import face_normals, group_normals
    from sae.scene import editor

    s = half_scene
    packed = pack_meshes(s)
    theta = editor.zero_theta(s, ["mesh"])
    theta["mesh"] = 0.02 * torch.randn(theta["mesh"].shape, generator=torch.Generator().manual_seed(0), dtype=s.dtype)
    bent = editor.apply(s, theta)
    for scene, flat in ((s, True), (bent, False)):
        verts = pose_vertices(scene, packed)
        own = face_normals(verts, packed.faces)
        shared = group_normals(verts, packed.faces, packed.face_group, packed.num_groups)
        assert torch.allclose(shared.norm(dim=1), torch.ones(len(shared), dtype=s.dtype))
        first = torch.full((packed.num_groups,), -1, dtype=torch.int64).scatter_reduce(
            0, packed.face_group, torch.arange(len(shared)), "amax"
        )
        assert torch.equal(shared, shared[first[packed.face_group]])  # one normal per group
        spread = (own - shared).norm(dim=1).max().item()
        if flat:
            assert spread < 1e-9
        else:
            assert spread > 1e-4  # the deformation really bent some group
    single = torch.bincount(packed.face_group, minlength=packed.num_groups)[packed.face_group] == 1
    verts = pose_vertices(bent, packed)
    assert torch.equal(
        group_normals(verts, packed.faces, packed.face_group, packed.num_groups)[single],
        face_normals(verts, packed.faces)[single],
    )


def test_the_background_is_shaded_once_while_its_inputs_stay_the_same(small_scene, monkeypatch):
    """γ keeps the last batch's shaded background (renderer._BackgroundCache): a repeat with the
    same background, weather, foliage and sun tensors reuses it, bit for bit; an in-place change,
    a new code tensor or one requiring grad shades it again, and weather keeps its gradient."""
    import sae.render.renderer as R

    calls = []
    real = R.shade_background
    monkeypatch.setattr(R, "shade_background", lambda *a: calls.append(1) or real(*a))
    R.clear_background_cache()
    s = small_scene
    with torch.no_grad():
        first = render(s).image
        moved = render(s.replace(obj_location=s.obj_location + 0.3)).image  # geometry only: a hit
        again = render(s).image
    assert len(calls) == 1 and torch.equal(first, again) and not torch.equal(first, moved)
    theta = editor.zero_theta(s, ("translate", "rotate", "mesh"), requires_grad=True)
    out = render(editor.apply(s, theta))  # grad through geometry: the background is not in it
    (out.image * torch.rand_like(out.image)).sum().backward()
    assert len(calls) == 1 and torch.equal(out.image.detach(), first)
    assert all(t.grad.abs().sum() > 0 for t in theta.values())
    with torch.no_grad():
        s.bg_color.mul_(0.5)  # in place: the version counter moves
        darker = render(s).image
        s.bg_color.mul_(2.0)
    assert len(calls) == 2 and not torch.equal(darker, first)
    foggy = s.replace(weather=s.weather + torch.tensor([0.3, 0.0, 0.0, 0.0], dtype=s.dtype))
    with torch.no_grad():
        render(foggy)
    assert len(calls) == 3
    theta = editor.zero_theta(s, ("weather",), requires_grad=True)
    out = render(editor.apply(s, theta))
    out.image.sum().backward()
    assert len(calls) == 4 and theta["weather"].grad.abs().sum() > 0
    R.clear_background_cache()
    with torch.no_grad():
        assert torch.equal(render(s).image, first)  # shaded afresh: the same bits
    assert len(calls) == 5
