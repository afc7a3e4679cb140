"""Figures of data sets: one frame under every variation, next to its labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sae.data.records import DETECTION_CLASSES
from sae.data.vkitti import VKITTI2, class_colors
from sae.figures import pyplot, save_figure

#: Box colours by detection class (the paper's Figure 2: cyan car, purple pedestrian, yellow cyclist).
BOX_COLORS = {"Car": (0.0, 1.0, 1.0), "Pedestrian": (0.62, 0.2, 0.85), "Cyclist": (1.0, 0.92, 0.0)}


def variation_grid(data: str | os.PathLike, out: str | os.PathLike, scene: str | None = None, frame: int = 0) -> Path:
    """Rows: the variations of one scene's frame; columns: rgb with boxes, classes, depth."""
    import matplotlib.patches as patches

    plt = pyplot()

    ds = VKITTI2(data)
    scene = scene or ds.sequences[0].scene
    keys = [k for k in ds.sequences if k.scene.lower() == scene.lower()]
    if not keys:
        raise ValueError(f"{data}: no scene {scene!r}; found {sorted({k.scene for k in ds.sequences})}")
    fig, axes = plt.subplots(len(keys), 3, figsize=(15, 1.0 + 1.55 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        f = ds.read_frame(key, frame, 0)
        ax = axes[row, 0]
        ax.imshow(f.rgb)
        for o in f.objects:
            colour = BOX_COLORS.get(DETECTION_CLASSES[o.detection_class] if o.detection_class >= 0 else "", (1, 1, 1))
            left, top, right, bottom = o.box
            ax.add_patch(
                patches.Rectangle(
                    (left - 0.5, top - 0.5),
                    right - left + 1,
                    bottom - top + 1,
                    fill=False,
                    edgecolor=colour,
                    linewidth=0.8,
                )
            )
        ax.set_ylabel(key.variation, fontsize=9)
        axes[row, 1].imshow(class_colors(f.class_names)[f.classes] if f.classes is not None else f.rgb)
        depth = f.depth if f.depth is not None else np.zeros(f.rgb.shape[:2])
        axes[row, 2].imshow(np.log(np.clip(depth, 1, 655.35)), cmap="magma_r")
        for c, title in enumerate(("rgb + boxes (bbox.txt)", "classSegmentation", "depth (log)")):
            axes[row, c].set_xticks([])
            axes[row, c].set_yticks([])
            if row == 0:
                axes[row, c].set_title(title, fontsize=10)
    fig.suptitle(f"{scene}, frame {frame}: the Virtual KITTI variations and their labels", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)


def detections_grid(
    images,
    detections,
    out: str | os.PathLike,
    score_threshold: float = 0.3,
    columns: int = 2,
    titles: list[str] | None = None,
    suptitle: str = "detections (cyan car, purple pedestrian, yellow cyclist)",
) -> Path:
    """Images ``(N, 3, H, W)`` with their detections drawn in the paper's colours, in a grid."""
    import matplotlib.patches as patches

    plt = pyplot()

    n = len(images)
    rows = max(1, (n + columns - 1) // columns)
    h, w = images.shape[-2:]
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 7 * rows * h / w + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow((images[i].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8))
        d = detections[i]
        for box, score, label in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True):
            if score < score_threshold:
                continue
            colour = BOX_COLORS[DETECTION_CLASSES[label]]
            ax.add_patch(
                patches.Rectangle(
                    (box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, edgecolor=colour, linewidth=1.0
                )
            )
            ax.text(box[0], box[1] - 1, f"{score:.2f}", color=colour, fontsize=6)
        if titles:
            ax.set_title(titles[i], fontsize=9)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
