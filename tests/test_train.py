"""Training and evaluation plumbing on the smoke data: learning, checkpoints, resume, CLI."""

import json

import pytest
import torch

from sae.data.generate import generate
from sae.detectors.data import DetectionDataset
from sae.detectors.train import TrainConfig, load_checkpoint, predict, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate(out, "smoke", seed=3, workers=1, progress=False)
    return out


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
                str(tmp_path / "m.json"),
                "--figure",
                str(tmp_path / "det.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "det.png").stat().st_size > 10_000
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) == {"recall", "mAP", "per_class"} and "Car" in metrics["per_class"]
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data)]) == 2
    assert "missing.pt" in capsys.readouterr().err
