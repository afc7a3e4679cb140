"""Writing matplotlib figures: headless, atomically (an interrupted run leaves no half PNG)."""

from __future__ import annotations

import os
from pathlib import Path

from sae.io import atomic_path


def pyplot():
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG to ``out`` atomically, close it, return the path."""
    plt = pyplot()
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return out
