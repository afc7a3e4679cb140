"""Training and evaluation plumbing on the smoke data: learning, checkpoints, resume, CLI."""

import json

import pytest
import torch

from sae.detectors.data import DetectionDataset
from sae.detectors.train import TrainConfig, load_checkpoint, predict, train


@pytest.fixture(scope="module")
def data(smoke_data):
    return smoke_data


def _config(data, **kw):
    base = dict(
        data=[(str(data / "finetune" / "vkitti2"), 1.0)],
        size=(94, 310),
        iterations=4,
        batch_size=2,
        lr=0.005,
        warmup=2,
        model={"width": 0.25, "dropout": 0.0},
        checkpoint_every=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_dataset_scales_boxes_with_the_image(data):
    full = DetectionDataset(data / "eval" / "vkitti2", (94, 310))
    half = DetectionDataset(data / "eval" / "vkitti2", (47, 155))
    (img, t), (img2, t2) = full[0], half[0]
    assert img.shape == (3, 94, 310) and img2.shape == (3, 47, 155)
    assert torch.allclose((t["boxes"] + 0.5) / 2 - 0.5, t2["boxes"], atol=1e-4)
    rer = DetectionDataset(data / "eval" / "vkitti2", (94, 310), rerender=True)
    assert (rer[0][0] - img).abs().mean() < 0.05  # γ(IR) ≈ the stored JPEG


@pytest.mark.parametrize("rerender", [False, True])
def test_the_item_cache_changes_no_item_and_no_trained_bit(data, tmp_path, monkeypatch, rerender):
    """A cached item is the item read afresh (image and targets), a caller editing the targets it
    got does not edit the cache, and a training run whose data sets cache every item ends with the
    weights of one reading every draw from disk (4 steps of 2 draws from the finetune split's
    frames: several frames are drawn twice)."""
    from sae.detectors import data as data_module

    root = data / "finetune" / "vkitti2"
    plain, cached = (
        DetectionDataset(root, (94, 310), rerender=rerender),
        DetectionDataset(root, (94, 310), rerender=rerender, cache=True),
    )
    for _ in range(2):  # the second pass reads the cache
        for i in range(3):
            (a, ta), (b, tb) = plain[i], cached[i]
            assert torch.equal(a, b) and ta.keys() == tb.keys()
            assert all(torch.equal(ta[k], tb[k]) for k in ta)
            tb["boxes"] += 1000.0
    reads = []
    frame = data_module.DetectionDataset.frame
    monkeypatch.setattr(data_module.DetectionDataset, "frame", lambda self, i: reads.append(i) or frame(self, i))
    cached[0]
    assert reads == []  # served from memory
    cfg = _config(data, rerender=rerender, iterations=4, model={"width": 0.25, "dropout": 0.0})
    with_cache = train(cfg, tmp_path / "cache", progress=False)
    draws = len(reads)
    original = data_module.DetectionDataset.__init__
    monkeypatch.setattr(
        data_module.DetectionDataset, "__init__", lambda self, *a, cache=False, **k: original(self, *a, **k)
    )
    reads.clear()
    without = train(cfg, tmp_path / "plain", progress=False)
    assert len(reads) == 8 > draws  # every draw read from disk, against each frame once
    a, b = torch.load(with_cache, weights_only=True), torch.load(without, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_detectors_see_channels_last_images_whatever_layout_they_get():
    """``normalise`` hands the convolutions channels-last images, the renderer's own layout, so a
    frame read from disk and the same frame rendered run the same kernels: equal outputs bit for bit."""
    from sae.detectors.train import build_detector

    torch.manual_seed(0)
    for name, model in (("squeezedet", {"width": 0.25, "dropout": 0.0}), ("yolov3", {"width": 0.125})):
        net = build_detector(name, (64, 160), model).eval()
        x = torch.rand(2, 64, 160, 3)
        rendered, read = x.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2).contiguous()
        assert not rendered.is_contiguous() and read.is_contiguous()
        assert net.normalise(read).is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            a, b = net(rendered), net(read)
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k], b[k]), (name, k)


def test_training_lowers_the_loss_on_one_batch(data):
    torch.manual_seed(0)
    from sae.detectors.train import build_detector

    model = build_detector("squeezedet", (94, 310), {"width": 0.25, "dropout": 0.0})
    ds = DetectionDataset(data / "finetune" / "vkitti2", (94, 310))
    images = torch.stack([ds[i][0] for i in range(2)])
    targets = [ds[i][1] for i in range(2)]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for _ in range(25):
        terms = model.loss(model(images), targets)
        first = first or {k: v.item() for k, v in terms.items()}
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    last = {k: v.item() for k, v in model.loss(model(images), targets).items()}
    assert last["total"] < 0.5 * first["total"]
    assert last["bbox"] < first["bbox"] and last["class"] < first["class"]


def test_checkpoints_resume_and_load_weights_only(data, tmp_path, monkeypatch):
    from sae.detectors import squeezedet

    calls = {"n": 0}
    original = squeezedet.SqueezeDet.loss

    def flaky(self, raw, targets):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, raw, targets)

    monkeypatch.setattr(squeezedet.SqueezeDet, "loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data), tmp_path / "run", progress=False)
    _, state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 2
    monkeypatch.setattr(squeezedet.SqueezeDet, "loss", original)
    final = train(_config(data), tmp_path / "run", progress=False)
    model, state = load_checkpoint(final)
    assert state["step"] == 4 and not (tmp_path / "run" / "last.pt").exists()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # steps 3-4 came from the resumed run
    preds, targets = predict(model, DetectionDataset(data / "eval" / "vkitti2", (94, 310)))
    assert len(preds) == len(targets) == 4


def _interrupt_at(monkeypatch, call: int):
    """Make SqueezeDet's ``call``-th loss evaluation raise (a crash in the middle of a step)."""
    from sae.detectors import squeezedet

    calls = {"n": 0}
    original = squeezedet.SqueezeDet.loss

    def flaky(self, raw, targets):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, raw, targets)

    monkeypatch.setattr(squeezedet.SqueezeDet, "loss", flaky)
    return original


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(data, tmp_path, monkeypatch, ema):
    """Resuming from ``last.pt`` restores weights, optimizer moments, the weight average and every
    random stream (the sampler's, dropout's), so the result does not depend on where the run was
    stopped."""
    from sae.detectors import squeezedet

    cfg = _config(
        data, iterations=6, checkpoint_every=2, model={"width": 0.25, "dropout": 0.3}, optimizer="adam", ema=ema
    )
    whole = train(cfg, tmp_path / "whole", progress=False)
    original = _interrupt_at(monkeypatch, 6)  # during step 6, after the checkpoint at step 4
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")[1]["step"] == 4
    # what a kill between the log's flush and the checkpoint leaves: a row past the checkpoint
    log = tmp_path / "cut" / "train_log.jsonl"
    log.write_text(log.read_text() + json.dumps({"step": 5, "total": 0.0}) + "\n")
    monkeypatch.setattr(squeezedet.SqueezeDet, "loss", original)
    resumed = train(cfg, tmp_path / "cut", progress=False)
    a, b = torch.load(whole, weights_only=True), torch.load(resumed, weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    if ema:  # the average is the model; the last iterate, kept beside it, differs from it
        assert all(torch.equal(a["last"][k], b["last"][k]) for k in a["last"])
        assert any(not torch.equal(a["last"][k], a["model"][k]) for k in a["model"])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows == [json.loads(line) for line in (tmp_path / "whole" / "train_log.jsonl").read_text().splitlines()]
    timing = json.loads((tmp_path / "cut" / "train_time.json").read_text())
    assert timing["resumed_from"] == 4 and timing["steps"] == 2


def test_a_checkpoint_of_another_configuration_is_not_resumed(data, tmp_path, monkeypatch, capsys):
    from sae.detectors import squeezedet

    dropout = {"width": 0.25, "dropout": 0.3}  # so that training draws from torch's global stream
    original = _interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, model=dropout), tmp_path / "run", progress=False)
    (tmp_path / "run" / "last.pt.q1w2e3r4.tmp").write_bytes(b"half a checkpoint")  # a killed save
    monkeypatch.setattr(squeezedet.SqueezeDet, "loss", original)
    other = _config(data, lr=0.001, model=dropout)
    restarted = train(other, tmp_path / "run", progress=False)
    assert "is from another configuration; training from the start" in capsys.readouterr().err
    assert (tmp_path / "run" / "last.pt.stale").is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))
    timing = json.loads((tmp_path / "run" / "train_time.json").read_text())
    assert timing["resumed_from"] == 0 and timing["steps"] == 4
    # reading the stale checkpoint drew no random number: the run is a fresh run's twin
    fresh = train(other, tmp_path / "fresh", progress=False)
    a, b = torch.load(restarted, weights_only=True)["model"], torch.load(fresh, weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_train_and_eval_cli(data, tmp_path, capsys):
    from sae.cli import main

    out = tmp_path / "cli"
    assert (
        main(
            [
                "train",
                "--data",
                f"{data / 'finetune' / 'vkitti2'}:2",
                f"{data / 'pretrain' / 'kitti'}:1",
                "--out",
                str(out),
                "--size",
                "310x94",
                "--iterations",
                "2",
                "--batch-size",
                "2",
                "--model",
                '{"width": 0.25}',
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(out / "final.pt"),
                "--data",
                str(data / "eval" / "vkitti2"),
                "--out",
                str(tmp_path / "ev"),
                "--figure",
                str(tmp_path / "det.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "det.png").stat().st_size > 10_000
    levels = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(levels) == {"easy", "moderate", "hard", "all"}
    assert {"recall", "mAP", "per_class"} <= set(levels["all"]) and "Car" in levels["all"]["per_class"]
    assert len(list((tmp_path / "ev" / "kitti").glob("*.txt"))) == 4
    capsys.readouterr()
    # metrics recomputed from the stored detections, without the detector, agree with eval's
    assert main(["metrics", str(tmp_path / "ev"), "--difficulty", "all", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["all"] == levels["all"]
    assert main(["metrics", str(tmp_path / "ev"), "--iou", "Car=0.1", "--json"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert loose["all"]["per_class"]["Car"]["iou"] == 0.1
    assert main(["metrics", str(tmp_path / "ev"), "--iou", "Truck=0.5"]) == 2
    assert "Truck" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data)]) == 2
    assert "missing.pt" in capsys.readouterr().err
    # several folders in one call: each scored as a call of its own would score it
    two = [str(data / "eval" / "vkitti2"), str(data / "pretrain" / "kitti")]
    outs = [str(tmp_path / "ev2" / "a"), str(tmp_path / "ev2" / "b")]
    assert main(["eval", "--checkpoint", str(out / "final.pt"), "--data", *two, "--out", *outs]) == 0
    assert json.loads((tmp_path / "ev2" / "a" / "metrics.json").read_text()) == levels
    assert main(["eval", "--checkpoint", str(out / "final.pt"), "--data", two[1], "--out", str(tmp_path / "b1")]) == 0
    assert (tmp_path / "ev2" / "b" / "metrics.json").read_bytes() == (tmp_path / "b1" / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "final.pt"), "--data", *two, "--out", outs[0]]) == 2
    assert "one per folder" in capsys.readouterr().err


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_moves_boxes_with_the_pixels(seed):
    import numpy as np

    from sae.detectors.data import Augment

    h, w = 90, 300
    image = torch.zeros(3, h, w)
    boxes = torch.tensor([[40.0, 20.0, 99.0, 59.0], [200.0, 50.0, 229.0, 79.0]])
    for x1, y1, x2, y2 in boxes.long().tolist():
        image[:, y1 : y2 + 1, x1 : x2 + 1] = 1.0
    target = {"boxes": boxes, "labels": torch.tensor([0, 1]), "occlusion": torch.tensor([0, 1])}
    aug = Augment(zoom=1.6, flip=0.5, brightness=0, contrast=0, saturation=0, min_visible=0.0)
    out, t = aug(image, target, np.random.default_rng(seed))
    assert out.shape == image.shape and set(t) == set(target) and len(t["boxes"]) == len(t["labels"])
    mask = out[0] > 0.5
    for box in t["boxes"]:
        # the rectangle's pixels near the box span the box, to a pixel
        x1, y1, x2, y2 = box.round().long().tolist()
        window = torch.zeros_like(mask)
        window[max(y1 - 4, 0) : y2 + 5, max(x1 - 4, 0) : x2 + 5] = True
        ys, xs = torch.nonzero(mask & window, as_tuple=True)
        extent = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
        assert (extent - box).abs().max() <= 1.5, (extent, box)


def test_the_weight_average_follows_its_recurrence():
    """Float entries move by ``d·avg + (1 − d)·current`` with the ramped ``d``; integer
    entries (batch norm's step counter) are copied; a decay outside (0, 1) is refused."""
    from sae.detectors.train import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(net, 0.5)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(4):
        net.train()(torch.randn(5, 3))  # moves the running statistics and the counter
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        average.update(net, step)
        d = min(0.5, (1 + step) / (10 + step))
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.dtype.is_floating_point else v.clone()
    for k, v in expected.items():
        assert torch.allclose(average.state[k], v, rtol=0, atol=1e-6), k
    assert int(average.state["1.num_batches_tracked"]) == 4
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 1.0)


def test_fitted_anchors_are_the_training_boxes_shapes_and_fine_tuning_keeps_them(data, tmp_path):
    from sae.detectors.configs import SqueezeDetConfig
    from sae.detectors.train import fit_anchors

    ds = DetectionDataset(data / "finetune" / "vkitti2", (94, 310), min_height=3.0)
    wh = torch.cat([(t["boxes"][:, 2:] - t["boxes"][:, :2]) for t in (ds[i][1] for i in range(len(ds)))])
    anchors = torch.tensor(fit_anchors([ds], k=3))
    assert anchors.shape == (3, 2) and (anchors[1:].prod(1) >= anchors[:-1].prod(1)).all()  # small to large
    # every anchor is the median shape of the boxes nearest it, so it lies within their range
    assert (anchors >= wh.min(0).values - 1e-4).all() and (anchors <= wh.max(0).values + 1e-4).all()

    def inter_over_union(a, b):
        inter = torch.minimum(a[:, None], b[None]).prod(-1)
        return inter / (a.prod(-1)[:, None] + b.prod(-1)[None] - inter)

    kitti = torch.tensor(SqueezeDetConfig(image_size=(94, 310)).anchor_shapes())
    nine = torch.tensor(fit_anchors([ds]))
    # fitted shapes cover the boxes better than KITTI's scaled ones (the point of fitting them)
    assert inter_over_union(wh, nine).max(1).values.mean() > inter_over_union(wh, kitti).max(1).values.mean()

    model = {"width": 0.25, "dropout": 0.0, "anchors": "kmeans"}
    pre = train(_config(data, iterations=2, model=model), tmp_path / "pre", progress=False)
    stored = json.loads(torch.load(pre, weights_only=True)["config"])["model"]["anchors"]
    assert torch.allclose(torch.tensor(stored), nine, atol=1e-3)
    net, _ = load_checkpoint(pre)
    assert torch.allclose(torch.tensor(net.anchor_shapes).double(), nine.double(), atol=1e-3)
    # fine-tuning from it on other data keeps the anchors its head was trained for
    tuned_config = _config(data / "other", iterations=2, model=model, init=str(pre))
    tuned_config.data = [(str(data / "pretrain" / "kitti"), 1.0)]
    tuned = train(tuned_config, tmp_path / "tuned", progress=False)
    assert json.loads(torch.load(tuned, weights_only=True)["config"])["model"]["anchors"] == stored


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_the_optimizer_step_is_torchs_step_bit_for_bit(name):
    from sae.detectors.train import optimizer_step

    def make(params):
        if name == "adam":
            return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)

    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    opt_ours, opt_theirs = make(ours.parameters()), make(theirs.parameters())
    for _ in range(5):
        x = torch.randn(4, 5)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            (model(x) ** 2).sum().backward()
        optimizer_step(opt_ours)
        opt_theirs.step()
        assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), theirs.parameters(), strict=True))
    assert not any(p.grad is None for p in ours.parameters()) and ours.weight.grad_fn is None


def test_a_training_run_never_imports_dynamo(data, tmp_path):
    """Its import costs a training job seconds; nothing here is compiled (see _skip_dynamo_import)."""
    import subprocess
    import sys

    script = f"""
import sys
from sae.detectors.train import TrainConfig, train
cfg = TrainConfig(data=[({str(data / "pretrain" / "kitti")!r}, 1.0)], size=(94, 310), iterations=2, batch_size=2,
                  warmup=1, model={{"width": 0.25}}, checkpoint_every=1)
train(cfg, {str(tmp_path / "a")!r}, progress=False)
import torch  # what a resumed run calls too
from sae.detectors.train import _skip_dynamo_import
_skip_dynamo_import()
opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
opt.load_state_dict(opt.state_dict())
opt.zero_grad()
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
