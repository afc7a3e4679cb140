"""Detection data: any folder in the VKITTI2 or KITTI layout as (image, targets) pairs.

Frames are resized to the working size (boxes scaled with them); VKITTI2 folders whose frames
carry the exact IR can be read as *identity re-rendered* images (γ of the stored IR), which is
what the paper fine-tunes on so that renderer artefacts are not mistaken for attacks.
"""

from __future__ import annotations

import os
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
    """``(image (3, H, W) float in [0, 1], {"boxes", "labels"})`` pairs at ``size = (H, W)``.

    Args:
        path: a VKITTI2 or KITTI folder.
        size: working ``(height, width)``.
        rerender: for VKITTI2 folders with IR files, use γ(IR) instead of the stored JPEG.
        flip: random horizontal flips (training augmentation).
        seed: seed of the augmentation.
    """

    def __init__(self, path, size: tuple[int, int], rerender: bool = False, flip: bool = False, seed: int = 0):
        self.reader = open_dataset(path)
        self.size = tuple(size)
        self.rerender = rerender and isinstance(self.reader, VKITTI2)
        self.flip = flip
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.reader)

    def frame(self, i: int) -> Frame:
        return self.reader[i]

    def _image(self, i: int, frame: Frame) -> np.ndarray:
        if self.rerender:
            from sae.render.renderer import render
            from sae.scene.ir import Scene

            key, index, camera = self.reader.index[i]
            path = self.reader.file(key, "ir", camera, index)
            with torch.no_grad():
                img = render(Scene.load(path)).image[0]
            return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return frame.rgb

    def __getitem__(self, i: int):
        frame = self.frame(i)
        rgb = self._image(i, frame)
        h0, w0 = rgb.shape[:2]
        h, w = self.size
        if (h0, w0) != (h, w):
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        boxes, labels = frame.targets()
        boxes = torch.from_numpy(boxes).float()
        if len(boxes):
            boxes[:, 0::2] = (boxes[:, 0::2] + 0.5) * (w / w0) - 0.5
            boxes[:, 1::2] = (boxes[:, 1::2] + 0.5) * (h / h0) - 0.5
        image = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        if self.flip:
            gen = np.random.default_rng([self.seed, self.epoch, i])
            if gen.random() < 0.5:
                image = image.flip(-1)
                if len(boxes):
                    boxes = torch.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": torch.from_numpy(labels)}


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]
