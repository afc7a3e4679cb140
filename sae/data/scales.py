"""The embedded data set's scales and Virtual KITTI variations: plain data, importable without
torch (the workflow reads them to plan its jobs)."""

from __future__ import annotations

from dataclasses import dataclass

#: Weather codes ``(fog, cloud, dusk, tint)`` of the Virtual KITTI variations we render.
VARIATION_CODES = {
    "clone": (0.0, 0.0, 0.0, 0.0),
    "fog": (0.55, 0.3, 0.05, 0.0),
    "morning": (0.05, 0.15, 0.45, -0.45),
    "overcast": (0.0, 0.9, 0.15, -0.15),
    "rain": (0.25, 1.0, 0.3, -0.3),
    "sunset": (0.0, 0.2, 0.85, 0.7),
}


@dataclass(frozen=True)
class Scale:
    """Sizes of one scale.

    Attributes:
        size: ``(height, width)`` of the rendered frames.
        pretrain_frames: KITTI-like frames.
        finetune: ``(scenes, frames per scene)`` of the VKITTI-like fine-tuning split.
        eval: ``(scenes, frames per scene)`` of the evaluation split.
        variations: VKITTI variations rendered for every sequence.
        stride: metres the camera drives between two written frames.
        objects: ``(cars, pedestrians, cyclists)`` per street.
        cameras: VKITTI2 cameras rendered for the sequences (0 left, 1 right of the stereo pair);
            the KITTI export holds Camera_0 (KITTI's ``image_2`` is the left colour camera).
    """

    size: tuple[int, int]
    pretrain_frames: int
    finetune: tuple[int, int]
    eval: tuple[int, int]
    variations: tuple[str, ...] = tuple(VARIATION_CODES)
    stride: float = 4.0
    objects: tuple[int, int, int] = (9, 2, 1)
    cameras: tuple[int, ...] = (0, 1)


SCALES = {
    "smoke": Scale(size=(94, 310), pretrain_frames=8, finetune=(2, 2), eval=(1, 2), variations=("clone", "fog")),
    "default": Scale(size=(375, 1242), pretrain_frames=2000, finetune=(5, 10), eval=(4, 10), objects=(8, 3, 2)),
    "paper": Scale(size=(375, 1242), pretrain_frames=7481, finetune=(5, 212), eval=(3, 49)),
}
