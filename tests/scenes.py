"""Small hand-made scenes shared by the tests."""

import torch

from sae.data.street import intrinsics
from sae.scene.ir import FAR_DEPTH, SEM, Scene


def one_object_scene(
    template: int, location, rotation_y: float, color, h: int, w: int, bg_depth: float = FAR_DEPTH, dims=(1.5, 1.8, 4.4)
) -> Scene:
    """One car-class object over a uniform grey road at ``h × w`` (float64), sun azimuth 0.7."""
    return Scene.from_objects(
        torch.full((h, w, 3), 0.5),
        torch.full((h, w), bg_depth),
        torch.full((h, w), SEM["Road"]),
        intrinsics(h, w),
        [
            {
                "class": 0,
                "template": template,
                "dims": dims,
                "location": location,
                "rotation_y": rotation_y,
                "color": color,
                "track_id": 0,
            }
        ],
        camera_height=1.65,
        sun_azimuth=0.7,
    )
