import torch

from sae.detectors.base import cxcywh_to_xyxy
from sae.detectors.squeezedet import SqueezeDet, SqueezeDetConfig, kmeans_anchors

H, W = 96, 320


def _model():
    torch.manual_seed(0)
    return SqueezeDet(SqueezeDetConfig(image_size=(H, W), width=0.25, dropout=0.0)).eval()


def _targets():
    return [
        {"boxes": torch.tensor([[20.0, 30.0, 80.0, 70.0], [150.0, 40.0, 170.0, 90.0]]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[200.0, 20.0, 300.0, 80.0]]), "labels": torch.tensor([2])},
    ]


def _perfect(model, raw, targets):
    """The raw prediction a perfect detector would make for ``targets``."""
    anchors = raw["anchors"]
    out = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in raw.items()}
    out["confidence"][:] = -20.0
    out["class_logits"][:] = 0.0
    for i, t in enumerate(targets):
        idx = model.assign(t["boxes"], cxcywh_to_xyxy(anchors))
        gt, a = t["boxes"], anchors[idx]
        out["deltas"][i, idx] = torch.stack(
            [
                ((gt[:, 0] + gt[:, 2]) / 2 - a[:, 0]) / a[:, 2],
                ((gt[:, 1] + gt[:, 3]) / 2 - a[:, 1]) / a[:, 3],
                torch.log((gt[:, 2] - gt[:, 0]) / a[:, 2]),
                torch.log((gt[:, 3] - gt[:, 1]) / a[:, 3]),
            ],
            dim=-1,
        )
        out["confidence"][i, idx] = 20.0
        out["class_logits"][i, idx, t["labels"]] = 20.0
    return out


def test_architecture_shapes():
    model = _model()
    raw = model(torch.rand(2, 3, H, W))
    grid = ((H + 15) // 16) * ((W + 15) // 16)
    assert raw["deltas"].shape == (2, grid * 9, 4)
    assert raw["confidence"].shape == (2, grid * 9)
    assert raw["class_logits"].shape == (2, grid * 9, 3)
    assert raw["anchors"].shape == (grid * 9, 4)
    names = [n for n, _ in model.named_modules()]
    assert sum(".squeeze" in n for n in names) == 10  # fire2 … fire11
    full = SqueezeDet()  # the original width: ~2M parameters
    assert 1.5e6 < sum(p.numel() for p in full.parameters()) < 3e6


def test_loss_terms_are_finite_and_drop_when_predictions_move_onto_targets():
    model = _model()
    raw = model(torch.rand(2, 3, H, W))
    targets = _targets()
    before = model.loss(raw, targets)
    assert set(before) == {"bbox", "confidence", "class", "total"}
    assert all(torch.isfinite(v) and v > 0 for v in before.values())
    after = model.loss(_perfect(model, raw, targets), targets)
    for name in ("bbox", "confidence", "class", "total"):
        assert after[name] < before[name], name
    assert after["bbox"] < 1e-6 and after["class"] < 1e-6 and after["confidence"] < 1e-3
    # the terms are differentiable with respect to the image (what the attacks need)
    images = torch.rand(2, 3, H, W, requires_grad=True)
    model.loss(model(images), targets)["confidence"].backward()
    assert images.grad.abs().sum() > 0


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


def test_assignment_gives_each_box_its_own_anchor():
    model = _model()
    anchors = cxcywh_to_xyxy(model(torch.rand(1, 3, H, W))["anchors"])
    same = torch.tensor([[20.0, 30.0, 80.0, 70.0]] * 3)
    idx = model.assign(same, anchors)
    assert len(set(idx.tolist())) == 3


def test_kmeans_anchors_find_the_box_shapes():
    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[20.0, 20.0], [60.0, 30.0], [15.0, 40.0]])
    wh = shapes[torch.randint(0, 3, (300,), generator=gen)] * (1 + 0.05 * torch.randn(300, 2, generator=gen))
    found = torch.tensor(kmeans_anchors(wh, k=3))
    for s in shapes:
        assert ((found - s).abs().max(dim=1).values < 3).any()


def test_batch_norm_variant_trains_in_train_mode():
    torch.manual_seed(0)
    model = SqueezeDet(SqueezeDetConfig(image_size=(H, W), width=0.25, batch_norm=True))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    raw = model(torch.rand(2, 3, H, W))
    terms = model.loss(raw, _targets())
    terms["total"].backward()
    assert all(torch.isfinite(v) for v in terms.values())


def test_batched_nms_equals_torchvision():
    """The kernel loaded without importing torchvision keeps exactly torchvision's boxes."""
    import torchvision.ops

    from sae.detectors.base import batched_nms

    gen = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 300, 1000):
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([600.0, 180.0]) - 0.5
        wh = torch.rand(n, 2, generator=gen) * 80 + 1
        boxes = torch.cat([xy, xy + wh], dim=1)
        scores = torch.rand(n, generator=gen).round(decimals=2)  # ties included
        labels = torch.randint(0, 3, (n,), generator=gen)
        for iou in (0.3, 0.4, 0.7):
            ours = batched_nms(boxes, scores, labels, iou)
            assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, labels, iou)), (n, iou)
            if n >= 300 and iou == 0.3:  # it does suppress: no kept pair of a class overlaps above the threshold
                kept = boxes[ours]
                same = labels[ours][:, None] == labels[ours][None, :]
                overlap = torchvision.ops.box_iou(kept, kept).masked_fill(~same, 0).fill_diagonal_(0)
                assert overlap.max() <= iou and len(ours) < n


def test_channels_last_pooling_is_bit_identical():
    """_MaxPool runs in channels-last layout on CPU: the same values and input gradients as
    nn.MaxPool2d, ties after a ReLU included (the first maximum in scan order gets the gradient)."""
    from sae.detectors.squeezedet import _MaxPool

    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2, 5, 17, 23, generator=gen)).round(decimals=1)  # many ties
    x.requires_grad_(True)
    ref = torch.nn.MaxPool2d(3, 2, padding=1)(x)
    out = _MaxPool()(x)
    assert out.is_contiguous() and torch.equal(out, ref)
    g = torch.randn(ref.shape, generator=gen)
    (want,) = torch.autograd.grad(ref, x, g)
    (got,) = torch.autograd.grad(out, x, g)
    assert torch.equal(got, want)


def test_pooling_keeps_a_channels_last_input_as_it_was():
    """Renderer images reach the detector permuted from (B, H, W, 3), i.e. channels-last; the
    layers after the pooling must see that layout as nn.MaxPool2d leaves it (their arithmetic
    depends on it)."""
    from sae.detectors.squeezedet import _MaxPool

    x = torch.rand(2, 13, 17, 6).permute(0, 3, 1, 2)  # channels-last strides, as image_chw
    ref = torch.nn.MaxPool2d(3, 2, padding=1)(x)
    out = _MaxPool()(x)
    assert torch.equal(out, ref) and out.stride() == ref.stride()
