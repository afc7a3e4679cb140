"""Helpers shared by the workflow tests: run Snakemake, copy the workflow, read its outputs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
#: Tables that hold measured seconds or the run's own provenance: not expected to repeat.
UNREPEATABLE_TABLES = ("timing", "provenance")


def snakemake(*args, cwd=ROOT, timeout=None, env=None):
    """Run Snakemake; the returned process has ``output`` = stdout + stderr (it prints to either)."""
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    proc.output = proc.stdout + proc.stderr
    return proc


def copy_workflow(dest: Path) -> Path:
    """A runnable copy of the workflow (Snakefile, workflow/, config/) in ``dest``."""
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "config", dest / "config")
    shutil.copy(ROOT / "Snakefile", dest / "Snakefile")
    return dest


def job_counts(stdout: str) -> dict[str, int]:
    """``{rule: jobs}`` from Snakemake's "Job stats" table."""
    table = re.search(r"Job stats:\n(.*?)\ntotal\s+(\d+)", stdout, re.S)
    assert table, stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table.group(1), re.M)}


def repeatable_tables(results: Path) -> dict[str, bytes]:
    """``{name: bytes}`` of every CSV table under ``results/tables`` that a rerun with the same
    seed must reproduce byte for byte (all but :data:`UNREPEATABLE_TABLES`)."""
    tables = {
        p.name: p.read_bytes()
        for p in sorted((results / "tables").glob("*.csv"))
        if not p.stem.startswith(UNREPEATABLE_TABLES)
    }
    assert tables, f"no tables under {results / 'tables'}"
    return tables
