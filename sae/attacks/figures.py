"""Figures of an attack run: benign vs SAE with detections (the paper's Figure 2), and the
diagnostics that answer "does the attack do anything?" (loss traces, per-parameter
sensitivity, θ in physical units)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sae.figures import pyplot, save_figure


def load_records(attack_dir: str | os.PathLike) -> list[dict]:
    path = Path(attack_dir) / "attack.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"attack records not found: {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def benign_vs_sae(
    victim,
    size: tuple[int, int],
    data: str | os.PathLike,
    attack_dir: str | os.PathLike,
    out: str | os.PathLike,
    n: int = 2,
) -> Path:
    """The ``n`` examples whose loss rose most: benign γ(IR) | SAE, each with the victim's
    detections in the paper's colours."""
    import torch
    import torch.nn.functional as F

    from sae.attacks.runner import _slug, ir_frames
    from sae.data.figure import detections_grid
    from sae.render.renderer import render
    from sae.scene import editor
    from sae.scene.ir import Scene

    records = {r["name"]: r for r in load_records(attack_dir)}
    frames = {f[0]: f for f in ir_frames(data) if f[0] in records}
    chosen = sorted(frames, key=lambda k: records[k]["loss_after"] - records[k]["loss_before"], reverse=True)[:n]
    if not chosen:
        raise ValueError(f"{attack_dir}: no attacked frame of {data} to draw")
    images, titles = [], []
    summary = json.loads((Path(attack_dir) / "summary.json").read_text())
    combo = summary["config"].get("combo", "pixel")
    for name in chosen:
        scene = Scene.load(frames[name][4])
        with np.load(Path(attack_dir) / "theta" / f"{_slug(name)}.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        with torch.no_grad():
            benign = render(scene).image_chw
            if "image" in arrays:
                adv = torch.from_numpy(arrays["image"]).permute(2, 0, 1)[None].float() / 255
            else:
                theta = {k: torch.from_numpy(v).to(scene.dtype)[None] for k, v in arrays.items()}
                adv = render(editor.apply(scene, theta)).image_chw
        r = records[name]
        images += [benign, adv]
        titles += [f"benign {name}  (loss {r['loss_before']:.2f})", f"SAE: {combo}  (loss {r['loss_after']:.2f})"]
    images = torch.cat(images).float()
    x = images if tuple(images.shape[-2:]) == tuple(size) else F.interpolate(images, size=size, mode="bilinear")
    victim.eval()
    with torch.no_grad():
        dets = victim.decode(victim(x))
    if tuple(images.shape[-2:]) != tuple(size):  # draw on the stored images
        sy, sx = images.shape[-2] / size[0], images.shape[-1] / size[1]
        for d in dets:
            d["boxes"] = d["boxes"] * torch.tensor([sx, sy, sx, sy])
    return detections_grid(
        images,
        dets,
        out,
        titles=titles,
        suptitle="benign (left) vs semantic adversarial example (right); cyan car, purple pedestrian, yellow cyclist",
    )


def diagnostics(attack_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Loss trace over queries (every example and the mean), per-parameter sensitivity at the
    start, θ in physical units, and per-parameter step agreement (1: every sign step kept its
    direction; ½: a random walk), for one attack run."""
    records = load_records(attack_dir)
    if not records:
        raise ValueError(f"{attack_dir}: no records")
    summary = json.loads((Path(attack_dir) / "summary.json").read_text())
    label = summary["config"].get("combo", "pixel") + " / " + summary["config"].get("method", "")
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    traces = np.array([r["trace"] for r in records])
    rel = traces - traces[:, :1]
    for row in rel:
        axes[0].plot(row, color="0.7", linewidth=0.6)
    axes[0].plot(rel.mean(0), color="C3", linewidth=2, label="mean")
    axes[0].axhline(0, color="k", linewidth=0.5)
    axes[0].set_xlabel("query")
    axes[0].set_ylabel("objective − benign")
    axes[0].set_title(f"loss trace ({len(records)} examples)")
    axes[0].legend()
    sens = [r["sensitivity"] for r in records if r["sensitivity"]]
    if sens:
        names = list(sens[0])
        vals = np.array([[s[k] for k in names] for s in sens])
        axes[1].boxplot(vals, tick_labels=names)
        axes[1].set_yscale("symlog", linthresh=1e-4)
    axes[1].set_title("sensitivity: Σ|∂L/∂θ|·ε at θ = 0")
    thetas = [r["theta"] for r in records if r["theta"]]
    if thetas:
        names = list(thetas[0])
        vals = np.array([[abs(t[k]) for k in names] for t in thetas])
        axes[2].boxplot(vals, tick_labels=names)
        axes[2].tick_params(axis="x", rotation=30)
    axes[2].set_title("|θ*| in physical units (°, m, RGB, code)")
    agree = [r.get("step_agreement") or {} for r in records]  # absent in older records
    names = [k for k in (agree[0] if agree else {}) if any(a.get(k) is not None for a in agree)]
    if names:
        vals = [[a[k] for a in agree if a.get(k) is not None] for k in names]
        axes[3].boxplot(vals, tick_labels=names)
        axes[3].tick_params(axis="x", rotation=30)
        axes[3].set_ylim(-0.02, 1.02)
    axes[3].axhline(0.5, color="C3", linewidth=1, linestyle="--", label="random walk")
    axes[3].legend(loc="lower right")
    axes[3].set_title("step agreement (gradient signs kept)")
    fig.suptitle(f"attack diagnostics: {label}; loss raised on {100 * summary['raised']:.0f}% of examples")
    fig.tight_layout()
    return save_figure(fig, out)


def combos_figure(tables: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Δ mAP against the benign frames of every attacked combination (rows of ``sae table
    attacks`` CSVs: Tables 1 and 2), sorted, coloured by the number of parameters, with the paper's
    Δ mAP as black diamonds where it gives one (its Tables 1–2)."""
    import csv

    rows, benign_paper = [], None
    for path in tables:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"table not found: {path}")
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                if r["combo"] == "benign":
                    benign_paper = float(r["paper_mAP"]) if r.get("paper_mAP") else benign_paper
                    continue
                paper = float(r["paper_mAP"]) if r.get("paper_mAP") else None
                rows.append((r["combo"], float(r["delta_mAP"]), paper))
    if not rows:
        raise ValueError(f"no attacked combinations in {', '.join(map(str, tables))}")
    rows.sort(key=lambda r: r[1])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.16 * len(rows) + 1.4))
    colours = plt.get_cmap("viridis")
    y = np.arange(len(rows))
    sizes = [c.count("+") + 1 for c, _, _ in rows]
    ax.barh(y, [d for _, d, _ in rows], color=[colours((k - 1) / 5) for k in sizes], height=0.75)
    for i, (_, _, paper) in enumerate(rows):
        if paper is not None and benign_paper is not None:
            ax.plot(paper - benign_paper, i, "kD", ms=4)
    ax.set_yticks(y, [c for c, _, _ in rows], fontsize=6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("Δ mAP vs benign (points); ◆ the paper's")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours((k - 1) / 5)) for k in range(1, 7)]
    ax.legend(handles, [f"{k} parameter{'s' if k > 1 else ''}" for k in range(1, 7)], fontsize=6, loc="lower right")
    ax.set_title("SAEs of every combination of the six parameters (Tables 1 and 2)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)
