"""The embedded generator: determinism, exact round trips, identity rendering, labels."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sae.data.generate import SCALES, VARIATION_CODES, generate, plan
from sae.data.kitti import KITTI
from sae.data.street import street_world, world_scene
from sae.data.vkitti import VKITTI2
from sae.render.renderer import render
from sae.scene.ir import Scene


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    manifest = generate(out, "smoke", seed=7, workers=2, progress=False)
    return out, manifest


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_manifest_and_layout(smoke_data):
    out, manifest = smoke_data
    scale = SCALES["smoke"]
    assert manifest["splits"]["pretrain"] == scale.pretrain_frames
    n_ft = scale.finetune[0] * scale.finetune[1] * len(scale.variations)
    assert manifest["splits"]["finetune"] == n_ft
    assert len(list((out / "pretrain" / "kitti" / "training" / "image_2").glob("*.png"))) == scale.pretrain_frames
    assert len(VKITTI2(out / "finetune" / "vkitti2")) == n_ft
    assert len(KITTI(out / "finetune" / "kitti")) == n_ft
    assert json.loads((out / "manifest.json").read_text())["objects"] > 0


def test_same_seed_same_bytes_for_any_worker_count(smoke_data, tmp_path):
    out, _ = smoke_data
    generate(tmp_path, "smoke", seed=7, workers=1, progress=False)
    assert _digest(tmp_path) == _digest(out)


def test_interrupted_run_resumes_to_the_same_bytes(smoke_data, tmp_path):
    out, _ = smoke_data
    shutil.copytree(out, tmp_path / "d")
    d = tmp_path / "d"
    # lose a finished frame entirely, and leave a half-written temporary file behind
    victim = d / "finetune" / "vkitti2" / "Scene01" / "fog" / "frames" / "rgb" / "Camera_0" / "rgb_00001.jpg"
    victim.unlink()
    (d / ".parts" / "finetune" / "Scene01" / "fog" / "00001.json").unlink()
    stale = victim.parent / "rgb_00001.jpgk3j4h5g6.tmp"  # named as sae.io.atomic_path names them
    stale.write_bytes(b"partial")
    (d / "finetune" / "vkitti2" / "Scene01" / "fog" / "bbox.txt").unlink()
    generate(d, "smoke", seed=7, workers=1, progress=False)
    assert not stale.exists()  # a killed writer's temporary is swept
    assert _digest(d) == _digest(out)


def test_vkitti_round_trip_matches_the_scene(smoke_data):
    out, _ = smoke_data
    ds = VKITTI2(out / "finetune" / "vkitti2")
    tasks = [t for t in plan(SCALES["smoke"], 7) if t.split == "finetune"]
    for i in range(len(ds)):
        key, index, camera = ds.index[i]
        frame = ds.read_frame(key, index, camera)
        task = next(t for t in tasks if t.scene == key.scene and t.variation == key.variation and t.frame == index)
        # the stored IR is exactly the generator's scene
        ir = Scene.load(ds.file(key, "ir", 0, index))
        world = street_world(task.world_seed, *task.objects)
        expected = world_scene(world, task.frame * task.stride, *task.size)
        expected = expected.replace(weather=torch.tensor([VARIATION_CODES[task.variation]], dtype=expected.dtype))
        for name in expected.__dataclass_fields__:
            assert torch.equal(getattr(ir, name), getattr(expected, name)), name
        out_r = render(ir)
        # depth and instance maps are the renderer's, to the format's precision
        stored_cm = np.round(frame.depth.astype(np.float64) * 100)
        assert (stored_cm == np.clip(np.round(out_r.depth[0].double().numpy() * 100), 0, 65535)).all()
        slot = out_r.instance[0].numpy()
        tracks = np.where(slot >= 0, ir.obj_track_id[0].numpy()[slot.clip(0)], -1)
        assert (frame.instance == tracks).all()
        # every annotated object is a visible object of the scene, with the renderer's box
        visible = {int(ir.obj_track_id[0, n]): n for n in range(ir.max_objects) if out_r.pixel_count[0, n] > 0}
        assert {o.track_id for o in frame.objects} == set(visible)
        for o in frame.objects:
            n = visible[o.track_id]
            assert o.box == tuple(int(v) for v in out_r.boxes[0, n].tolist())
            assert o.location == pytest.approx(tuple(ir.obj_location[0, n].tolist()), rel=1e-6)
            assert o.rotation_y == pytest.approx(float(ir.obj_rotation_y[0, n]), rel=1e-6)
            assert o.dims == pytest.approx(tuple(ir.obj_dims[0, n].tolist()), rel=1e-6)
            assert o.pixels == int(out_r.pixel_count[0, n])
            assert 0 <= o.truncation <= 1 and 0 < o.occupancy <= 1


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_identity_rendering_reproduces_the_stored_frames(smoke_data):
    out, _ = smoke_data
    ds = VKITTI2(out / "finetune" / "vkitti2")
    kitti = KITTI(out / "finetune" / "kitti")
    tasks = [t for t in plan(SCALES["smoke"], 7) if t.split == "finetune"]
    for key, index, _ in ds.index:
        task = next(t for t in tasks if t.scene == key.scene and t.variation == key.variation and t.frame == index)
        rgb = (render(Scene.load(ds.file(key, "ir", 0, index))).image[0] * 255 + 0.5).to(torch.uint8).numpy()
        lossless = kitti[kitti.names.index(f"{task.kitti_index:06d}")].rgb  # PNG: before JPEG
        assert _psnr(rgb, lossless) >= 40
        jpeg = np.asarray(Image.open(ds.file(key, "rgb", 0, index)).convert("RGB"))
        assert _psnr(rgb, jpeg) >= 30


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_kitti_labels_match_the_renderer_boxes(smoke_data):
    out, _ = smoke_data
    ds = VKITTI2(out / "finetune" / "vkitti2")
    kitti = KITTI(out / "finetune" / "kitti")
    tasks = [t for t in plan(SCALES["smoke"], 7) if t.split == "finetune"]
    checked = 0
    for key, index, _ in ds.index:
        task = next(t for t in tasks if t.scene == key.scene and t.variation == key.variation and t.frame == index)
        labels = kitti[kitti.names.index(f"{task.kitti_index:06d}")].objects
        ir = Scene.load(ds.file(key, "ir", 0, index))
        r = render(ir)
        boxes = [r.boxes[0, n].tolist() for n in range(ir.max_objects) if r.pixel_count[0, n] > 0]
        assert len(labels) == len(boxes)
        for lab, box in zip(labels, boxes, strict=True):
            if lab.truncation == 0:
                assert _iou(lab.box, box) >= 0.95
                checked += 1
    assert checked > 10


def test_derender_recovers_the_objects_and_a_close_image(smoke_data):
    from sae.scene.derender import derender, identity_report

    out, _ = smoke_data
    ds = VKITTI2(out / "eval" / "vkitti2")
    frame = ds[0]
    scene = derender(frame)
    annotated = [o for o in frame.objects if o.detection_class >= 0]
    assert int(scene.obj_valid.sum()) == len(annotated)
    assert scene.bg_color.shape[1:3] == frame.rgb.shape[:2]
    # the background under the objects is filled (no object pixels left in the semantic map)
    assert not torch.isin(scene.bg_semantic, torch.tensor([12, 16, 17])).any()  # Car, Pedestrian, Cyclist
    report = identity_report([ds[i] for i in range(len(ds))])
    assert report["box_iou"] >= 0.9 and report["boxes"] > 5
    assert 20 <= report["psnr_db"] < 60
    # a KITTI frame (no depth, class or instance maps) de-renders from its boxes
    kitti_report = identity_report([KITTI(out / "eval" / "kitti")[i] for i in range(2)])
    assert kitti_report["box_iou"] >= 0.8 and kitti_report["psnr_db"] > 15
    # at a smaller working size too
    half = identity_report([ds[0]], size=(47, 155))
    assert half["frames"] == 1 and half["box_iou"] > 0.6


def test_data_cli(smoke_data, tmp_path, capsys):
    from sae.cli import main

    out, _ = smoke_data
    assert main(["data", "read", str(out / "finetune" / "vkitti2")]) == 0
    assert "8 frames" in capsys.readouterr().out
    assert main(["data", "read", str(out / "pretrain" / "kitti"), "--limit", "3"]) == 0
    assert "(kitti): 8 frames; read 3" in capsys.readouterr().out
    assert main(["data", "derender", "--data", str(out / "eval" / "vkitti2")]) == 0
    assert "PSNR" in capsys.readouterr().out
    fig = tmp_path / "variations.png"
    assert main(["data", "figure", "--data", str(out / "eval" / "vkitti2"), "--out", str(fig)]) == 0
    assert Image.open(fig).size[0] > 800
    assert main(["data", "read", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_export_writes_an_sae_set_readable_in_both_layouts(smoke_data, tmp_path):
    from sae.data.export import ExportItem, export
    from sae.scene import editor

    out, _ = smoke_data
    ds = VKITTI2(out / "eval" / "vkitti2")
    items = []
    for key, index, _ in ds.index:
        ir = Scene.load(ds.file(key, "ir", 0, index))
        theta = {"translate": torch.zeros(editor.theta_shape(ir, "translate"))}
        theta["translate"][..., 0] = 0.05  # everyone 0.5 m to the right
        moved = editor.apply(ir, editor.project(theta, ir, {"translate": 0.05}))
        items.append(ExportItem(key.scene, key.variation, index, moved))
    noisy = (render(items[0].ir).image[0] * 255).to(torch.uint8).numpy() // 2  # a "pixel" item
    items.append(ExportItem("Scene09", "clone", 0, items[0].ir, noisy))
    images = {}
    assert export(items, tmp_path, images=images) == len(items)
    back = VKITTI2(tmp_path / "vkitti2")
    # the images export hands over are the γ(IR) an evaluation re-renders, bit for bit
    from sae.detectors.data import DetectionDataset

    fresh = DetectionDataset(tmp_path / "vkitti2", (94, 310), rerender=True)
    given = DetectionDataset(tmp_path / "vkitti2", (94, 310), rerender=True)
    assert given.use_rendered(images) == len(items) and len(images) == len(items)
    for i in range(len(items)):
        (a, ta), (b, tb) = fresh[i], given[i]
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"]), i
    assert len(back) == len(items) and len(KITTI(tmp_path / "kitti")) == len(items)
    for i, item in enumerate(items[:-1]):
        frame = back.read_frame(back.index[i][0], back.index[i][1])
        r = render(item.ir)
        boxes = {
            int(item.ir.obj_track_id[0, n]): tuple(int(v) for v in r.boxes[0, n].tolist())
            for n in range(item.ir.max_objects)
            if r.pixel_count[0, n] > 0
        }
        assert {o.track_id: o.box for o in frame.objects} == boxes  # labels follow the moved objects
        assert torch.equal(
            Scene.load(back.file(back.index[i][0], "ir", 0, back.index[i][1])).obj_location, item.ir.obj_location
        )
    pixel = back.read_frame(next(k for k in back.sequences if k.scene == "Scene09"), 0)
    assert abs(pixel.rgb.astype(int) - noisy.astype(int)).mean() < 3  # its own pixels (JPEG aside)


def test_stereo_pair_follows_the_vkitti_baseline(smoke_data):
    from sae.data.street import STEREO_BASELINE

    out, _ = smoke_data
    ds = VKITTI2(out / "finetune" / "vkitti2", cameras=(0, 1))
    assert len(ds) == 2 * len(VKITTI2(out / "finetune" / "vkitti2"))
    key = ds.sequences[0]
    left, right = ds.read_frame(key, 0, 0), ds.read_frame(key, 0, 1)
    assert right.extrinsic[0, 3] == pytest.approx(-STEREO_BASELINE)
    shared = {o.track_id: o for o in left.objects}.keys() & {o.track_id: o for o in right.objects}.keys()
    assert len(shared) >= 3
    by_l = {o.track_id: o for o in left.objects}
    by_r = {o.track_id: o for o in right.objects}
    for t in shared:
        assert by_r[t].location[0] == pytest.approx(by_l[t].location[0] - STEREO_BASELINE, abs=1e-5)
        assert by_r[t].world_location == pytest.approx(by_l[t].world_location, abs=1e-5)
        if by_l[t].truncation == 0 and by_r[t].truncation == 0:
            assert by_r[t].box[0] <= by_l[t].box[0]  # seen from the right, things move left
    ir = Scene.load(ds.file(key, "ir", 1, 0))
    assert torch.allclose(
        ir.obj_location[..., 0][ir.obj_valid],
        Scene.load(ds.file(key, "ir", 0, 0)).obj_location[..., 0][ir.obj_valid] - STEREO_BASELINE,
    )
