"""The embedded data set: procedural Virtual-KITTI-like driving data, written in the real formats.

``generate(out, scale, seed)`` writes three splits::

    OUT/pretrain/kitti/training/{image_2,label_2,calib}      "KITTI-like": independent streets, a
                                                             different photographic look
    OUT/finetune/vkitti2/SceneXX/<variation>/...              "VKITTI-like" sequences, the six
    OUT/finetune/kitti/training/...                           VKITTI variations, plus the exact IR
    OUT/eval/vkitti2/...  OUT/eval/kitti/...                  of every frame (frames/ir/…)
    OUT/manifest.json                                         what was made, sizes, time

Every frame depends only on (seed, split, scene, variation, frame), so the output is the same
for any number of worker processes, and a run that was interrupted resumes where it stopped:
each frame's annotations are written last (``OUT/.parts/…json``), marking it done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sae.data import kitti, vkitti
from sae.data.records import Frame, ObjectAnnotation, observation_angle
from sae.data.scales import SCALES, VARIATION_CODES, Scale  # noqa: F401 (re-exported)
from sae.data.street import CAMERA_HEIGHT, MODEL_NAMES, STEREO_BASELINE, color_name, street_world, world_scene
from sae.io import remove_stale_temporaries
from sae.render.geometry import pack_meshes, pose_vertices, project
from sae.render.raster import NEAR_PLANE, rasterize
from sae.render.renderer import RenderOutput, render
from sae.render.shading import face_normals
from sae.scene.ir import FAR_DEPTH, SEMANTIC_CLASSES, Scene
from sae.scene.templates import CLASS_NAMES, templates

#: Our semantic classes → the Virtual KITTI 2 category written to classSegmentation.
_VKITTI_CATEGORY = {"Sidewalk": "Road", "Pedestrian": "Misc", "Cyclist": "Misc"}
#: Object classes → the VKITTI category of their pixels.
_OBJECT_CATEGORY = {0: "Car", 1: "Misc", 2: "Misc"}


def _seed(*parts) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ------------------------------------------------------------------------------ annotation


@torch.no_grad()
def unoccluded_pixel_counts(scene: Scene) -> torch.Tensor:
    """``(B, N)`` pixels each object would cover in the image if nothing hid it."""
    b, n, h, w = scene.batch_size, scene.max_objects, scene.height, scene.width
    packed = pack_meshes(scene)
    if packed.num_faces == 0:
        return torch.zeros(b, n, dtype=torch.int64)
    verts = pose_vertices(scene, packed)
    screen = project(verts, scene.K[packed.vert_obj // n])
    normals = face_normals(verts, packed.faces)
    centroid = verts[packed.faces].mean(dim=1)
    front = ((normals * centroid).sum(dim=1) < 0) & (screen[:, 2][packed.faces].min(dim=1).values > NEAR_PLANE)
    far = torch.full((b * n, h, w), FAR_DEPTH, dtype=scene.dtype)
    frags = rasterize(screen, packed.faces, packed.face_obj, front, far)  # one image per object
    return torch.bincount(packed.face_obj[frags.pixel_faces], minlength=b * n).reshape(b, n)


def annotate(
    scene: Scene, out: RenderOutput, world=None, frame: int = 0, index: int = 0, camera_x: float = 0.0
) -> list[ObjectAnnotation]:
    """Annotations of image ``index`` of a rendered batch: every object with a visible pixel."""
    h, w = scene.height, scene.width
    solo = unoccluded_pixel_counts(scene[index])[0]
    objects = []
    all_t = templates()
    for n in range(scene.max_objects):
        if not (scene.obj_valid[index, n] and out.pixel_count[index, n] > 0):
            continue
        left, top, right, bottom = (int(v) for v in out.boxes[index, n].tolist())
        pl, pt, pr, pb = out.boxes_projected[index, n].tolist()
        full = max(pr - pl, 1e-6) * max(pb - pt, 1e-6)
        inside = max(0.0, min(pr, w - 0.5) - max(pl, -0.5)) * max(0.0, min(pb, h - 0.5) - max(pt, -0.5))
        truncation = float(min(max(1.0 - inside / full, 0.0), 1.0))
        pixels = int(out.pixel_count[index, n])
        occupancy = float(min(pixels / max(int(solo[n]), 1), 1.0))
        x, y, z = (float(v) for v in scene.obj_location[index, n])
        ry = float(scene.obj_rotation_y[index, n])
        tmpl = all_t[int(scene.obj_template[index, n])]
        track = int(scene.obj_track_id[index, n])
        moving = bool(world is not None and any(v != 0 for v in world.objects[track]["velocity"]))
        ground = float(scene.ground[index, 3])  # camera height, in the scene's precision
        world_loc = (x + camera_x, y - ground, z + frame) if world is not None else (x, y, z)
        objects.append(
            ObjectAnnotation(
                track_id=track,
                label=CLASS_NAMES[int(scene.obj_class[index, n])],
                box=(left, top, right, bottom),
                dims=tuple(float(v) for v in scene.obj_dims[index, n]),
                location=(x, y, z),
                rotation_y=ry,
                alpha=observation_angle(ry, x, z),
                truncation=truncation,
                occlusion=vkitti.occlusion_code(occupancy),
                occupancy=occupancy,
                pixels=pixels,
                moving=moving,
                model=MODEL_NAMES[tmpl.name],
                color=color_name(scene.obj_color[index, n].tolist()),
                world_location=world_loc,
                world_rotation=(ry, 0.0, 0.0),
            )
        )
    return objects


def to_frame(
    scene: Scene,
    out: RenderOutput,
    objects: list[ObjectAnnotation],
    camera_z: float = 0.0,
    index: int = 0,
    camera_x: float = 0.0,
) -> Frame:
    """The :class:`Frame` record (uint8 rgb, depth, VKITTI classes, track-id instances)."""
    rgb = (out.image[index].detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    names = tuple(name for name, _ in vkitti.COLORS)
    lookup = np.array(
        [
            names.index(_VKITTI_CATEGORY.get(c, c)) if _VKITTI_CATEGORY.get(c, c) in names else names.index("Undefined")
            for c in SEMANTIC_CLASSES
        ]
    )
    classes = lookup[scene.bg_semantic[index].cpu().numpy()]
    slot = out.instance[index].cpu().numpy()
    obj_classes = scene.obj_class[index].cpu().numpy()
    tracks = scene.obj_track_id[index].cpu().numpy()
    covered = slot >= 0
    classes[covered] = np.array([names.index(_OBJECT_CATEGORY[int(c)]) for c in obj_classes])[slot[covered]]
    instance = np.full(slot.shape, -1, dtype=np.int64)
    instance[covered] = tracks[slot[covered]]
    extrinsic = np.eye(4)
    extrinsic[2, 3] = -camera_z  # world → camera: the camera drove camera_z metres along +z
    extrinsic[0, 3] = -camera_x  # … and sits camera_x metres right of the rig's left camera
    extrinsic[1, 3] = CAMERA_HEIGHT  # world y = 0 on the ground, camera y = CAMERA_HEIGHT there
    return Frame(
        rgb=rgb,
        objects=objects,
        K=scene.K[index].cpu().double().numpy(),
        depth=out.depth[index].detach().cpu().float().numpy(),
        classes=classes.astype(np.int64),
        class_names=names,
        instance=instance,
        extrinsic=extrinsic,
    )


def photographic_look(rgb: np.ndarray, seed: int) -> np.ndarray:
    """A different camera for the KITTI-like split: fine texture, gamma, blur, sensor noise, JPEG."""
    from io import BytesIO

    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    img = rgb.astype(np.float64) / 255.0
    grain = rng.normal(0.0, 1.0, img.shape[:2])
    img = img * (1.0 + 0.05 * grain[..., None])  # texture detail
    img = np.clip(img, 0, 1) ** 0.9 * np.array([1.02, 1.0, 0.96])
    pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    img = np.asarray(pil).astype(np.float64) + rng.normal(0.0, 2.5, rgb.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    buf = BytesIO()
    pil.save(buf, format="JPEG", quality=int(rng.integers(60, 85)))
    return np.asarray(Image.open(BytesIO(buf.getvalue())).convert("RGB"))


# ------------------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class Task:
    split: str
    scene: str  # "SceneXX", or "" for KITTI-like frames
    variation: str
    frame: int  # frame index within the sequence (or running index for KITTI-like)
    kitti_index: int
    world_seed: int
    size: tuple[int, int]
    stride: float
    objects: tuple[int, int, int]
    camera: int = 0

    @property
    def part(self) -> str:
        where = f"{self.split}/{self.scene or 'kitti'}/{self.variation}"
        return f".parts/{where}/{self.frame:05d}" + (f"_c{self.camera}" if self.camera else "") + ".json"


def plan(scale: Scale, seed: int) -> list[Task]:
    """Every frame of a data set, in a fixed order."""
    tasks = []
    for i in range(scale.pretrain_frames):
        tasks.append(
            Task("pretrain", "", "mixed", i, i, _seed(seed, "pretrain", i), scale.size, scale.stride, scale.objects)
        )
    first_scene = 1
    for split, (n_scenes, n_frames) in (("finetune", scale.finetune), ("eval", scale.eval)):
        k = 0
        for s in range(n_scenes):
            name = f"Scene{first_scene + s:02d}"
            world_seed = _seed(seed, split, name)
            for variation in scale.variations:
                for f in range(n_frames):
                    for camera in scale.cameras:
                        index = k if camera == 0 else -1  # KITTI holds the left camera only
                        tasks.append(
                            Task(
                                split,
                                name,
                                variation,
                                f,
                                index,
                                world_seed,
                                scale.size,
                                scale.stride,
                                scale.objects,
                                camera,
                            )
                        )
                    k += 1
        first_scene += n_scenes
    return tasks


def _pretrain_weather(seed: int) -> tuple[float, float, float, float]:
    rng = np.random.default_rng(seed)
    return (
        float(rng.uniform(0, 0.4) * (rng.random() < 0.3)),
        float(rng.uniform(0, 1)),
        float(rng.uniform(0, 0.8) * (rng.random() < 0.4)),
        float(rng.uniform(-0.5, 0.5)),
    )


def run_task(out: Path, task: Task) -> dict:
    """Render and write one frame; return (and store) its annotations."""
    part = out / task.part
    if part.is_file():
        return json.loads(part.read_text())
    world = street_world(task.world_seed, *task.objects)
    frame_no = task.frame * task.stride if task.scene else _seed(task.world_seed, "offset") % 40
    scene = world_scene(world, frame_no, *task.size, camera=task.camera)
    code = VARIATION_CODES.get(task.variation) or _pretrain_weather(task.world_seed)
    scene = scene.replace(weather=torch.tensor([code], dtype=scene.dtype))
    with torch.no_grad():
        rendered = render(scene)
    camera_x = task.camera * STEREO_BASELINE
    objects = annotate(scene, rendered, world, int(frame_no), camera_x=camera_x)
    record = to_frame(scene, rendered, objects, camera_z=float(frame_no), camera_x=camera_x)
    if task.split == "pretrain":
        record.rgb = photographic_look(record.rgb, task.world_seed)
        kitti.write_frame(out / "pretrain" / "kitti", task.kitti_index, record)
    else:
        root = out / task.split / "vkitti2"
        vkitti.write_frame_images(root, task.scene, task.variation, task.camera, task.frame, record)
        scene.save(vkitti.frame_path(root, task.scene, task.variation, "ir", task.camera, task.frame))
        if task.camera == 0:
            kitti.write_frame(out / task.split / "kitti", task.kitti_index, record)
    info = {o.track_id: [o.label, o.model, o.color] for o in objects}
    for i, o in enumerate(world.objects):  # info.txt lists every track of the sequence
        info.setdefault(
            i, [CLASS_NAMES[o["class"]], MODEL_NAMES[templates()[o["template"]].name], color_name(o["color"])]
        )
    result = {
        "task": dataclasses.asdict(task),
        "K": record.K.tolist(),
        "extrinsic": record.extrinsic.tolist(),
        "objects": [dataclasses.asdict(o) for o in objects],
        "info": {str(k): v for k, v in info.items()},
    }
    vkitti._atomic_write_text(part, json.dumps(result))
    return result


def _worker_init() -> None:
    from sae.cpu import flush_denormals
    from sae.memory import retain_freed_memory

    torch.set_num_threads(1)
    retain_freed_memory()  # a spawned worker starts with glibc's defaults (sae.memory)
    flush_denormals()  # and with the CPU's default float mode (sae.cpu)


def _run(args) -> dict:
    return run_task(*args)


def generate(
    out: str | os.PathLike,
    scale: str | Scale = "default",
    seed: int = 0,
    workers: int | None = None,
    size: tuple[int, int] | None = None,
    progress: bool = True,
) -> dict:
    """Generate the data set into ``out``; returns the manifest (also written to manifest.json)."""
    from tqdm import tqdm

    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
        scale_name, scale = scale, SCALES[scale]
    else:
        scale_name = "custom"
    if size is not None:
        scale = dataclasses.replace(scale, size=tuple(size))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(out)  # what a killed run was writing; its frames are redone
    if stale:
        print(f"removed {len(stale)} temporary files an interrupted run left in {out}", file=sys.stderr)
    tasks = plan(scale, seed)
    already = sum((out / t.part).is_file() for t in tasks)
    if already:
        print(f"resuming: {already} of {len(tasks)} frames already in {out / '.parts'}", file=sys.stderr, flush=True)
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    start = time.time()
    results: list[dict] = []
    args = [(out, t) for t in tasks]
    bar = tqdm(total=len(tasks), desc=f"generating {scale_name} data", unit="frame", disable=not progress)
    if workers == 1:
        _worker_init()
        for a in args:
            results.append(_run(a))
            bar.update()
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
            for r in pool.imap(_run, args, chunksize=2):
                results.append(r)
                bar.update()
    bar.close()
    _write_textgt(out, results)
    elapsed = time.time() - start
    manifest = {
        "format": "sae-data",
        "version": 1,
        "scale": scale_name,
        "seed": seed,
        "size": list(scale.size),
        "splits": {
            split: sum(1 for t in tasks if t.split == split and t.camera == 0)
            for split in ("pretrain", "finetune", "eval")
        },
        "cameras": list(scale.cameras),
        "variations": list(scale.variations),
        "objects": sum(len(r["objects"]) for r in results),
        "seconds": round(elapsed, 1),
        "workers": workers,
        "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and ".parts" not in p.parts),
    }
    vkitti._atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_textgt(out: Path, results: list[dict]) -> None:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        t = r["task"]
        if t["split"] != "pretrain":
            groups.setdefault((t["split"], t["scene"], t["variation"]), []).append(r)
    for (split, scene, variation), rows in groups.items():
        frames = {}
        info = {}
        for r in rows:
            objects = [
                ObjectAnnotation(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in o.items()})
                for o in r["objects"]
            ]
            frames[(r["task"]["frame"], r["task"].get("camera", 0))] = Frame(
                rgb=np.zeros((1, 1, 3), np.uint8),
                objects=objects,
                K=np.array(r["K"]),
                extrinsic=np.array(r["extrinsic"]),
            )
            info.update({int(k): tuple(v) for k, v in r["info"].items()})
        vkitti.write_textgt(out / split / "vkitti2", scene, variation, frames, info)
