"""Training and evaluating the victims (``sae train``, ``sae eval``).

``train`` takes any list of data sets (benign, SAE, pixel — anything in the VKITTI2/KITTI
layout) with mixing weights and an optional initial checkpoint, so the paper's protocol is a
sequence of calls: pre-train on the KITTI-like split, fine-tune on identity re-rendered
VKITTI-like frames, then *retrain* (from the pre-trained weights on SAE + benign) or *tune* (from
the fine-tuned detector on SAEs). Checkpoints are written atomically every ``checkpoint_every``
steps and loaded with ``weights_only=True``; a run that finds its own checkpoint resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sae.detectors.data import Augment, DetectionDataset, collate
from sae.detectors.squeezedet import SqueezeDet, SqueezeDetConfig
from sae.detectors.yolov3 import YOLOv3, YOLOv3Config
from sae.io import atomic_path

DETECTORS = {"squeezedet": (SqueezeDet, SqueezeDetConfig), "yolov3": (YOLOv3, YOLOv3Config)}


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        detector: ``squeezedet`` (``yolov3`` joins it).
        data: ``[(path, weight), …]`` folders in the VKITTI2/KITTI layout and their sampling weights.
        size: working ``(height, width)``.
        iterations, batch_size, lr, momentum, weight_decay, warmup: the schedule (linear warm-up,
            cosine decay); ``optimizer`` is ``sgd`` (Nesterov) or ``adam`` (AdamW).
        rerender: read VKITTI2 folders as γ(IR) (identity re-rendered) where the IR is stored.
        init: checkpoint to start from (weights only), or None.
        model: detector hyper-parameters (e.g. ``{"width": 0.5}``).
        checkpoint_every: steps between checkpoints.
        augment: :class:`~sae.detectors.data.Augment` fields (``{}`` = its defaults: zoom-crop,
            flip, photometric jitter), or None for no augmentation.
        min_box_height: objects shorter than this, in px of a 375-row frame (KITTI's unit; scaled
            to the working height), are not training targets (KITTI evaluates none under 25).
        device, seed, workers: where, which random stream, data-loading processes.
    """

    detector: str = "squeezedet"
    data: list = field(default_factory=list)
    size: tuple[int, int] = (188, 621)
    iterations: int = 2000
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100
    rerender: bool = False
    init: str | None = None
    model: dict = field(default_factory=dict)
    checkpoint_every: int = 500
    augment: dict | None = field(default_factory=dict)
    min_box_height: float = 12.0
    device: str = "cpu"
    seed: int = 0
    workers: int = 0


def build_detector(name: str, size: tuple[int, int], model: dict | None = None):
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    cls, cfg_cls = DETECTORS[name]
    return cls(cfg_cls(image_size=tuple(size), **(model or {})))


def save_checkpoint(path: Path, model, optimizer, step: int, config: TrainConfig) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": step,
        "config": json.dumps(dataclasses.asdict(config)),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """``(model, state)`` from a checkpoint (``weights_only=True``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # pickled objects are refused by weights_only=True; truncated zips
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or not {"model", "config", "step"} <= set(state):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a sae checkpoint (expected 'model', 'config' and 'step' entries, got {got})")
    try:
        cfg = TrainConfig(**json.loads(state["config"]))
        model = build_detector(cfg.detector, cfg.size, cfg.model).to(device)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the checkpoint's training config cannot be used ({exc})") from exc
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: the weights do not fit the {cfg.detector} its config describes ({_first_line(exc)})"
        ) from exc
    return model, state


def _first_line(exc: Exception, limit: int = 300) -> str:
    """The exception's message on one line, cut at ``limit`` characters (a state-dict mismatch
    lists every key)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " …"


def _load_weights(model, source, path: Path, what: str) -> None:
    """``model.load_state_dict(source.state_dict())``, or a ``ValueError`` naming ``path``."""
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"{path}: {what} does not fit this run's model ({_first_line(exc)})") from exc


class _Mixture:
    """Samples (dataset, index, augmentation draw) by the data sets' weights from a seeded
    generator, so a run (and a resumed run) sees a reproducible stream of training views."""

    def __init__(self, datasets, weights, seed: int, augment: Augment | None = None):
        self.datasets, self.gen, self.augment = datasets, torch.Generator().manual_seed(seed), augment
        w = torch.tensor(weights, dtype=torch.float64)
        if (w <= 0).any() or not len(w):
            raise ValueError("data weights must be positive")
        self.p = w / w.sum()

    def batch(self, n: int):
        which = torch.multinomial(self.p, n, replacement=True, generator=self.gen)
        items = []
        for d in which.tolist():
            ds = self.datasets[d]
            i = int(torch.randint(len(ds), (), generator=self.gen))
            rng = np.random.default_rng(int(torch.randint(2**62, (), generator=self.gen)))
            items.append(ds.sample(i, self.augment, rng))
        return collate(items)


def train(config: TrainConfig, out: str | os.PathLike, progress: bool = True) -> Path:
    """Train; returns the final checkpoint's path (``out/final.pt``)."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not config.data:
        raise ValueError("TrainConfig.data: give at least one (path, weight)")
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = build_detector(config.detector, config.size, config.model).to(device)
    if config.init:
        init_model, _ = load_checkpoint(config.init, str(device))
        _load_weights(model, init_model, Path(config.init), f"the initial checkpoint's {type(init_model).__name__}")
    params_decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    params_other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [
        {"params": params_decay, "weight_decay": config.weight_decay},
        {"params": params_other, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    elif config.optimizer == "adam":
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    else:
        raise ValueError(f"TrainConfig.optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")
    start = 0
    last = out / "last.pt"
    if not last.is_file():
        (out / "train_log.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
    else:  # resume
        resumed, state = load_checkpoint(last, str(device))
        _load_weights(model, resumed, last, f"the checkpoint to resume from ({type(resumed).__name__})")
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{last}: its optimizer state does not fit this run ({_first_line(exc)})") from exc
        start = int(state["step"])
    min_h = config.min_box_height * config.size[0] / 375
    datasets = [DetectionDataset(p, config.size, rerender=config.rerender, min_height=min_h) for p, _ in config.data]
    augment = None if config.augment is None else Augment(**config.augment)
    mixture = _Mixture(datasets, [w for _, w in config.data], config.seed + 7919 * (start + 1), augment)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        t = (step - config.warmup) / max(config.iterations - config.warmup, 1)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    model.train()
    log = []
    bar = tqdm(
        range(start, config.iterations),
        desc=f"train {config.detector}",
        disable=not progress,
        initial=start,
        total=config.iterations,
    )
    t0 = time.time()
    for step in bar:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step)
        images, targets = mixture.batch(config.batch_size)
        images = images.to(device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        terms = model.loss(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        values = {k: v.item() for k, v in terms.items()}
        log.append({"step": step + 1, **values})
        bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.iterations:
            save_checkpoint(last, model, optimizer, step + 1, config)
            _flush_log(out, log)  # the log holds exactly the steps the checkpoint holds
    final = out / "final.pt"
    save_checkpoint(final, model, optimizer, config.iterations, config)
    _flush_log(out, log)
    (out / "train_time.json").write_text(json.dumps({"seconds": time.time() - t0, "steps": config.iterations - start}))
    last.unlink(missing_ok=True)
    return final


def _flush_log(out: Path, rows: list) -> None:
    with open(out / "train_log.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    rows.clear()


@torch.no_grad()
def predict(model, dataset: DetectionDataset, batch_size: int = 8, device: str = "cpu", progress: bool = False):
    """Detections and targets for every frame of ``dataset``."""
    from tqdm import tqdm

    model.eval().to(device)
    preds, targets = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="detect", disable=not progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images, tgts = collate(items)
        preds += [{k: v.cpu() for k, v in d.items()} for d in model.decode(model(images.to(device)))]
        targets += tgts
    return preds, targets
