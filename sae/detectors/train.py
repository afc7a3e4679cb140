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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sae.detectors.data import Augment, DetectionDataset, collate
from sae.detectors.squeezedet import SqueezeDet, SqueezeDetConfig
from sae.detectors.yolov3 import YOLOv3, YOLOv3Config
from sae.io import atomic_path, remove_stale_temporaries, write_text

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
        ema: decay of an exponential moving average of the weights (and of batch-norm
            statistics), ramped as ``min(ema, (1 + step) / (10 + step))``; the final checkpoint
            then holds the average (:class:`WeightAverage`). 0 turns it off.
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
    ema: float = 0.0
    min_box_height: float = 12.0
    device: str = "cpu"
    seed: int = 0
    workers: int = 0


def build_detector(name: str, size: tuple[int, int], model: dict | None = None):
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    cls, cfg_cls = DETECTORS[name]
    return cls(cfg_cls(image_size=tuple(size), **(model or {})))


def save_checkpoint(
    path: Path,
    model,
    optimizer,
    step: int,
    config: TrainConfig,
    rng: dict[str, torch.Tensor] | None = None,
    extra: dict | None = None,
) -> None:
    """Write ``path`` atomically: weights (``model``: a module or a state dict), optimizer state,
    ``step`` (steps done), the config and, for a checkpoint to resume from, ``rng`` — the random
    streams' states (``uint8`` tensors, see :func:`_rng_state`) so that the resumed run draws what
    the uninterrupted one would have — and ``extra`` entries (the weight average's state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model if isinstance(model, dict) else model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": step,
        "config": json.dumps(dataclasses.asdict(config)),
        "rng": rng or {},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_state(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The state dictionary a checkpoint holds (``weights_only=True``; no model is built, so no
    random number is drawn); errors name the file."""
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
    return state


def load_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """``(model, state)`` from a checkpoint (``weights_only=True``); errors name the file."""
    path = Path(path)
    state = read_state(path, device)
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


class WeightAverage:
    """An exponential moving average of a model's state (Polyak averaging, as YOLOv5's ModelEMA
    and TensorFlow's ExponentialMovingAverage keep it): after every optimiser step each floating
    entry of the state dict (weights and batch-norm statistics) moves towards the model's,
    ``avg ← d·avg + (1 − d)·current`` with ``d = min(decay, (1 + step) / (10 + step))``, so the
    first steps are not frozen into it; integer entries (step counters) are copied."""

    def __init__(self, model, decay: float, state: dict[str, torch.Tensor] | None = None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        current = model.state_dict()
        source = state if state is not None else current
        if set(source) != set(current):
            raise ValueError("the weight average's entries do not match the model's")
        self.state = {k: source[k].detach().clone().to(v.device) for k, v in current.items()}

    @torch.no_grad()
    def update(self, model, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            avg = self.state[k]
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                avg.copy_(v)


class _Mixture:
    """Samples (dataset, index, augmentation draw) by the data sets' weights from a seeded
    generator, so a run sees a reproducible stream of training views; its state travels in the
    checkpoints, so a resumed run continues the same stream."""

    def __init__(self, datasets, weights, seed: int, augment: Augment | None = None):
        self.datasets, self.gen, self.augment = datasets, torch.Generator().manual_seed(seed), augment
        w = torch.tensor(weights, dtype=torch.float64)
        if (w <= 0).any() or not len(w):
            raise ValueError("data weights must be positive")
        self.p = w / w.sum()

    def get_state(self) -> torch.Tensor:
        """The sampler's generator state (a ``uint8`` tensor)."""
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)

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
    remove_stale_temporaries(out, recursive=False)  # a checkpoint a killed run was writing
    if not config.data:
        raise ValueError("TrainConfig.data: give at least one (path, weight)")
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    min_h = config.min_box_height * config.size[0] / 375
    datasets = [
        DetectionDataset(p, config.size, rerender=config.rerender, min_height=min_h, cache=True) for p, _ in config.data
    ]
    init_model, init_state = load_checkpoint(config.init, str(device)) if config.init else (None, None)
    config = _resolve_anchors(config, datasets, init_state)
    model = build_detector(config.detector, config.size, config.model).to(device)
    if init_model is not None:
        _load_weights(model, init_model, Path(config.init), f"the initial checkpoint's {type(init_model).__name__}")
    params_decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    params_other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [
        {"params": params_decay, "weight_decay": config.weight_decay},
        {"params": params_other, "weight_decay": 0.0},
    ]
    _skip_dynamo_import()
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    elif config.optimizer == "adam":
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    else:
        raise ValueError(f"TrainConfig.optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")
    augment = None if config.augment is None else Augment(**config.augment)
    mixture = _Mixture(datasets, [w for _, w in config.data], config.seed + 7919, augment)
    start = 0
    last = out / "last.pt"
    average = WeightAverage(model, config.ema) if config.ema else None
    state = _resumable(last, config)
    if state is None:
        (out / "train_log.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
    else:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            why = _first_line(exc)
            raise ValueError(f"{last}: the checkpoint to resume from does not fit this run ({why})") from exc
        start = int(state["step"])
        if config.ema:
            if "ema" not in state:
                raise ValueError(f"{last}: the checkpoint to resume from holds no weight average")
            average = WeightAverage(model, config.ema, state["ema"])
        _set_rng_state(state["rng"], mixture, device)
        _truncate_log(out / "train_log.jsonl", start)
        print(f"resuming from {last} at step {start} of {config.iterations}", file=sys.stderr, flush=True)

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
        optimizer_step(optimizer)
        if average is not None:
            average.update(model, step)
        values = {k: v.item() for k, v in terms.items()}
        log.append({"step": step + 1, **values})
        bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.iterations:
            # The log first: a kill between the two leaves rows past the checkpoint, which a
            # resume drops (_truncate_log); the other order could lose rows the checkpoint holds.
            _flush_log(out, log)
            extra = {"ema": average.state} if average is not None else None
            save_checkpoint(last, model, optimizer, step + 1, config, _rng_state(mixture, device), extra)
    _flush_log(out, log)
    final = out / "final.pt"
    if average is None:
        save_checkpoint(final, model, optimizer, config.iterations, config)
    else:  # the average is the trained model; the last iterate is kept beside it
        save_checkpoint(final, average.state, optimizer, config.iterations, config, extra={"last": model.state_dict()})
    timing = {"seconds": time.time() - t0, "steps": config.iterations - start, "resumed_from": start}
    write_text(out / "train_time.json", json.dumps(timing) + "\n")
    last.unlink(missing_ok=True)
    return final


def _rng_state(mixture: _Mixture, device: torch.device) -> dict[str, torch.Tensor]:
    """The states of every random stream a training step draws from: the sampler's generator,
    torch's global CPU generator (dropout, weight noise) and, on CUDA, the device's generator."""
    state = {"mixture": mixture.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], mixture: _Mixture, device: torch.device) -> None:
    mixture.set_state(state["mixture"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


#: Optimizer methods that torch wraps in ``torch._disable_dynamo``.
_DYNAMO_WRAPPED = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")


def _skip_dynamo_import() -> None:
    """Let torch's optimizers run without importing ``torch._dynamo`` (3–4 s per process on 2
    cores: a third of a smoke training job). ``torch._disable_dynamo`` wraps some optimizer
    methods so that a compiled graph calls them eagerly; on a method's first call it imports dynamo
    and caches the disabled function on the original. Nothing here is compiled, so caching the
    original itself makes the same eager call; a test checks a training run never imports dynamo."""
    for name in _DYNAMO_WRAPPED:
        original = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if original is not None and not hasattr(original, "__dynamo_disable"):
            original.__dynamo_disable = original


def optimizer_step(optimizer) -> None:
    """``optimizer.step()`` as torch runs it outside a compiled graph: the update under
    ``no_grad`` (the optimizer is not differentiable), without the ``torch._dynamo`` import its
    wrapper makes on every call (nor the step hooks, which we do not use). The same update, bit
    for bit (tested)."""
    import inspect

    if optimizer.defaults.get("differentiable"):
        optimizer.step()
        return
    with torch.no_grad():
        inspect.unwrap(type(optimizer).step)(optimizer)


def fit_anchors(datasets, frames: int = 400, k: int = 9) -> tuple | None:
    """``k`` anchor shapes ``(w, h)`` (px at the data sets' working size, small to large): k-means
    with 1 − IoU distance over the target boxes (those of at least each set's ``min_height``) of
    up to ``frames`` frames spread over each set; None when the sets hold fewer than ``k`` boxes."""
    from sae.detectors.data import spread
    from sae.detectors.squeezedet import kmeans_anchors

    wh = [torch.zeros(0, 2)]
    for ds in datasets:
        for i in spread(len(ds), frames):
            boxes = ds.target(ds.frame(i))["boxes"]  # the training targets, without rendering γ(IR)
            wh.append(boxes[:, 2:] - boxes[:, :2])
    wh = torch.cat(wh)
    wh = wh[(wh > 0).all(1)]
    return kmeans_anchors(wh, k=k) if len(wh) >= k else None


def _resolve_anchors(config: TrainConfig, datasets, init_state: dict | None = None) -> TrainConfig:
    """``config`` with ``model["anchors"] == "kmeans"`` replaced by shapes: the initial
    checkpoint's (``init_state``: fine-tuning keeps the anchors its head was trained for), else
    fitted to the training boxes (:func:`fit_anchors`); the checkpoints store the result."""
    from sae.detectors.configs import FIT_ANCHORS

    if (config.model or {}).get("anchors") != FIT_ANCHORS:
        return config
    if init_state is not None:
        anchors = json.loads(init_state["config"]).get("model", {}).get("anchors")
        if anchors == FIT_ANCHORS:
            raise ValueError(f"{config.init}: its config holds unfitted anchors")
        source = f"the initial checkpoint {config.init}"
    else:
        anchors = fit_anchors(datasets)
        source = "k-means on the training boxes" if anchors else "too few training boxes: the default shapes"
    if anchors is not None:
        anchors = [[round(float(v), 3) for v in a] for a in anchors]
    print(f"anchors ({source}): {anchors}", file=sys.stderr, flush=True)
    return dataclasses.replace(config, model={**config.model, "anchors": anchors})


def _resumable(last: Path, config: TrainConfig) -> dict | None:
    """The state in ``last`` (a checkpoint an interrupted run of this ``config`` left) to resume
    from, or None to start afresh: when there is none, or it belongs to another configuration
    (then it is set aside as ``last.pt.stale`` with a warning), or it predates stored random states."""
    if not last.is_file():
        return None
    state = read_state(last)
    mine = json.loads(json.dumps(dataclasses.asdict(config)))
    if json.loads(state["config"]) != mine or not state.get("rng"):
        why = "another configuration" if json.loads(state["config"]) != mine else "no random states"
        print(f"warning: {last} is from {why}; training from the start", file=sys.stderr, flush=True)
        os.replace(last, last.with_name(last.name + ".stale"))
        return None
    return state


def _flush_log(out: Path, rows: list) -> None:
    """Append ``rows`` to ``out/train_log.jsonl``, atomically (the file is rewritten: a few
    hundred bytes per step, flushed at checkpoints only), and empty ``rows``."""
    path = out / "train_log.jsonl"
    old = path.read_text() if path.is_file() else ""
    write_text(path, old + "".join(json.dumps(row) + "\n" for row in rows))
    rows.clear()


def _truncate_log(path: Path, steps: int) -> None:
    """Keep the rows of steps ``1..steps`` of the log at ``path`` (atomically): what a resumed
    run's checkpoint holds; rows written after it (a kill between log and checkpoint) go."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: corrupt row {line[:80]!r} ({exc}); delete it to resume") from None
            if isinstance(row, dict) and 1 <= row.get("step", 0) <= steps:
                rows.append(line + "\n")
    write_text(path, "".join(rows))


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
