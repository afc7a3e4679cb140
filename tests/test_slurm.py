"""The workflow on a real SLURM: the smoke DAG submitted with ``--profile workflow/profiles/slurm``
gives the same tables as the local smoke run, and its jobs really ran as SLURM jobs.

Needs a reachable SLURM controller (``sinfo``/``sbatch`` on PATH). ``tests/slurm/start.sh`` (root,
apt) sets up a single-node one on this host and ``tests/slurm/stop.sh`` stops it; without one the
test is skipped, unless ``SAE_REQUIRE_SLURM=1`` (CI) turns the skip into a failure. The CPU-only,
accounting-free node needs a few command-line overrides; the profile itself stays the one users
submit to real clusters with. The checks read every job back with ``scontrol show job``, so the
controller must keep finished jobs longer than the run takes (MinJobAge; start.sh sets a day).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from workflow_util import SNAKEMAKE, copy_workflow, repeatable_tables, snakemake

#: Wall-clock limit of the SLURM smoke run in seconds (then SIGTERM, SIGKILL 60 s later).
TIMEOUT_S = int(os.environ.get("SAE_SLURM_TIMEOUT_S", "3600"))
#: The local reference run's ``--cores``: the SLURM jobs get as many threads, so the tables can match.
REFERENCE_CORES = 2


@dataclass(frozen=True)
class Cluster:
    """What ``sinfo`` says about the default partition."""

    partition: str
    cpus: int  # CPUs of its smallest node
    memory_mb: int  # RealMemory of its smallest node, MB


def _query(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _find_cluster() -> Cluster | str:
    """The reachable SLURM's default partition, or why there is none usable."""
    missing = [c for c in ("sinfo", "sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        return f"no SLURM client on PATH ({', '.join(missing)} missing)"
    try:
        lines = _query("sinfo", "--noheader", "--format=%P|%a|%c|%m|%t").split()
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        return f"no SLURM controller answers: {err}"
    default = [line.split("|") for line in lines if line.split("|")[0].endswith("*")]
    if not default:
        return f"SLURM has no default partition (sinfo: {lines})"
    rows = [row for row in default if row[1] == "up" and row[4].rstrip("*~#$@") in ("idle", "mix", "alloc")]
    if not rows:
        return f"the default partition has no node that is up (sinfo: {default})"
    return Cluster(
        partition=rows[0][0].rstrip("*"),
        cpus=min(int(row[2].rstrip("+")) for row in rows),
        memory_mb=min(int(row[3].rstrip("+")) for row in rows),
    )


@pytest.fixture
def slurm_cluster() -> Cluster:
    """The reachable SLURM, or a skip (a failure under ``SAE_REQUIRE_SLURM=1``) naming what is missing."""
    found = _find_cluster()
    if isinstance(found, str):
        reason = f"{found}; `sudo bash tests/slurm/start.sh` starts a single-node SLURM on this host"
        if os.environ.get("SAE_REQUIRE_SLURM") == "1":
            pytest.fail(f"SAE_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    return found


def _job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job`` of one job as ``{field: value}`` (values may not contain spaces)."""
    text = _query("scontrol", "--oneliner", "show", "job", job_id)
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def _memory_overrides(args: list[str], work: Path, node_mb: int) -> list[str]:
    """``--set-resources RULE:mem_mb=node_mb`` for every rule that the Snakemake run ``args`` in
    ``work`` asks more memory of than the node has (sbatch refuses such a job); none if all fit."""
    proc = snakemake("-n", *args, cwd=work, timeout=600)
    assert proc.returncode == 0, proc.output[-3000:]
    asks = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: .*\bmem_mb=(\d+)", proc.stdout, re.M)
    assert asks, proc.stdout[-3000:]
    too_big = sorted({rule for rule, mem_mb in asks if int(mem_mb) > node_mb})
    return ["--set-resources", *(f"{rule}:mem_mb={node_mb}" for rule in too_big)] if too_big else []


def _assert_ran_through_slurm(output: str, work: Path, logs: Path, cluster: Cluster, max_cpus: int) -> list[str]:
    """Every job of a Snakemake run (its stdout + stderr ``output``) but the local ``all`` was
    submitted with sbatch and completed as a SLURM job: its own job id, a log in ``logs`` written by
    the job's Snakemake jobstep, ``COMPLETED`` with exit code 0 in the default partition, working
    directory ``work``, at most ``max_cpus`` CPUs and no GPU. Returns the SLURM job ids."""
    submitted = re.findall(r"^Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.$", output, re.M)
    remote_jobs = re.findall(r"^rule (\w+):$", output, re.M)
    assert remote_jobs and len(submitted) == len(remote_jobs), (len(submitted), len(remote_jobs))
    assert re.search(r"^localrule all:$", output, re.M), "the target rule `all` should run locally"
    job_ids = [job_id for job_id, _ in submitted]
    assert len(set(job_ids)) == len(job_ids), job_ids
    for job_id, log in submitted:
        assert logs in Path(log).parents and "--executor slurm-jobstep" in Path(log).read_text(), log
        fields = _job_fields(job_id)  # MinJobAge keeps finished jobs visible for an hour
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", (job_id, fields)
        assert fields["Partition"] == cluster.partition, (job_id, fields)
        assert Path(fields["WorkDir"]).resolve() == work.resolve(), (job_id, fields)
        assert 1 <= int(fields["NumCPUs"]) <= max_cpus, (job_id, fields)
        assert "gpu" not in fields.get("TRES", "") + fields.get("TresPerNode", "") + fields.get("TresPerJob", "")
    return job_ids


@pytest.mark.slurm
def test_smoke_run_through_slurm_matches_the_local_run(slurm_cluster, request, tmp_path):
    if slurm_cluster.cpus < REFERENCE_CORES:
        pytest.fail(f"the default partition's nodes have {slurm_cluster.cpus} CPUs; the test needs {REFERENCE_CORES}")
    reference = request.getfixturevalue("smoke_reference")  # only now: a skip above must not wait for it
    work = copy_workflow(tmp_path / "wf")
    logs = tmp_path / "slurm_logs"
    args = [
        *("--profile", "workflow/profiles/slurm", "--configfile", "config/smoke.yaml", "--config", "results=out"),
        # what a CPU-only single node without slurmdbd needs on top of the profile:
        *("--max-threads", str(REFERENCE_CORES)),  # rules ask for 8 CPUs: such a job would pend for ever
        *("--slurm-status-command", "squeue"),  # sacct needs slurmdbd; squeue sees jobs for MinJobAge
        *("--slurm-init-seconds-before-status-checks", "2"),  # the first poll after 2 s, not 40 s
        *("--slurm-keep-successful-logs", "--slurm-logdir", str(logs)),
    ]
    args += _memory_overrides(args, work, slurm_cluster.memory_mb)  # the rules' mem_mb is sized for real runs
    # the plugin's status polls back off up to 180 s: a hung run is stopped (SIGTERM cancels its jobs)
    cmd = ["timeout", "-k", "60", str(TIMEOUT_S), *SNAKEMAKE, *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.monotonic() - start
    print(f"SLURM smoke run: rc {proc.returncode}, {wall:.0f} s")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rc {proc.returncode} after {wall:.0f} s:\n{output[-5000:]}"
    _assert_ran_through_slurm(output, work, logs, slurm_cluster, REFERENCE_CORES)
    assert repeatable_tables(work / "out") == repeatable_tables(reference / "out")
