"""Attack a whole split and write the result as a data set (``sae attack``).

The input is a Virtual KITTI 2 folder whose frames carry their IR (``frames/ir/``), as the
generator and ``sae data derender`` write them. Every frame is attacked (batched), and the
output is a data set in the same layout — ``OUT/vkitti2`` (with the SAEs' IRs) and
``OUT/kitti`` — whose labels come from the renderer, so ``sae eval`` and any other detector
framework can use it. Beside it:

* ``OUT/attack.jsonl``: one record per example — its name, θ in physical units, the loss
  before and after and at every query, per-parameter sensitivity and step agreement (whether
  successive gradient signs agree: an attack whose steps go back and forth ends near θ = 0),
  queries, and seconds split into render, detector and other time;
* ``OUT/theta/<name>.npz``: θ* per example (the perturbation δ for pixel attacks, as uint8
  pixels of ``x + δ``);
* ``OUT/summary.json``: the configuration and the means over the split.

Finished examples are not redone: each batch's records and θ are written atomically before the
next batch starts, and a rerun skips them; the data set is (re)written from them at the end.
Each batch draws its random numbers (random search, PGD's random start) from a stream seeded by
the attack's seed and the batch's example names, so a resumed run finds what an uninterrupted
one would have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sae.attacks.semantic import (
    PixelConfig,
    SemanticConfig,
    physical_theta,
    pixel_attack,
    render_targets,
    semantic_attack,
)
from sae.data.export import ExportItem, export
from sae.data.vkitti import VKITTI2, frame_path
from sae.detectors.data import spread
from sae.io import atomic_path, remove_stale_temporaries, write_text
from sae.render.renderer import render
from sae.scene import editor
from sae.scene.ir import Scene

RECORDS = "attack.jsonl"


def _slug(name: str) -> str:
    return name.replace("/", "_")


def ir_frames(data: str | os.PathLike, limit: int | None = None) -> list[tuple[str, object, int, int, Path]]:
    """``(name, key, frame, camera, ir_path)`` of every Camera_0 frame with an IR, in order
    (``limit`` of them, spread evenly over the split — see :func:`spread`)."""
    reader = VKITTI2(data)
    out = []
    for i, (key, index, camera) in enumerate(reader.index):
        if not reader.has(key, "ir", camera, index):
            expected = frame_path(reader.root, key.scene, key.variation, "ir", camera, index)
            raise FileNotFoundError(
                f"{expected}: missing — attacks need the IR of every frame "
                "(generate the data with `sae data generate` or de-render it with `sae data derender`)"
            )
        out.append((reader.name(i), key, index, camera, reader.file(key, "ir", camera, index)))
    return [out[i] for i in spread(len(out), limit)]


def _done(out: Path) -> dict[str, dict]:
    path = out / RECORDS
    if not path.is_file():
        return {}
    done = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: corrupt record ({exc}); delete the line to redo that example") from None
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ValueError(f"{path}:{number}: not an attack record (no 'name'); delete the line to redo that example")
        if (out / "theta" / f"{_slug(row['name'])}.npz").is_file():
            done[row["name"]] = row
    return done


def batch_seed(seed: int, names: list[str]) -> int:
    """The random seed of the batch holding the examples ``names``: a function of ``seed`` and
    the names only (not of how many batches ran before it in this process)."""
    digest = hashlib.sha256("\n".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _append_records(out: Path, rows: list[dict]) -> None:
    path = out / RECORDS
    old = path.read_text() if path.is_file() else ""
    write_text(path, old + "".join(json.dumps(r) + "\n" for r in rows))


def attack_split(
    victim,
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: SemanticConfig | PixelConfig,
    size: tuple[int, int],
    batch_size: int = 8,
    limit: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    images: dict | None = None,
) -> dict:
    """Attack every frame of ``data`` and write the SAE (or pixel-perturbed) data set to ``out``.

    Args:
        victim: the detector (moved to ``device``).
        size: the detector's ``(height, width)``.
        limit: attack ``limit`` frames spread evenly over the split (:func:`spread`).
        images: a dict that receives the written frames' rendered images (see
            :func:`sae.data.export.export`), so evaluating the set need not render them again.

    Returns:
        The summary (also in ``out/summary.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # what a killed run was writing when it stopped
    victim = victim.to(device)
    frames = ir_frames(data, limit)
    done = _done(out)
    todo = [f for f in frames if f[0] not in done]
    semantic = isinstance(config, SemanticConfig)
    if done:
        print(
            f"resuming: {len(frames) - len(todo)} of {len(frames)} examples already in {out / RECORDS}",
            file=sys.stderr,
            flush=True,
        )
    bar = tqdm(total=len(frames), initial=len(frames) - len(todo), desc="attack", unit="SAE", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        loaded = [Scene.load(f[4]) for f in chunk]
        scenes = Scene.cat(loaded).to(device)
        seeded = dataclasses.replace(config, seed=batch_seed(config.seed, [f[0] for f in chunk]))
        t0 = time.perf_counter()
        if semantic:
            result = semantic_attack(victim, scenes, seeded, size=size)
        else:
            with torch.no_grad():
                rendered = render(scenes)
            targets = render_targets(scenes, rendered, size)
            result = pixel_attack(victim, rendered.image_chw, targets, seeded, size=size)
        seconds = time.perf_counter() - t0
        physical = physical_theta(result.params, scenes) if semantic else [{} for _ in chunk]
        rows = []
        for b, (name, *_rest) in enumerate(chunk):
            n = int(scenes.obj_valid[b].sum()) if semantic else 0
            if semantic:  # θ without the padding slots Scene.cat added
                arrays = {
                    k: (v[b, : loaded[b].max_objects] if k in editor.OBJECT_PARAMETERS else v[b]).detach().cpu().numpy()
                    for k, v in result.params.items()
                }
            else:  # store the perturbed pixels themselves, as the data set does
                arrays = {"image": _to_uint8(result.images[b])}
            with atomic_path(out / "theta" / f"{_slug(name)}.npz") as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            share = 1.0 / len(chunk)
            rows.append(
                {
                    "name": name,
                    "objects": n,
                    "loss_before": float(result.loss_before[b]),
                    "loss_after": float(result.loss_after[b]),
                    "trace": [float(v) for v in result.trace[:, b]],
                    "sensitivity": {k: float(v[b]) for k, v in result.sensitivity.items()},
                    "step_agreement": {  # NaN (no pair of steps) as null: strict JSON
                        k: (None if math.isnan(v[b]) else float(v[b])) for k, v in result.step_agreement.items()
                    },
                    "theta": physical[b],
                    "queries": result.queries,
                    "seconds": {k: v * share for k, v in result.time.as_dict().items()},
                    "wall_seconds": seconds * share,
                }
            )
        _append_records(out, rows)
        bar.update(len(chunk))
    bar.close()
    return finish(out, frames, config, size, images)


def _to_uint8(image_chw: torch.Tensor) -> np.ndarray:
    return (image_chw.detach().clamp(0, 1).permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def finish(out: Path, frames, config, size, images: dict | None = None) -> dict:
    """Write the data set and ``summary.json`` from the stored records and θ (``images``: see
    :func:`attack_split`)."""
    done = _done(out)
    semantic = isinstance(config, SemanticConfig)

    def items():
        for name, key, index, camera, ir_path in frames:
            scene = Scene.load(ir_path)
            theta_path = out / "theta" / f"{_slug(name)}.npz"
            try:
                with np.load(theta_path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except Exception as exc:  # zipfile/numpy errors on a truncated or foreign file
                raise ValueError(f"{theta_path}: unreadable θ file ({exc}); delete it to redo {name}") from exc
            if semantic:
                theta = {k: torch.from_numpy(v).to(scene.dtype)[None] for k, v in arrays.items()}
                yield ExportItem(key.scene, key.variation, index, editor.apply(scene, theta), camera=camera)
            else:
                image = arrays["image"]
                if image.shape[:2] != (scene.height, scene.width):
                    raise ValueError(
                        f"{name}: pixel attacks write images at the IR's size; the detector's size {size} differs"
                    )
                yield ExportItem(key.scene, key.variation, index, scene, image=image, camera=camera)

    count = export(items(), out, images=images)
    rows = [done[f[0]] for f in frames]

    def mean(values, empty=float("nan")):
        values = list(values)
        return float(np.mean(values)) if values else empty

    summary = {
        "kind": "semantic" if semantic else "pixel",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "size": list(size),
        "examples": count,
        "loss_before": mean(r["loss_before"] for r in rows),
        "loss_after": mean(r["loss_after"] for r in rows),
        "raised": mean(r["loss_after"] > r["loss_before"] for r in rows),
        "queries": rows[0]["queries"] if rows else 0,
        "seconds_per_example": {
            k: mean(r["seconds"][k] for r in rows) for k in ("render", "detector", "other", "total")
        },
        "sensitivity": {
            k: mean(r["sensitivity"].get(k, 0.0) for r in rows) for k in (rows[0]["sensitivity"] if rows else {})
        },
        "theta": {k: mean(abs(r["theta"].get(k, 0.0)) for r in rows) for k in (rows[0]["theta"] if rows else {})},
        # None for one-step attacks; records written before the diagnostic existed have none
        "step_agreement": {
            k: mean((a[k] for a in (r.get("step_agreement", {}) for r in rows) if a.get(k) is not None), None)
            for k in (rows[0].get("step_agreement", {}) if rows else {})
        },
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
