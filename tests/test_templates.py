import numpy as np
import pytest

from sae.scene.ffd import LATTICE, NUM_CONTROL, bottom_layer_mask, control_grid, ffd_weights
from sae.scene.templates import CAR_TEMPLATES, Material, ObjectClass, signed_volume, templates


@pytest.mark.parametrize("index", range(len(templates())))
def test_template_fills_its_unit_box_and_faces_point_outward(index):
    t = templates()[index]
    assert np.allclose(t.vertices.min(0), [-0.5, -1.0, -0.5])
    assert np.allclose(t.vertices.max(0), [0.5, 0.0, 0.5])
    assert t.faces.min() >= 0 and t.faces.max() < len(t.vertices)
    assert len(t.materials) == len(t.faces)
    assert set(np.unique(t.materials)) <= {m.value for m in Material}
    # Outward winding: every face's normal points away from its own part, so the total signed
    # volume is positive, and no face is degenerate.
    assert signed_volume(t) > 0
    tri = t.vertices[t.faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert (area > 0).all()


def test_cars_have_the_parts_a_person_recognises():
    for i in CAR_TEMPLATES:
        t = templates()[i]
        assert t.object_class == ObjectClass.CAR
        present = set(np.unique(t.materials).tolist())
        for part in (
            Material.PAINT,
            Material.GLASS,
            Material.TYRE,
            Material.RIM,
            Material.HEADLIGHT,
            Material.TAILLIGHT,
        ):
            assert part in present, (t.name, part.name)
        assert 300 <= len(t.faces) <= 1000
    heights = {templates()[i].name: templates()[i].default_dims[0] for i in CAR_TEMPLATES}
    assert heights["suv"] > heights["sedan"]
    names = [t.name for t in templates()]
    assert {"pedestrian", "cyclist"} <= set(names)
    ped = templates()[names.index("pedestrian")]
    assert Material.SKIN in set(ped.materials.tolist())


def test_ffd_weights_are_a_partition_of_unity_with_linear_precision():
    verts = np.random.default_rng(0).uniform([-0.5, -1, -0.5], [0.5, 0, 0.5], size=(200, 3))
    w = ffd_weights(verts)
    assert w.shape == (200, NUM_CONTROL)
    assert np.allclose(w.sum(1), 1.0)
    assert (w >= 0).all()
    # Bernstein polynomials reproduce linear functions: the rest lattice maps every point to itself.
    assert np.allclose(w @ control_grid(), verts)
    assert bottom_layer_mask().sum() == LATTICE[0] * LATTICE[2]


@pytest.mark.parametrize("index", range(len(templates())))
def test_flat_groups_are_the_maximal_flat_surfaces_of_one_material(index):
    from sae.render.geometry import face_neighbours, flat_groups

    t = templates()[index]
    nbr = face_neighbours(t.faces)
    groups = flat_groups(t.vertices, t.faces, t.materials, nbr)
    assert groups.shape == (len(t.faces),) and groups.min() == 0
    assert set(np.unique(groups)) == set(range(groups.max() + 1))
    tri = t.vertices[t.faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    for g in range(groups.max() + 1):
        members = np.flatnonzero(groups == g)
        assert len(set(t.materials[members].tolist())) == 1
        assert np.allclose(n[members], n[members[0]], atol=1e-6)  # one plane, one orientation
        offsets = np.einsum("ij,ij->i", tri[members, 0], np.broadcast_to(n[members[0]], (len(members), 3)))
        assert np.ptp(offsets) < 1e-9
    # maximal: neighbours in one plane with one material are never split
    f, k = np.nonzero(nbr >= 0)
    other = nbr[f, k]
    joinable = (t.materials[f] == t.materials[other]) & (np.einsum("ij,ij->i", n[f], n[other]) > 1 - 1e-9)
    assert (groups[f][joinable] == groups[other][joinable]).all()
    assert (groups[f][~joinable] != groups[other][~joinable]).all()
    # every quad of a lofted strip is one group of two triangles at least: fewer groups than faces
    assert groups.max() + 1 < len(t.faces)


def test_a_car_wheel_cap_is_one_group():
    from sae.render.geometry import face_neighbours, flat_groups

    t = templates()[CAR_TEMPLATES[0]]
    groups = flat_groups(t.vertices, t.faces, t.materials, face_neighbours(t.faces))
    rim = np.flatnonzero(t.materials == Material.RIM)
    # 4 wheels × 2 caps, each a fan of 12 triangles
    assert len(rim) == 4 * 2 * 12
    assert len(np.unique(groups[rim])) == 8
