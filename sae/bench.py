"""Benchmarks the package ships (``sae bench render``): speed and memory, printed as a table.

Each configuration runs in a fresh child process so that its peak memory (``ru_maxrss`` on CPU,
``max_memory_allocated`` on CUDA) is its own. The scene is the procedural street with ten cars
at 5–60 m plus a pedestrian and a cyclist; forward+backward differentiates the whole γ with
respect to all six semantic parameters (shading, weather and foliage included).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch


def _bench_one(height: int, width: int, batch: int, repeats: int, device: str, threads: int | None) -> dict:
    from sae.data.street import street_scene
    from sae.render.renderer import clear_background_cache, render
    from sae.scene import editor
    from sae.scene.ir import Scene

    if threads:
        torch.set_num_threads(threads)
    scenes = [
        street_scene(seed=100 + i, height=height, width=width, n_cars=10, n_pedestrians=1, n_cyclists=1)
        for i in range(batch)
    ]
    scene = Scene.cat(scenes).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def forward():
        clear_background_cache()  # a cold γ, as data generation renders each frame once
        with torch.no_grad():
            return render(scene).image

    def forward_backward():
        theta = editor.zero_theta(scene, requires_grad=True)
        out = render(editor.apply(scene, theta))
        out.image.mean().backward()
        return theta

    result = {"height": height, "width": width, "batch": batch, "device": device, "threads": torch.get_num_threads()}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        fn()  # warm-up (caches, allocator)
        sync()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        best = _best_time(fn, repeats, sync)
        result[f"{name}_s_per_batch"] = best
        result[f"{name}_images_per_s"] = batch / best
        if device.startswith("cuda"):
            result[f"{name}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            result[f"{name}_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from sae.render.geometry import pack_meshes

    faces = pack_meshes(scene).num_faces
    result["faces"] = faces
    return result


def profile_stages(height: int = 375, width: int = 1242, batch: int = 8) -> list[tuple[str, float]]:
    """Forward+backward time per renderer stage (s per batch), from the PyTorch profiler."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from sae.data.street import street_scene
    from sae.render.renderer import render
    from sae.scene import editor
    from sae.scene.ir import Scene

    scene = Scene.cat(
        [
            street_scene(seed=100 + i, height=height, width=width, n_cars=10, n_pedestrians=1, n_cyclists=1)
            for i in range(batch)
        ]
    )
    theta = editor.zero_theta(scene, requires_grad=True)
    render(editor.apply(scene, theta)).image.mean().backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("render_forward"):
            out = render(editor.apply(scene, theta))
        with record_function("backward"):
            out.image.mean().backward()
    rows = [(e.key, e.cpu_time_total / 1e6) for e in prof.key_averages()]
    rows.sort(key=lambda r: -r[1])
    return rows


def _best_time(fn, repeats: int, sync) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (seconds), synchronising the device."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _train_step(net, opt, images, targets) -> None:
    net.train()
    loss = net.loss(net(images), targets)["total"]
    opt.zero_grad()
    loss.backward()
    opt.step()


def _infer(net, images) -> None:
    net.eval()
    with torch.no_grad():
        net.decode(net(images))


def run_detect_bench(
    detectors,
    sizes,
    batches,
    repeats: int = 3,
    device: str = "cpu",
    model: dict | None = None,
    checkpoints: list[str] | None = None,
) -> list[dict]:
    """Train steps/s (forward, loss, backward, SGD step) and inference images/s (forward + decode)
    of freshly initialised ``detectors`` (with ``model`` options) at ``sizes``, or of the trained
    detectors in ``checkpoints`` at the size each was trained for (``detectors``, ``model`` and
    ``sizes`` are then not used)."""
    from sae.detectors.train import build_detector, load_checkpoint

    def nets():
        """``(name, detector, (height, width))`` of each configuration to time."""
        for ckpt in checkpoints or []:
            net, state = load_checkpoint(ckpt, device)
            yield f"{type(net).__name__.lower()} ({Path(ckpt).parent.name})", net, json.loads(state["config"])["size"]
        if not checkpoints:
            for name in detectors:
                for size in sizes:
                    yield name, build_detector(name, size, model or {}).to(device), size

    results = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for name, net, (height, width) in nets():
        opt = torch.optim.SGD(net.parameters(), lr=1e-4)
        for batch in batches:
            gen = torch.Generator().manual_seed(0)
            images = torch.rand(batch, 3, height, width, generator=gen).to(device)
            targets = [
                {
                    "boxes": torch.tensor(
                        [
                            [0.1 * width, 0.3 * height, 0.3 * width, 0.6 * height],
                            [0.5 * width, 0.4 * height, 0.7 * width, 0.8 * height],
                        ]
                    ).to(device),
                    "labels": torch.tensor([0, 1]).to(device),
                }
                for _ in range(batch)
            ]

            step = partial(_train_step, net, opt, images, targets)
            infer = partial(_infer, net, images)
            row = {
                "detector": name,
                "height": height,
                "width": width,
                "batch": batch,
                "device": device,
                "parameters": sum(p.numel() for p in net.parameters()),
            }
            for key, fn in (("train", step), ("infer", infer)):
                fn()  # warm-up
                sync()
                row[f"{key}_s"] = _best_time(fn, repeats, sync)
            results.append(row)
    return results


def format_detect_table(results: list[dict]) -> str:
    lines = [
        "| detector | size | batch | params | train steps/s | train img/s | inference img/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['detector']} | {r['width']}×{r['height']} | {r['batch']} | {r['parameters'] / 1e6:.2f} M | "
            f"{1 / r['train_s']:.2f} | {r['batch'] / r['train_s']:.1f} | {r['batch'] / r['infer_s']:.1f} |"
        )
    if results:
        lines.append(
            f"\ndevice: {results[0]['device']}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}"
        )
    return "\n".join(lines)


def run_render_bench(sizes, batches, repeats: int = 3, device: str = "cpu", threads: int | None = None) -> list[dict]:
    """Run every (size, batch) configuration in a child process; return their results."""
    results = []
    for height, width in sizes:
        for batch in batches:
            cmd = [sys.executable, "-m", "sae.bench", json.dumps([height, width, batch, repeats, device, threads])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"benchmark {height}x{width} batch {batch} failed:\n{proc.stderr}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def format_table(results: list[dict]) -> str:
    head = "| size | batch | faces | forward img/s | fwd+bwd img/s | fwd+bwd s/img | peak MB (fwd / fwd+bwd) |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['width']}×{r['height']} | {r['batch']} | {r['faces']} | {r['forward_images_per_s']:.1f} | "
            f"{r['forward_backward_images_per_s']:.1f} | {1 / r['forward_backward_images_per_s']:.3f} | "
            f"{r['forward_peak_mb']:.0f} / {r['forward_backward_peak_mb']:.0f} |"
        )
    device = results[0]["device"] if results else "?"
    threads = results[0]["threads"] if results else "?"
    lines.append(f"\ndevice: {device}, torch threads: {threads}, torch {torch.__version__}")
    return "\n".join(lines)


if __name__ == "__main__":
    from sae.cpu import flush_denormals
    from sae.memory import retain_freed_memory

    retain_freed_memory()  # as the sae command line does
    flush_denormals()
    h, w, b, r, dev, th = json.loads(sys.argv[1])
    print(json.dumps(_bench_one(h, w, b, r, dev, th)))


def run_attack_bench(
    sizes,
    batches,
    repeats: int = 2,
    device: str = "cpu",
    combo: str = "translate+rotate+mesh",
    steps: int = 6,
    model: dict | None = None,
    paper_victim: bool = False,
) -> list[dict]:
    """Seconds per SAE (iterative sFGSM, ``steps`` iterations, SqueezeDet) split into render,
    detector and other time, and seconds per iteration of the semantic attack and of pixel PGD
    on the same victim and images (their ratio is what the semantic machinery costs).

    ``model`` holds the victim's SqueezeDet options (default: the original's); with
    ``paper_victim`` the paper's SqueezeDet (the original, full width) is timed too, at the first
    size and the largest batch, since the ratio depends on what the victim costs."""
    configs = [(size, batches, model or {}) for size in sizes]
    if paper_victim and model:
        configs.append((sizes[0], [max(batches)], {}))
    results = []
    for size, size_batches, options in configs:
        results += _attack_bench_size(size, size_batches, repeats, device, combo, steps, options)
    return results


def _attack_bench_size(size, batches, repeats, device, combo, steps, model) -> list[dict]:
    from sae.attacks.semantic import PixelConfig, SemanticConfig, pixel_attack, render_targets, semantic_attack
    from sae.data.street import street_scene
    from sae.detectors.train import build_detector
    from sae.render.renderer import render
    from sae.scene.ir import Scene

    results = []
    height, width = size
    victim = build_detector("squeezedet", (height, width), model).to(device)
    for batch in batches:
        scene = Scene.cat(
            [
                street_scene(seed=100 + i, height=height, width=width, n_cars=10, n_pedestrians=1, n_cyclists=1)
                for i in range(batch)
            ]
        ).to(device)
        sem_cfg = SemanticConfig(combo=combo, method="isfgsm", steps=steps)
        pix_cfg = PixelConfig(eps=8 / 255, steps=steps)
        with torch.no_grad():
            out = render(scene)
        targets = render_targets(scene, out, (height, width))
        images = out.image_chw
        semantic_attack(victim, scene, SemanticConfig(combo=combo, method="isfgsm", steps=1))  # warm-up
        best_sem = best_pix = None
        for _ in range(repeats):
            r = semantic_attack(victim, scene, sem_cfg)
            if best_sem is None or r.time.total < best_sem.total:
                best_sem = r.time
            p = pixel_attack(victim, images, targets, pix_cfg)
            if best_pix is None or p.time.total < best_pix.total:
                best_pix = p.time
        sem = {k: v / batch for k, v in best_sem.as_dict().items()}
        results.append(
            {
                "height": height,
                "width": width,
                "batch": batch,
                "victim": _victim_label(model),
                "device": device,
                "steps": steps,
                "combo": combo,
                "sae_s": sem["total"],
                "render_s": sem["render"],
                "detector_s": sem["detector"],
                "other_s": sem["other"],
                "semantic_iter_s": best_sem.total / steps,
                "pixel_iter_s": best_pix.total / steps,
            }
        )
    return results


def _victim_label(model: dict) -> str:
    """A SqueezeDet's options in a few words: ``width 0.5, batch norm`` or ``the original``."""
    words = []
    for key, value in model.items():
        name = key.replace("_", " ")
        if value is True:
            words.append(name)
        elif value not in (False, None):
            words.append(f"{name} {value}")
    return ", ".join(words) if words else "the original (the paper's)"


def format_attack_table(results: list[dict]) -> str:
    lines = [
        "| SqueezeDet | size | batch | s/SAE | render | detector | other | semantic s/iter | pixel PGD s/iter "
        "| ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['victim']} | {r['width']}×{r['height']} | {r['batch']} | {r['sae_s']:.3f} | {r['render_s']:.3f} | "
            f"{r['detector_s']:.3f} | {r['other_s']:.3f} | {r['semantic_iter_s']:.3f} | {r['pixel_iter_s']:.3f} | "
            f"{r['semantic_iter_s'] / r['pixel_iter_s']:.2f} |"
        )
    if results:
        r = results[0]
        lines.append(
            f"\nisfgsm, {r['steps']} iterations, combo {r['combo']}, SqueezeDet; device {r['device']}, "
            f"torch threads {torch.get_num_threads()}, torch {torch.__version__}. Paper: 42.81 s per SAE on CPU."
        )
    return "\n".join(lines)
