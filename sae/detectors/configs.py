"""The detectors' hyper-parameters and anchor shapes: plain dataclasses, importable without torch
(the workflow checks a config's ``detectors.*.model`` keys against them before any job starts)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The ``anchors`` value that asks ``sae train`` to fit the 9 anchor shapes to its training boxes
#: (k-means with 1 − IoU distance); the checkpoint then stores the fitted shapes.
FIT_ANCHORS = "kmeans"


def _anchor_shapes(anchors, image_size, default, default_size) -> tuple:
    """``anchors`` as float ``(w, h)`` pairs, or ``default`` (given at ``default_size``) scaled to
    ``image_size``; unfitted ``"kmeans"`` anchors cannot build a model."""
    if anchors == FIT_ANCHORS:
        raise ValueError(f"anchors {FIT_ANCHORS!r} are fitted to the training boxes by sae train: give shapes to build")
    if anchors is not None:
        return tuple(tuple(float(v) for v in a) for a in anchors)
    sy, sx = image_size[0] / default_size[0], image_size[1] / default_size[1]
    return tuple((w * sx, h * sy) for w, h in default)


#: SqueezeDet's KITTI anchor shapes (width, height) in pixels at 1242×375.
KITTI_ANCHORS = ((36, 37), (366, 174), (115, 59), (162, 87), (38, 90), (258, 173), (224, 108), (78, 170), (72, 43))
KITTI_SIZE = (375, 1242)


@dataclass
class SqueezeDetConfig:
    """Hyper-parameters (the original's defaults).

    Attributes:
        image_size: ``(height, width)`` the model is built for (anchors are scaled to it).
        num_classes: detection classes.
        width: channel multiplier of every layer (1.0 = the original).
        anchors: 9 anchor shapes ``(w, h)`` in pixels at ``image_size``; None = KITTI's, scaled;
            ``"kmeans"`` = fitted to the training boxes by ``sae train`` (:data:`FIT_ANCHORS`).
        dropout: before ConvDet.
        batch_norm: add batch normalisation after every convolution (not in the original; it
            makes training from scratch, as we must without downloadable weights, much faster).
        loss weights: box 5, positive confidence 75, negative confidence 100, class 1.
        delta_clip: largest |log| width/height delta decoded (numerical safety).
    """

    image_size: tuple[int, int] = KITTI_SIZE
    num_classes: int = 3
    width: float = 1.0
    anchors: tuple | None = None
    dropout: float = 0.5
    w_bbox: float = 5.0
    w_conf_pos: float = 75.0
    w_conf_neg: float = 100.0
    w_class: float = 1.0
    delta_clip: float = 4.0
    batch_norm: bool = False
    extra: dict = field(default_factory=dict)

    def anchor_shapes(self) -> tuple:
        return _anchor_shapes(self.anchors, self.image_size, KITTI_ANCHORS, KITTI_SIZE)


#: YOLOv3's COCO anchor shapes (width, height) in pixels at 416×416, small to large.
COCO_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
COCO_SIZE = (416, 416)
#: Darknet-53's residual block counts per stage (output channels 64, 128, 256, 512, 1024).
DARKNET53_BLOCKS = (1, 2, 8, 8, 4)


@dataclass
class YOLOv3Config:
    """Hyper-parameters.

    Attributes:
        image_size: ``(height, width)`` the model is built for (the default anchors are scaled to it).
        num_classes: detection classes.
        width: channel multiplier of every layer (1.0 = Darknet-53's 32 … 1024).
        depth: multiplier on the residual block counts 1, 2, 8, 8, 4 (at least one block per stage).
        anchors: 9 anchor shapes ``(w, h)`` in pixels at ``image_size``, small to large (3 per
            scale, strides 8, 16, 32); None = YOLOv3's COCO anchors scaled from 416×416;
            ``"kmeans"`` = fitted to the training boxes by ``sae train`` (:data:`FIT_ANCHORS`).
        batch_norm: batch normalisation after every convolution but the output ones (the
            original); without it the convolutions get biases.
        ignore_iou: non-responsible predictions overlapping a ground truth above this IoU are
            left out of the objectness loss.
        w_box, w_obj, w_noobj, w_class: loss weights; objectness is ``w_obj`` × the mean BCE of
            the responsible predictions + ``w_noobj`` × the mean BCE of the others (not ignored).
        obj_prior: initial objectness probability (sets the output biases).
        wh_clip: largest |t_wh| decoded (numerical safety).
    """

    image_size: tuple[int, int] = (375, 1242)
    num_classes: int = 3
    width: float = 1.0
    depth: float = 1.0
    anchors: tuple | None = None
    batch_norm: bool = True
    ignore_iou: float = 0.5
    w_box: float = 1.0
    w_obj: float = 1.0
    w_noobj: float = 1.0
    w_class: float = 1.0
    obj_prior: float = 0.01
    wh_clip: float = 6.0
    extra: dict = field(default_factory=dict)

    def anchor_shapes(self) -> tuple:
        shapes = _anchor_shapes(self.anchors, self.image_size, COCO_ANCHORS, COCO_SIZE)
        if len(shapes) != 9:
            raise ValueError(f"YOLOv3 needs 9 anchor shapes (3 per scale), got {len(shapes)}")
        return shapes

    def block_counts(self) -> tuple[int, ...]:
        return tuple(max(1, int(round(n * self.depth))) for n in DARKNET53_BLOCKS)


#: Detector name → its config class (``sae.detectors.train.DETECTORS`` adds the model classes).
MODEL_CONFIGS = {"squeezedet": SqueezeDetConfig, "yolov3": YOLOv3Config}
