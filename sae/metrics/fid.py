"""Fréchet distance of SAE and pixel sets to the benign set (torchmetrics' FID).

No weights can be downloaded here, so the default feature extractor is a fixed layer of our own
trained detector: its backbone's last feature map averaged over space (:meth:`embed`). Numbers
from it are comparable with each other (SAE vs pixel, one victim), not with published
Inception FIDs. When the user supplies torchvision's Inception-v3 weights file, the classic
2048-d pool features are used instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class DetectorFeatures(nn.Module):
    """A frozen detector's :meth:`embed` as an FID feature extractor (images in [0, 1])."""

    def __init__(self, detector, size: tuple[int, int]):
        super().__init__()
        self.detector = detector.eval()
        self.size = tuple(size)
        with torch.no_grad():
            self.num_features = int(self.detector.embed(torch.zeros(1, 3, *self.size)).shape[1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images.float(), size=self.size, mode="bilinear", align_corners=False)
        return self.detector.embed(images.float()).double()


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 (weights from a local file) up to its 2048-d average pool."""

    num_features = 2048

    def __init__(self, weights: str | os.PathLike):
        super().__init__()
        from torchvision.models import inception_v3

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found: {path}")
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:
            raise ValueError(f"{path}: not torchvision Inception-v3 weights ({exc})") from exc
        net.fc = nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std).double()


def frechet_distance(extractor: nn.Module, real, fake) -> float:
    """FID between two iterables of ``(B, 3, H, W)`` image batches in [0, 1]."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=extractor, normalize=True)
    metric.set_dtype(torch.float64)
    n_real = n_fake = 0
    for batch in real:
        metric.update(batch, real=True)
        n_real += len(batch)
    for batch in fake:
        metric.update(batch, real=False)
        n_fake += len(batch)
    if n_real < 2 or n_fake < 2:
        raise ValueError(f"FID needs at least 2 images per set (got {n_real} real, {n_fake} other)")
    return float(metric.compute())


def folder_batches(path: str | os.PathLike, size: tuple[int, int], batch_size: int = 16, rerender: bool = False):
    """Image batches of a VKITTI2/KITTI folder at ``size``."""
    from sae.detectors.data import DetectionDataset

    ds = DetectionDataset(path, size, rerender=rerender)
    for start in range(0, len(ds), batch_size):
        yield torch.stack([ds[i][0] for i in range(start, min(start + batch_size, len(ds)))])
