"""The ``sae`` command line: ``sae <group> <command> [options]``; every level has ``--help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sae import __version__


def _size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` → ``(height, width)``."""
    try:
        w, h = text.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1242x375, got {text!r}") from None


def cmd_render_demo(args: argparse.Namespace) -> int:
    from sae.render.demo import render_demo

    path = render_demo(args.out, seed=args.seed, height=args.size[0], width=args.size[1])
    print(f"wrote {path}")
    return 0


def _multiple_of_8(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value <= 0 or value % 8:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def cmd_render_gradcheck(args: argparse.Namespace) -> int:
    import json

    import torch
    from tqdm import tqdm

    from sae.render import gradcheck

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.figure and not args.decompose:
        print("sae render gradcheck: --figure needs --decompose", file=sys.stderr)
        return 2
    rows, profiles = [], {}
    for name in args.parameters:
        cases = gradcheck.random_cases(name, args.cases, args.seed, h=args.size[0], w=args.size[1])
        run = (lambda c: gradcheck.profile(c, args.samples)) if args.decompose else gradcheck.check
        results = [run(c) for c in tqdm(cases, desc=f"gradcheck {name}", unit="case", disable=args.quiet)]
        reference = None
        if args.reference:
            progress = tqdm(cases, desc=f"reference {name} ×{args.reference}", unit="case", disable=args.quiet)
            reference = [gradcheck.check(gradcheck.supersampled(c, args.reference)) for c in progress]
        rows.append(gradcheck.summarise(name, results, args.decompose, reference))
        profiles[name] = results
        if args.json:
            rows[-1]["results"] = [vars(r) if args.decompose else {"auto": r[0], "fd": r[1]} for r in results]
            if reference is not None:
                for r, (ra, rf) in zip(rows[-1]["results"], reference, strict=True):
                    r["reference_auto"], r["reference_fd"] = ra, rf
    print(gradcheck.format_table(rows))
    if args.json:
        from sae.io import write_text

        write_text(Path(args.json), json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    if args.figure:
        print(f"wrote {gradcheck.profile_figure(profiles, args.figure)}")
    return 0


def cmd_render_scene(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from sae.data.street import street_scene
    from sae.render.demo import to_uint8
    from sae.render.renderer import render
    from sae.scene.ir import Scene

    scene = (
        Scene.load(args.scene) if args.scene else street_scene(seed=args.seed, height=args.size[0], width=args.size[1])
    )
    with torch.no_grad():
        out = render(scene)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(out.image[0])).save(out_path)
    if args.save_ir:
        scene.save(args.save_ir)
        print(f"wrote {args.save_ir}")
    print(f"wrote {out_path}")
    return 0


def _parse_data(items: list[str]) -> list[tuple[str, float]]:
    out = []
    for item in items:
        path, _, weight = item.partition(":")
        try:
            out.append((path, float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"--data {item!r}: the weight after ':' must be a number") from None
    return out


def deterministic_on_cpu(device: str) -> None:
    """On CPU, use PyTorch's deterministic kernels. Without them the backward pass of advanced
    indexing (the renderer's per-pixel gathers of θ, the detectors' target gathers) adds float32
    gradients from two threads with atomic adds, so the last bits of a gradient change from run
    to run and a sign-gradient step can flip where a gradient is near zero. The serial kernel
    costs little at these sizes. CUDA runs are left as they are (see README.md).

    ``torch.use_deterministic_algorithms`` also imports ``torch._inductor.config`` to set the
    compiler's flag, which costs about 4 s per process here — more than a smoke-scale job's
    work; nothing here is compiled, so only the kernels' switch is set, through the call that
    function makes (the public function where that call is missing)."""
    import torch

    if torch.device(device).type == "cpu":
        switch = getattr(torch._C, "_set_deterministic_algorithms", None)
        if switch is None:
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            switch(True, warn_only=True)
        assert torch.are_deterministic_algorithms_enabled()


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from sae.detectors.train import TrainConfig, train

    model = json.loads(args.model) if args.model else {}
    cfg = TrainConfig(
        detector=args.detector,
        data=_parse_data(args.data),
        size=args.size,
        iterations=args.iterations,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        warmup=args.warmup,
        rerender=args.rerender,
        init=args.init,
        model=model,
        checkpoint_every=args.checkpoint_every,
        augment=None if args.no_augment else (json.loads(args.augment) if args.augment else {}),
        min_box_height=args.min_box_height,
        ema=args.ema,
        device=args.device,
        seed=args.seed,
    )
    deterministic_on_cpu(args.device)
    print(f"wrote {train(cfg, args.out)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from sae.detectors.evaluate import evaluate_folder
    from sae.detectors.train import load_checkpoint

    outs = args.out or [None] * len(args.data)
    if len(outs) != len(args.data):
        raise ValueError(f"--out names {len(outs)} folders for {len(args.data)} --data folders: give one per folder")
    model, state = load_checkpoint(args.checkpoint, args.device)
    size = tuple(json.loads(state["config"])["size"])
    for i, (data, out) in enumerate(zip(args.data, outs, strict=True)):
        figure = args.figure if i == 0 else None
        evaluate_folder(model, data, size, out, args.rerender, args.limit, args.device, figure)
    return 0


def _assignments(flag: str, items: list[str] | None, names, what: str) -> dict[str, float]:
    """``NAME=NUMBER`` command-line items → ``{NAME: NUMBER}``; errors name the flag and item."""
    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if name not in names or not value:
            raise ValueError(f"{flag} {item!r}: expected {what}=VALUE with {what} in {', '.join(names)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{flag} {item!r}: the value must be a number") from None
    return out


def _iou_overrides(items: list[str] | None) -> dict[int, float]:
    from sae.data.records import DETECTION_CLASSES

    given = _assignments("--iou", items, DETECTION_CLASSES, "CLASS")
    return {DETECTION_CLASSES.index(name): v for name, v in given.items()}


def cmd_metrics(args: argparse.Namespace) -> int:
    import json

    from sae.metrics.detection import KITTI_DIFFICULTY, evaluate
    from sae.metrics.store import format_metrics, load_detections

    stored = load_detections(args.detections)
    iou = _iou_overrides(args.iou)
    levels = [args.difficulty] if args.difficulty else list(KITTI_DIFFICULTY)
    result = {
        level: evaluate(stored["preds"], stored["targets"], iou, difficulty=level, image_height=stored["size"][0])
        for level in levels
    }
    print(json.dumps(result, indent=2) if args.json else format_metrics(result))
    return 0


def cmd_bench_render(args: argparse.Namespace) -> int:
    from sae.bench import format_table, profile_stages, run_render_bench

    results = run_render_bench(args.sizes, args.batches, repeats=args.repeats, device=args.device, threads=args.threads)
    print(format_table(results))
    if args.profile:
        print("\nwhere the time goes (fwd+bwd, 1242×375, batch 8; top operators, s per batch):")
        for name, seconds in profile_stages()[: args.profile]:
            print(f"  {seconds:8.3f}  {name}")
    return 0


def cmd_data_generate(args: argparse.Namespace) -> int:
    from sae.data.generate import generate

    manifest = generate(args.out, args.scale, seed=args.seed, workers=args.workers, size=args.size)
    splits = ", ".join(f"{k} {v}" for k, v in manifest["splits"].items())
    print(
        f"wrote {args.out}: {splits} frames, {manifest['objects']} objects, "
        f"{manifest['bytes'] / 2**20:.1f} MiB in {manifest['seconds']:.0f} s"
    )
    return 0


def cmd_data_read(args: argparse.Namespace) -> int:
    from collections import Counter

    from sae.data.kitti import KITTI
    from sae.data.vkitti import VKITTI2

    fmt = args.format
    root = Path(args.path)
    if fmt == "auto":
        fmt = "kitti" if (root / "training").is_dir() or (root / "label_2").is_dir() else "vkitti2"
    ds = KITTI(root) if fmt == "kitti" else VKITTI2(root, cameras=tuple(args.cameras))
    if fmt == "vkitti2":
        ds.check()
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    labels: Counter = Counter()
    for i in range(n):
        frame = ds[i]
        labels.update(o.label for o in frame.objects)
    print(f"{root} ({fmt}): {len(ds)} frames; read {n}: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    return 0


def cmd_data_derender(args: argparse.Namespace) -> int:
    from sae.detectors.data import open_dataset
    from sae.scene.derender import identity_report

    ds = open_dataset(args.data)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    report = identity_report((ds[i] for i in range(n)), size=args.size)
    if args.out:
        from sae.scene.derender import write_report

        write_report(report, args.out, source=str(args.data))
    print(
        f"identity re-rendering γ(β(x)) of {report['frames']} frames of {args.data}: "
        f"PSNR {report['psnr_db']:.2f} dB, box IoU {report['box_iou']:.3f} over {report['boxes']} boxes"
    )
    return 0


def cmd_data_figure(args: argparse.Namespace) -> int:
    from sae.data.figure import variation_grid

    print(f"wrote {variation_grid(args.data, args.out, scene=args.scene, frame=args.frame)}")
    return 0


def cmd_bench_attack(args: argparse.Namespace) -> int:
    import json

    from sae.bench import format_attack_table, run_attack_bench

    model = json.loads(args.model) if args.model else None
    print(
        format_attack_table(
            run_attack_bench(
                args.sizes, args.batches, args.repeats, args.device, args.combo, args.steps, model, args.paper_victim
            )
        )
    )
    return 0


def cmd_bench_detect(args: argparse.Namespace) -> int:
    import json

    import torch

    from sae.bench import format_detect_table, run_detect_bench

    model = json.loads(args.model) if args.model else None
    if args.keep_denormals:
        torch.set_flush_denormal(False)
    rows = run_detect_bench(
        args.detectors, args.sizes, args.batches, args.repeats, args.device, model, checkpoints=args.checkpoint
    )
    print(format_detect_table(rows))
    print(f"subnormal floats: {'kept' if args.keep_denormals else 'flushed to zero'}")
    return 0


def _eps(items: list[str] | None) -> dict[str, float]:
    from sae.scene.editor import PAPER_EPS, PARAMETERS

    return {**PAPER_EPS, **_assignments("--eps", items, PARAMETERS, "PARAMETER")}


def cmd_attack(args: argparse.Namespace) -> int:
    import json

    from sae.attacks.runner import attack_split
    from sae.attacks.semantic import PixelConfig, SemanticConfig
    from sae.detectors.train import load_checkpoint

    terms = tuple(args.terms) if args.terms else None
    if args.method in ("fgsm", "pgd"):
        steps = 1 if args.method == "fgsm" else (args.steps or 10)
        config = PixelConfig(
            eps=args.pixel_eps, steps=steps, random_start=args.random_start, terms=terms, seed=args.seed
        )
    else:
        config = SemanticConfig(
            combo=args.combo,
            method=args.method,
            eps=_eps(args.eps),
            steps=args.steps,
            radius=args.radius,
            terms=terms,
            seed=args.seed,
        )
    deterministic_on_cpu(args.device)
    model, state = load_checkpoint(args.checkpoint, args.device)
    size = tuple(json.loads(state["config"])["size"])
    pixel = args.method in ("fgsm", "pgd")
    images = {} if args.eval and not pixel else None  # the SAEs as export renders them, for --eval
    summary = attack_split(
        model, args.data, args.out, config, size, args.batch_size, args.limit, args.device, True, images
    )
    shown = ("examples", "loss_before", "loss_after", "raised") + (
        ("step_agreement",) if summary["step_agreement"] else ()
    )
    print(json.dumps({k: summary[k] for k in shown}, indent=2))
    print(f"wrote {args.out}")
    if args.eval:  # the victim on its own adversarial set, as `sae eval` would score it
        from sae.detectors.evaluate import evaluate_folder

        data = Path(args.out) / ("kitti" if pixel else "vkitti2")
        out = Path(args.out) / "eval"
        evaluate_folder(model, data, size, out, rerender=not pixel, device=args.device, rendered=images)
    return 0


def cmd_fid(args: argparse.Namespace) -> int:
    import json

    from sae.detectors.train import load_checkpoint
    from sae.metrics.fid import DetectorFeatures, InceptionFeatures, folder_batches, frechet_distance

    sets = []
    for item in args.sets:
        name, sep, path = item.partition("=")
        sets.append((name, path) if sep else (Path(item).name, item))
    views = []
    for i, ckpt in enumerate(args.checkpoint):
        model, state = load_checkpoint(ckpt, "cpu")
        config = json.loads(state["config"])
        size = tuple(config["size"])
        if i == 0 and args.inception_weights:
            extractor, view = InceptionFeatures(args.inception_weights), {"features": "inception-v3"}
        else:
            extractor = DetectorFeatures(model, size)
            view = {"features": f"detector:{ckpt}", "detector": config["detector"]}
        view["fid"] = {}
        for name, path in sets:
            value = frechet_distance(extractor, folder_batches(args.benign, size), folder_batches(path, size))
            view["fid"][name] = value
            print(f"FID {name} ({view['features']}): {value:.4g}")
        views.append(view)
    # the first view at the top level (what a single --checkpoint always wrote), every view below
    result = {"features": views[0]["features"], "fid": views[0]["fid"], "views": views}
    if args.out:
        from sae.io import write_text

        write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


def cmd_table_attacks(args: argparse.Namespace) -> int:
    from sae import tables

    paper = {
        "table1": tables.PAPER_TABLE1,
        "table2": tables.PAPER_TABLE2,
        "effectiveness": tables.PAPER_EFFECTIVENESS,
        "none": None,
    }[args.paper]
    rows = tables.attack_rows(args.benign, args.attacks, args.difficulty, paper)
    tables.write_table(rows, tables.ATTACK_COLUMNS, args.out, args.title)
    print(Path(args.out).with_suffix(".md").read_text())
    return 0


def _named(flag: str, items: list[str], form: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` command-line items → ``[(NAME, VALUE)]`` in order, both non-empty; errors name
    the flag, the item and the expected ``form``."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} {item!r}: expected {form}")
        out.append((name, value))
    return out


def cmd_table_models(args: argparse.Namespace) -> int:
    from sae import tables

    models = _named("--models", args.models, "NAME=FOLDER")
    paper = None if args.paper == "none" else tables.PAPER_MODELS[args.paper]
    rows = tables.model_rows(models, args.valsets, args.difficulty, paper)
    tables.write_table(rows, tables.model_columns(args.valsets), args.out, args.title)
    print(Path(args.out).with_suffix(".md").read_text())
    return 0


def cmd_table_victims(args: argparse.Namespace) -> int:
    from sae import tables

    models = []
    for name, folders in _named("--models", args.models, "DETECTOR=MODELS_DIR:EVAL_DIR"):
        models_dir, sep, eval_dir = folders.partition(":")
        if not sep or not models_dir or not eval_dir:
            raise ValueError(f"--models {name + '=' + folders!r}: expected DETECTOR=MODELS_DIR:EVAL_DIR")
        models.append((name, models_dir, eval_dir))
    rows, columns = tables.victim_rows(models, args.difficulty)
    tables.write_table(rows, columns, args.out, args.title)
    print(Path(args.out).with_suffix(".md").read_text())
    return 0


def cmd_table_claims(args: argparse.Namespace) -> int:
    from sae import claims

    layout = claims.Layout(Path(args.results), args.victim, args.method, args.headline, args.transfer)
    bootstrap = claims.Bootstrap(resamples=args.resamples, seed=args.seed)
    rows = claims.check_claims(layout, args.difficulty, bootstrap)
    meta = {"difficulty": args.difficulty, "resamples": args.resamples, "seed": args.seed, "results": args.results}
    claims.write_claims(rows, args.out, meta)
    print(Path(args.out).with_suffix(".md").read_text())
    return 0


def cmd_figure_sae(args: argparse.Namespace) -> int:
    import json

    from sae.attacks.figures import benign_vs_sae
    from sae.detectors.train import load_checkpoint

    model, state = load_checkpoint(args.checkpoint)
    size = tuple(json.loads(state["config"])["size"])
    print(f"wrote {benign_vs_sae(model, size, args.data, args.attack, args.out, args.n)}")
    return 0


def cmd_figure_combos(args: argparse.Namespace) -> int:
    from sae.attacks.figures import combos_figure

    print(f"wrote {combos_figure(args.tables, args.out)}")
    return 0


def cmd_figure_diagnostics(args: argparse.Namespace) -> int:
    from sae.attacks.figures import diagnostics

    print(f"wrote {diagnostics(args.attack, args.out)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    import yaml

    from sae.doctor import check, report

    if args.config_json:
        config = json.loads(args.config_json)
    else:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config not found: {path}")
        config = yaml.safe_load(path.read_text()) or {}
    result = check(config, args.profile, device_check=not args.skip_device)
    print(report(result))
    if args.out:
        from sae.io import write_text

        write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 1 if result["problems"] else 0


def cmd_provenance(args: argparse.Namespace) -> int:
    import json

    from sae.doctor import provenance, runtime_figure
    from sae.io import write_text

    write_text(Path(args.out), provenance(json.loads(args.config_json), args.benchmarks))
    print(f"wrote {args.out}")
    if args.figure:
        print(f"wrote {runtime_figure(args.benchmarks, args.figure)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sae.constants import DETECTOR_NAMES, FULL_SIZE, WORKING_SIZE

    parser = argparse.ArgumentParser(
        prog="sae",
        description="Semantic adversarial examples for object detectors through differentiable rendering.",
    )
    parser.add_argument("--version", action="version", version=f"sae {__version__}")
    groups = parser.add_subparsers(dest="group", metavar="<group>", required=True)

    render = groups.add_parser("render", help="render scenes and figures", description="Render scenes and figures.")
    rsub = render.add_subparsers(dest="command", metavar="<command>", required=True)
    demo = rsub.add_parser(
        "demo",
        help="figure: one street under each semantic parameter at three magnitudes",
        description="Write a figure of one procedural street under each of the six semantic parameters "
        "at three magnitudes, with the renderer's 2-D boxes drawn.",
    )
    demo.add_argument("--out", default="results/figures/render_demo.png", help="output PNG (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=3, help="street seed (default: %(default)s)")
    demo.add_argument("--size", type=_size, default=FULL_SIZE, help="WIDTHxHEIGHT (default: 1242x375)")
    demo.set_defaults(func=cmd_render_demo)

    gc = rsub.add_parser(
        "gradcheck",
        help="autograd vs finite differences of the geometric parameters over random cases",
        description="Check γ's gradients for translate, rotate and mesh: random cars, directions and smooth "
        "loss weights in float64; autograd against the least-squares central finite difference over 1, 1.5 "
        "and 2 pixels of the farthest vertex's motion. A case agrees when it has the same sign and is within "
        "25 %%. With --decompose, each case is also sampled along its direction, to tell misses caused by "
        "jumps of the image from those the derivative's own variation causes (see sae.render.gradcheck).",
    )
    gc.add_argument(
        "--parameters", nargs="+", choices=["translate", "rotate", "mesh"], default=["translate", "rotate", "mesh"]
    )
    gc.add_argument("--cases", type=_positive, default=120, help="cases per parameter (default: %(default)s)")
    gc.add_argument("--seed", type=int, default=None, help="case seed (default: 11, 12, 13 per parameter, the tests')")
    gc.add_argument("--size", type=_size, default=FULL_SIZE, help="WIDTHxHEIGHT (default: 1242x375)")
    gc.add_argument("--decompose", action="store_true", help="also sample L and dL/dt along each direction")
    gc.add_argument(
        "--samples",
        type=_multiple_of_8,
        default=80,
        help="intervals over ±2 steps with --decompose (default: %(default)s)",
    )
    gc.add_argument(
        "--reference",
        type=_positive,
        default=None,
        metavar="S",
        help="also check each case rendered S× larger and box-filtered back (S² the cost), the "
        "reference a renderer's derivative can at best match: how often autograd agrees with its "
        "finite difference, and how often it agrees with itself (the criterion's ceiling)",
    )
    gc.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    gc.add_argument("--json", help="also write every case's numbers to this JSON file")
    gc.add_argument("--figure", help="with --decompose: PNG of L(t) for a few misses of each kind (jumps, variation)")
    gc.add_argument("--quiet", action="store_true", help="no progress bar")
    gc.set_defaults(func=cmd_render_gradcheck)

    scene = rsub.add_parser(
        "scene",
        help="render one scene (an IR file or a procedural street) to PNG",
        description="Render one scene to a PNG image.",
    )
    scene.add_argument("--scene", help="IR file (.npz) written by sae; default: a procedural street")
    scene.add_argument("--seed", type=int, default=0, help="procedural street seed (default: %(default)s)")
    scene.add_argument("--size", type=_size, default=FULL_SIZE, help="WIDTHxHEIGHT of a procedural street")
    scene.add_argument("--out", default="results/render.png", help="output PNG (default: %(default)s)")
    scene.add_argument("--save-ir", help="also write the scene's IR to this .npz file")
    scene.set_defaults(func=cmd_render_scene)

    data = groups.add_parser(
        "data", help="generate, read and inspect data sets", description="Generate, read and inspect data sets."
    )
    dsub = data.add_subparsers(dest="command", metavar="<command>", required=True)
    gen = dsub.add_parser(
        "generate",
        help="generate the embedded Virtual-KITTI-like data set (VKITTI2 + KITTI layouts + IR)",
        description="Generate procedural driving data: a KITTI-like pre-training split and VKITTI-like "
        "fine-tuning and evaluation splits with the six VKITTI variations, in the Virtual KITTI 2 and KITTI "
        "layouts plus the exact IR of every frame. Deterministic in --seed; resumes an interrupted run.",
    )
    gen.add_argument("--scale", choices=["smoke", "default", "paper"], default="default", help="data set size")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    gen.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the scale's working size)")
    gen.add_argument("--workers", type=int, default=None, help="processes (default: the CPU count, at most 8)")
    gen.set_defaults(func=cmd_data_generate)
    read = dsub.add_parser(
        "read",
        help="read and check a VKITTI2 or KITTI folder, print a summary",
        description="Read every frame of a Virtual KITTI 2 or KITTI folder, checking the "
        "format; errors name the file and line.",
    )
    read.add_argument("path", help="a VKITTI2 root (merged or per-archive) or a KITTI folder with training/")
    read.add_argument("--format", choices=["auto", "vkitti2", "kitti"], default="auto")
    read.add_argument("--cameras", type=int, nargs="+", default=[0], help="VKITTI2 cameras (default: 0)")
    read.add_argument("--limit", type=int, default=None, help="read at most this many frames")
    read.set_defaults(func=cmd_data_read)
    der = dsub.add_parser(
        "derender",
        help="β on a VKITTI2 folder: how far γ(β(x)) is from x (PSNR, box IoU)",
        description="De-render every frame of a Virtual KITTI 2 folder into an IR (objects from the annotations, "
        "background inpainted), re-render it and report the PSNR against the photo and the IoU of the re-rendered "
        "boxes with the annotated ones.",
    )
    der.add_argument("--data", required=True, help="a VKITTI2 root or a KITTI folder")
    der.add_argument("--limit", type=int, default=None, help="at most this many frames")
    der.add_argument("--size", type=_size, default=None, help="working WIDTHxHEIGHT (default: the frames' size)")
    der.add_argument("--out", default=None, help="also write the report as Markdown (and .csv beside it)")
    der.set_defaults(func=cmd_data_derender)
    fig = dsub.add_parser(
        "figure",
        help="figure: one generated frame per variation next to its labels",
        description="Draw one frame of a generated (or real) VKITTI2 folder under each "
        "variation, with its 2-D boxes, class segmentation and depth.",
    )
    fig.add_argument("--data", required=True, help="a VKITTI2 root, e.g. DATA/eval/vkitti2")
    fig.add_argument("--out", default="results/figures/data_variations.png", help="output PNG")
    fig.add_argument("--scene", default=None, help="scene folder (default: the first)")
    fig.add_argument("--frame", type=int, default=0, help="frame index (default: 0)")
    fig.set_defaults(func=cmd_data_figure)

    tr = groups.add_parser(
        "train",
        help="train or fine-tune a detector on any mix of VKITTI2/KITTI folders",
        description="Train a detector (SGD or AdamW, warm-up and cosine decay, zoom/flip/colour augmentation) on "
        "a weighted mix of data sets in "
        "the VKITTI2 or KITTI layout, optionally from a checkpoint. Checkpoints every N steps; a rerun resumes.",
    )
    tr.add_argument("--detector", default="squeezedet", choices=DETECTOR_NAMES)
    tr.add_argument("--data", nargs="+", required=True, help="PATH[:WEIGHT] … (weight default 1)")
    tr.add_argument("--out", required=True, help="output folder (final.pt, train_log.jsonl)")
    tr.add_argument("--size", type=_size, default=(188, 621), help="working WIDTHxHEIGHT (default 621x188)")
    tr.add_argument("--iterations", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--lr", type=float, default=0.01)
    tr.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    tr.add_argument("--warmup", type=int, default=100)
    tr.add_argument(
        "--rerender", action="store_true", help="use γ(IR) images of VKITTI2 folders (identity re-rendered)"
    )
    tr.add_argument("--init", default=None, help="checkpoint to start from")
    tr.add_argument(
        "--model",
        default=None,
        help='detector options as JSON, e.g. \'{"width": 0.5}\'; \'{"anchors": "kmeans"}\' fits the anchor shapes '
        "to the training boxes (with --init: keeps the initial checkpoint's)",
    )
    tr.add_argument("--checkpoint-every", type=int, default=500)
    tr.add_argument("--augment", default=None, help='augmentation options as JSON, e.g. \'{"zoom": 1.5, "flip": 0.5}\'')
    tr.add_argument("--no-augment", action="store_true", help="train on the frames as they are")
    tr.add_argument(
        "--min-box-height",
        type=float,
        default=12.0,
        help="skip objects shorter than this many px of a 375-row frame (default 12)",
    )
    tr.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.999) and "
        "write it as the trained model; 0 (default) turns it off",
    )
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=cmd_train)
    ev = groups.add_parser(
        "eval",
        help="recall and mAP of a checkpoint on a VKITTI2/KITTI folder (KITTI IoU thresholds)",
        description="Detect on every frame of a folder and report recall and AP per class at KITTI's IoU "
        "thresholds (Car 0.7, Pedestrian and Cyclist 0.5) and difficulty levels, computed with faster-coco-eval "
        "(torchmetrics' backend); --out stores the raw detections (for `sae metrics`) and KITTI result files.",
    )
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="one or more folders, each evaluated on its own (one process loads the detector once)",
    )
    ev.add_argument(
        "--rerender", action="store_true", help="use γ(IR) images of VKITTI2 folders (KITTI folders are read as stored)"
    )
    ev.add_argument(
        "--out",
        default=None,
        nargs="+",
        help="per --data folder, a folder for its metrics.json, raw detections.npz and KITTI result files (kitti/)",
    )
    ev.add_argument(
        "--limit", type=int, default=None, help="evaluate N frames spread evenly over each folder (all if it has ≤ N)"
    )
    ev.add_argument("--device", default="cpu")
    ev.add_argument(
        "--figure",
        default=None,
        help="also draw detections on the first frames (of the first --data folder) to this PNG",
    )
    ev.set_defaults(func=cmd_eval)
    me = groups.add_parser(
        "metrics",
        help="recompute recall and mAP from stored detections (other IoU thresholds or difficulty)",
        description="Recompute recall and AP from the detections.npz that `sae eval --out` stored, without "
        "running the detector: any KITTI difficulty level and any per-class IoU threshold.",
    )
    me.add_argument("detections", help="a detections.npz or the `sae eval --out` folder holding it")
    me.add_argument(
        "--difficulty", choices=["easy", "moderate", "hard", "all"], default=None, help="default: every level"
    )
    me.add_argument("--iou", nargs="+", default=None, help="CLASS=THRESHOLD … e.g. Car=0.5 (default: KITTI's)")
    me.add_argument("--json", action="store_true", help="print JSON instead of a table")
    me.set_defaults(func=cmd_metrics)

    at = groups.add_parser(
        "attack",
        help="attack every frame of a split; write the SAEs (or pixel perturbations) as a data set",
        description="Semantic (sfgsm, isfgsm, spgd, cw, random) or pixel (fgsm, pgd) attack on every frame of "
        "a VKITTI2 folder that carries IRs, against a trained checkpoint. Writes OUT/vkitti2 and OUT/kitti "
        "with labels from the renderer, OUT/attack.jsonl (per-example losses, θ in physical units, timing), "
        "OUT/theta/ and OUT/summary.json. A rerun skips finished examples.",
    )
    at.add_argument("--checkpoint", required=True, help="the victim (a `sae train` checkpoint)")
    at.add_argument("--data", required=True, help="VKITTI2 folder with IRs, e.g. DATA/eval/vkitti2")
    at.add_argument("--out", required=True, help="output folder")
    at.add_argument(
        "--method",
        default="isfgsm",
        choices=["sfgsm", "isfgsm", "spgd", "cw", "random", "fgsm", "pgd"],
        help="default isfgsm (the paper's iterative sFGSM)",
    )
    at.add_argument("--combo", default="translate+rotate+mesh", help="semantic parameters joined by '+'")
    at.add_argument("--eps", nargs="+", default=None, help="PARAMETER=VALUE … (default: the paper's ε)")
    at.add_argument("--steps", type=int, default=None, help="iterations (default: 1 for sfgsm/fgsm, 6, 10 for pgd)")
    at.add_argument(
        "--radius",
        type=float,
        default=None,
        help="semantic ball radius in multiples of ε (default: sfgsm/spgd 1, isfgsm/cw/random STEPS); "
        "sfgsm steps to the ball's surface, so `--method sfgsm --radius 6` is sFGSM at 6ε",
    )
    at.add_argument("--pixel-eps", type=float, default=8 / 255, help="ℓ∞ radius of pixel attacks (default 8/255)")
    at.add_argument("--random-start", action="store_true", help="PGD's random start")
    at.add_argument("--terms", nargs="+", default=None, help="loss terms to maximise (default: the confidence term)")
    at.add_argument("--batch-size", type=int, default=8)
    at.add_argument("--limit", type=int, default=None, help="attack N frames spread evenly over the split")
    at.add_argument("--device", default="cpu")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument(
        "--eval",
        action="store_true",
        help="also evaluate the victim on the written set (OUT/eval, as `sae eval --out` writes it)",
    )
    at.set_defaults(func=cmd_attack)

    fi = groups.add_parser(
        "fid",
        help="Fréchet distance of SAE / pixel sets to the benign set",
        description="FID (torchmetrics) of each set against the benign set, in the features of each checkpoint's "
        "backbone (no download needed; the first checkpoint's goes to the JSON's top level, every one to its "
        "'views'), or of Inception-v3 in place of the first when --inception-weights names torchvision's "
        "weights file. Use KITTI folders (lossless PNG) for all sets.",
    )
    fi.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="detectors whose backbones give the features, one FID per set each (e.g. the victim, and "
        "one the attacks did not target, whose view is closer to the paper's Inception features)",
    )
    fi.add_argument("--benign", required=True, help="the benign folder, e.g. DATA/eval/kitti")
    fi.add_argument("--sets", nargs="+", required=True, help="NAME=FOLDER … (e.g. sae=OUT/kitti pixel=PIX/kitti)")
    fi.add_argument("--inception-weights", default=None, help="torchvision inception_v3 state dict (.pth)")
    fi.add_argument("--out", default=None, help="write the distances as JSON")
    fi.set_defaults(func=cmd_fid)

    tb = groups.add_parser("table", help="write the paper's tables (CSV + Markdown, paper beside ours)")
    tsub = tb.add_subparsers(dest="command", metavar="<command>", required=True)
    ta = tsub.add_parser(
        "attacks",
        help="recall/mAP on SAE sets vs benign (Tables 1 and 2)",
        description="One row for the benign evaluation and one per attack folder (its summary.json and the "
        "eval/metrics.json of `sae eval --out ATTACK/eval`), with the paper's numbers beside.",
    )
    ta.add_argument(
        "--benign",
        nargs="+",
        required=True,
        help="`sae eval --out` folder of the benign images; several when the attacks took different frames "
        "(each row is compared with the one that holds its frames, the first is the benign row)",
    )
    ta.add_argument(
        "--attacks",
        nargs="+",
        required=True,
        help="`sae attack --out` folders; DIR=EVAL reads the evaluation from the `sae eval --out` folder EVAL",
    )
    ta.add_argument("--paper", choices=["table1", "table2", "effectiveness", "none"], default="none")
    ta.add_argument("--difficulty", default="moderate", choices=["easy", "moderate", "hard", "all"])
    ta.add_argument("--title", default="")
    ta.add_argument("--out", required=True, help="output stem: STEM.csv and STEM.md")
    ta.set_defaults(func=cmd_table_attacks)
    tm = tsub.add_parser(
        "models",
        help="recall/mAP of several models on several validation sets (Tables 3-5, transfer)",
        description="One row per model: recall and mAP on each validation set (FOLDER/<set>/metrics.json of "
        "`sae eval --out`), with the paper's numbers beside.",
    )
    tm.add_argument("--models", nargs="+", required=True, help="NAME=FOLDER … (a recipe or detector name)")
    tm.add_argument("--valsets", nargs="+", default=["sae", "benign"], choices=["benign", "sae", "pixel"])
    tm.add_argument("--paper", choices=["table3", "table4", "table5", "transfer", "none"], default="none")
    tm.add_argument("--difficulty", default="moderate", choices=["easy", "moderate", "hard", "all"])
    tm.add_argument("--title", default="")
    tm.add_argument("--out", required=True, help="output stem: STEM.csv and STEM.md")
    tm.set_defaults(func=cmd_table_models)
    tv = tsub.add_parser(
        "victims",
        help="the trained detectors on benign frames: recall and AP per class, training iterations",
        description="One row per detector: benign recall and mAP overall and per class (MODELS are "
        "DETECTOR=MODELS_DIR:EVAL_DIR, the `sae train` stages' parent folder and a `sae eval --out` folder), "
        "with the paper's mAP and the pre-training and fine-tuning iterations.",
    )
    tv.add_argument("--models", nargs="+", required=True, help="DETECTOR=MODELS_DIR:EVAL_DIR …")
    tv.add_argument("--difficulty", default="moderate", choices=["easy", "moderate", "hard", "all"])
    tv.add_argument("--title", default="")
    tv.add_argument("--out", required=True, help="output stem: STEM.csv and STEM.md")
    tv.set_defaults(func=cmd_table_victims)
    tc = tsub.add_parser(
        "claims",
        help="check the paper's claims C1-C8 on a workflow's results, with bootstrap intervals",
        description="Recompute, from the stored detections under RESULTS, the numbers behind each of the "
        "paper's claims (C1-C8, see results/README.md) with percentile bootstrap 95 %% intervals over frames "
        "(paired where two evaluations hold the same frames), and say whether each claim holds.",
    )
    tc.add_argument("--results", required=True, help="the workflow's results folder")
    tc.add_argument("--victim", default="squeezedet")
    tc.add_argument("--method", default="isfgsm", help="the gradient attack of Tables 1-2")
    tc.add_argument("--headline", default="rotate+translate+mesh", help="the headline combination")
    tc.add_argument("--transfer", nargs="*", default=["yolov3"], help="the other detectors (§5.3)")
    tc.add_argument("--difficulty", default="moderate", choices=["easy", "moderate", "hard", "all"])
    tc.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--out", required=True, help="output stem: STEM.md, STEM.csv and STEM.json")
    tc.set_defaults(func=cmd_table_claims)

    fg = groups.add_parser("figure", help="figures of attack runs")
    fsub = fg.add_subparsers(dest="command", metavar="<command>", required=True)
    fs = fsub.add_parser(
        "sae",
        help="benign vs SAE with detections (the paper's Figure 2)",
        description="Draw the examples of an attack run whose loss rose most: the benign rendering and the SAE, "
        "each with the victim's detections (cyan car, purple pedestrian, yellow cyclist).",
    )
    fs.add_argument("--checkpoint", required=True)
    fs.add_argument("--data", required=True, help="the attacked VKITTI2 folder (with IRs)")
    fs.add_argument("--attack", required=True, help="the `sae attack --out` folder")
    fs.add_argument("--out", required=True, help="output PNG")
    fs.add_argument("--n", type=int, default=2, help="examples (rows)")
    fs.set_defaults(func=cmd_figure_sae)
    fd = fsub.add_parser(
        "diagnostics",
        help="loss traces, sensitivity, θ and step agreement of an attack run",
        description="Per attack run: the objective over queries, per-parameter sensitivity at θ = 0, the "
        "final θ in physical units, and per-parameter step agreement (the share of gradient signs kept from one "
        "step to the next; about 0.5 means the sign steps random-walk).",
    )
    fd.add_argument("--attack", required=True, help="the `sae attack --out` folder")
    fd.add_argument("--out", required=True, help="output PNG")
    fd.set_defaults(func=cmd_figure_diagnostics)
    fc = fsub.add_parser(
        "combos",
        help="Δ mAP of every attacked combination, the paper's beside (Tables 1-2 as a picture)",
        description="A sorted bar chart of the mAP drop of every combination in `sae table attacks` CSVs "
        "(Tables 1 and 2), coloured by the number of parameters, with the paper's drops marked.",
    )
    fc.add_argument("--tables", nargs="+", required=True, help="CSV files of `sae table attacks`")
    fc.add_argument("--out", required=True, help="output PNG")
    fc.set_defaults(func=cmd_figure_combos)

    dr = groups.add_parser(
        "doctor",
        help="check what a run will use (device, GPUs, SLURM, paths) before it starts",
        description="Print the versions, device, GPUs, SLURM profile settings and paths a workflow config will "
        "use; exit non-zero, listing every problem, if something is missing.",
    )
    dr.add_argument("--config", default="config/config.yaml", help="workflow config (YAML)")
    dr.add_argument("--config-json", default=None, help="the config as JSON (what the workflow's rule passes)")
    dr.add_argument("--profile", default=None, help="a Snakemake profile folder to check, e.g. workflow/profiles/slurm")
    dr.add_argument("--out", default=None, help="write the findings as JSON")
    dr.add_argument(
        "--skip-device", action="store_true", help="do not require the CUDA device here (jobs run on cluster nodes)"
    )
    dr.set_defaults(func=cmd_doctor)

    pv = groups.add_parser(
        "provenance",
        help="the run's git commit, versions, config and per-rule runtimes as Markdown",
        description="Write the git commit, package versions, the config and the per-rule runtimes (from the "
        "workflow's benchmark files) as Markdown, for the HTML report.",
    )
    pv.add_argument("--config-json", required=True)
    pv.add_argument("--benchmarks", required=True, help="the workflow's benchmarks/ folder")
    pv.add_argument("--out", required=True)
    pv.add_argument("--figure", help="also draw the job time per rule to this PNG")
    pv.set_defaults(func=cmd_provenance)

    bench = groups.add_parser("bench", help="speed and memory benchmarks", description="Speed and memory benchmarks.")
    bsub = bench.add_subparsers(dest="command", metavar="<command>", required=True)
    br = bsub.add_parser(
        "render",
        help="renderer forward and forward+backward images/s and peak memory",
        description="Time the renderer γ (forward, and forward+backward w.r.t. all six parameters) on "
        "a street of ten cars, a pedestrian and a cyclist; print a Markdown table.",
    )
    br.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        default=[FULL_SIZE, WORKING_SIZE],
        help="WIDTHxHEIGHT sizes (default: 1242x375 621x188)",
    )
    br.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    br.add_argument("--repeats", type=int, default=3, help="timed runs per configuration; the best is kept")
    br.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    br.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    br.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=15,
        default=0,
        help="also print the N most expensive operators (default N: 15)",
    )
    br.set_defaults(func=cmd_bench_render)
    bd = bsub.add_parser(
        "detect",
        help="detector train steps/s and inference images/s",
        description="Time a training step (forward, loss, backward, SGD step) and inference (forward + NMS) of "
        "each detector on random images; print a Markdown table.",
    )

    bd.add_argument("--detectors", nargs="+", default=list(DETECTOR_NAMES), choices=DETECTOR_NAMES)
    bd.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        default=[FULL_SIZE, WORKING_SIZE],
        help="WIDTHxHEIGHT sizes (default: 1242x375 621x188)",
    )
    bd.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    bd.add_argument("--repeats", type=int, default=2, help="timed runs; the best is kept")
    bd.add_argument("--device", default="cpu")
    bd.add_argument("--model", default=None, help="detector options as JSON, e.g. '{\"width\": 0.5}'")
    bd.add_argument(
        "--checkpoint",
        nargs="+",
        default=None,
        help="time these trained detectors (each checkpoint's detector and options) instead of freshly "
        "initialised ones: trained weights hold the subnormal floats fresh ones do not",
    )
    bd.add_argument(
        "--keep-denormals",
        action="store_true",
        help="compute on subnormal floats instead of flushing them to zero as every sae command does "
        "(to see what flushing buys: trained SqueezeDet steps run ~1.3x slower with them)",
    )
    bd.set_defaults(func=cmd_bench_detect)
    ba = bsub.add_parser(
        "attack",
        help="seconds per SAE (render / detector / other) and semantic vs pixel iteration cost",
        description="Time iterative sFGSM on SqueezeDet (a street of ten cars, a pedestrian and a cyclist) and "
        "pixel PGD with the same iterations on the same victim and images; print a Markdown table.",
    )
    ba.add_argument("--sizes", type=_size, nargs="+", default=[FULL_SIZE, WORKING_SIZE], help="WIDTHxHEIGHT sizes")
    ba.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    ba.add_argument("--repeats", type=int, default=2, help="timed runs; the best is kept")
    ba.add_argument("--steps", type=int, default=6, help="attack iterations (default: the paper's 6)")
    ba.add_argument("--combo", default="translate+rotate+mesh")
    ba.add_argument("--device", default="cpu")
    ba.add_argument("--model", default=None, help="SqueezeDet options as JSON (default: the original)")
    ba.add_argument(
        "--paper-victim",
        action="store_true",
        help="with --model, also time the paper's SqueezeDet (the original, full width) at the first size and "
        "the largest batch: the ratio depends on what the victim costs",
    )
    ba.set_defaults(func=cmd_bench_attack)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sae.cpu import flush_denormals
    from sae.memory import retain_freed_memory

    retain_freed_memory()  # full-frame temporaries reuse freed memory (sae.memory)
    flush_denormals()  # a trained detector's subnormal floats would take the CPU's slow path (sae.cpu)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"sae: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
