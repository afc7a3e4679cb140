"""The Snakemake workflow: the DAG of every config, config validation, and a smoke run."""

import json

import pytest
import yaml
from workflow_util import ROOT
from workflow_util import copy_workflow as _copy_workflow
from workflow_util import job_counts as _jobs
from workflow_util import snakemake as _snakemake


@pytest.mark.parametrize("config", ["config/config.yaml", "config/smoke.yaml", "config/paper.yaml"])
def test_dry_run_builds_the_whole_dag(config, tmp_path):
    proc = _snakemake("-n", "--configfile", config, "--config", f"results={tmp_path}")
    assert proc.returncode == 0, proc.output
    jobs = _jobs(proc.stdout)
    for rule in ("provenance", "generate_data", "derender_report", "render_demo", "data_figure", "all"):
        assert jobs.get(rule) == 1, (rule, jobs)
    cfg = yaml.safe_load((ROOT / config).read_text())
    detectors = len(cfg["detectors"])
    for rule in ("pretrain", "finetune", "eval_baseline"):
        assert jobs.get(rule) == detectors, (rule, jobs)
    combos = 63 if cfg["attacks"]["combos"] == "all" else len(set(cfg["attacks"]["combos"]) | SINGLES)
    # one SAE set per combination, plus the random-search baseline of the headline combination
    assert jobs.get("attack") == combos + 1, jobs  # each also scores the victim on its set
    # pixel FGSM for the baselines table, on the fixed sets' frames (its PGD row is the pixel set)
    assert jobs.get("pixel_attack") == 1 and not {"eval_attack", "eval_pixel"} & set(jobs), jobs
    for rule in (
        "table1",
        "table2",
        "baselines",
        "fid",
        "timing",
        "eval_benign_subset",
        "figure2",
        "claims",
        "combos_figure",
        "ball_attack",  # C8: sFGSM over random search's ball, on the headline combination
    ):
        assert jobs.get(rule) == 1, (rule, jobs)
    assert jobs.get("attack_diagnostics") == 8  # the six singles and the headline, gradient and random
    # combinations outside the paper's attack `other_examples` frames: their own benign evaluation
    other = cfg["attacks"].get("other_examples")
    assert jobs.get("eval_benign_other", 0) == (1 if other and other != cfg["attacks"]["examples"] else 0), jobs
    # §5: SAE and pixel sets of the evaluation and fine-tuning splits; seven trained recipes (the
    # paper's six and our control); every recipe of the victim and every other detector's
    # fine-tuned model on the three validation sets
    assert jobs.get("attack_set") == 4 and jobs.get("augment") == 7, jobs
    assert jobs.get("eval_model") == 7, jobs  # one job per trained recipe, every validation set
    assert jobs.get("augment_table") == 3 and jobs.get("transfer_table") == 1, jobs


SINGLES = {"color", "weather", "foliage", "rotate", "translate", "mesh"}


@pytest.mark.parametrize(
    "path, value, key",
    [
        # through Snakemake itself (about 11 s each); tests/test_bad_input.py checks many more
        # mistakes, these included, with the same schema and check_config in-process
        (("seed",), -1, "seed"),
        (("attacks", "eps", "mesh"), -0.025, "mesh"),
        (("detectors", "squeezedet", "pretrain", "lr"), 0, "lr"),
    ],
)
def test_malformed_config_fails_before_any_job_naming_the_key(path, value, key, tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    node = cfg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    cfg["results"] = str(tmp_path / "results")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = _snakemake("-n", "--configfile", str(bad))
    assert proc.returncode != 0
    assert "error validating config" in proc.output.lower()
    assert key in proc.output
    assert not (tmp_path / "results").exists()


def test_a_schedule_ema_reaches_only_its_training_job(tmp_path):
    """``ema`` in one schedule becomes that job's ``--ema``; schedules without it are unchanged."""
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["detectors"]["squeezedet"]["pretrain"]["ema"] = 0.99
    cfg["results"] = str(tmp_path / "results")
    path = tmp_path / "ema.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _snakemake("-n", "-p", "--configfile", str(path))
    assert proc.returncode == 0, proc.output[-3000:]
    train = [line for line in proc.output.splitlines() if " -m sae train " in line]
    with_ema = [line for line in train if "--ema 0.99" in line]
    assert len(with_ema) == 1 and "--out " + str(tmp_path / "results/models/squeezedet/pretrain") in with_ema[0], train
    assert len(train) > 1 and all("--ema" not in line for line in train if line not in with_ema)


def test_missing_key_is_named(tmp_path):
    work = _copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
    del cfg["data"]["workers"]
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _snakemake("-n", cwd=work)
    assert proc.returncode != 0
    assert "'workers' is a required property" in proc.output


def test_smoke_run_end_to_end(smoke_reference, tmp_path):
    """From an empty results folder to every output; a second run has nothing to do."""
    work = smoke_reference
    out = work / "out"
    for path in (
        "data/manifest.json",
        "tables/derender.md",
        "tables/derender.csv",
        "figures/render_demo.png",
        "figures/data_variations.png",
        "logs/generate_data.log",
        "benchmarks/generate_data.tsv",
    ):
        assert (out / path).is_file(), path
    assert "box IoU" in (out / "tables" / "derender.md").read_text()
    for table in ("table1", "table2", "baselines"):
        text = (out / "tables" / f"{table}.md").read_text()
        assert "| benign |" in text and (out / "tables" / f"{table}.csv").is_file()
    for table, rows in {
        "table3": ("| baseline | Baseline |", "| retrained-sae |", "| tuned-sae |", "| retrained-benign |"),
        "table4": ("| retrained-pixel |", "| tuned-pixel |"),
        "table5": ("| hybrid-pixel-then-sae |", "| hybrid-sae-then-pixel |"),
        "transfer": ("| squeezedet |", "| yolov3 |"),
        "victims": ("| squeezedet |", "| yolov3 |", "| 4 |"),  # the smoke pre-training: 4 iterations
    }.items():
        text = (out / "tables" / f"{table}.md").read_text()
        assert all(r in text for r in rows) and (out / "tables" / f"{table}.csv").is_file(), (table, text)
    # the augmented models really trained, from the weights their recipe names
    for recipe in (
        "retrained-sae",
        "tuned-sae",
        "retrained-pixel",
        "tuned-pixel",
        "hybrid-pixel-then-sae",
        "retrained-benign",
    ):
        assert (out / "models" / "squeezedet" / recipe / "final.pt").is_file(), recipe
    import torch

    for recipe, init in {
        "hybrid-pixel-then-sae": "tuned-pixel",
        "retrained-sae": "finetune",
        "retrained-benign": "finetune",
        "tuned-sae": "finetune",
    }.items():
        state = torch.load(out / "models" / "squeezedet" / recipe / "final.pt", weights_only=True)
        trained = json.loads(state["config"])
        assert trained["init"].endswith(f"squeezedet/{init}/final.pt"), (recipe, trained["init"])
        assert trained["iterations"] == 2 and trained["rerender"], trained
    # smoke: 2 steps, so a ball of 2ε and 3 queries; sFGSM over that ball asks 2
    assert "| color | isfgsm | 2ε | 3 | 2 |" in (out / "tables" / "table1.md").read_text()
    baselines = (out / "tables" / "baselines.md").read_text()
    assert "| rotate+translate+mesh | random | 2ε | 3 | 2 |" in baselines
    assert "| rotate+translate+mesh | sfgsm | 2ε | 2 | 2 |" in baselines
    # the fixed sets' own attacks are its iterative sFGSM and pixel PGD rows, on the same 2 frames
    assert "| rotate+translate+mesh | isfgsm | 2ε | 3 | 2 |" in baselines and "| pixel | pgd | 8/255 |" in baselines
    fid = json.loads((out / "tables" / "fid.json").read_text())
    assert set(fid["fid"]) == {"sae", "pixel"}  # the victim's view at the top level
    assert [v["detector"] for v in fid["views"]] == ["squeezedet", "yolov3"] and fid["views"][0]["fid"] == fid["fid"]
    assert "s/SAE" in (out / "tables" / "timing.md").read_text()
    claims = json.loads((out / "tables" / "claims.json").read_text())
    assert [c["claim"] for c in claims["claims"]] == [f"C{i}" for i in range(1, 9)], claims
    assert {c["holds"] for c in claims["claims"]} <= {"yes", "partly", "no"}, claims
    assert claims["meta"]["resamples"] == 20 and "| C8 |" in (out / "tables" / "claims.md").read_text()
    assert "step agreement" in claims["claims"][0]["ours"], claims["claims"][0]  # C1 quotes the 2-step attack
    c3 = claims["claims"][2]
    assert "retrained-benign (the control)" in c3["ours"] and "beats the control" in c3["criterion"], c3
    assert (out / "figures" / "figure2_benign_vs_sae.png").stat().st_size > 20_000
    assert (out / "figures" / "table2_combos.png").stat().st_size > 5_000
    assert (out / "figures" / "runtime.png").stat().st_size > 5_000
    assert len(list((out / "figures" / "diagnostics").glob("*.png"))) == 8
    prov = (out / "tables" / "provenance.md").read_text()
    assert "git commit" in prov and "| pretrain_squeezedet |" in prov and "headline:" in prov
    # the jobs ran with the CPU kernels pinned (sae/cpu.py): the Snakefile's environment reached them
    assert "pins: ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_CBWR=AVX2" in prov, prov
    preflight = json.loads((out / "preflight.json").read_text())
    assert preflight["info"]["cpu_kernels"] == "avx2" and preflight["info"]["cpu"]["pinned"]["MKL_CBWR"] == "AVX2"
    again = _snakemake("-n", "--configfile", "config/smoke.yaml", "--config", "results=out", cwd=work)
    assert "Nothing to be done" in again.output
    # an attack setting changes: the attacks rerun, the detectors are not retrained
    cfg = yaml.safe_load((work / "config" / "smoke.yaml").read_text())
    cfg["attacks"]["eps"]["mesh"] = 0.05
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(cfg))
    changed = _snakemake("-n", "--configfile", str(tmp_path / "changed.yaml"), "--config", "results=out", cwd=work)
    jobs = _jobs(changed.stdout)
    assert jobs.get("attack", 0) >= 11 and not {"generate_data", "pretrain", "finetune"} & set(jobs), jobs
    html = tmp_path / "report.html"
    report = _snakemake("--configfile", "config/smoke.yaml", "--config", "results=out", "--report", str(html), cwd=work)
    assert report.returncode == 0 and html.stat().st_size > 10_000


def test_preflight_fails_clearly_when_the_device_is_missing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    work = _copy_workflow(tmp_path / "wf")
    proc = _snakemake(
        "--cores",
        "1",
        "--configfile",
        "config/smoke.yaml",
        "--config",
        "results=out",
        "device=cuda",
        cwd=work,
    )
    assert proc.returncode != 0
    assert "torch sees no CUDA device" in proc.output
    assert not (work / "out" / "data").exists()


def test_a_configfile_replaces_the_default_config(tmp_path):
    """`--configfile` is the whole config, not merged into config/config.yaml: one detector listed
    is one detector trained (no YOLOv3 from the default config, no transfer evaluations)."""
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    del cfg["detectors"]["yolov3"]
    cfg["results"] = str(tmp_path / "results")
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump(cfg))
    proc = _snakemake("-n", "--configfile", str(one))
    assert proc.returncode == 0, proc.output
    jobs = _jobs(proc.stdout)
    assert jobs["pretrain"] == jobs["finetune"] == 1 and jobs["eval_model"] == 7 and jobs["eval_baseline"] == 1, jobs
