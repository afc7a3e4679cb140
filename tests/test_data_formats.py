"""Readers against fixtures written by hand in the public formats (not through our writers)."""

import math

import numpy as np
import pytest
from PIL import Image

from sae.data.kitti import KITTI, read_label
from sae.data.vkitti import VKITTI2, FormatError

H, W = 24, 40
# A real pose.txt row (Scene, frame 25) from the format notes, and a bbox row of our own.
POSE_ROW = (
    "25 0 0 1.69414 1.776562 1.421875 3.617188 53.18796 -106 79.85496 2.263542 0 0 -3.088518 "
    "1.056862 55.55215 1.638601 -0.01539355 0.03731001"
)
BBOX_ROW = "25 0 0 3 17 5 12 97 0.1 0.8765432 True"
TEXT = {
    "intrinsic.txt": "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n25 0 725.0087 725.0087 620.5 187\n",
    "extrinsic.txt": "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1\n"
    "25 0 1 0 0 0.5 0 1 0 -1.5 0 0 1 2 0 0 0 1\n",
    "info.txt": "trackID label model color\n0 Car Sedan4Door Red\n",
    "bbox.txt": "frame cameraID trackID left right top bottom number_pixels truncation_ratio occupancy_ratio isMoving\n"
    + BBOX_ROW
    + "\n",
    "pose.txt": "frame cameraID trackID alpha width height length world_space_X world_space_Y world_space_Z "
    "rotation_world_space_y rotation_world_space_x rotation_world_space_z camera_space_X camera_space_Y "
    "camera_space_Z rotation_camera_space_y rotation_camera_space_x rotation_camera_space_z\n" + POSE_ROW + "\n",
    "colors.txt": "Category r g b\nTerrain 210 0 200\nSky 90 200 255\nTree 0 199 0\nVegetation 90 240 0\n"
    "Building 140 140 140\nRoad 100 60 100\nGuardRail 250 100 255\nTrafficSign 255 255 0\nTrafficLight 200 200 0\n"
    "Pole 255 130 0\nMisc 80 80 80\nTruck 160 60 60\nCar 255 127 80\nVan 0 139 139\nUndefined 0 0 0\n",
}


def _images():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :, 0] = 200
    depth_cm = np.full((H, W), 65535, np.uint16)
    depth_cm[12:, :] = 1234  # road at 12.34 m
    depth_cm[5:13, 3:18] = 5555  # the car at 55.55 m
    classes = np.zeros((H, W, 3), np.uint8)
    classes[:12] = (90, 200, 255)  # sky
    classes[12:] = (100, 60, 100)  # road
    classes[5:13, 3:18] = (255, 127, 80)  # car
    inst = np.zeros((H, W), np.uint8)
    inst[5:13, 3:18] = 1  # trackID 0 → index 1
    return rgb, depth_cm, classes, inst


def _write_sequence(frames_root, text_root, names=("rgb", "depth", "classSegmentation", "instanceSegmentation")):
    rgb, depth_cm, classes, inst = _images()
    folders = dict(zip(("rgb", "depth", "classSegmentation", "instanceSegmentation"), names, strict=True))
    paths = {
        "rgb": frames_root["rgb"] / "frames" / folders["rgb"] / "Camera_0" / "rgb_00025.jpg",
        "depth": frames_root["depth"] / "frames" / folders["depth"] / "Camera_0" / "depth_00025.png",
        "classSegmentation": frames_root["classSegmentation"]
        / "frames"
        / folders["classSegmentation"]
        / "Camera_0"
        / "classgt_00025.png",
        "instanceSegmentation": frames_root["instanceSegmentation"]
        / "frames"
        / folders["instanceSegmentation"]
        / "Camera_0"
        / "instancegt_00025.png",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(paths["rgb"], quality=95)
    Image.fromarray(depth_cm).save(paths["depth"])
    Image.fromarray(classes).save(paths["classSegmentation"])
    p = Image.fromarray(inst, mode="P")
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    p.save(paths["instanceSegmentation"])
    text_root.mkdir(parents=True, exist_ok=True)
    for name, text in TEXT.items():
        (text_root / name).write_text(text)
    return paths


def _check(frame):
    assert frame.name == "Scene01/clone/Camera_0/00025"
    assert frame.K.tolist() == [[725.0087, 0, 620.5], [0, 725.0087, 187], [0, 0, 1]]
    assert frame.extrinsic[0, 3] == 0.5 and frame.extrinsic[1, 3] == -1.5 and frame.extrinsic[2, 3] == 2
    (o,) = frame.objects
    assert o.track_id == 0 and o.label == "Car" and o.model == "Sedan4Door" and o.color == "Red"
    assert o.box == (3, 5, 17, 12)  # bbox.txt is left right top bottom; we hold left top right bottom
    assert o.pixels == 97 and o.truncation == 0.1 and o.occupancy == 0.8765432 and o.moving is True
    assert o.dims == (1.421875, 1.776562, 3.617188)  # h w l from pose's width height length
    assert o.location == (-3.088518, 1.056862, 55.55215)
    assert o.rotation_y == 1.638601 and o.alpha == 1.69414
    assert o.world_location == (53.18796, -106.0, 79.85496) and o.world_rotation == (2.263542, 0.0, 0.0)
    assert o.camera_rotation_xz == (-0.01539355, 0.03731001)
    # alpha = ry - atan2(x, z), as the real row satisfies
    wrapped = (o.rotation_y - math.atan2(o.location[0], o.location[2]) + math.pi) % (2 * math.pi) - math.pi
    assert wrapped == pytest.approx(o.alpha, abs=1e-3)
    assert frame.depth[0, 0] == pytest.approx(655.35) and frame.depth[20, 30] == pytest.approx(12.34)
    assert frame.depth[8, 10] == pytest.approx(55.55)
    names = frame.class_names
    assert names[frame.classes[0, 0]] == "Sky" and names[frame.classes[20, 0]] == "Road"
    assert names[frame.classes[8, 10]] == "Car"
    assert frame.instance[8, 10] == 0 and frame.instance[0, 0] == -1
    boxes, labels = frame.targets()
    assert boxes.tolist() == [[3, 5, 17, 12]] and labels.tolist() == [0]


def test_reads_a_hand_written_merged_vkitti2_folder(tmp_path):
    seq = tmp_path / "Scene01" / "clone"
    _write_sequence({k: seq for k in ("rgb", "depth", "classSegmentation", "instanceSegmentation")}, seq)
    ds = VKITTI2(tmp_path)
    assert len(ds) == 1
    _check(ds[0])
    ds.check()


def test_reads_the_per_archive_layout_with_other_folder_cases(tmp_path):
    roots = {
        m: tmp_path / f"vkitti_2.0.3_{m}" / "Scene01" / "clone"
        for m in ("rgb", "depth", "classSegmentation", "instanceSegmentation")
    }
    _write_sequence(
        roots,
        tmp_path / "vkitti_2.0.3_textgt" / "Scene01" / "clone",
        names=("rgb", "depth", "classsegmentation", "instancesegmentation"),
    )
    # CRLF line endings are accepted too
    bbox = tmp_path / "vkitti_2.0.3_textgt" / "Scene01" / "clone" / "bbox.txt"
    bbox.write_bytes(bbox.read_bytes().replace(b"\n", b"\r\n"))
    ds = VKITTI2(tmp_path, variations=["CLONE"])
    assert len(ds) == 1
    _check(ds[0])


def test_errors_name_the_file_and_line(tmp_path):
    seq = tmp_path / "Scene01" / "clone"
    paths = _write_sequence({k: seq for k in ("rgb", "depth", "classSegmentation", "instanceSegmentation")}, seq)
    (seq / "pose.txt").write_text(TEXT["pose.txt"].replace(" 0.03731001", ""))
    with pytest.raises(FormatError, match=r"pose\.txt:2: expected 19 fields, got 18"):
        VKITTI2(tmp_path)[0]
    (seq / "pose.txt").write_text(TEXT["pose.txt"])
    (seq / "bbox.txt").write_text(TEXT["bbox.txt"].replace("True", "maybe"))
    with pytest.raises(FormatError, match=r"bbox\.txt:2: not a bool"):
        VKITTI2(tmp_path)[0]
    (seq / "bbox.txt").write_text(TEXT["bbox.txt"])
    data = paths["rgb"].read_bytes()
    paths["rgb"].write_bytes(data[: len(data) // 3])
    with pytest.raises(FormatError, match="rgb_00025.jpg"):
        VKITTI2(tmp_path)[0]
    paths["rgb"].unlink()
    with pytest.raises(FileNotFoundError, match="rgb_00025.jpg"):
        VKITTI2(tmp_path).check()


KITTI_LABEL = """Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59
Pedestrian 0.00 1 0.21 423.17 173.67 433.17 224.03 1.60 0.38 0.30 -5.87 1.63 23.11 -0.03
Cyclist 0.52 2 -2.79 1096.15 160.83 1241.00 333.73 1.73 0.77 1.82 4.38 1.58 7.59 -2.30
DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10
DontCare -1 -1 -10 511.35 174.96 527.81 187.45 -1 -1 -1 -1000 -1000 -1000 -10
"""


def test_reads_a_hand_written_kitti_folder(tmp_path):
    root = tmp_path / "training"
    (root / "image_2").mkdir(parents=True)
    (root / "label_2").mkdir()
    (root / "calib").mkdir()
    Image.fromarray(np.zeros((375, 1242, 3), np.uint8)).save(root / "image_2" / "000007.png")
    (root / "label_2" / "000007.txt").write_text(KITTI_LABEL)
    p2 = (
        "7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 "
        "2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03"
    )
    (root / "calib" / "000007.txt").write_text(f"P0: {p2}\nP1: {p2}\nP2: {p2}\nP3: {p2}\n")
    ds = KITTI(tmp_path)
    frame = ds[0]
    assert frame.name == "000007" and frame.rgb.shape == (375, 1242, 3)
    assert frame.K[0, 0] == pytest.approx(721.5377) and frame.K[0, 2] == pytest.approx(609.5593)
    car, ped, cyc, dc1, dc2 = frame.objects
    assert car.label == "Car" and car.box == (587.01, 173.33, 614.12, 200.12)
    assert car.dims == (1.65, 1.67, 3.64) and car.location == (-0.65, 1.71, 46.70) and car.rotation_y == -1.59
    assert car.alpha == -1.58 and car.truncation == 0.0 and car.occlusion == 0
    assert ped.occlusion == 1 and cyc.truncation == 0.52 and cyc.occlusion == 2
    assert dc1.label == dc2.label == "DontCare" and dc2.box == (511.35, 174.96, 527.81, 187.45)
    boxes, labels = frame.targets()
    assert labels.tolist() == [0, 1, 2]  # DontCare regions are not targets
    assert boxes[2].tolist() == pytest.approx([1096.15, 160.83, 1241.00, 333.73])


def test_kitti_label_errors_name_file_and_line(tmp_path):
    p = tmp_path / "000001.txt"
    p.write_text(KITTI_LABEL.replace("Pedestrian 0.00 1 0.21", "Pedestrian 0.00 1"))
    with pytest.raises(FormatError, match=r"000001\.txt:2: expected 15 fields"):
        read_label(p)
    p.write_text("Bus 0 0 0 1 2 3 4 1 1 1 0 0 0 0\n")
    with pytest.raises(FormatError, match=r"000001\.txt:1: unknown type 'Bus'"):
        read_label(p)
