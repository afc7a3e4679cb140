# Paths and helpers shared by the rules. Every path comes from here.
import sys
from pathlib import Path

RESULTS = config["results"]
# The package's CLI, run by the interpreter that runs Snakemake (where sae is installed).
SAE = f"{sys.executable} -m sae"


def results(*parts):
    return str(Path(RESULTS, *parts))


def data_manifest():
    return results("data", "manifest.json")


def size_arg(size):
    return "" if size is None else f"--size {size[0]}x{size[1]}"


def work_size():
    """The working [width, height]: the config's, or the data scale's own."""
    from sae.data.scales import SCALES

    if config["data"]["size"]:
        return list(config["data"]["size"])
    h, w = SCALES[config["data"]["scale"]].size
    return [w, h]


WORK_SIZE = work_size()
DETECTORS = list(config["detectors"])
VICTIM = config["attacks"]["victim"]
# CPU threads of each training and attack job (Snakemake caps them at --cores and exports them as
# OMP_NUM_THREADS, which torch follows). On a CPU, small convolutions gain little from a second
# thread, so the default config runs one-thread jobs side by side instead.
JOB_THREADS = config.get("threads", 8)


wildcard_constraints:
    detector="|".join(DETECTORS),


def all_combos():
    from itertools import combinations

    from sae.constants import PARAMETERS

    return ["+".join(c) for k in range(1, len(PARAMETERS) + 1) for c in combinations(PARAMETERS, k)]


def attack_combos():
    combos = config["attacks"]["combos"]
    return all_combos() if combos == "all" else [canonical_combo(c) for c in combos]


def canonical_combo(combo):
    from sae.constants import parse_combo

    return "+".join(parse_combo(combo))


SINGLES = [c for c in all_combos() if "+" not in c]
HEADLINE = canonical_combo(config["attacks"]["headline"])


def paper_combos():
    """The combinations whose numbers the paper reports or C1 rests on: Table 1's six single
    parameters, Table 2's four combinations and the headline."""
    from sae.tables import PAPER_TABLE2

    return set(SINGLES) | {canonical_combo(c) for c in PAPER_TABLE2 if c != "benign"} | {HEADLINE}


PAPER_COMBOS = paper_combos()
EXAMPLES = config["attacks"]["examples"]
# the rest of Table 2 (our extension to all 63 subsets): `attacks.other_examples` frames each
OTHER_EXAMPLES = config["attacks"].get("other_examples") or EXAMPLES


def examples_for(combo):
    """Frames attacked for ``combo`` (`attacks.examples` or `attacks.other_examples`)."""
    return EXAMPLES if combo in PAPER_COMBOS else OTHER_EXAMPLES


def benign_attacked(examples):
    """The victim's benign evaluation of the frames that ``examples``-frame attacks take."""
    name = "benign-attacked" if examples == EXAMPLES else "benign-attacked-other"
    return results("eval", VICTIM, name, "metrics.json")


def checkpoint(detector, stage="finetune"):
    return results("models", detector, stage, "final.pt")


def json_arg(value):
    import json

    return "'" + json.dumps(value, separators=(",", ":"), sort_keys=True) + "'"


def train_args(detector, stage):
    """`sae train` options of a detector's stage: its own ("pretrain", "finetune") or an
    augmentation recipe's schedule ("retrain", "tune" in the config's `augment`)."""
    c = config["detectors"][detector]
    t = c[stage] if stage in c else config["augment"][stage]
    return (
        f"--detector {detector} --size {WORK_SIZE[0]}x{WORK_SIZE[1]} --iterations {t['iterations']} "
        f"--batch-size {t['batch_size']} --optimizer {t['optimizer']} --lr {t['lr']} --warmup {t['warmup']} "
        f"--model {json_arg(c['model'])} --checkpoint-every {t['checkpoint_every']} "
        f"--device {config['device']} --seed {config['seed']}"
        + (f" --ema {t['ema']}" if t.get("ema") else "")
    )


def eps_args():
    return "--eps " + " ".join(f"{k}={v}" for k, v in sorted(config["attacks"]["eps"].items()))


def set_dir(kind, split):
    """The folder of a fixed set of §5 (`sae`/`pixel`, `eval`/`augment`; workflow/rules/augment.smk)."""
    return results("sets", kind, split)


def set_limit(split):
    """`--limit` for the frames of a split's fixed sets (`sets.<split>_examples`; none: all)."""
    n = config["sets"][f"{split}_examples"]
    return "" if n is None else f"--limit {n}"


def gpu():
    return 1 if config["device"].startswith("cuda") else 0


def all_outputs():
    return [
        data_manifest(),
        results("tables", "derender.md"),
        results("figures", "render_demo.png"),
        results("figures", "data_variations.png"),
        *[results("eval", d, "baseline", "benign", "metrics.json") for d in DETECTORS],
        *[results("figures", f"detections_{d}.png") for d in DETECTORS],
        results("tables", "table1.md"),
        results("tables", "table2.md"),
        results("tables", "baselines.md"),
        results("tables", "fid.json"),
        results("tables", "timing.md"),
        *[results("tables", f"{t}.md") for t in ("table3", "table4", "table5", "transfer")],
        results("tables", "claims.md"),
        results("tables", "victims.md"),
        results("figures", "table2_combos.png"),
        results("figures", "figure2_benign_vs_sae.png"),
        *[
            results("figures", "diagnostics", f"{m}_{HEADLINE}.png")
            for m in (config["attacks"]["method"], "random")
        ],
        *[results("figures", "diagnostics", f"{config['attacks']['method']}_{c}.png") for c in SINGLES],
    ]


def preflight():
    """`sae doctor` on this config before any job starts (Snakemake's onstart): device, GPUs,
    paths and disk; a problem stops the run with the doctor's list. Under a cluster executor the
    GPUs live on the compute nodes, so the local device check is skipped there."""
    import json
    import subprocess

    from snakemake.exceptions import WorkflowError

    cmd = [sys.executable, "-m", "sae", "doctor", "--config-json", json.dumps(config)]
    cmd += ["--out", results("preflight.json")]
    if workflow.non_local_exec:
        cmd.append("--skip-device")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout, file=sys.stderr)
    if proc.returncode != 0:
        raise WorkflowError(f"preflight check failed (sae doctor):\n{proc.stdout}{proc.stderr}")
