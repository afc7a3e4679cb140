"""The render demo figure: one street under each semantic parameter at three magnitudes.

Each row is one parameter of Θ, each column a magnitude (θ = 0, then three growing steps along a
fixed, readable direction, projected by Π onto the feasible set), with the renderer's own 2-D
boxes drawn in the paper's colours (cyan car, purple pedestrian, yellow cyclist).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sae.data.street import street_scene
from sae.figures import pyplot, save_figure
from sae.render.renderer import RenderOutput, render
from sae.scene import editor
from sae.scene.ffd import bottom_layer_mask
from sae.scene.ir import Scene

#: Box colours of the paper's Figure 2, by object class.
CLASS_COLORS = {0: (0.0, 1.0, 1.0), 1: (0.62, 0.2, 0.85), 2: (1.0, 0.92, 0.0)}

#: Magnitudes shown per parameter (units of θ; the paper's ε per step is in the label).
MAGNITUDES = {
    "color": (0.15, 0.35, 0.7),
    "weather": (0.25, 0.5, 1.0),
    "foliage": (0.15, 0.35, 0.7),
    "rotate": (0.05, 0.12, 0.25),
    "translate": (0.05, 0.1, 0.2),
    "mesh": (0.05, 0.1, 0.15),
}


def demo_direction(scene: Scene, name: str, seed: int = 0) -> torch.Tensor:
    """A readable unit direction of parameter ``name`` (e.g. fog at dusk, an autumn hue)."""
    shape = editor.theta_shape(scene, name)
    gen = torch.Generator().manual_seed(seed)
    if name == "color":
        d = torch.tensor([1.0, -1.0, -1.0]).expand(shape)  # towards red
    elif name == "weather":
        d = torch.tensor([0.6, 0.8, 0.9, 0.4]).expand(shape)  # fog, clouds, dusk, warm
    elif name == "foliage":
        d = torch.tensor([0.4, 0.4, -0.1, 1.0]).expand(shape)  # towards autumn, dappled
    elif name == "rotate":
        d = torch.ones(shape)
    elif name == "translate":
        d = torch.tensor([1.0, 0.0]).expand(shape)  # sideways
    else:
        d = torch.randn(shape, generator=gen, dtype=torch.float64).sign()
        d[..., torch.as_tensor(bottom_layer_mask()), 1] = 0
    return d.to(dtype=scene.dtype, device=scene.device).clone()


def perturbed(scene: Scene, name: str, magnitude: float, seed: int = 0) -> Scene:
    """The scene with parameter ``name`` moved by ``magnitude`` along :func:`demo_direction`, projected."""
    theta = {name: magnitude * demo_direction(scene, name, seed)}
    theta = editor.project(theta, scene, {name: magnitude})
    return editor.apply(scene, theta)


def draw_boxes(ax, out: RenderOutput, scene: Scene, index: int = 0) -> None:
    """Draw the renderer's boxes of image ``index`` on a matplotlib axis."""
    import matplotlib.patches as patches

    for n in range(scene.max_objects):
        if not (scene.obj_valid[index, n] and out.pixel_count[index, n] > 0):
            continue
        left, top, right, bottom = out.boxes[index, n].tolist()
        colour = CLASS_COLORS.get(int(scene.obj_class[index, n]), (1, 1, 1))
        ax.add_patch(
            patches.Rectangle(
                (left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False, edgecolor=colour, linewidth=0.8
            )
        )


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(H, W, 3)`` float image in [0, 1] → uint8 array."""
    return (image.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def render_demo(out_path: str | os.PathLike, seed: int = 3, height: int = 375, width: int = 1242) -> Path:
    """Write the demo figure (PNG) to ``out_path`` atomically and return its path."""
    plt = pyplot()
    scene = street_scene(seed=seed, height=height, width=width)
    rows = list(MAGNITUDES)
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * 5.2, len(rows) * 5.2 * height / width + 0.9))
    with torch.no_grad():
        base = render(scene)
        for r, name in enumerate(rows):
            cells = [(scene, base, "θ = 0")]
            for m in MAGNITUDES[name]:
                s = perturbed(scene, name, m, seed)
                eps = editor.PAPER_EPS[name]
                cells.append((s, render(s), f"{name} {m:g} (= {m / eps:.0f} × paper ε)"))
            for c, (s, out, title) in enumerate(cells):
                ax = axes[r, c]
                ax.imshow(to_uint8(out.image[0]), interpolation="nearest")
                draw_boxes(ax, out, s)
                ax.set_title(title, fontsize=9)
                ax.set_axis_off()
    fig.suptitle(
        "τ(x, θ) = γ(α(x, θ)): one street under each semantic parameter (boxes from the renderer)", fontsize=11
    )
    fig.tight_layout()
    return save_figure(fig, out_path)
