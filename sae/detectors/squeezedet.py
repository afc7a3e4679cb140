"""SqueezeDet (Wu, Iandola, Jin & Keutzer 2016): SqueezeNet fire modules + a ConvDet head.

A fully convolutional single-stage detector: the SqueezeNet v1.1 trunk with two extra fire
modules (``fire10``, ``fire11``), dropout, and ConvDet — one 3×3 convolution predicting, for
each of ``K = 9`` anchor shapes at every cell of the stride-16 grid, 4 box deltas, one
confidence score (regressed to the IoU of the predicted box with its ground truth) and the
class logits. The loss is the original's weighted sum of box regression, confidence-score
regression and class cross-entropy, returned term by term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sae.detectors.base import (
    Detections,
    Detector,
    Targets,
    box_iou,
    cxcywh_to_xyxy,
    decode_batch,
    elementwise_iou,
    reduce_loss,
)
from sae.detectors.configs import KITTI_ANCHORS, KITTI_SIZE, SqueezeDetConfig  # noqa: F401 (re-exported)


def _norm(channels: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if on else nn.Identity()


class Fire(nn.Module):
    """SqueezeNet's fire module: 1×1 squeeze, then 1×1 and 3×3 expands concatenated."""

    def __init__(self, cin: int, squeeze: int, expand1: int, expand3: int, batch_norm: bool = False):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand1, 1)
        self.expand3 = nn.Conv2d(squeeze, expand3, 3, padding=1)
        self.bn_s, self.bn_1, self.bn_3 = (_norm(c, batch_norm) for c in (squeeze, expand1, expand3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.bn_s(self.squeeze(x)))
        return torch.cat([F.relu(self.bn_1(self.expand1(s))), F.relu(self.bn_3(self.expand3(s)))], dim=1)


class ConvDet(nn.Module):
    """The detection head: a 3×3 convolution to ``K (4 + 1 + C)`` channels."""

    def __init__(self, cin: int, anchors: int, num_classes: int):
        super().__init__()
        self.anchors, self.num_classes = anchors, num_classes
        self.conv = nn.Conv2d(cin, anchors * (4 + 1 + num_classes), 3, padding=1)
        nn.init.normal_(self.conv.weight, std=0.001)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        k, c = self.anchors, self.num_classes
        y = self.conv(x).permute(0, 2, 3, 1).reshape(b, h * w * k, 4 + 1 + c)
        return {"deltas": y[..., :4], "confidence": y[..., 4], "class_logits": y[..., 5:], "grid": (h, w)}


class _ChannelsLastMaxPool(torch.autograd.Function):
    """3×3, stride-2, padding-1 max pooling whose forward runs in channels-last layout and whose
    backward is PyTorch's usual-layout kernel fed with the same argmax indices (flat within each
    plane, so independent of the layout): each kernel where it is fast."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out, idx = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, 2, 1, return_indices=True)
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, [3, 3], [2, 2], [1, 1], [1, 1], False, idx
        )


class _MaxPool(nn.MaxPool2d):
    """SqueezeNet's 3×3, stride-2 max pooling, faster on CPU than ``nn.MaxPool2d``, whose kernel
    for the usual layout is 3-4× slower forward than the channels-last one (its backward is the
    faster of the two). For the three pools of the default victim at 621×188, batch 8, one thread:
    155 → 42 ms without gradients; forward+backward 159 → 65 ms
    (:class:`_ChannelsLastMaxPool`). Same maxima, the same argmax (the first in scan order) and
    the same backward kernel, so the same values and gradients bit for bit (tested); the output keeps
    the input's layout."""

    def __init__(self):
        super().__init__(3, 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not x.is_contiguous():
            # CUDA; or already channels-last (a batch of renderer images, permuted from (B, H, W, 3),
            # keeps that layout through the convolutions), which PyTorch pools fast itself, and
            # whose layout the layers after must keep for the same arithmetic
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ChannelsLastMaxPool.apply(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class SqueezeDet(Detector):
    """SqueezeDet. ``forward`` takes ``(B, 3, H, W)`` images in [0, 1]."""

    confidence_term = "confidence"

    STRIDE = 16

    def __init__(self, config: SqueezeDetConfig | None = None):
        super().__init__()
        self.config = cfg = config or SqueezeDetConfig()
        self.num_classes = cfg.num_classes

        def ch(n: int) -> int:
            return max(8, int(round(n * cfg.width)))

        fires = [  # (squeeze, expand) of fire2 … fire11, pools after fire3 and fire5
            (16, 64),
            (16, 64),
            (32, 128),
            (32, 128),
            (48, 192),
            (48, 192),
            (64, 256),
            (64, 256),
            (96, 384),
            (96, 384),
        ]
        layers: list[nn.Module] = [
            nn.Conv2d(3, ch(64), 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            _MaxPool(),
        ]
        cin = ch(64)
        for i, (sq, ex) in enumerate(fires):
            layers.append(Fire(cin, ch(sq), ch(ex), ch(ex), cfg.batch_norm))
            cin = 2 * ch(ex)
            if i in (1, 3):
                layers.append(_MaxPool())
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.anchor_shapes = cfg.anchor_shapes()
        self.head = ConvDet(cin, len(self.anchor_shapes), cfg.num_classes)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self._anchor_cache: dict = {}

    # ------------------------------------------------------------------ forward and anchors
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalise(images)
        raw = self.head(self.dropout(self.features(x)))
        raw["anchors"] = self.anchors(raw.pop("grid"), images.shape[-2:], images.device, images.dtype)
        raw["image_hw"] = tuple(images.shape[-2:])
        return raw

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` image embedding: the backbone's last feature map, averaged over space."""
        return self.features(self.normalise(images)).mean(dim=(2, 3))

    def anchors(self, grid, image_hw, device, dtype) -> torch.Tensor:
        """``(G·K, 4)`` anchors ``(cx, cy, w, h)`` in pixels, cell-major like the head's output."""
        key = (tuple(grid), tuple(image_hw), str(device), dtype)
        if key not in self._anchor_cache:
            gh, gw = grid
            h, w = image_hw
            ys = (torch.arange(gh, dtype=torch.float64) + 0.5) * h / gh - 0.5
            xs = (torch.arange(gw, dtype=torch.float64) + 0.5) * w / gw - 0.5
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            shapes = torch.tensor(self.anchor_shapes, dtype=torch.float64)
            k = len(shapes)
            a = torch.stack(
                [
                    cx.reshape(-1, 1).expand(-1, k),
                    cy.reshape(-1, 1).expand(-1, k),
                    shapes[:, 0].expand(gh * gw, k),
                    shapes[:, 1].expand(gh * gw, k),
                ],
                dim=-1,
            ).reshape(-1, 4)
            self._anchor_cache[key] = a.to(device=device, dtype=dtype)
        return self._anchor_cache[key]

    def boxes(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Decoded boxes ``(..., 4)`` xyxy from deltas ``(dx, dy, dw, dh)`` relative to anchors."""
        clip = self.config.delta_clip
        cx = anchors[:, 0] + anchors[:, 2] * deltas[..., 0]
        cy = anchors[:, 1] + anchors[:, 3] * deltas[..., 1]
        w = anchors[:, 2] * torch.exp(deltas[..., 2].clamp(-clip, clip))
        h = anchors[:, 3] * torch.exp(deltas[..., 3].clamp(-clip, clip))
        return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))

    # ------------------------------------------------------------------ loss
    @staticmethod
    def assign(gt: torch.Tensor, anchors_xyxy: torch.Tensor) -> torch.Tensor:
        """Each ground-truth box's anchor: the highest-IoU anchor not taken by an earlier box
        (the original's rule). Returns ``(M,)`` anchor indices."""
        if gt.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=gt.device)
        iou = box_iou(gt, anchors_xyxy)  # (M, A)
        # boxes touching no anchor take the anchor of nearest centre and shape
        taken = torch.zeros(anchors_xyxy.shape[0], dtype=torch.bool, device=gt.device)
        out = torch.empty(gt.shape[0], dtype=torch.long, device=gt.device)
        for m in torch.argsort(iou.max(dim=1).values, descending=True).tolist():
            score = iou[m].masked_fill(taken, -1.0)
            if score.max() <= 0:
                centre = (anchors_xyxy[:, :2] + anchors_xyxy[:, 2:]) / 2
                gc = (gt[m, :2] + gt[m, 2:]) / 2
                dist = (centre - gc).pow(2).sum(1) + (
                    (anchors_xyxy[:, 2:] - anchors_xyxy[:, :2]) - (gt[m, 2:] - gt[m, :2])
                ).pow(2).sum(1)
                score = -dist.masked_fill(taken, float("inf"))
            a = int(score.argmax())
            out[m] = a
            taken[a] = True
        return out

    def loss(self, raw: dict[str, torch.Tensor], targets: Targets, reduction: str = "mean") -> dict[str, torch.Tensor]:
        cfg = self.config
        anchors = raw["anchors"]
        anchors_xyxy = cxcywh_to_xyxy(anchors)
        n_anchors = anchors.shape[0]
        terms = {"bbox": [], "confidence": [], "class": []}
        conf = torch.sigmoid(raw["confidence"])
        for i, t in enumerate(targets):
            gt, labels = t["boxes"].to(anchors), t["labels"].to(anchors.device)
            idx = self.assign(gt, anchors_xyxy.detach())
            n = max(len(idx), 1)
            deltas = raw["deltas"][i]
            a = anchors[idx]
            gw, gh = (gt[:, 2] - gt[:, 0]).clamp_min(1.0), (gt[:, 3] - gt[:, 1]).clamp_min(1.0)
            target = torch.stack(
                [
                    ((gt[:, 0] + gt[:, 2]) / 2 - a[:, 0]) / a[:, 2],
                    ((gt[:, 1] + gt[:, 3]) / 2 - a[:, 1]) / a[:, 3],
                    torch.log(gw / a[:, 2]),
                    torch.log(gh / a[:, 3]),
                ],
                dim=-1,
            )
            terms["bbox"].append(cfg.w_bbox * (deltas[idx] - target).pow(2).sum() / n)
            with torch.no_grad():
                iou = elementwise_iou(self.boxes(deltas[idx], a), gt)
            positive = torch.zeros(n_anchors, dtype=torch.bool, device=anchors.device)
            positive[idx] = True
            pos = cfg.w_conf_pos * (conf[i, idx] - iou).pow(2).sum() / n
            neg = cfg.w_conf_neg * conf[i][~positive].pow(2).sum() / max(n_anchors - len(idx), 1)
            terms["confidence"].append(pos + neg)
            if len(idx):
                ce = F.cross_entropy(raw["class_logits"][i, idx], labels, reduction="sum") / n
            else:
                ce = raw["class_logits"][i].sum() * 0.0
            terms["class"].append(cfg.w_class * ce)
        out = {k: reduce_loss(torch.stack(v), reduction) for k, v in terms.items()}
        out["total"] = out["bbox"] + out["confidence"] + out["class"]
        return out

    # ------------------------------------------------------------------ decoding
    def decode(
        self,
        raw: dict[str, torch.Tensor],
        score_threshold: float = 0.05,
        nms_iou: float = 0.4,
        max_detections: int = 100,
    ) -> Detections:
        boxes = self.boxes(raw["deltas"], raw["anchors"])
        h, w = raw.get("image_hw", self.config.image_size)
        probs = torch.softmax(raw["class_logits"], dim=-1) * torch.sigmoid(raw["confidence"]).unsqueeze(-1)
        return decode_batch(boxes, probs, (h, w), score_threshold, nms_iou, max_detections)


def kmeans_anchors(boxes_wh: torch.Tensor, k: int = 9, iterations: int = 50, seed: int = 0) -> tuple:
    """Anchor shapes by k-means on (w, h) with 1 − IoU distance (boxes aligned at a corner)."""
    gen = torch.Generator().manual_seed(seed)
    wh = boxes_wh.double()
    centres = wh[torch.randperm(len(wh), generator=gen)[:k]].clone()
    for _ in range(iterations):
        inter = torch.minimum(wh[:, None, 0], centres[None, :, 0]) * torch.minimum(wh[:, None, 1], centres[None, :, 1])
        iou = inter / (wh[:, None].prod(-1) + centres[None].prod(-1) - inter)
        assign = iou.argmax(1)
        for j in range(k):
            if (assign == j).any():
                centres[j] = wh[assign == j].median(dim=0).values
    order = torch.argsort(centres.prod(-1))
    return tuple((float(w), float(h)) for w, h in centres[order])
