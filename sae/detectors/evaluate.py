"""Evaluate a detector on a data-set folder: recall and AP at every KITTI difficulty level, the
raw detections and KITTI result files (what ``sae eval`` and ``sae attack --eval`` write)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sae.detectors.data import DetectionDataset, Spread
from sae.detectors.train import predict
from sae.io import write_text
from sae.metrics.store import format_metrics, metrics_all_levels, save_detections, write_kitti_detections


def evaluate_folder(
    model,
    data: str | os.PathLike,
    size: tuple[int, int],
    out: str | os.PathLike | None = None,
    rerender: bool = False,
    limit: int | None = None,
    device: str = "cpu",
    figure: str | os.PathLike | None = None,
    progress: bool = True,
    rendered: dict | None = None,
) -> dict:
    """Run ``model`` on every frame of ``data`` (``limit`` frames spread over it) at ``size``
    ``(H, W)`` and score it; with ``out``, write ``metrics.json``, ``detections.npz`` (metrics can
    be recomputed from it) and ``kitti/`` result files there. ``rendered``: γ(IR) images the
    caller already has (see :meth:`DetectionDataset.use_rendered`).

    Returns:
        ``{difficulty: metrics}`` for every KITTI level (see :func:`metrics_all_levels`).
    """
    ds = DetectionDataset(data, size, rerender=rerender)
    if rendered:
        ds.use_rendered(rendered)  # frames just written and rendered: γ(IR) is the same image
    if limit is not None:
        ds = Spread(ds, limit)
    preds, targets = predict(model, ds, device=device, progress=progress)
    levels = metrics_all_levels(preds, targets, image_height=size[0])
    print(format_metrics(levels))
    if figure:
        import torch

        from sae.data.figure import detections_grid

        n = min(4, len(ds))
        images = torch.stack([ds[i][0] for i in range(n)])
        print(f"wrote {detections_grid(images, preds[:n], figure)}")
    if out:
        out = Path(out)
        names = [ds.name(i) for i in range(len(ds))]
        source = ds.frame(0).rgb.shape[:2] if len(ds) else size
        save_detections(out / "detections.npz", names, preds, targets, size, source)
        write_kitti_detections(out / "kitti", names, preds, size, source)
        write_text(out / "metrics.json", json.dumps(levels, indent=2) + "\n")  # last: it marks the set done
        print(f"wrote {out}/metrics.json, detections.npz and kitti/ ({len(names)} frames)")
    return levels
