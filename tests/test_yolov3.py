import pytest
import torch

from sae.detectors.train import build_detector
from sae.detectors.yolov3 import DarknetResidual, YOLOv3, YOLOv3Config

H, W = 96, 320


def _model(**kw):
    torch.manual_seed(0)
    return YOLOv3(YOLOv3Config(image_size=(H, W), width=0.125, depth=0.25, **kw)).eval()


def _targets():
    return [
        {"boxes": torch.tensor([[20.0, 30.0, 80.0, 70.0], [150.0, 40.0, 170.0, 90.0]]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[200.0, 20.0, 300.0, 80.0]]), "labels": torch.tensor([2])},
    ]


def _perfect(model, raw, targets):
    """The raw prediction a perfect detector would make for ``targets``."""
    anchors, strides = raw["anchors"], raw["strides"]
    out = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in raw.items()}
    out["objectness"][:] = -20.0
    out["class_logits"][:] = -20.0
    for i, t in enumerate(targets):
        idx = model.assign(t["boxes"], raw)
        gt, a, s = t["boxes"], anchors[idx], strides[idx]
        frac = torch.stack([((gt[:, 0] + gt[:, 2]) / 2 - a[:, 0]) / s, ((gt[:, 1] + gt[:, 3]) / 2 - a[:, 1]) / s], -1)
        assert ((frac > 0) & (frac < 1)).all()  # the centre lies inside the responsible cell
        out["deltas"][i, idx] = torch.cat(
            [torch.logit(frac), torch.log((gt[:, 2:] - gt[:, :2]) / a[:, 2:])],
            dim=-1,
        )
        out["objectness"][i, idx] = 20.0
        out["class_logits"][i, idx, t["labels"]] = 20.0
    return out


@pytest.mark.parametrize("size", [(H, W), (100, 330)])
def test_architecture_shapes(size):
    model = _model()
    raw = model(torch.rand(2, 3, *size))
    padded = [-(-n // 32) * 32 for n in size]  # padded to a multiple of 32 inside forward
    grids = [(padded[0] // s, padded[1] // s) for s in (8, 16, 32)]
    assert raw["grids"] == tuple(grids)
    n = sum(3 * gh * gw for gh, gw in grids)
    assert raw["deltas"].shape == (2, n, 4)
    assert raw["objectness"].shape == (2, n)
    assert raw["class_logits"].shape == (2, n, 3)
    assert raw["anchors"].shape == (n, 4) and raw["strides"].shape == (n,)
    assert raw["image_hw"] == size
    # three scales: strides 8, 16, 32 in order, the largest anchors on stride 32
    n8, n16 = 3 * grids[0][0] * grids[0][1], 3 * grids[1][0] * grids[1][1]
    assert (raw["strides"][:n8] == 8).all() and (raw["strides"][n8 : n8 + n16] == 16).all()
    assert (raw["strides"][n8 + n16 :] == 32).all()
    assert raw["anchors"][n8 + n16 :, 2:].prod(-1).min() > raw["anchors"][:n8, 2:].prod(-1).max()


def test_depth_and_width_follow_the_config():
    blocks = lambda m: sum(isinstance(x, DarknetResidual) for x in m.modules())  # noqa: E731
    assert blocks(_model()) == 1 + 1 + 2 + 2 + 1  # round(0.25 · (1, 2, 8, 8, 4)), at least one
    assert blocks(YOLOv3(YOLOv3Config(width=0.125, depth=0.5))) == 1 + 1 + 4 + 4 + 2
    full = build_detector("yolov3", (188, 621), {})
    assert blocks(full) == 23  # Darknet-53: 1 + 2 + 8 + 8 + 4
    assert 61e6 < sum(p.numel() for p in full.parameters()) < 62e6  # ~61.5 M with 3 classes
    assert full.backbone.out_channels == (256, 512, 1024)


def test_default_anchors_are_coco_scaled_to_the_image():
    cfg = YOLOv3Config(image_size=(208, 832))
    assert cfg.anchor_shapes()[0] == pytest.approx((20.0, 6.5))
    assert cfg.anchor_shapes()[-1] == pytest.approx((746.0, 163.0))


def test_loss_terms_are_finite_and_drop_when_predictions_move_onto_targets():
    model = _model()
    raw = model(torch.rand(2, 3, H, W))
    targets = _targets()
    before = model.loss(raw, targets)
    assert set(before) == {"box", "objectness", "class", "total"}
    assert all(torch.isfinite(v) and v > 0 for v in before.values())
    after = model.loss(_perfect(model, raw, targets), targets)
    for name in ("box", "objectness", "class", "total"):
        assert after[name] < before[name], name
    assert after["box"] < 1e-4 and after["class"] < 1e-6 and after["objectness"] < 1e-6


def test_gradients_reach_the_image_through_the_objectness_loss():
    model = _model()
    images = torch.rand(2, 3, H - 3, W - 7, requires_grad=True)  # padded inside forward
    model.loss(model(images), _targets())["objectness"].backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_images_without_boxes_give_a_finite_loss():
    model = _model()
    raw = model(torch.rand(2, 3, H, W))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    terms = model.loss(raw, [empty, _targets()[1]])
    assert all(torch.isfinite(v) for v in terms.values())


def test_decoding_a_perfect_prediction_returns_the_targets():
    model = _model()
    raw = model(torch.rand(2, 3, H, W))
    targets = _targets()
    dets = model.decode(_perfect(model, raw, targets), score_threshold=0.5)
    for d, t in zip(dets, targets, strict=True):
        order = torch.argsort(d["boxes"][:, 0])
        torch.testing.assert_close(d["boxes"][order], t["boxes"][torch.argsort(t["boxes"][:, 0])], atol=1e-3, rtol=0)
        assert d["labels"][order].tolist() == t["labels"][torch.argsort(t["boxes"][:, 0])].tolist()
        assert (d["scores"] > 0.99).all()


def test_a_few_adam_steps_halve_the_loss():
    torch.manual_seed(0)
    model = YOLOv3(YOLOv3Config(image_size=(H, W), width=0.125, depth=0.25))
    images, targets = torch.rand(2, 3, H, W), _targets()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        total = model.loss(model(images), targets)["total"]
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < 0.5 * losses[0], losses
