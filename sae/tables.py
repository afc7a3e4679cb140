"""The paper's tables, ours beside theirs: CSV and Markdown from the workflow's outputs.

Every number in a table is read from a file the workflow wrote (``metrics.json`` of ``sae
eval``, ``summary.json`` of ``sae attack``); the paper's numbers are quoted from its text
(Tables 1–2, §5.1).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from sae.io import write_text

#: Table 1 of the paper: single-parameter SAEs on SqueezeDet, (recall, mAP) %.
PAPER_TABLE1 = {
    "color": (100.0, 99.5),
    "weather": (100.0, 98.8),
    "foliage": (100.0, 99.7),
    "translate": (100.0, 99.2),
    "rotate": (100.0, 98.2),
    "mesh": (98.7, 98.7),
    "benign": (100.0, 99.4),
}
#: Table 2 (the four combinations the paper shows), (recall, mAP) %.
PAPER_TABLE2 = {
    "translate+rotate": (100.0, 82.0),
    "translate+rotate+mesh": (100.0, 65.9),
    "translate+mesh": (100.0, 80.8),
    "rotate+mesh": (100.0, 98.7),
    "benign": (100.0, 99.4),
}
#: §5.1: the 882-image evaluation split, benign and under translate+rotate+mesh SAEs.
#: (Tables 1–2 carry their own benign row: recall 100, mAP 99.4 on their 50 images.)
PAPER_EFFECTIVENESS = {"benign": (93.63, 85.95), "translate+rotate+mesh": (93.17, 57.78)}


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing input: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def metrics_at(eval_dir: str | os.PathLike, difficulty: str) -> dict:
    """The ``difficulty`` level of ``eval_dir/metrics.json``."""
    levels = read_json(Path(eval_dir) / "metrics.json")
    if difficulty not in levels:
        raise KeyError(f"{eval_dir}/metrics.json has no difficulty {difficulty!r}")
    return levels[difficulty]


def write_table(rows: list[dict], columns: list[tuple[str, str]], stem: str | os.PathLike, title: str = "") -> None:
    """``stem.csv`` and ``stem.md`` from ``rows``; ``columns`` are ``(key, header)``; floats
    with one decimal in Markdown, full precision in CSV; missing values are empty / "–"."""
    stem = Path(stem)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([k for k, _ in columns])
    for r in rows:
        writer.writerow(["" if r.get(k) is None else r[k] for k, _ in columns])
    write_text(stem.with_suffix(".csv"), buf.getvalue())

    def cell(v):
        if v is None:
            return "–"
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = [f"# {title}", ""] if title else []
    lines.append("| " + " | ".join(h for _, h in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")


ATTACK_COLUMNS = [
    ("combo", "parameters"),
    ("method", "attack"),
    ("ball", "ball"),
    ("queries", "queries"),
    ("examples", "SAEs"),
    ("recall", "recall"),
    ("mAP", "mAP"),
    ("benign_mAP", "benign mAP"),
    ("delta_mAP", "Δ mAP vs benign"),
    ("raised", "loss raised (%)"),
    ("paper_recall", "paper recall"),
    ("paper_mAP", "paper mAP"),
]


def _ball(cfg: dict) -> str | None:
    """An attack's reach as its summary's config gives it: the semantic ball's radius in
    multiples of ε (``6ε``), or the pixel ℓ∞ radius in 1/255 units (``8/255``)."""
    if "combo" in cfg:
        from sae.constants import ball_multiple

        return f"{ball_multiple(cfg.get('method', 'isfgsm'), cfg.get('steps'), cfg.get('radius')):g}ε"
    if "eps" in cfg:
        return f"{cfg['eps'] * 255:.3g}/255"
    return None


def _benign_of(eval_dir: Path, benign_evals: list[str], frames: dict) -> str:
    """The benign evaluation that holds the frames of ``eval_dir``: with one, that one (as the
    caller says; a pixel set's evaluation names its frames by KITTI index, so names cannot be
    compared with the benign ones); with several, the one whose stored detections name the same
    frames as ``eval_dir``'s. ``frames`` caches each benign evaluation's sorted frame names."""
    if len(benign_evals) == 1:
        return benign_evals[0]
    from sae.metrics.store import stored_names

    names = stored_names(eval_dir)
    if names is None:
        raise FileNotFoundError(f"{eval_dir}: no stored detections to tell which benign evaluation holds its frames")
    for b in benign_evals:
        if b not in frames:
            other = stored_names(b)
            frames[b] = None if other is None else sorted(other)
        if frames[b] == sorted(names):
            return b
    raise ValueError(
        f"{eval_dir}: none of the benign evaluations {', '.join(map(str, benign_evals))} holds its "
        f"{len(names)} frames, so its Δ mAP would compare other frames"
    )


def attack_rows(
    benign_eval: str | list[str], attack_dirs: list[str], difficulty: str, paper: dict | None = None
) -> list[dict]:
    """One row for the benign images and one per attack folder (its ``summary.json`` and the
    ``eval/metrics.json`` that ``sae eval`` wrote for its data set). An entry ``DIR=EVAL`` takes
    the evaluation from the folder ``EVAL`` instead (a fixed set of §5, evaluated elsewhere).

    ``benign_eval`` is one benign evaluation or several (attacks on different frame subsets): each
    row's Δ mAP is against the benign evaluation of the same frames (its ``benign mAP``); the
    first is the table's benign row."""
    from sae.constants import parse_combo

    benigns = [str(benign_eval)] if isinstance(benign_eval, (str, os.PathLike)) else [str(b) for b in benign_eval]
    if not benigns:
        raise ValueError("no benign evaluation given")
    paper = {(k if k == "benign" else "+".join(parse_combo(k))): v for k, v in (paper or {}).items()}
    base = metrics_at(benigns[0], difficulty)
    frames: dict = {}  # each benign evaluation's frame names, read once
    rows = [
        {
            "combo": "benign",
            "method": "–",
            "ball": None,
            "queries": None,
            "examples": None,
            "recall": base["recall"],
            "mAP": base["mAP"],
            "benign_mAP": base["mAP"],
            "delta_mAP": 0.0,
            "raised": None,
            "paper_recall": paper["benign"][0] if "benign" in paper else None,
            "paper_mAP": paper["benign"][1] if "benign" in paper else None,
        }
    ]
    for entry in attack_dirs:
        d, _, evaluated = str(entry).partition("=")
        summary = read_json(Path(d) / "summary.json")
        eval_dir = Path(evaluated) if evaluated else Path(d) / "eval"
        m = metrics_at(eval_dir, difficulty)
        b = metrics_at(_benign_of(eval_dir, benigns, frames), difficulty)
        cfg = summary["config"]
        combo = cfg.get("combo", "pixel")
        method = cfg.get("method", "pgd" if cfg.get("steps", 1) > 1 else "fgsm")
        ball = _ball(cfg)
        # the paper ran iterative sFGSM (ε steps); sFGSM over a wider ball is not its attack
        p = paper.get(combo) if method == "isfgsm" or (method == "sfgsm" and ball == "1ε") else None
        rows.append(
            {
                "combo": combo,
                "method": method,
                "ball": ball,
                "queries": summary.get("queries"),
                "examples": summary["examples"],
                "recall": m["recall"],
                "mAP": m["mAP"],
                "benign_mAP": b["mAP"],
                "delta_mAP": m["mAP"] - b["mAP"],
                "raised": 100 * summary["raised"],
                "paper_recall": p[0] if p else None,
                "paper_mAP": p[1] if p else None,
            }
        )
    return rows


#: Table 3 and §5.2's text: the baseline and the SAE-augmented models, on SAEs and on benign
#: images, ``{recipe: {validation set: (recall, mAP)}}`` %; the baseline on pixel perturbations
#: is Appendix A.1's (recall 2.9, mAP 0.05).
PAPER_TABLE3 = {
    "baseline": {"sae": (93.17, 57.78), "benign": (93.6, 86.17), "pixel": (2.9, 0.05)},
    "retrained-sae": {"sae": (92.97, 72.76), "benign": (93.7, 84.73)},
    "tuned-sae": {"sae": (92.15, 72.63), "benign": (91.9, 79.1)},
}
#: Table 4: pixel-augmented models on SAEs.
PAPER_TABLE4 = {
    "baseline": {"sae": (93.17, 57.78), "benign": (93.6, 86.17), "pixel": (2.9, 0.05)},
    "retrained-pixel": {"sae": (92.4, 56.7)},
    "tuned-pixel": {"sae": (90.43, 55.35)},
}
#: Table 5: hybrid tuning, validated on SAEs (5a) and on pixel perturbations (5b); the paper's
#: "Tuned (SAE)" is the pixel-robust model tuned on SAEs, "Tuned (Pixel)" the reverse.
PAPER_TABLE5 = {
    "hybrid-pixel-then-sae": {"sae": (93.2, 73.8), "pixel": (29.5, 7.65)},
    "hybrid-sae-then-pixel": {"sae": (91.7, 65.7), "pixel": (90.6, 75.15)},
    "tuned-sae": PAPER_TABLE3["tuned-sae"],  # the single-kind tuned models, as Tables 3 and 4 give them
    "tuned-pixel": PAPER_TABLE4["tuned-pixel"],
}
#: §5.1 (SqueezeDet on the 882-image evaluation split) and §5.3 (YOLOv3: mAP only).
PAPER_TRANSFER = {
    "squeezedet": {"benign": (93.63, 85.95), "sae": (93.17, 57.78), "pixel": (2.9, 0.05)},
    "yolov3": {"benign": (None, 91.28), "sae": (None, 87.50)},
}
PAPER_MODELS = {"table3": PAPER_TABLE3, "table4": PAPER_TABLE4, "table5": PAPER_TABLE5, "transfer": PAPER_TRANSFER}


def model_columns(valsets: list[str]) -> list[tuple[str, str]]:
    """Columns of :func:`model_rows` for these validation sets."""
    columns = [("model", "model"), ("label", "paper's name")]
    for v in valsets:
        columns += [
            (f"{v}_recall", f"recall on {v}"),
            (f"{v}_mAP", f"mAP on {v}"),
            (f"paper_{v}_recall", f"paper recall on {v}"),
            (f"paper_{v}_mAP", f"paper mAP on {v}"),
        ]
    return columns


def model_rows(
    models: list[tuple[str, str]], valsets: list[str], difficulty: str, paper: dict | None = None
) -> list[dict]:
    """One row per model: recall and mAP on each validation set, the paper's beside.

    Args:
        models: ``(name, folder)`` pairs; ``folder/<valset>/metrics.json`` is what ``sae eval``
            wrote for that model on that validation set.
        paper: ``{name: {valset: (recall, mAP)}}`` (either may be None where the paper gives none).
    """
    from sae.detectors.recipes import RECIPES

    paper = paper or {}
    rows = []
    for name, folder in models:
        row = {"model": name, "label": RECIPES[name].label if name in RECIPES else name}
        for v in valsets:
            m = metrics_at(Path(folder) / v, difficulty)
            p = paper.get(name, {}).get(v, (None, None))
            row.update(
                {f"{v}_recall": m["recall"], f"{v}_mAP": m["mAP"], f"paper_{v}_recall": p[0], f"paper_{v}_mAP": p[1]}
            )
        rows.append(row)
    return rows


#: The paper's benign SqueezeDet (§5.1, the 882-image evaluation split) and YOLOv3 (§5.3), mAP %.
PAPER_VICTIMS = {"squeezedet": 85.95, "yolov3": 91.28}


def victim_rows(models: list[tuple[str, str, str]], difficulty: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Per detector: benign recall and mAP overall and per class at ``difficulty`` (from its
    ``sae eval`` folder's ``metrics.json``) and the iterations of its pre-training and fine-tuning
    (``<stage>/train_time.json`` beside each ``final.pt``). Training times are not in the table, so
    that the same seed gives the same bytes; the workflow's provenance table has every job's time.
    ``models`` are ``(detector, models folder, eval folder)``: the folder holding the detector's
    ``pretrain``/``finetune`` stages and its ``sae eval --out`` folder. Returns rows and columns."""
    from sae.data.records import DETECTION_CLASSES

    rows = []
    for name, model_dir, eval_dir in models:
        m = metrics_at(eval_dir, difficulty)
        row = {"detector": name, "recall": m["recall"], "mAP": m["mAP"], "paper_mAP": PAPER_VICTIMS.get(name)}
        for c in DETECTION_CLASSES:
            v = m["per_class"].get(c)
            row[f"{c}_AP"], row[f"{c}_recall"] = (v["AP"], v["recall"]) if v else (None, None)
        for stage in ("pretrain", "finetune"):
            t = read_json(Path(model_dir) / stage / "train_time.json")
            row[f"{stage}_iterations"] = int(t["steps"]) + int(t.get("resumed_from", 0))
        rows.append(row)
    columns = [("detector", "detector"), ("recall", "recall"), ("mAP", "mAP"), ("paper_mAP", "paper mAP")]
    for c in DETECTION_CLASSES:
        columns += [(f"{c}_AP", f"{c} AP"), (f"{c}_recall", f"{c} recall")]
    columns += [("pretrain_iterations", "pre-training iterations"), ("finetune_iterations", "fine-tuning iterations")]
    return rows, columns
