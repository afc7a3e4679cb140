"""Free-form deformation (Sederberg & Parry 1986) of templates in the unit object frame.

A trivariate Bernstein lattice of ``LATTICE = (4, 3, 3)`` control points spans the object's unit
box (length × height × width). A deformation is a set of control-point *offsets* ``(P, 3)`` in
units of the object's size along each axis (``0.1`` moves a control point by 10 % of the length,
height or width), so the ``mesh`` parameter's ε is dimensionless. Because a vertex moves by
``W @ offsets`` with fixed Bernstein weights ``W``, offsets add: FFD(FFD(v, a), b) = FFD(v, a + b).
"""

from __future__ import annotations

from math import comb

import numpy as np
import torch

#: Control points along the object's (length, height, width).
LATTICE = (4, 3, 3)
#: Number of control points ``P``.
NUM_CONTROL = LATTICE[0] * LATTICE[1] * LATTICE[2]
#: Largest total offset of a control point, in units of the object's size. With 4 points along
#: the length the rest spacing is 1/3, so two neighbours moving 0.15 towards each other still
#: keep 0.033 apart: the lattice never folds and the mesh stays a (slightly reshaped) car.
MAX_OFFSET = 0.15


def _bernstein(n: int, t: np.ndarray) -> np.ndarray:
    """``(len(t), n + 1)`` Bernstein basis of degree ``n`` at ``t`` in [0, 1]."""
    k = np.arange(n + 1)
    coef = np.array([comb(n, i) for i in k], dtype=np.float64)
    return coef * t[:, None] ** k * (1 - t[:, None]) ** (n - k)


def ffd_weights(vertices: np.ndarray) -> np.ndarray:
    """Bernstein weights ``(V, P)`` of unit-frame vertices ``(V, 3)``; rows sum to 1."""
    s = np.stack([vertices[:, 0] + 0.5, vertices[:, 1] + 1.0, vertices[:, 2] + 0.5], axis=1)
    s = np.clip(s, 0.0, 1.0)
    bx, by, bz = (_bernstein(n - 1, s[:, i]) for i, n in enumerate(LATTICE))
    w = bx[:, :, None, None] * by[:, None, :, None] * bz[:, None, None, :]
    return w.reshape(len(vertices), NUM_CONTROL)


def control_grid() -> np.ndarray:
    """Rest positions ``(P, 3)`` of the control points in the unit object frame."""
    axes = [np.linspace(0, 1, n) for n in LATTICE]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return g + np.array([-0.5, -1.0, -0.5])


def bottom_layer_mask() -> np.ndarray:
    """``(P,)`` bool: control points on the ground face (``y = 0``) of the unit box."""
    return np.isclose(control_grid()[:, 1], 0.0)


def deform(vertices: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply FFD offsets.

    Args:
        vertices: ``(..., V, 3)`` unit-frame vertices.
        weights: ``(..., V, P)`` Bernstein weights from :func:`ffd_weights`.
        offsets: ``(..., P, 3)`` control-point offsets in units of the object's size.

    Returns:
        ``(..., V, 3)`` deformed vertices (exactly ``vertices`` when the offsets are zero).
    """
    return vertices + weights @ offsets
