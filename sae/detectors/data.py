"""Detection data: any folder in the VKITTI2 or KITTI layout as (image, targets) pairs.

Frames are resized to the working size (boxes scaled with them); VKITTI2 folders whose frames
carry the exact IR can be read as *identity re-rendered* images (γ of the stored IR), which is
what the paper fine-tunes on so that renderer artefacts are not mistaken for attacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sae.data.kitti import KITTI
from sae.data.records import Frame
from sae.data.vkitti import VKITTI2


def open_dataset(path: str | os.PathLike):
    """A :class:`VKITTI2` or :class:`KITTI` reader for ``path`` (the layout is recognised)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"data set not found: {root}")
    if (root / "training").is_dir() or (root / "label_2").is_dir():
        return KITTI(root)
    return VKITTI2(root)


class DetectionDataset(torch.utils.data.Dataset):
    """``(image (3, H, W) float in [0, 1], targets)`` pairs at ``size = (H, W)``.

    ``targets`` holds ``boxes`` (M, 4) xyxy at the working size, ``labels`` (M,), and each
    object's KITTI ``occlusion`` code and ``truncation`` (for the difficulty levels of
    :func:`sae.metrics.detection.evaluate`). Indexing is deterministic; :meth:`sample` draws a
    training view (see :class:`Augment`).

    Args:
        path: a VKITTI2 or KITTI folder.
        size: working ``(height, width)``.
        rerender: for VKITTI2 folders with IR files, use γ(IR) instead of the stored JPEG.
        min_height: objects shorter than this (px at the working size) are left out of the
            targets — for training, where a 3-pixel car teaches nothing but noise.
        cache: keep every item read (its uint8 image at the working size and its targets) in
            memory, for training, which draws each frame many times (the default pre-training:
            2000 frames drawn 19 200 times; 350 kB a frame at 621×188): reading and decoding a
            frame costs 3.7 ms here, a quarter of a training view's preparation. The items are
            the same with or without it (tested).
    """

    def __init__(
        self, path, size: tuple[int, int], rerender: bool = False, min_height: float = 0.0, cache: bool = False
    ):
        self.reader = open_dataset(path)
        self.size = tuple(size)
        self.rerender = rerender and isinstance(self.reader, VKITTI2)
        self.min_height = float(min_height)
        self._rendered: dict[int, np.ndarray] = {}  # uint8 γ(IR) per frame (a few hundred kB each)
        self._items: dict[int, tuple[np.ndarray, dict]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.reader)

    def use_rendered(self, images: dict) -> int:
        """Take γ(IR) of frames from ``images`` (uint8 ``(H, W, 3)`` keyed by ``(scene, variation,
        camera, frame)``, as :func:`sae.data.export.export` collects them while writing a set)
        instead of rendering them again; returns how many frames were found."""
        if not self.rerender:
            return 0
        found = 0
        for i, (key, index, camera) in enumerate(self.reader.index):
            image = images.get((key.scene, key.variation, camera, index))
            if image is not None:
                self._rendered[i] = image
                found += 1
        return found

    def frame(self, i: int) -> Frame:
        """Frame ``i`` with its RGB and annotations (dense maps are not read)."""
        if isinstance(self.reader, VKITTI2):
            key, index, camera = self.reader.index[i]
            return self.reader.read_frame(key, index, camera, dense=False)
        return self.reader[i]

    def name(self, i: int) -> str:
        return self.reader.name(i)

    def _image(self, i: int, frame: Frame) -> np.ndarray:
        if self.rerender:
            if i not in self._rendered:  # γ(IR) is deterministic: render each frame once
                from sae.render.renderer import render
                from sae.scene.ir import Scene

                key, index, camera = self.reader.index[i]
                path = self.reader.file(key, "ir", camera, index)
                with torch.no_grad():
                    img = render(Scene.load(path)).image[0]
                self._rendered[i] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
            return self._rendered[i]
        return frame.rgb

    def __getitem__(self, i: int):
        item = self._items.get(i) if self._items is not None else None
        if item is None:
            frame = self.frame(i)
            rgb = self._image(i, frame)
            h, w = self.size
            target = self.target(frame, rgb.shape[:2])
            if rgb.shape[:2] != (h, w):
                rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
            item = np.array(rgb, dtype=np.uint8), target
            if self._items is not None:
                self._items[i] = item
                self._rendered.pop(i, None)  # the item holds it now, resized
        rgb, target = item
        image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        return image, {k: v.clone() for k, v in target.items()}

    def target(self, frame: Frame, source_hw: tuple[int, int] | None = None) -> dict:
        """``frame``'s targets with boxes scaled from ``source_hw`` (default: its RGB's size) to
        the working size, objects shorter than ``min_height`` left out."""
        h0, w0 = frame.rgb.shape[:2] if source_hw is None else source_hw
        h, w = self.size
        boxes, labels = frame.targets()
        boxes = torch.from_numpy(boxes).float()
        if len(boxes):
            boxes[:, 0::2] = (boxes[:, 0::2] + 0.5) * (w / w0) - 0.5
            boxes[:, 1::2] = (boxes[:, 1::2] + 0.5) * (h / h0) - 0.5
        objs = frame.detection_objects()
        target = {
            "boxes": boxes,
            "labels": torch.from_numpy(labels),
            "occlusion": torch.tensor([o.occlusion for o in objs], dtype=torch.long),
            "truncation": torch.tensor([o.truncation for o in objs], dtype=torch.float32),
        }
        if self.min_height > 0:
            target = _select(target, boxes[:, 3] - boxes[:, 1] + 1 >= self.min_height)
        return target

    def sample(self, i: int, augment: Augment | None, rng: np.random.Generator):
        """Item ``i`` under a random draw of ``augment`` (the item itself when None)."""
        image, target = self[i]
        return (image, target) if augment is None else augment(image, target, rng)


def spread(total: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(total)`` (all of them when ``limit`` is None
    or not smaller), so a subset covers every scene and variation of a split."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    return sorted({int(round(k * (total - 1) / max(limit - 1, 1))) for k in range(limit)})


class Spread:
    """``n`` frames of a :class:`DetectionDataset`, spread evenly (:func:`spread`): the frames
    ``sae attack --limit n`` attacks."""

    def __init__(self, ds: DetectionDataset, n: int):
        self.ds, self.keep = ds, spread(len(ds), n)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int):
        return self.ds[self.keep[i]]

    def name(self, i: int) -> str:
        return self.ds.name(self.keep[i])

    def frame(self, i: int) -> Frame:
        return self.ds.frame(self.keep[i])


def _select(target: dict, keep: torch.Tensor) -> dict:
    return {k: v[keep] for k, v in target.items()}


@dataclass(frozen=True)
class Augment:
    """Training augmentation: a random zoom-in crop (SqueezeDet's "drift", with scale), a
    horizontal flip, and photometric jitter.

    Attributes:
        flip: probability of a horizontal flip.
        zoom: maximum zoom factor; a crop of ``1/s`` of the frame (``s`` uniform in
            ``[1, zoom]``) at a uniform position is resized back to the working size. Boxes are
            clipped to the crop; an object keeping less than ``min_visible`` of its box area,
            or ending shorter than ``min_height`` px, is dropped.
        brightness, contrast, saturation: jitter ranges (factor uniform in ``1 ± value``).
    """

    flip: float = 0.5
    zoom: float = 1.3
    min_visible: float = 0.4
    min_height: float = 2.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3

    def __call__(self, image: torch.Tensor, target: dict, rng: np.random.Generator):
        _, h, w = image.shape
        boxes = target["boxes"].clone()
        s = float(rng.uniform(1.0, max(self.zoom, 1.0)))
        if s > 1.0 + 1e-6:
            ch, cw = h / s, w / s
            y0, x0 = float(rng.uniform(0, h - ch)), float(rng.uniform(0, w - cw))
            # crop by resampling: output pixel centre (u, v) reads input (x0 + (u + .5)/s - .5, …)
            ys = (y0 + (torch.arange(h, dtype=torch.float32) + 0.5) / s) / h * 2 - 1
            xs = (x0 + (torch.arange(w, dtype=torch.float32) + 0.5) / s) / w * 2 - 1
            grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]
            image = torch.nn.functional.grid_sample(image[None], grid, align_corners=False)[0]
            if len(boxes):
                area0 = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
                boxes[:, 0::2] = (boxes[:, 0::2] + 0.5 - x0) * s - 0.5
                boxes[:, 1::2] = (boxes[:, 1::2] + 0.5 - y0) * s - 0.5
                inside = (boxes[:, 2] >= 0) & (boxes[:, 0] <= w - 1) & (boxes[:, 3] >= 0) & (boxes[:, 1] <= h - 1)
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
                bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
                visible = bw * bh / (area0 * s * s)
                keep = inside & (visible >= self.min_visible) & (bh >= self.min_height) & (bw >= 1)
                target = _select({**target, "boxes": boxes}, keep)
                boxes = target["boxes"]
        if rng.random() < self.flip:
            image = image.flip(-1)
            if len(boxes):
                boxes = torch.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], dim=1)
        mean = image.mean()
        image = (image - mean) * float(rng.uniform(1 - self.contrast, 1 + self.contrast)) + mean
        grey = image.mean(0, keepdim=True)
        image = (image - grey) * float(rng.uniform(1 - self.saturation, 1 + self.saturation)) + grey
        image = image * float(rng.uniform(1 - self.brightness, 1 + self.brightness))
        return image.clamp(0, 1), {**target, "boxes": boxes}


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]
