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


def check(config: dict, profile: str | os.PathLike | None = None) -> dict:
    """``{"info": {...}, "problems": [...]}`` for a workflow config (and SLURM profile)."""
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
    if device.startswith("cuda"):
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
