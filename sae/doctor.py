"""``sae doctor``: what a run will use, checked before it starts.

Reports the Python, torch and key package versions, the device the config asks for and whether
it exists (CUDA devices and their names), the SLURM settings of a profile (partition, account,
whether ``sbatch``/``sinfo`` are on the PATH), the results folder (writable, free disk) and any
data path the config names. Every problem is listed; the exit status is non-zero if any.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
from pathlib import Path


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def check(config: dict, profile: str | os.PathLike | None = None, device_check: bool = True) -> dict:
    """``{"info": {...}, "problems": [...]}`` for a workflow config (and SLURM profile);
    ``device_check=False`` where the jobs run elsewhere (a cluster's GPU nodes)."""
    import torch

    info: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in ("sae", "torch", "torchvision", "torchmetrics", "snakemake")},
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    problems: list[str] = []
    device = str(config.get("device", "cpu"))
    info["device"] = device
    info["cuda_available"] = torch.cuda.is_available()
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if device.startswith("cuda") and device_check:
        index = int(device.split(":")[1]) if ":" in device else 0
        if not torch.cuda.is_available():
            problems.append(f"device: the config asks for {device!r} but torch sees no CUDA device here")
        elif index >= torch.cuda.device_count():
            problems.append(f"device: {device!r} but only {torch.cuda.device_count()} CUDA device(s)")
    results = Path(config.get("results", "results"))
    probe = results if results.exists() else next((p for p in results.parents if p.exists()), Path("."))
    info["results"] = str(results)
    info["results_free_gb"] = round(shutil.disk_usage(probe).free / 2**30, 1)
    if not os.access(probe, os.W_OK):
        problems.append(f"results: {probe} is not writable")
    for key, value in _paths(config):
        if not Path(value).exists():
            problems.append(f"{key}: {value} does not exist")
    if profile is not None:
        info["slurm"] = _slurm(Path(profile), problems)
    return {"info": info, "problems": problems}


def _paths(config: dict, prefix: str = ""):
    """``(key, value)`` of config entries that name input paths (keys ending in ``path``/``root``)."""
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _paths(v, key + ".")
        elif isinstance(v, str) and (k.endswith("path") or k.endswith("root")):
            yield key, v


def _slurm(profile: Path, problems: list[str]) -> dict:
    import yaml

    cfg_file = profile / "config.yaml" if profile.is_dir() else profile
    if not cfg_file.is_file():
        problems.append(f"profile: {cfg_file} not found")
        return {}
    cfg = yaml.safe_load(cfg_file.read_text()) or {}
    res = cfg.get("default-resources") or {}
    if isinstance(res, list):
        res = dict(item.split("=", 1) for item in res)
    out = {
        "executor": cfg.get("executor"),
        "partition": str(res.get("slurm_partition", "")).strip("'\""),
        "account": str(res.get("slurm_account", "")).strip("'\""),
        "sbatch": shutil.which("sbatch"),
        "sinfo": shutil.which("sinfo"),
    }
    if out["executor"] == "slurm":
        if not out["partition"]:
            problems.append(f"{cfg_file}: default-resources.slurm_partition is empty")
        if not out["account"]:
            problems.append(
                f"{cfg_file}: default-resources.slurm_account is empty (set it, or pass "
                "--default-resources slurm_account=...)"
            )
        if not out["sbatch"]:
            problems.append("slurm: sbatch is not on the PATH (is this a SLURM login node?)")
    return out


def report(result: dict) -> str:
    lines = ["sae doctor", ""]
    for k, v in result["info"].items():
        lines.append(f"  {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    lines.append("")
    if result["problems"]:
        lines.append("problems:")
        lines += [f"  - {p}" for p in result["problems"]]
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def provenance(config: dict, benchmarks: str | os.PathLike, cwd: str | os.PathLike = ".") -> str:
    """Markdown: the git commit, package versions, the config and the per-rule runtimes read
    from the workflow's ``benchmark:`` files."""
    import subprocess

    import yaml

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True).stdout
        commit += " (uncommitted changes)" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    lines = [
        "# Provenance",
        "",
        f"* git commit: `{commit}`",
        f"* python {sys.version.split()[0]}, {platform.platform()}",
    ]
    for p in (
        "sae",
        "torch",
        "torchvision",
        "torchmetrics",
        "faster-coco-eval",
        "snakemake",
        "numpy",
        "opencv-python-headless",
    ):
        lines.append(f"* {p} {_version(p)}")
    rows = []
    for tsv in sorted(Path(benchmarks).glob("*.tsv")):
        text = tsv.read_text().splitlines()
        if len(text) >= 2:
            head, values = text[0].split("\t"), text[-1].split("\t")
            row = dict(zip(head, values, strict=False))
            rows.append((tsv.stem, float(row.get("s", "nan")), row.get("max_rss", "")))
    total = sum(r[1] for r in rows)
    lines += ["", f"## Per-rule runtimes ({len(rows)} jobs, {total / 60:.1f} min of job time)", ""]
    lines += ["| job | seconds | max RSS (MB) |", "|---|---|---|"]
    lines += [f"| {name} | {s:.1f} | {rss} |" for name, s, rss in sorted(rows, key=lambda r: -r[1])]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
