"""The one interface every victim detector offers; attacks and evaluation see only this.

* ``forward(images)``: images ``(B, 3, H, W)`` in [0, 1] → raw predictions (a dict of tensors).
* ``loss(raw, targets)``: a dict of named, differentiable loss terms plus ``"total"``; attacks
  pick the terms they maximise (SqueezeDet's ``"confidence"`` in the paper).
* ``decode(raw)``: per image, a dict with ``boxes (K, 4)`` ``(x1, y1, x2, y2)`` pixels,
  ``scores (K,)`` and ``labels (K,)`` after non-maximum suppression.

Targets are a list (one per image) of dicts with ``boxes (M, 4)`` float ``(x1, y1, x2, y2)`` and
``labels (M,)`` int64 indices into :data:`~sae.data.records.DETECTION_CLASSES`.
"""

from __future__ import annotations

import abc
import functools
import importlib.util
from pathlib import Path

import torch
from torch import nn

Targets = list[dict[str, torch.Tensor]]
Detections = list[dict[str, torch.Tensor]]


class Detector(nn.Module, metaclass=abc.ABCMeta):
    """Base class: subclasses implement ``forward``, ``loss`` and ``decode``."""

    num_classes: int
    #: the loss term that scores "is there an object here" (the attacks' default objective)
    confidence_term: str = "confidence"

    @abc.abstractmethod
    def loss(self, raw: dict[str, torch.Tensor], targets: Targets, reduction: str = "mean") -> dict[str, torch.Tensor]:
        """Named loss terms and their weighted sum ``"total"``: scalars averaged over the batch
        (``reduction="mean"``), or ``(B,)`` per image (``"none"``, what attacks that keep each
        image's best iterate need)."""

    @abc.abstractmethod
    def decode(
        self,
        raw: dict[str, torch.Tensor],
        score_threshold: float = 0.05,
        nms_iou: float = 0.4,
        max_detections: int = 100,
    ) -> Detections:
        """Detections per image after NMS."""

    @abc.abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` image embedding from the backbone (the offline FID feature extractor)."""

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``(images − mean) / std`` (the subclass's ``mean`` and ``std`` buffers) in channels-last
        memory layout: the layout the renderer's images already have (permuted from
        ``(B, H, W, 3)``), so a detector runs the same convolution kernels on a frame read from
        disk (training, evaluation, pixel attacks) as on a rendered one (semantic attacks), and on
        CPU they are faster in it (a training step of the default config: YOLOv3 0.80 → 0.73 s;
        SqueezeDet 0.423 → 0.420 s)."""
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, **kwargs) -> Detections:
        """``decode(forward(images))`` in eval mode."""
        was = self.training
        self.eval()
        try:
            return self.decode(self(images), **kwargs)
        finally:
            self.train(was)


def reduce_loss(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    """``(B,)`` per-image loss values → their mean (``"mean"``) or themselves (``"none"``)."""
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def nms_per_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    score_threshold: float,
    nms_iou: float,
    max_detections: int,
    pre_nms: int = 1000,
) -> dict[str, torch.Tensor]:
    """Threshold, keep the ``pre_nms`` best, class-wise NMS, keep ``max_detections``."""
    keep = scores > score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if scores.numel() > pre_nms:
        top = scores.topk(pre_nms).indices
        boxes, scores, labels = boxes[top], scores[top], labels[top]
    keep = batched_nms(boxes.float(), scores.float(), labels, nms_iou)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


@functools.cache
def _nms_op():
    """torchvision's compiled NMS kernel (``torch.ops.torchvision.nms``).

    Importing the ``torchvision`` package costs about 3 s per process here (``torchvision.ops``
    imports ``torch._dynamo``), more than a smoke-scale job's whole work; loading only its compiled
    extension, which registers the kernel with ``torch.ops``, takes milliseconds. Where that
    library is not found, the package import does the same registration.
    """
    if hasattr(torch.ops.torchvision, "nms"):  # torchvision already imported in this process
        return torch.ops.torchvision.nms
    spec = importlib.util.find_spec("torchvision")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    libraries = sorted(p for folder in folders for p in Path(folder).glob("_C*") if p.suffix in (".so", ".pyd"))
    try:
        torch.ops.load_library(str(libraries[0]))
    except (IndexError, OSError):
        import torchvision.ops  # noqa: F401  (registers the same kernel)
    return torch.ops.torchvision.nms


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices of the boxes kept by class-wise NMS, by decreasing score: torchvision's
    ``batched_nms`` (its coordinate-offset form, which it uses itself for up to 1000 boxes on the
    CPU): each class's boxes are shifted apart so that boxes of different classes never overlap."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + 1)
    return _nms_op()(boxes + offsets[:, None], scores, iou)


def decode_batch(
    boxes: torch.Tensor, probs: torch.Tensor, image_hw, score_threshold: float, nms_iou: float, max_detections: int
) -> Detections:
    """Per image: the best class of each prediction, its box clipped to the image ``(H, W)``
    (pixel centres at integers), then :func:`nms_per_image`. ``boxes (B, A, 4)``, ``probs (B, A, C)``."""
    h, w = image_hw
    scores, labels = probs.max(dim=-1)
    out = []
    for i in range(boxes.shape[0]):
        b = boxes[i].clone()
        b[:, 0::2] = b[:, 0::2].clamp(-0.5, w - 0.5)
        b[:, 1::2] = b[:, 1::2].clamp(-0.5, h - 0.5)
        out.append(nms_per_image(b, scores[i], labels[i], score_threshold, nms_iou, max_detections))
    return out


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], dim=-1
    )


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2, b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2],
        dim=-1,
    )


def elementwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of two ``(..., 4)`` xyxy box tensors (differentiable)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    return inter / (area_a + area_b - inter).clamp_min(1e-9)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` IoU of every box of ``a (N, 4)`` with every box of ``b (M, 4)``, xyxy."""
    return elementwise_iou(a[:, None, :], b[None, :, :])


__all__ = [
    "Detector",
    "Targets",
    "Detections",
    "nms_per_image",
    "decode_batch",
    "box_iou",
    "elementwise_iou",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
]
