import zipfile

import numpy as np
import pytest
import torch

from sae.data.street import street_scene
from sae.scene.ir import Scene


def _assert_same(a: Scene, b: Scene):
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        assert torch.equal(x, y), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_round_trip_is_exact(tmp_path, dtype):
    scene = street_scene(seed=5, height=40, width=120, dtype=dtype)
    # make every field non-trivial so a lossy writer would be caught
    scene = scene.replace(
        obj_ffd=torch.randn_like(scene.obj_ffd) * 0.01,
        weather=torch.tensor([[0.1, 0.2, 0.3, -0.4]], dtype=dtype),
        foliage=torch.tensor([[0.5, -0.25, 0.125, 1 / 3]], dtype=dtype),
    )
    path = tmp_path / "s.npz"
    scene.save(path)
    back = Scene.load(path)
    _assert_same(scene, back)
    # the file holds no pickle: numpy refuses pickled members when allow_pickle=False
    with np.load(path, allow_pickle=False) as data:
        assert "bg_color" in data.files and "__meta__" in data.files


def test_cat_pads_objects_and_round_trips(tmp_path):
    a = street_scene(seed=1, height=30, width=90, n_cars=2, n_pedestrians=0, n_cyclists=0)
    b = street_scene(seed=2, height=30, width=90, n_cars=5, n_pedestrians=1, n_cyclists=1)
    both = Scene.cat([a, b]).validate()
    assert both.batch_size == 2
    assert both.max_objects == b.max_objects
    assert int(both.obj_valid[0].sum()) == int(a.obj_valid.sum())
    assert (both.obj_track_id[0, a.max_objects :] == -1).all()
    both.save(tmp_path / "both.npz")
    _assert_same(both, Scene.load(tmp_path / "both.npz"))
    _assert_same(both[1].pad_objects(both.max_objects), both[1])


def test_load_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        Scene.load(tmp_path / "nope.npz")
    bad = tmp_path / "truncated.npz"
    street_scene(seed=0, height=20, width=60).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz"):
        Scene.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        Scene.load(other)
    assert zipfile.is_zipfile(other)


def test_validate_names_the_bad_field():
    s = street_scene(seed=0, height=20, width=60)
    with pytest.raises(ValueError, match="obj_dims"):
        s.replace(obj_dims=s.obj_dims[..., :2]).validate()
    with pytest.raises(ValueError, match="obj_template"):
        s.replace(obj_template=s.obj_template.float()).validate()


def test_generation_is_deterministic():
    a = street_scene(seed=9, height=30, width=90)
    b = street_scene(seed=9, height=30, width=90)
    _assert_same(a, b)
    c = street_scene(seed=10, height=30, width=90)
    assert not torch.equal(a.bg_color, c.bg_color)
