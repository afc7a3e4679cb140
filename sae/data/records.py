"""Plain records of annotated frames, shared by the VKITTI2 and KITTI readers and writers.

A :class:`Frame` is what a data set stores for one image: pixels, per-pixel ground truth and the
objects' annotations, in the units of the on-disk formats (metres, radians, inclusive pixel
boxes). :class:`ObjectAnnotation` holds the union of Virtual KITTI 2's ``info``/``bbox``/``pose``
rows and KITTI's ``label_2`` fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Detection classes of the victims (KITTI's evaluated classes).
DETECTION_CLASSES = ("Car", "Pedestrian", "Cyclist")
#: Data-set labels → detection class (VKITTI2's Van and Truck count as Car).
LABEL_TO_CLASS = {"Car": 0, "Van": 0, "Truck": 0, "Pedestrian": 1, "Person_sitting": 1, "Cyclist": 2}


def wrap_angle(a: float) -> float:
    """Wrap to [−π, π]."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def observation_angle(rotation_y: float, x: float, z: float) -> float:
    """KITTI ``alpha = rotation_y − atan2(x, z)``, wrapped to [−π, π]."""
    return wrap_angle(rotation_y - math.atan2(x, z))


@dataclass
class ObjectAnnotation:
    """One object in one frame.

    Attributes:
        track_id: VKITTI ``trackID`` (stable across frames and variations), -1 when unknown.
        label: ``Car``, ``Van``, ``Truck``, ``Pedestrian``, ``Cyclist``, ``DontCare``, …
        box: ``(left, top, right, bottom)`` inclusive pixel coordinates.
        dims: ``(h, w, l)`` metres (KITTI order).
        location: bottom-face centre in camera coordinates (m).
        rotation_y: KITTI yaw (rad).
        alpha: observation angle (rad).
        truncation: in [0, 1] (1 = entirely out of the image).
        occlusion: KITTI ``occluded`` code 0–3 (derived from ``occupancy`` where not given).
        occupancy: VKITTI fraction of the object's in-image pixels that are visible.
        pixels: visible pixel count (VKITTI ``number_pixels``).
        moving: VKITTI ``isMoving``.
        model, color: VKITTI ``info.txt`` model and colour names.
        world_location: VKITTI ``world_space_X/Y/Z``.
        world_rotation: VKITTI ``rotation_world_space_y/x/z``.
        camera_rotation_xz: VKITTI ``rotation_camera_space_x/z`` (pitch, roll).
    """

    track_id: int
    label: str
    box: tuple[float, float, float, float]
    dims: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float
    alpha: float | None = None
    truncation: float = 0.0
    occlusion: int = 0
    occupancy: float = 1.0
    pixels: int = -1
    moving: bool = False
    model: str = ""
    color: str = ""
    world_location: tuple[float, float, float] | None = None
    world_rotation: tuple[float, float, float] | None = None
    camera_rotation_xz: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if self.alpha is None and self.label != "DontCare":
            self.alpha = observation_angle(self.rotation_y, self.location[0], self.location[2])

    @property
    def detection_class(self) -> int:
        """Index into :data:`DETECTION_CLASSES`, -1 for labels the detectors ignore."""
        return LABEL_TO_CLASS.get(self.label, -1)


@dataclass
class Frame:
    """One annotated image.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        objects: the annotations (DontCare regions included, with ``label == "DontCare"``).
        K: ``(3, 3)`` intrinsics.
        depth: ``(H, W)`` float32 z-depth in metres, or None.
        classes: ``(H, W)`` int64 indices into ``class_names``, or None.
        class_names: the semantic categories (``colors.txt`` order).
        instance: ``(H, W)`` int64 track id per pixel, -1 for none, or None.
        extrinsic: ``(4, 4)`` world → camera, or None.
        name: where it came from (``Scene01/clone/Camera_0/00012`` or ``000123``).
    """

    rgb: np.ndarray
    objects: list[ObjectAnnotation]
    K: np.ndarray
    depth: np.ndarray | None = None
    classes: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    instance: np.ndarray | None = None
    extrinsic: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """Detection targets: boxes ``(M, 4)`` float32 ``(x1, y1, x2, y2)`` as the data set gives
        them (KITTI's convention: 0-based pixel coordinates) and class indices ``(M,)`` int64,
        for the objects of a detection class."""
        keep = self.detection_objects()
        boxes = np.array([list(o.box) for o in keep], dtype=np.float32)
        labels = np.array([o.detection_class for o in keep], dtype=np.int64)
        return boxes.reshape(-1, 4), labels

    def detection_objects(self) -> list[ObjectAnnotation]:
        """The objects of a detection class, in the order of :meth:`targets`."""
        return [o for o in self.objects if o.detection_class >= 0]
