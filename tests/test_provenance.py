"""The provenance table and the job-time figure, from Snakemake benchmark files."""

import os

import pytest

from sae.doctor import provenance, read_benchmarks, rule_of, runtime_figure

HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(folder, job, seconds, end):
    path = folder / f"{job}.tsv"
    path.write_text(HEAD + f"{seconds}\t0:00:00\t100.5\t1\t1\t1\t0\t0\t50\t{seconds}\n")
    os.utime(path, (end, end))


def test_rule_of_benchmark_stems():
    assert rule_of("attack_isfgsm_rotate+translate+mesh") == "attack"
    assert rule_of("attack_set_sae_eval") == "attack_set"
    assert rule_of("ball_attack_rotate+translate+mesh") == "ball_attack"
    assert rule_of("eval_squeezedet_tuned-sae_pixel") == "eval"
    assert rule_of("eval_benign_attacked") == "eval_benign_attacked"
    assert rule_of("generate_data") == "generate_data" and rule_of("table1") == "table1"


def test_wall_time_and_figure_from_benchmarks(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    # two jobs side by side (0-100 s and 20-80 s), then one after (100-160 s): 160 s of wall time
    _bench(bench, "pretrain_squeezedet", 100.0, 1000.0)
    _bench(bench, "pretrain_yolov3", 60.0, 980.0)
    _bench(bench, "attack_isfgsm_color", 60.0, 1060.0)
    rows = read_benchmarks(bench)
    assert sorted(r["job"] for r in rows) == ["attack_isfgsm_color", "pretrain_squeezedet", "pretrain_yolov3"]
    text = provenance({"seed": 0}, bench)
    assert "3 jobs, 3.7 min of job time" in text and "Wall time with jobs running: 2.7 min" in text
    assert "to the last job's end: 2.7 min" in text
    # a table remade 10 minutes later (6 s): the span grows, the time with jobs running does not
    _bench(bench, "table1", 6.0, 1666.0)
    text = provenance({"seed": 0}, bench)
    assert "Wall time with jobs running: 2.8 min" in text and "to the last job's end: 12.8 min" in text
    assert "| pretrain_squeezedet | 100.0 | 100.5 |" in text
    png = runtime_figure(bench, tmp_path / "runtime.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_a_corrupt_benchmark_file_is_named(tmp_path):
    (tmp_path / "broken.tsv").write_text(HEAD + "abc\n")
    with pytest.raises(ValueError, match="broken.tsv"):
        read_benchmarks(tmp_path)


def test_commit_is_dirty_for_tracked_code_changes_not_for_the_runs_own_results(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    bench = tmp_path / "bench"
    bench.mkdir()
    config = {"results": str(tmp_path / "results")}
    (tmp_path / "results" / "table.md").write_text("new\n")  # the run rewrote a committed table
    assert "uncommitted" not in provenance(config, bench, cwd=tmp_path)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert "(uncommitted changes)" in provenance(config, bench, cwd=tmp_path)
