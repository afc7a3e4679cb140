"""YOLOv3 (Redmon & Farhadi 2018): a Darknet-53 backbone and predictions at three scales.

Darknet-53 is a stack of 3×3/1×1 convolutions (each followed by batch normalisation and a
leaky ReLU with slope 0.1) with residual blocks, downsampling by strided 3×3 convolutions; its
stride-8, 16 and 32 features feed three detection blocks. The coarsest block predicts first;
its intermediate features are reduced by a 1×1 convolution, upsampled ×2 and concatenated with
the next finer backbone feature (a feature-pyramid-like path), twice. Each scale predicts, for 3
of the 9 anchor shapes (the largest on stride 32) at every cell, box offsets ``(tx, ty, tw, th)``
with centre ``(cell + σ(t_xy)) · stride`` and size ``anchor · exp(t_wh)``, an objectness logit and
independent (sigmoid) class logits.

The loss is returned term by term: ``"box"`` (1 − GIoU of the responsible predictions),
``"objectness"`` (binary cross-entropy; predictions that are not responsible for a box but
overlap one with IoU > 0.5 are ignored, as in YOLOv3) and ``"class"`` (binary cross-entropy on
the responsible predictions). The responsible prediction of a ground-truth box is the one of
its best-IoU anchor shape (of the 9, compared by width and height) in the cell containing its
centre.

Images whose sides are not multiples of 32 are padded at the bottom and right inside
``forward``; boxes are decoded in the unpadded pixel frame (pixel centres at integers, the image
spanning ``[-0.5, W - 0.5]``, as everywhere in :mod:`sae.detectors`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sae.detectors.base import Detections, Detector, Targets, box_iou, cxcywh_to_xyxy, decode_batch, reduce_loss
from sae.detectors.configs import (  # noqa: F401 (re-exported)
    COCO_ANCHORS,
    COCO_SIZE,
    DARKNET53_BLOCKS,
    YOLOv3Config,
)

STRIDES = (8, 16, 32)


class ConvBNLeaky(nn.Module):
    """Convolution ('same' padding), batch normalisation, leaky ReLU (slope 0.1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, batch_norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(cout) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), 0.1)


class DarknetResidual(nn.Module):
    """Darknet's residual block: 1×1 to half the channels, 3×3 back, added to the input."""

    def __init__(self, channels: int, batch_norm: bool = True):
        super().__init__()
        self.reduce = ConvBNLeaky(channels, max(1, channels // 2), 1, batch_norm=batch_norm)
        self.expand = ConvBNLeaky(max(1, channels // 2), channels, 3, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.reduce(x))


class Darknet53(nn.Module):
    """The backbone: a 3×3 stem, then five stages of a stride-2 3×3 convolution and residual
    blocks. ``forward`` returns the stride-8, 16 and 32 features; ``out_channels`` their widths."""

    def __init__(self, width: float = 1.0, blocks=DARKNET53_BLOCKS, batch_norm: bool = True):
        super().__init__()

        def ch(n: int) -> int:
            return max(8, int(round(n * width)))

        self.stem = ConvBNLeaky(3, ch(32), 3, batch_norm=batch_norm)
        stages, cin = [], ch(32)
        for i, n in enumerate(blocks):
            cout = ch(64 * 2**i)
            layers = [ConvBNLeaky(cin, cout, 3, stride=2, batch_norm=batch_norm)]
            layers += [DarknetResidual(cout, batch_norm) for _ in range(n)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(ch(64 * 2**i) for i in (2, 3, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[2], feats[3], feats[4]


class DetectionBlock(nn.Module):
    """One scale of the YOLOv3 head: five alternating 1×1/3×3 convolutions (``route`` is the
    fifth's output, passed on to the next finer scale), a 3×3 convolution and the 1×1 output
    convolution to ``3 (4 + 1 + C)`` channels."""

    def __init__(self, cin: int, channels: int, anchors: int, num_classes: int, batch_norm: bool, obj_prior: float):
        super().__init__()
        c, c2 = channels, 2 * channels
        self.convs = nn.Sequential(
            ConvBNLeaky(cin, c, 1, batch_norm=batch_norm),
            ConvBNLeaky(c, c2, 3, batch_norm=batch_norm),
            ConvBNLeaky(c2, c, 1, batch_norm=batch_norm),
            ConvBNLeaky(c, c2, 3, batch_norm=batch_norm),
            ConvBNLeaky(c2, c, 1, batch_norm=batch_norm),
        )
        self.conv_out = ConvBNLeaky(c, c2, 3, batch_norm=batch_norm)
        self.anchors, self.num_classes = anchors, num_classes
        self.pred = nn.Conv2d(c2, anchors * (4 + 1 + num_classes), 1)
        nn.init.normal_(self.pred.weight, std=0.01)
        with torch.no_grad():
            bias = self.pred.bias.view(anchors, 4 + 1 + num_classes)
            bias.zero_()
            bias[:, 4] = math.log(obj_prior / (1 - obj_prior))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(route, prediction (B, gh·gw·K, 5 + C))``, the prediction cell-major."""
        route = self.convs(x)
        y = self.pred(self.conv_out(route))
        b, _, h, w = y.shape
        y = y.permute(0, 2, 3, 1).reshape(b, h * w * self.anchors, 4 + 1 + self.num_classes)
        return route, y


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of matching rows of two ``(..., 4)`` xyxy box tensors (differentiable)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1) + (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1) - inter
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp_min(0).prod(-1)
    return inter / union.clamp_min(1e-9) - (hull - union) / hull.clamp_min(1e-9)


class YOLOv3(Detector):
    """YOLOv3. ``forward`` takes ``(B, 3, H, W)`` images in [0, 1] (any size; padded to a
    multiple of 32) and returns, over all ``N`` predictions of the three scales (stride 8 first,
    each cell-major with 3 anchors per cell): ``deltas (B, N, 4)`` raw ``(tx, ty, tw, th)``,
    ``objectness (B, N)`` and ``class_logits (B, N, C)`` logits, ``anchors (N, 4)`` (the cell's
    top-left corner ``x, y`` in pixels and the anchor's ``w, h``), ``strides (N,)``, ``grids``
    (the three ``(gh, gw)``) and ``image_hw``."""

    confidence_term = "objectness"

    STRIDE = 32

    def __init__(self, config: YOLOv3Config | None = None):
        super().__init__()
        self.config = cfg = config or YOLOv3Config()
        self.num_classes = cfg.num_classes
        self.anchor_shapes = cfg.anchor_shapes()

        def ch(n: int) -> int:
            return max(8, int(round(n * cfg.width)))

        bn, prior = cfg.batch_norm, cfg.obj_prior
        self.backbone = Darknet53(cfg.width, cfg.block_counts(), bn)
        c8, c16, c32 = self.backbone.out_channels
        # coarse to fine, as the original: stride 32 (large anchors), 16, 8
        self.head32 = DetectionBlock(c32, ch(512), 3, cfg.num_classes, bn, prior)
        self.lateral16 = ConvBNLeaky(ch(512), ch(256), 1, batch_norm=bn)
        self.head16 = DetectionBlock(c16 + ch(256), ch(256), 3, cfg.num_classes, bn, prior)
        self.lateral8 = ConvBNLeaky(ch(256), ch(128), 1, batch_norm=bn)
        self.head8 = DetectionBlock(c8 + ch(128), ch(128), 3, cfg.num_classes, bn, prior)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self._anchor_cache: dict = {}

    # ------------------------------------------------------------------ forward and anchors
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` image embedding: the backbone's stride-32 feature map, averaged over space."""
        return self.backbone(self.normalise(images))[2].mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = images.shape[-2:]
        x = self.normalise(images)
        ph, pw = (-h) % self.STRIDE, (-w) % self.STRIDE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))  # zero = the mean colour after normalisation
        f8, f16, f32 = self.backbone(x)
        r32, p32 = self.head32(f32)
        up = F.interpolate(self.lateral16(r32), size=f16.shape[-2:], mode="nearest")
        r16, p16 = self.head16(torch.cat([up, f16], dim=1))
        up = F.interpolate(self.lateral8(r16), size=f8.shape[-2:], mode="nearest")
        _, p8 = self.head8(torch.cat([up, f8], dim=1))
        y = torch.cat([p8, p16, p32], dim=1)
        grids = (tuple(f8.shape[-2:]), tuple(f16.shape[-2:]), tuple(f32.shape[-2:]))
        anchors, strides = self.anchors(grids, images.device, y.dtype)
        return {
            "deltas": y[..., :4],
            "objectness": y[..., 4],
            "class_logits": y[..., 5:],
            "anchors": anchors,
            "strides": strides,
            "grids": grids,
            "image_hw": (int(h), int(w)),
        }

    def anchors(self, grids, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 4)`` cell corners and anchor shapes ``(x0, y0, w, h)`` and ``(N,)`` strides, in
        the order of the predictions."""
        key = (tuple(grids), str(device), dtype)
        if key not in self._anchor_cache:
            parts, strides = [], []
            for s, ((gh, gw), stride) in enumerate(zip(grids, STRIDES, strict=True)):
                ys = torch.arange(gh, dtype=torch.float64) * stride - 0.5
                xs = torch.arange(gw, dtype=torch.float64) * stride - 0.5
                y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
                shapes = torch.tensor(self.anchor_shapes[3 * s : 3 * s + 3], dtype=torch.float64)
                a = torch.stack(
                    [
                        x0.reshape(-1, 1).expand(-1, 3),
                        y0.reshape(-1, 1).expand(-1, 3),
                        shapes[:, 0].expand(gh * gw, 3),
                        shapes[:, 1].expand(gh * gw, 3),
                    ],
                    dim=-1,
                ).reshape(-1, 4)
                parts.append(a)
                strides.append(torch.full((gh * gw * 3,), float(stride), dtype=torch.float64))
            self._anchor_cache[key] = (
                torch.cat(parts).to(device=device, dtype=dtype),
                torch.cat(strides).to(device=device, dtype=dtype),
            )
        return self._anchor_cache[key]

    def boxes(self, deltas: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """Decoded boxes ``(..., 4)`` xyxy pixels from raw ``(tx, ty, tw, th)``."""
        clip = self.config.wh_clip
        cx = anchors[:, 0] + torch.sigmoid(deltas[..., 0]) * strides
        cy = anchors[:, 1] + torch.sigmoid(deltas[..., 1]) * strides
        w = anchors[:, 2] * torch.exp(deltas[..., 2].clamp(-clip, clip))
        h = anchors[:, 3] * torch.exp(deltas[..., 3].clamp(-clip, clip))
        return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))

    # ------------------------------------------------------------------ loss
    def assign(self, gt: torch.Tensor, raw: dict) -> torch.Tensor:
        """Each ground-truth box's responsible prediction: its best anchor shape of the 9 (IoU
        of ``(w, h)`` aligned at a corner), in the cell of that anchor's scale holding its centre.
        Returns ``(M,)`` indices into the ``N`` predictions."""
        grids = raw["grids"]
        if gt.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=gt.device)
        shapes = torch.tensor(self.anchor_shapes, dtype=gt.dtype, device=gt.device)
        wh = (gt[:, 2:] - gt[:, :2]).clamp_min(1e-6)
        inter = torch.minimum(wh[:, None, :], shapes[None]).prod(-1)
        iou = inter / (wh.prod(-1)[:, None] + shapes.prod(-1)[None] - inter)
        best = iou.argmax(dim=1)  # (M,)
        scale, k = best // 3, best % 3
        sizes = torch.tensor([gh * gw * 3 for gh, gw in grids], device=gt.device)
        offsets = torch.cumsum(sizes, 0) - sizes
        stride = torch.tensor(STRIDES, dtype=gt.dtype, device=gt.device)[scale]
        gh = torch.tensor([g[0] for g in grids], device=gt.device)[scale]
        gw = torch.tensor([g[1] for g in grids], device=gt.device)[scale]
        centre = (gt[:, :2] + gt[:, 2:]) / 2
        gx = torch.minimum(torch.floor((centre[:, 0] + 0.5) / stride).long().clamp_min(0), gw - 1)
        gy = torch.minimum(torch.floor((centre[:, 1] + 0.5) / stride).long().clamp_min(0), gh - 1)
        return offsets[scale] + (gy * gw + gx) * 3 + k

    def loss(self, raw: dict[str, torch.Tensor], targets: Targets, reduction: str = "mean") -> dict[str, torch.Tensor]:
        cfg = self.config
        anchors, strides = raw["anchors"], raw["strides"]
        pred = self.boxes(raw["deltas"], anchors, strides)  # (B, N, 4)
        n_pred = anchors.shape[0]
        terms = {"box": [], "objectness": [], "class": []}
        for i, t in enumerate(targets):
            gt, labels = t["boxes"].to(anchors), t["labels"].to(anchors.device).long()
            idx = self.assign(gt, raw)
            obj = raw["objectness"][i]
            positive = torch.zeros(n_pred, dtype=torch.bool, device=anchors.device)
            positive[idx] = True
            with torch.no_grad():
                if len(idx):
                    ignore = (box_iou(pred[i].detach(), gt).max(dim=1).values > cfg.ignore_iou) & ~positive
                else:
                    ignore = torch.zeros_like(positive)
            negative = ~positive & ~ignore
            neg = F.binary_cross_entropy_with_logits(obj[negative], torch.zeros_like(obj[negative]), reduction="sum")
            objectness = cfg.w_noobj * neg / max(int(negative.sum()), 1)
            if len(idx):
                pos = F.binary_cross_entropy_with_logits(obj[positive], torch.ones_like(obj[positive]))
                objectness = objectness + cfg.w_obj * pos
                box = (1 - generalized_iou(pred[i, idx], gt)).mean()
                onehot = F.one_hot(labels, self.num_classes).to(obj.dtype)
                cls = F.binary_cross_entropy_with_logits(raw["class_logits"][i, idx], onehot, reduction="sum")
                cls = cls / len(idx)
            else:
                box = pred[i].sum() * 0.0
                cls = raw["class_logits"][i].sum() * 0.0
            terms["box"].append(cfg.w_box * box)
            terms["objectness"].append(objectness)
            terms["class"].append(cfg.w_class * cls)
        out = {k: reduce_loss(torch.stack(v), reduction) for k, v in terms.items()}
        out["total"] = out["box"] + out["objectness"] + out["class"]
        return out

    # ------------------------------------------------------------------ decoding
    def decode(
        self,
        raw: dict[str, torch.Tensor],
        score_threshold: float = 0.05,
        nms_iou: float = 0.4,
        max_detections: int = 100,
    ) -> Detections:
        boxes = self.boxes(raw["deltas"], raw["anchors"], raw["strides"])
        h, w = raw.get("image_hw", self.config.image_size)
        probs = torch.sigmoid(raw["class_logits"]) * torch.sigmoid(raw["objectness"]).unsqueeze(-1)
        return decode_batch(boxes, probs, (h, w), score_threshold, nms_iou, max_detections)
