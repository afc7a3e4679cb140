# Robustness (§5.2, Tables 3-5) and transfer (§5.1, §5.3).
#
# Fixed sets, made once against the fine-tuned victim: SAEs of the headline combination and
# pixel perturbations (PGD), of the evaluation split (to validate on) and of the fine-tuning
# split (to augment with). Every augmentation recipe (sae/detectors/recipes.py) is one `sae
# train` run; every model — the victim's recipes and the other detectors' fine-tuned models —
# is evaluated on the benign, SAE and pixel validation sets.
from sae.detectors.recipes import RECIPES, VALIDATION_SETS
from sae.detectors.recipes import recipe as get_recipe
from sae.detectors.recipes import training_data

SET_SPLITS = {"eval": "eval", "augment": "finetune"}  # set → the data split it perturbs
TRAINED_RECIPES = [r for r in RECIPES if RECIPES[r].init is not None]
TRANSFER = [d for d in DETECTORS if d != VICTIM]


wildcard_constraints:
    kind="sae|pixel",
    split="eval|augment",
    recipe="|".join(RECIPES),


def set_data(kind, split):
    """The folder a set is read from: SAEs as γ of their IRs (VKITTI2), pixel sets as their own
    pixels (KITTI PNGs)."""
    return str(Path(set_dir(kind, split), "vkitti2" if kind == "sae" else "kitti"))


def set_attack_args(kind):
    a = config["attacks"]
    if kind == "sae":
        return f"--method {a['method']} --combo {HEADLINE} {eps_args()} --steps {a['steps']}"
    return f"--method pgd --pixel-eps {a['pixel']['eps']} --steps {a['pixel']['steps']}"


def recipe_init(wc):
    return checkpoint(wc.detector, get_recipe(wc.recipe).init)  # a stage's or another recipe's model


def recipe_data(wc):
    benign = [
        (results("data", "finetune", "vkitti2"), 1.0),
        (results("data", "pretrain", "kitti"), config["train"]["finetune_pretrain_weight"]),
    ]
    sets = {k: set_data(k, "augment") for k in ("sae", "pixel")}
    mix = training_data(wc.recipe, benign, sets, config["augment"]["adversarial_weight"])
    return " ".join(f"{path}:{weight}" for path, weight in mix)


def recipe_set(wc):
    kind = get_recipe(wc.recipe).adversarial  # None: the benign-only control needs no set
    return [results("sets", kind, "augment", "summary.json")] if kind else []


rule attack_set:
    input:
        ckpt=checkpoint(VICTIM),
    output:
        results("sets", "{kind}", "{split}", "summary.json"),
    # the fixed sets start the longest chain after fine-tuning (set → recipe → hybrid recipe →
    # evaluation): run them, and the recipes, before the 60-odd short attack jobs, which then
    # fill the cores instead of leaving one idle at the end
    priority: 10
    params:
        data=lambda wc: results("data", SET_SPLITS[wc.split], "vkitti2"),
        out=lambda wc, output: str(Path(output[0]).parent),
        attack=lambda wc: set_attack_args(wc.kind),
        limit=lambda wc: set_limit(wc.split),
        batch=config["attacks"]["batch_size"],
        device=config["device"],
        seed=config["seed"],
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpu(),
    log:
        results("logs", "attack_set_{kind}_{split}.log"),
    benchmark:
        results("benchmarks", "attack_set_{kind}_{split}.tsv")
    shell:
        "{SAE} attack --checkpoint {input.ckpt} --data {params.data} --out {params.out} {params.attack} "
        "{params.limit} --batch-size {params.batch} --device {params.device} --seed {params.seed} > {log} 2>&1"


rule augment:
    input:
        init=recipe_init,
        adversarial=recipe_set,
    output:
        results("models", "{detector}", "{recipe}", "final.pt"),
    wildcard_constraints:
        recipe="|".join(TRAINED_RECIPES),
    priority: 10
    params:
        args=lambda wc: train_args(wc.detector, get_recipe(wc.recipe).schedule),
        data=recipe_data,
        out=lambda wc, output: str(Path(output[0]).parent),
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=480,
        gpu=gpu(),
    log:
        results("logs", "augment_{detector}_{recipe}.log"),
    benchmark:
        results("benchmarks", "augment_{detector}_{recipe}.tsv")
    shell:
        "{SAE} train {params.args} --rerender --init {input.init} --data {params.data} --out {params.out} > {log} 2>&1"


def valset_data(valset):
    return results("data", "eval", "vkitti2") if valset == "benign" else set_data(valset, "eval")


EVAL_SETS_INPUT = [results("sets", v, "eval", "summary.json") for v in VALIDATION_SETS if v != "benign"]
EVAL_SHELL = (
    "{SAE} eval --checkpoint {input.ckpt} --data {params.data} --rerender {params.limit} "
    "--device {params.device} --out {params.out} {params.figure} > {log} 2>&1"
)


def eval_params(figure=None):
    return dict(
        data=" ".join(valset_data(v) for v in VALIDATION_SETS),
        out=lambda wc, output: " ".join(str(Path(o).parent) for o in output.metrics),
        limit=set_limit("eval"),
        device=config["device"],
        figure=(lambda wc, output: f"--figure {output.figure}") if figure else "",
    )


# One process per model evaluates it on every validation set (the detector loaded once): the
# benign split and the SAE set as γ of their IRs, the pixel set as its stored PNGs.
rule eval_model:
    input:
        ckpt=lambda wc: checkpoint(wc.detector, wc.recipe),
        benign=data_manifest(),
        sets=EVAL_SETS_INPUT,
    output:
        metrics=[results("eval", "{detector}", "{recipe}", v, "metrics.json") for v in VALIDATION_SETS],
    wildcard_constraints:
        recipe="|".join(TRAINED_RECIPES),
    priority: 10
    params:
        **eval_params(),
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        results("logs", "eval_{detector}_{recipe}.log"),
    benchmark:
        results("benchmarks", "eval_{detector}_{recipe}.tsv")
    shell:
        EVAL_SHELL


# The fine-tuned detectors (the victim and the transfer targets): also the victims table's
# benign numbers and a figure of their detections.
rule eval_baseline:
    input:
        ckpt=checkpoint("{detector}"),
        benign=data_manifest(),
        sets=EVAL_SETS_INPUT,
    output:
        metrics=[results("eval", "{detector}", "baseline", v, "metrics.json") for v in VALIDATION_SETS],
        figure=report(
            results("figures", "detections_{detector}.png"), caption="../report/detections.rst", category="Figures"
        ),
    params:
        **eval_params(figure=True),
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        results("logs", "eval_{detector}_baseline.log"),
    benchmark:
        results("benchmarks", "eval_{detector}_baseline.tsv")
    shell:
        EVAL_SHELL


def model_evals(detector, recipes):
    return [results("eval", detector, r, v, "metrics.json") for r in recipes for v in VALIDATION_SETS]


def models_arg(detector, recipes):
    return " ".join(f"{r}={results('eval', detector, r)}" for r in recipes)


AUGMENT_TABLES = {
    # name: (recipes shown, validation sets, title)
    "table3": (
        ["baseline", "retrained-sae", "tuned-sae", "retrained-benign"],
        ["sae", "benign", "pixel"],
        "Table 3: SAE augmentation (retrained on SAE + benign, tuned on SAEs; retrained-benign, ours: "
        "the retraining schedule on benign frames alone), on SAEs and benign",
    ),
    "table4": (
        ["baseline", "retrained-pixel", "tuned-pixel"],
        ["sae", "benign", "pixel"],
        "Table 4: pixel augmentation against SAEs",
    ),
    "table5": (
        ["hybrid-pixel-then-sae", "hybrid-sae-then-pixel", "tuned-sae", "tuned-pixel"],
        ["sae", "pixel", "benign"],
        "Table 5: hybrid tuning, validated on SAEs (5a) and on pixel perturbations (5b)",
    ),
}


rule augment_table:
    input:
        lambda wc: model_evals(VICTIM, AUGMENT_TABLES[wc.table][0]),
    output:
        md=report(results("tables", "{table}.md"), caption="../report/tables.rst", category="Tables"),
        csv=results("tables", "{table}.csv"),
    wildcard_constraints:
        table="table3|table4|table5",
    params:
        models=lambda wc: models_arg(VICTIM, AUGMENT_TABLES[wc.table][0]),
        valsets=lambda wc: " ".join(AUGMENT_TABLES[wc.table][1]),
        title=lambda wc: AUGMENT_TABLES[wc.table][2],
        difficulty=config["metrics"]["difficulty"],
        stem=lambda wc, output: str(Path(output.md).with_suffix("")),
    log:
        results("logs", "{table}.log"),
    benchmark:
        results("benchmarks", "{table}.tsv")
    shell:
        "{SAE} table models --models {params.models} --valsets {params.valsets} --paper {wildcards.table} "
        "--difficulty {params.difficulty} --title '{params.title}' --out {params.stem} > {log} 2>&1"


rule transfer_table:
    input:
        [results("eval", d, "baseline", v, "metrics.json") for d in [VICTIM, *TRANSFER] for v in VALIDATION_SETS],
    output:
        md=report(results("tables", "transfer.md"), caption="../report/tables.rst", category="Tables"),
        csv=results("tables", "transfer.csv"),
    params:
        models=" ".join(f"{d}={results('eval', d, 'baseline')}" for d in [VICTIM, *TRANSFER]),
        difficulty=config["metrics"]["difficulty"],
        stem=results("tables", "transfer"),
        title=f"§5.1 and §5.3: benign images, SAEs and pixel perturbations (both made on {VICTIM}) of the "
        "evaluation split, on the victim and on the other detectors",
    log:
        results("logs", "transfer.log"),
    benchmark:
        results("benchmarks", "transfer.tsv")
    shell:
        "{SAE} table models --models {params.models} --valsets benign sae pixel --paper transfer "
        "--difficulty {params.difficulty} --title '{params.title}' --out {params.stem} > {log} 2>&1"
