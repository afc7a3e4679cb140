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
