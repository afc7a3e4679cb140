"""Export any set of IRs — benign, semantic adversarial, pixel-perturbed — in both layouts.

Each item names where its frame belongs (``scene``, ``variation``, ``frame``, typically those of
the frame it was made from), carries its IR, and optionally the image to store instead of the
IR's rendering (a pixel perturbation keeps the benign IR and labels but has its own pixels).
Labels always come from the renderer, so an SAE's boxes are where its objects ended up. The
result is a Virtual KITTI 2 folder (with the IRs) plus a KITTI ``training/`` folder that other
detector frameworks can train on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sae.data import kitti, vkitti
from sae.data.generate import annotate, to_frame
from sae.render.renderer import render
from sae.scene.ir import Scene


@dataclass
class ExportItem:
    """One frame to export: its place in the sequence layout, its IR, optionally its pixels."""

    scene: str
    variation: str
    frame: int
    ir: Scene
    image: np.ndarray | None = None  # (H, W, 3) uint8
    camera: int = 0


def export(items: Iterable[ExportItem], out: str | Path, jpeg_quality: int = 95, images: dict | None = None) -> int:
    """Write ``items`` to ``out/vkitti2`` and ``out/kitti``; returns the number of frames.

    ``images``, when given, receives every rendered frame's uint8 image γ(IR) — what
    :class:`~sae.detectors.data.DetectionDataset` re-renders from the written IR — keyed by
    ``(scene, variation, camera, frame)`` (see :meth:`DetectionDataset.use_rendered`).
    """
    out = Path(out)
    frames: dict[tuple[str, str], dict] = {}
    infos: dict[tuple[str, str], dict] = {}
    count = kitti_count = 0
    for item in items:
        scene = item.ir
        if scene.batch_size != 1:
            raise ValueError(f"export item {item.scene}/{item.variation}/{item.frame}: IR batch must be 1")
        with torch.no_grad():
            rendered = render(scene)
        objects = annotate(scene, rendered)
        record = to_frame(scene, rendered, objects)
        if images is not None:
            images[(item.scene, item.variation, item.camera, item.frame)] = record.rgb
        if item.image is not None:
            if item.image.shape != record.rgb.shape or item.image.dtype != np.uint8:
                raise ValueError(f"export item {item.scene}/{item.frame}: image must be uint8 {record.rgb.shape}")
            record.rgb = item.image
        root = out / "vkitti2"
        vkitti.write_frame_images(root, item.scene, item.variation, item.camera, item.frame, record, jpeg_quality)
        scene.save(vkitti.frame_path(root, item.scene, item.variation, "ir", item.camera, item.frame))
        if item.camera == 0:  # KITTI's image_2 is the left camera
            kitti.write_frame(out / "kitti", kitti_count, record)
            kitti_count += 1
        key = (item.scene, item.variation)
        record.rgb = record.rgb[:1, :1]  # the text files need only the annotations
        record.depth = record.classes = record.instance = None
        frames.setdefault(key, {})[(item.frame, item.camera)] = record
        infos.setdefault(key, {}).update({o.track_id: (o.label, o.model, o.color) for o in objects})
        count += 1
    for (scene_name, variation), seq in frames.items():
        vkitti.write_textgt(out / "vkitti2", scene_name, variation, seq, infos[(scene_name, variation)])
    return count
