"""Attacks: invariants of the semantic and pixel attacks over random draws, the textbook pixel
baseline on a hand-worked model, query budgets, and the victim's mode."""

import pytest
import torch

from sae.attacks.core import sign_gradient
from sae.attacks.semantic import (
    PixelConfig,
    SemanticConfig,
    eval_mode,
    physical_theta,
    pixel_attack,
    render_targets,
    semantic_attack,
)
from sae.data.street import street_world, world_scene
from sae.detectors.squeezedet import SqueezeDet, SqueezeDetConfig
from sae.render.renderer import render
from sae.scene import editor
from sae.scene.ffd import MAX_OFFSET, bottom_layer_mask
from sae.scene.ir import FOLIAGE_RANGE, WEATHER_RANGE, Scene

H, W = 94, 310


@pytest.fixture(scope="module")
def victim():
    torch.manual_seed(0)
    return SqueezeDet(SqueezeDetConfig(image_size=(H, W), width=0.25, dropout=0.0)).double()


def _scenes(seed: int, batch: int = 2):
    scenes = [world_scene(street_world(seed + k, 6, 1, 1), 8 * k, H, W) for k in range(batch)]
    return Scene.cat(scenes)


def _check_feasible(theta, scenes, ball):
    tol = 1e-9
    for p, v in theta.items():
        assert torch.isfinite(v).all()
        assert v.abs().max() <= ball[p] + tol, p
    if "color" in theta:
        c = scenes.obj_color + theta["color"]
        assert c.min() >= -tol and c.max() <= 1 + tol
    for name, ranges in (("weather", WEATHER_RANGE), ("foliage", FOLIAGE_RANGE)):
        if name in theta:
            code = getattr(scenes, name) + theta[name]
            for i, (lo, hi) in enumerate(ranges):
                assert code[:, i].min() >= lo - tol and code[:, i].max() <= hi + tol
    if "mesh" in theta:
        ffd = scenes.obj_ffd + theta["mesh"]
        assert ffd.abs().max() <= MAX_OFFSET + tol
        assert (ffd[..., torch.as_tensor(bottom_layer_mask()), 1] == 0).all()  # wheels stay on the ground
    if "translate" in theta or "rotate" in theta:
        moved = editor.apply(scenes, theta)
        new = editor.overlaps(moved, editor.EditorConfig().clearance_m) & ~editor.overlaps(
            scenes, editor.EditorConfig().clearance_m
        )
        assert not new.any(), "a moved object runs into another"
        moving = torch.zeros_like(scenes.obj_valid)
        if "translate" in theta:
            moving |= theta["translate"].abs().sum(-1) > 0
        if "rotate" in theta:
            moving |= theta["rotate"] != 0
        assert (moved.obj_location[..., 2][moving & scenes.obj_valid] >= editor.EditorConfig().min_depth_m - 1e-9).all()


COMBOS = [
    "color",
    "weather",
    "foliage",
    "rotate",
    "translate",
    "mesh",
    "translate+rotate+mesh",
    "color+weather+foliage+rotate+translate+mesh",
]


@pytest.mark.parametrize("method", ["isfgsm", "spgd", "cw", "random"])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_query_stays_in_the_ball_and_feasible_set(victim, method, seed):
    gen = torch.Generator().manual_seed(seed)
    combo = COMBOS[int(torch.randint(len(COMBOS), (), generator=gen))]
    # large ε so the feasible set, not the ball, binds somewhere
    eps = {p: e * 6 for p, e in editor.PAPER_EPS.items()}
    cfg = SemanticConfig(combo=combo, method=method, eps=eps, steps=3, seed=seed)
    scenes = _scenes(10 * seed + 3)
    seen = []

    def check(k, theta, images, loss):
        _check_feasible(theta, scenes, cfg.ball())
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
        assert torch.isfinite(loss).all()
        seen.append(k)

    result = semantic_attack(victim, scenes, cfg, callback=check)
    assert seen == list(range(4)) and result.queries == 4 and result.trace.shape == (4, 2)
    _check_feasible(result.params, scenes, cfg.ball())
    # the result is one of the queried iterates: its loss is in the trace
    for b in range(2):
        assert torch.isclose(result.trace[:, b], result.loss_after[b]).any()
    if method in ("isfgsm", "random"):  # keep-best: nothing queried after the start beats it
        assert (result.loss_after >= result.trace[1:].max(0).values - 1e-12).all()


def test_theta_zero_reproduces_the_benign_image(victim):
    scenes = _scenes(5)
    benign = render(scenes).image_chw
    seen = {}

    def grab(k, theta, images, loss):
        seen.setdefault(k, images)

    semantic_attack(victim, scenes, SemanticConfig(combo="translate+rotate+mesh", method="sfgsm"), callback=grab)
    assert torch.equal(seen[0], benign)


@pytest.mark.parametrize("param", ["color", "weather", "foliage", "rotate", "translate", "mesh"])
def test_one_step_sfgsm_moves_each_parameter_by_exactly_eps(victim, param):
    scenes = _scenes(7)
    cfg = SemanticConfig(combo=param, method="sfgsm")
    result = semantic_attack(victim, scenes, cfg)
    theta = result.params[param]
    # the gradient at θ = 0, independently
    t0 = editor.zero_theta(scenes, (param,), requires_grad=True)
    edited = editor.apply(scenes, t0)
    out = render(edited)
    with eval_mode(victim):
        loss = victim.loss(victim(out.image_chw), render_targets(edited, out, (H, W)), reduction="none")["confidence"]
    (g,) = torch.autograd.grad(loss.sum(), t0[param])
    eps = cfg.eps[param]
    # θ1 = Π(ε · sign(g)): exactly ±ε in the gradient's sign, 0 where the gradient is 0, except
    # where the feasible set binds (colour range, pinned ground layer, a neighbour in the way)
    expected = editor.project({param: eps * g.sign()}, scenes, {param: eps})[param]
    assert torch.equal(theta, expected)
    free = theta.abs() == eps
    if param in editor.OBJECT_PARAMETERS:  # padding slots have no gradient
        free_share = free[scenes.obj_valid].float().mean()
    else:  # a clear-noon scene cannot lose fog, cloud or dusk: Π holds those at 0
        free_share = free.float().mean()
    assert free_share >= 0.25, "a good share of the entries moves by the full ε"
    assert (theta[free].sign() == g[free].sign()).all()
    assert g.abs().sum() > 0, "the victim's confidence term must depend on the parameter"


def test_sfgsm_over_a_wider_ball_steps_to_its_surface(victim):
    """``radius=6``: one sign step of 6ε in the gradient's sign (C8's gradient attack), the same
    direction as the 1ε step wherever neither is held by the feasible set."""
    scenes = _scenes(7)
    one = semantic_attack(victim, scenes, SemanticConfig(combo="rotate", method="sfgsm")).params["rotate"]
    six = semantic_attack(victim, scenes, SemanticConfig(combo="rotate", method="sfgsm", radius=6)).params["rotate"]
    eps = editor.PAPER_EPS["rotate"]
    free = (one.abs() == eps) & (six.abs() == 6 * eps)
    assert free[scenes.obj_valid].float().mean() >= 0.25
    assert torch.equal(six[free], 6 * one[free])
    assert (six.abs() <= 6 * eps + 1e-12).all()
    with pytest.raises(ValueError, match="radius"):
        SemanticConfig(combo="rotate", method="sfgsm", radius=0)


def test_physical_units(victim):
    scenes = _scenes(2)
    theta = editor.zero_theta(scenes, ("rotate", "translate", "weather"))
    theta["rotate"][:] = 0.01
    theta["translate"][..., 0] = 0.03
    theta["weather"][:, 0] = 0.25
    rows = physical_theta(theta, scenes)
    assert rows[0]["rotate_deg"] == pytest.approx(1.8)
    assert rows[0]["translate_m"] == pytest.approx(0.3)
    assert rows[0]["fog"] == pytest.approx(0.25)


def test_the_victim_gets_its_mode_and_gradients_back(victim):
    victim.train()
    flags = [p.requires_grad for p in victim.parameters()]
    semantic_attack(victim, _scenes(1, batch=1), SemanticConfig(combo="color", method="sfgsm"))
    assert victim.training and [p.requires_grad for p in victim.parameters()] == flags
    assert all(p.grad is None for p in victim.parameters()), "an attack must not leave gradients on the victim"
    victim.eval()


class _Linear(torch.nn.Module):
    """A hand-workable victim: its "confidence" loss per image is ⟨w, x⟩."""

    confidence_term = "confidence"

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return {"score": (x * self.w).flatten(1).sum(1)}

    def loss(self, raw, targets, reduction="mean"):
        v = raw["score"]
        return {"confidence": v if reduction == "none" else v.mean()}


def test_pixel_fgsm_is_the_textbook_step():
    w = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]]).expand(1, 3, 2, 2).clone()
    x = torch.tensor([[[[0.5, 0.5], [0.2, 0.99]]]]).expand(1, 3, 2, 2).clone()
    r = pixel_attack(_Linear(w), x, [{}], PixelConfig(eps=0.1, steps=1))
    # x + ε sign(w), clipped to [0, 1]; no change where w = 0
    expected = torch.tensor([[[[0.6, 0.4], [0.2, 1.0]]]]).expand(1, 3, 2, 2)
    assert torch.allclose(r.images, expected)
    assert torch.allclose(r.loss_after - r.loss_before, ((expected - x) * w).flatten(1).sum(1))


def test_pixel_pgd_is_the_textbook_iteration():
    # gradient sign flips with the iterate: loss = ⟨w, x⟩ with w = +1; steps of 0.03 from 0.5,
    # clipped to the ε = 0.05 ball: 0.53, 0.55, 0.55
    x = torch.full((1, 3, 2, 2), 0.5)
    r = pixel_attack(_Linear(torch.ones(1, 3, 2, 2)), x, [{}], PixelConfig(eps=0.05, steps=3, step=0.03))
    assert torch.allclose(r.images, torch.full_like(x, 0.55))
    assert torch.allclose(r.trace[:, 0], torch.tensor([0.5, 0.53, 0.55, 0.55]) * 12)
    # random start stays inside the ball and the image range
    r = pixel_attack(_Linear(-torch.ones(1, 3, 2, 2)), x, [{}], PixelConfig(eps=0.05, steps=2, random_start=True))
    assert (r.images - x).abs().max() <= 0.05 + 1e-7 and torch.allclose(r.images, torch.full_like(x, 0.45))


def test_random_search_spends_the_same_queries_and_never_loses_to_benign(victim):
    scenes = _scenes(4)
    grad = semantic_attack(victim, scenes, SemanticConfig(combo="color+weather", method="isfgsm", steps=4))
    rand = semantic_attack(victim, scenes, SemanticConfig(combo="color+weather", method="random", steps=4))
    assert grad.queries == rand.queries == 5
    assert torch.allclose(grad.loss_before, rand.loss_before)


def test_core_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        sign_gradient(
            lambda p: (p["a"], None), lambda x, a: x.sum(), {"a": torch.zeros(1)}, {"a": 0.1}, lambda p: p, steps=0
        )
    with pytest.raises(KeyError, match="step size"):
        sign_gradient(lambda p: (p["a"], None), lambda x, a: x.sum(), {"a": torch.zeros(1)}, {}, lambda p: p)
    with pytest.raises(ValueError, match="method"):
        SemanticConfig(method="fgsm-ish")
    with pytest.raises(ValueError, match="combination"):
        SemanticConfig(combo="colour")


@pytest.fixture(scope="module")
def checkpoint(smoke_data, tmp_path_factory):
    from sae.detectors.train import TrainConfig, train

    cfg = TrainConfig(
        data=[(str(smoke_data / "finetune" / "vkitti2"), 1.0)],
        size=(94, 310),
        iterations=12,
        batch_size=2,
        lr=2e-3,
        optimizer="adam",
        warmup=2,
        model={"width": 0.25, "dropout": 0.0, "batch_norm": True},
    )
    return train(cfg, tmp_path_factory.mktemp("victim"), progress=False)


def test_attack_cli_writes_a_resumable_sae_data_set(smoke_data, checkpoint, tmp_path, capsys):
    import json

    import numpy as np

    from sae.cli import main
    from sae.data.vkitti import VKITTI2

    out = tmp_path / "sae"
    base = [
        "attack",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(smoke_data / "eval" / "vkitti2"),
        "--out",
        str(out),
    ]
    args = base + ["--combo", "color+translate", "--steps", "2", "--batch-size", "1"]
    assert main(args + ["--limit", "1"]) == 0
    first = (out / "attack.jsonl").read_text().splitlines()
    assert len(first) == 1
    assert main(args + ["--limit", "2"]) == 0  # resumes: the finished example is not redone
    rows = [json.loads(line) for line in (out / "attack.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and json.dumps(rows[0]) == first[0]
    for r in rows:
        assert r["queries"] == 3 and len(r["trace"]) == 3
        assert set(r["seconds"]) == {"render", "detector", "other", "total"} and r["seconds"]["render"] > 0
        assert set(r["theta"]) == {"color_rgb", "translate_m"} and r["theta"]["translate_m"] <= 0.2 * 10 + 1e-6
    # the SAE data set: labels from the renderer of the edited IR
    sae = VKITTI2(out / "vkitti2")
    assert len(sae) == 2
    frame = sae[0]
    ir = sae.file(sae.index[0][0], "ir", 0, sae.index[0][1])
    from sae.scene.ir import Scene

    rendered = render(Scene.load(ir))
    vis = [n for n in range(rendered.boxes.shape[1]) if rendered.pixel_count[0, n] > 0]
    assert sorted(tuple(o.box) for o in frame.objects if o.label != "DontCare") == sorted(
        tuple(float(v) for v in rendered.boxes[0, n].tolist()) for n in vis
    )
    assert len(list((out / "kitti").rglob("*.txt"))) >= 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["examples"] == 2 and summary["kind"] == "semantic"
    # step agreement of the two sign steps, per parameter: a share, or None where no element had
    # a non-zero gradient at both steps (strict JSON: no NaN)
    for agree in [r["step_agreement"] for r in rows] + [summary["step_agreement"]]:
        assert set(agree) == {"color", "translate"}
        assert all(v is None or 0 <= v <= 1 for v in agree.values())
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    # the SAE set is evaluated like any other folder
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(out / "vkitti2")]) == 0
    # a pixel FGSM set: every pixel within ε (plus uint8 rounding) of the benign rendering
    pix = tmp_path / "pixel"
    eps = 4 / 255
    assert main(base[:-1] + [str(pix), "--method", "fgsm", "--pixel-eps", str(eps), "--limit", "2"]) == 0
    benign = VKITTI2(smoke_data / "eval" / "vkitti2")
    key, index, _ = benign.index[0]
    x = render(Scene.load(benign.file(key, "ir", 0, index))).image[0].numpy()
    from sae.data.kitti import KITTI

    adv = KITTI(pix / "kitti")[0].rgb.astype(np.float32) / 255  # PNG (the VKITTI2 copy is JPEG)
    diff = np.abs(adv - x)
    assert diff.max() <= eps + 1 / 255 + 1e-6 and diff.max() > eps / 2
    capsys.readouterr()
    assert main(base + ["--combo", "colour"]) == 2
    assert "colour" in capsys.readouterr().err


def test_fid_is_zero_on_itself_and_grows_with_noise(smoke_data, checkpoint, tmp_path, capsys):
    import json

    from sae.cli import main
    from sae.detectors.train import load_checkpoint
    from sae.metrics.fid import DetectorFeatures, folder_batches, frechet_distance

    model, _ = load_checkpoint(checkpoint)
    ext = DetectorFeatures(model, (94, 310))
    benign = smoke_data / "eval" / "kitti"
    same = frechet_distance(ext, folder_batches(benign, (94, 310)), folder_batches(benign, (94, 310)))
    gen = torch.Generator().manual_seed(0)
    noisy = [(b + 0.2 * torch.randn(b.shape, generator=gen)).clamp(0, 1) for b in folder_batches(benign, (94, 310))]
    far = frechet_distance(ext, folder_batches(benign, (94, 310)), noisy)
    assert abs(same) < 1e-3 * max(far, 1e-9) and far > 0
    assert (
        main(
            [
                "fid",
                "--checkpoint",
                str(checkpoint),
                "--benign",
                str(benign),
                "--sets",
                f"self={benign}",
                "--out",
                str(tmp_path / "f.json"),
            ]
        )
        == 0
    )
    assert abs(json.loads((tmp_path / "f.json").read_text())["fid"]["self"]) < 1e-3 * far
    capsys.readouterr()
    assert (
        main(
            [
                "fid",
                "--checkpoint",
                str(checkpoint),
                "--benign",
                str(benign),
                "--sets",
                "x=/nonexistent",
                "--inception-weights",
                str(tmp_path / "none.pth"),
            ]
        )
        == 2
    )
    assert "none.pth" in capsys.readouterr().err


def test_spread_covers_the_split_evenly():
    from sae.detectors.data import spread

    assert spread(10, None) == list(range(10)) and spread(10, 20) == list(range(10))
    assert spread(240, 60)[:3] == [0, 4, 8] and spread(240, 60)[-1] == 239 and len(spread(240, 60)) == 60
    assert spread(7, 1) == [0]
    with pytest.raises(ValueError, match="limit"):
        spread(7, 0)


def test_a_resumed_random_search_draws_what_an_uninterrupted_one_does(smoke_data, checkpoint, tmp_path, capsys):
    """Each batch's random stream depends on the seed and its examples only: a run resumed after
    its first batch (the state a kill between two batches leaves: that batch's record and θ)
    redoes nothing and finds the same θ for the rest as a run that was never stopped."""
    import json
    import shutil

    import numpy as np

    from sae.attacks.runner import RECORDS, _slug, attack_split
    from sae.attacks.semantic import SemanticConfig
    from sae.detectors.train import load_checkpoint

    model, state = load_checkpoint(checkpoint)
    size = tuple(json.loads(state["config"])["size"])
    config = SemanticConfig(combo="color+translate", method="random", steps=3, seed=5)
    data = smoke_data / "eval" / "vkitti2"
    whole = tmp_path / "whole"
    attack_split(model, data, whole, config, size, batch_size=1, limit=2, progress=False)
    rows = (whole / RECORDS).read_text().splitlines()
    names = [json.loads(r)["name"] for r in rows]
    assert len(names) == 2
    cut = tmp_path / "cut"
    (cut / "theta").mkdir(parents=True)
    (cut / RECORDS).write_text(rows[0] + "\n")
    shutil.copy(whole / "theta" / f"{_slug(names[0])}.npz", cut / "theta")
    (cut / "theta" / f"{_slug(names[1])}.npzabcd1234.tmp").write_bytes(b"half")  # a killed write
    capsys.readouterr()
    attack_split(model, data, cut, config, size, batch_size=1, limit=2, progress=False)
    assert "resuming: 1 of 2 examples already in" in capsys.readouterr().err
    resumed = (cut / RECORDS).read_text().splitlines()
    assert resumed[0] == rows[0]  # the finished example was not redone (its timings would differ)
    for name in names:
        with np.load(whole / "theta" / f"{_slug(name)}.npz") as a, np.load(cut / "theta" / f"{_slug(name)}.npz") as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), name
    assert json.loads(resumed[1])["trace"] == json.loads(rows[1])["trace"]
    assert not list(cut.rglob("*.tmp"))


def test_step_agreement_tells_a_steady_climb_from_a_random_walk():
    """The diagnostic of iterative sign steps: 1 when every step keeps its direction, 0 when each
    reverses the last, NaN for a one-step attack; examples are counted apart."""
    # L = Σ a·c per example (B = 2): the gradient c never changes sign
    steady = sign_gradient(
        lambda p: (p["a"], None),
        lambda x, aux: (x * torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, -1.0]])).sum(1),
        {"a": torch.zeros(2, 3)},
        {"a": 0.1},
        lambda p: p,
        steps=4,
    )
    assert torch.equal(steady.step_agreement["a"], torch.ones(2, dtype=torch.float64))
    # L = -Σ (a - 0.05)² for example 0 (a sign step of 0.1 overshoots its optimum every time:
    # the gradient reverses at each step); a steady climb for example 1
    target = torch.tensor([[0.05], [10.0]])
    both = sign_gradient(
        lambda p: (p["a"], None),
        lambda x, aux: -((x - target) ** 2).sum(1),
        {"a": torch.zeros(2, 1)},
        {"a": 0.1},
        lambda p: p,
        steps=5,
    )
    assert both.step_agreement["a"].tolist() == [0.0, 1.0]
    one = sign_gradient(
        lambda p: (p["a"], None), lambda x, aux: x.sum(1), {"a": torch.zeros(2, 1)}, {"a": 0.1}, lambda p: p
    )
    assert torch.isnan(one.step_agreement["a"]).all()
