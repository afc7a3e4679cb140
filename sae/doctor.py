"""``sae doctor``: what a run will use, checked before it starts.

Reports the Python, torch and key package versions, the CPU and the kernels it runs (pinned to
AVX2 or native: :mod:`sae.cpu`), the device the config asks for and whether it exists (CUDA
devices and their names), the SLURM settings of a profile (partition, account, whether
``sbatch``/``sinfo`` are on the PATH), the results folder (writable, free disk) and any data path
the config names. Every problem is listed; the exit status is non-zero if any. Warnings (a run
that will work but not as the config hopes) are listed without failing.
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
    """``{"info": {...}, "problems": [...], "warnings": [...]}`` for a workflow config (and SLURM
    profile); ``device_check=False`` where the jobs run elsewhere (a cluster's GPU nodes)."""
    import torch

    from sae.cpu import describe, kernel_env

    info: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in ("sae", "torch", "torchvision", "torchmetrics", "snakemake")},
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    problems: list[str] = []
    warnings: list[str] = []
    mode = str(config.get("cpu_kernels", "avx2"))
    info["cpu_kernels"] = mode
    info["cpu"] = describe()
    pins = kernel_env(mode)
    if pins and all(os.environ.get(k) == v for k, v in pins.items()):  # as the workflow's jobs run
        if device_check and info["cpu"]["torch_cpu_capability"] != "AVX2":
            warnings.append(
                f"cpu_kernels: avx2, but this CPU runs {info['cpu']['torch_cpu_capability']} kernels "
                "(no AVX2, or not x86-64): the tables will not match an AVX2 machine's bit for bit"
            )
    elif pins:
        info["cpu_kernels"] += " (the workflow sets the pins for its jobs; this process runs without them)"
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
    return {"info": info, "problems": problems, "warnings": warnings}


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
    if result.get("warnings"):
        lines.append("warnings:")
        lines += [f"  - {w}" for w in result["warnings"]]
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
        # tracked files only, outside the run's own results folder (a checkout's committed
        # tables are rewritten by the run that provenance describes)
        spec = ["git", "status", "--porcelain", "--untracked-files=no"]
        inside = os.path.relpath(Path(config.get("results", "results")).resolve(), Path(cwd).resolve())
        if not inside.startswith(".."):
            spec += ["--", ".", f":(exclude){inside}"]
        dirty = subprocess.run(spec, cwd=cwd, capture_output=True, text=True).stdout
        commit += " (uncommitted changes)" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    lines = [
        "# Provenance",
        "",
        f"* git commit: `{commit}`",
        f"* python {sys.version.split()[0]}, {platform.platform()}",
    ]
    from sae.cpu import describe

    cpu = describe()
    pins = ", ".join(f"{k}={v}" for k, v in cpu["pinned"].items()) or "none (each library's fastest)"
    lines.append(
        f"* CPU {cpu['cpu_model']}, {os.cpu_count()} cores; kernels: torch {cpu['torch_cpu_capability']}, "
        f"NumPy {' '.join(cpu['numpy_dispatch']) or 'baseline'}; pins: {pins}"
    )
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
    rows = read_benchmarks(benchmarks)
    total = sum(r["s"] for r in rows)
    lines += ["", f"## Per-rule runtimes ({len(rows)} jobs, {total / 60:.1f} min of job time)", ""]
    if rows:
        span = max(r["end"] for r in rows) - min(r["end"] - r["s"] for r in rows)
        lines += [
            f"Wall time with jobs running: {busy_time(rows) / 60:.1f} min (the union of the jobs' intervals, "
            "from the benchmark files' times: a pause between a run and its resumption or a later rerun of "
            f"some rules does not count); from the first job's start to the last job's end: {span / 60:.1f} min.",
            "",
        ]
    lines += ["| job | seconds | max RSS (MB) |", "|---|---|---|"]
    lines += [f"| {r['job']} | {r['s']:.1f} | {r['max_rss']} |" for r in sorted(rows, key=lambda r: -r["s"])]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def busy_time(rows: list[dict]) -> float:
    """Seconds during which at least one job ran: the length of the union of the intervals
    ``[end − s, end]`` of :func:`read_benchmarks` rows."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted((r["end"] - r["s"], r["end"]) for r in rows):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def read_benchmarks(benchmarks: str | os.PathLike) -> list[dict]:
    """One row per ``benchmark:`` file: ``job`` (the file's stem), ``s`` (seconds), ``max_rss``
    and ``end`` (the file's modification time, written when the job ended)."""
    rows = []
    for tsv in sorted(Path(benchmarks).glob("*.tsv")):
        text = tsv.read_text().splitlines()
        if len(text) >= 2:
            row = dict(zip(text[0].split("\t"), text[-1].split("\t"), strict=False))
            try:
                seconds = float(row.get("s", "nan"))
            except ValueError:
                raise ValueError(f"{tsv}: not a Snakemake benchmark file (s = {row.get('s')!r})") from None
            rows.append({"job": tsv.stem, "s": seconds, "max_rss": row.get("max_rss", ""), "end": tsv.stat().st_mtime})
    return rows


#: Benchmark-file prefixes (``<rule>_<wildcards>``) of rules whose name holds an underscore.
_RULE_PREFIXES = (
    "attack_set",
    "ball_attack",
    "combos_figure",
    "victims_table",
    "eval_benign_attacked",
    "generate_data",
    "derender_report",
    "render_demo",
    "data_figure",
)


def rule_of(job: str) -> str:
    """The rule a benchmark file's stem belongs to (``attack_isfgsm_color`` → ``attack``)."""
    for prefix in _RULE_PREFIXES:
        if job == prefix or job.startswith(prefix + "_"):
            return prefix
    return job.split("_")[0]


def runtime_figure(benchmarks: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A bar chart of job time per rule (summed over its jobs, job counts beside): where a run's
    time goes."""
    from sae.figures import pyplot, save_figure

    per_rule: dict[str, list[float]] = {}
    for r in read_benchmarks(benchmarks):
        per_rule.setdefault(rule_of(r["job"]), []).append(r["s"])
    order = sorted(per_rule, key=lambda k: sum(per_rule[k]))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * max(len(order), 4) + 1.2))
    minutes = [sum(per_rule[k]) / 60 for k in order]
    ax.barh(order, minutes, color="#3a7ca5")
    for y, (k, m) in enumerate(zip(order, minutes, strict=True)):
        ax.text(
            m, y, f" {m:.1f} min, {len(per_rule[k])} job{'s' if len(per_rule[k]) > 1 else ''}", va="center", fontsize=7
        )
    total = sum(minutes)
    ax.set_xlabel("job time (min)")
    ax.set_title(f"Job time per rule ({total:.0f} min in all, from the benchmark files)", fontsize=9)
    ax.set_xlim(0, max(minutes + [1e-3]) * 1.35)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return save_figure(fig, out)
