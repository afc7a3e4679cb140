# Attacks on the victim over the evaluation split: one SAE data set per {combo} (all 63
# non-empty subsets of the six parameters; `attacks.examples` frames for the paper's and C1's
# combinations, `attacks.other_examples` for the rest), and the baselines
# table's attacks (random search, sFGSM over the ball, pixel FGSM) on the frames of the fixed
# evaluation sets (`sets.eval_examples`), beside those sets' iterative sFGSM and pixel PGD; each
# job also scores the victim on the set it wrote (`sae attack --eval`).

wildcard_constraints:
    combo="[a-z+]+",
    method="[a-z]+",


rule attack:
    input:
        ckpt=checkpoint(VICTIM),
    output:
        summary=results("attacks", "{method}", "{combo}", "summary.json"),
        eval=results("attacks", "{method}", "{combo}", "eval", "metrics.json"),
    params:
        data=results("data", "eval", "vkitti2"),
        out=lambda wc, output: str(Path(output.summary).parent),
        eps=eps_args(),
        steps=config["attacks"]["steps"],
        # random search is the baselines table's and C8's: the fixed evaluation sets' frames
        limit=lambda wc: set_limit("eval") if wc.method == "random" else f"--limit {examples_for(wc.combo)}",
        batch=config["attacks"]["batch_size"],
        device=config["device"],
        seed=config["seed"],
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu(),
    log:
        results("logs", "attack_{method}_{combo}.log"),
    benchmark:
        results("benchmarks", "attack_{method}_{combo}.tsv")
    shell:
        "{SAE} attack --checkpoint {input.ckpt} --data {params.data} --out {params.out} --method {wildcards.method} "
        "--combo {wildcards.combo} {params.eps} --steps {params.steps} {params.limit} "
        "--batch-size {params.batch} --device {params.device} --seed {params.seed} --eval > {log} 2>&1"


rule ball_attack:
    # sFGSM at the ball iterative sFGSM and random search cover (radius `steps` x eps): one
    # sign step to the ball's surface, C8's gradient attack against random search (see
    # results/README.md: the paper's eps-sized steps flip sign and stay near theta = 0).
    input:
        ckpt=checkpoint(VICTIM),
    output:
        summary=results("attacks", "sfgsm-ball", "{combo}", "summary.json"),
        eval=results("attacks", "sfgsm-ball", "{combo}", "eval", "metrics.json"),
    params:
        data=results("data", "eval", "vkitti2"),
        out=lambda wc, output: str(Path(output.summary).parent),
        eps=eps_args(),
        radius=config["attacks"]["steps"],
        limit=set_limit("eval"),  # the fixed evaluation sets' frames
        batch=config["attacks"]["batch_size"],
        device=config["device"],
        seed=config["seed"],
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu(),
    log:
        results("logs", "ball_attack_{combo}.log"),
    benchmark:
        results("benchmarks", "ball_attack_{combo}.tsv")
    shell:
        "{SAE} attack --checkpoint {input.ckpt} --data {params.data} --out {params.out} --method sfgsm "
        "--radius {params.radius} --combo {wildcards.combo} {params.eps} {params.limit} "
        "--batch-size {params.batch} --device {params.device} --seed {params.seed} --eval > {log} 2>&1"


rule pixel_attack:
    input:
        ckpt=checkpoint(VICTIM),
    output:
        summary=results("pixel", "{method}", "summary.json"),
        eval=results("pixel", "{method}", "eval", "metrics.json"),
    params:
        data=results("data", "eval", "vkitti2"),
        out=lambda wc, output: str(Path(output.summary).parent),
        eps=config["attacks"]["pixel"]["eps"],
        steps=lambda wc: 1 if wc.method == "fgsm" else config["attacks"]["pixel"]["steps"],
        limit=set_limit("eval"),  # the fixed evaluation sets' frames
        batch=config["attacks"]["batch_size"],
        device=config["device"],
        seed=config["seed"],
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpu(),
    log:
        results("logs", "pixel_{method}.log"),
    benchmark:
        results("benchmarks", "pixel_{method}.tsv")
    shell:
        "{SAE} attack --checkpoint {input.ckpt} --data {params.data} --out {params.out} --method {wildcards.method} "
        "--pixel-eps {params.eps} --steps {params.steps} {params.limit} "
        "--batch-size {params.batch} --device {params.device} --seed {params.seed} --eval > {log} 2>&1"


rule eval_benign_subset:
    # the benign frames of the attacks of Table 1, the paper's Table 2 rows and C1
    input:
        checkpoint(VICTIM),
    output:
        benign_attacked(EXAMPLES),
    params:
        data=results("data", "eval", "vkitti2"),
        out=lambda wc, output: str(Path(output[0]).parent),
        examples=EXAMPLES,
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        results("logs", "eval_benign_attacked.log"),
    benchmark:
        results("benchmarks", "eval_benign_attacked.tsv"),
    shell:
        "{SAE} eval --checkpoint {input} --data {params.data} --rerender --limit {params.examples} "
        "--out {params.out} > {log} 2>&1"


if OTHER_EXAMPLES != EXAMPLES:

    use rule eval_benign_subset as eval_benign_other with:
        # the benign frames of the other combinations' attacks (`attacks.other_examples`)
        output:
            benign_attacked(OTHER_EXAMPLES),
        params:
            data=results("data", "eval", "vkitti2"),
            out=lambda wc, output: str(Path(output[0]).parent),
            examples=OTHER_EXAMPLES,
        log:
            results("logs", "eval_benign_attacked_other.log"),
        benchmark:
            results("benchmarks", "eval_benign_attacked_other.tsv")


def attack_dir(method, combo):
    return results("attacks", method, combo)


def attack_table_inputs(combos, method):
    return [results("attacks", method, c, "eval", "metrics.json") for c in combos]


def benign_inputs(combos):
    """The benign evaluations that the attacks of ``combos`` are compared with, on their frames:
    the `attacks.examples` one first (the table's benign row)."""
    return [benign_attacked(n) for n in dict.fromkeys([EXAMPLES, *(examples_for(c) for c in combos)])]


TABLE2_COMBOS = [c for c in attack_combos() if "+" in c]


rule table1:
    input:
        benign=benign_inputs(SINGLES),
        attacks=attack_table_inputs(SINGLES, config["attacks"]["method"]),
    output:
        md=report(results("tables", "table1.md"), caption="../report/tables.rst", category="Tables"),
        csv=results("tables", "table1.csv"),
    params:
        benign=lambda wc, input: " ".join(str(Path(b).parent) for b in input.benign),
        attacks=[attack_dir(config["attacks"]["method"], c) for c in SINGLES],
        difficulty=config["metrics"]["difficulty"],
        stem=results("tables", "table1"),
    log:
        results("logs", "table1.log"),
    benchmark:
        results("benchmarks", "table1.tsv"),
    shell:
        "{SAE} table attacks --benign {params.benign} --attacks {params.attacks} --paper table1 "
        "--difficulty {params.difficulty} --title 'Table 1: single-parameter SAEs' --out {params.stem} > {log} 2>&1"


rule table2:
    input:
        benign=benign_inputs(TABLE2_COMBOS),
        attacks=attack_table_inputs(TABLE2_COMBOS, config["attacks"]["method"]),
    output:
        md=report(results("tables", "table2.md"), caption="../report/tables.rst", category="Tables"),
        csv=results("tables", "table2.csv"),
    params:
        benign=lambda wc, input: " ".join(str(Path(b).parent) for b in input.benign),
        attacks=[attack_dir(config["attacks"]["method"], c) for c in TABLE2_COMBOS],
        difficulty=config["metrics"]["difficulty"],
        stem=results("tables", "table2"),
    log:
        results("logs", "table2.log"),
    benchmark:
        results("benchmarks", "table2.tsv"),
    shell:
        "{SAE} table attacks --benign {params.benign} --attacks {params.attacks} --paper table2 "
        "--difficulty {params.difficulty} --title 'Table 2: multi-parameter SAEs' --out {params.stem} > {log} 2>&1"


rule baselines:
    # every row on the frames of the fixed evaluation sets of §5: the sets' own iterative sFGSM
    # (the headline) and pixel PGD, and random search, sFGSM over the ball and pixel FGSM run on
    # the same frames, so the rows (and C8's paired differences) compare like with like
    input:
        benign=results("eval", VICTIM, "baseline", "benign", "metrics.json"),  # the sets' frames too
        grad=[results("sets", "sae", "eval", "summary.json"), results("eval", VICTIM, "baseline", "sae", "metrics.json")],
        ball=results("attacks", "sfgsm-ball", HEADLINE, "eval", "metrics.json"),
        rand=results("attacks", "random", HEADLINE, "eval", "metrics.json"),
        fgsm=results("pixel", "fgsm", "eval", "metrics.json"),
        pgd=[results("sets", "pixel", "eval", "summary.json"), results("eval", VICTIM, "baseline", "pixel", "metrics.json")],
    output:
        md=report(results("tables", "baselines.md"), caption="../report/tables.rst", category="Tables"),
        csv=results("tables", "baselines.csv"),
    params:
        benign=lambda wc, input: str(Path(input.benign).parent),
        attacks=[
            f"{set_dir('sae', 'eval')}={results('eval', VICTIM, 'baseline', 'sae')}",
            attack_dir("sfgsm-ball", HEADLINE),
            attack_dir("random", HEADLINE),
            results("pixel", "fgsm"),
            f"{set_dir('pixel', 'eval')}={results('eval', VICTIM, 'baseline', 'pixel')}",
        ],
        difficulty=config["metrics"]["difficulty"],
        stem=results("tables", "baselines"),
    log:
        results("logs", "baselines.log"),
    benchmark:
        results("benchmarks", "baselines.tsv"),
    shell:
        "{SAE} table attacks --benign {params.benign} --attacks {params.attacks} --paper effectiveness "
        "--difficulty {params.difficulty} --title 'SAEs vs benign (§5.1) on the frames of the fixed evaluation sets: "
        "their iterative sFGSM and pixel PGD, sFGSM over the whole ball, random search, pixel FGSM' "
        "--out {params.stem} > {log} 2>&1"


rule fid:
    input:
        ckpt=checkpoint(VICTIM),
        # the other detectors' backbones: features the attacks did not target, as the paper's
        # Inception was none of its victims (claims C7 is judged in them)
        others=[checkpoint(d) for d in DETECTORS if d != VICTIM],
        sae=results("sets", "sae", "eval", "summary.json"),  # the fixed sets of §5 (workflow/rules/augment.smk)
        pixel=results("sets", "pixel", "eval", "summary.json"),
    output:
        results("tables", "fid.json"),
    params:
        benign=results("data", "eval", "kitti"),
        sae=lambda wc, input: str(Path(input.sae).parent / "kitti"),
        pixel=lambda wc, input: str(Path(input.pixel).parent / "kitti"),
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        results("logs", "fid.log"),
    benchmark:
        results("benchmarks", "fid.tsv"),
    shell:
        "{SAE} fid --checkpoint {input.ckpt} {input.others} --benign {params.benign} --sets sae={params.sae} pixel={params.pixel} "
        "--out {output} > {log} 2>&1"


rule timing:
    input:
        # not read: it makes the benchmark part of every run (a checkout's committed timing table
        # would otherwise count as up to date, having no inputs)
        data_manifest(),
    output:
        report(results("tables", "timing.md"), caption="../report/tables.rst", category="Tables"),
    params:
        sizes=" ".join(f"{w}x{h}" for w, h in config["timing"]["sizes"]),
        model=json_arg(config["detectors"][VICTIM]["model"]),
        device=config["device"],
    threads: 8
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpu(),
    log:
        results("logs", "timing.log"),
    benchmark:
        results("benchmarks", "timing.tsv")
    shell:
        "{SAE} bench attack --sizes {params.sizes} --batches 1 8 --repeats 2 --model {params.model} --paper-victim "
        "--device {params.device} > {output}.tmp 2> {log} && mv {output}.tmp {output}"


rule figure2:
    input:
        ckpt=checkpoint(VICTIM),
        summary=results("attacks", config["attacks"]["method"], HEADLINE, "summary.json"),
    output:
        report(results("figures", "figure2_benign_vs_sae.png"), caption="../report/figure2.rst", category="Figures"),
    params:
        data=results("data", "eval", "vkitti2"),
        attack=lambda wc, input: str(Path(input.summary).parent),
    log:
        results("logs", "figure2.log"),
    benchmark:
        results("benchmarks", "figure2.tsv"),
    shell:
        "{SAE} figure sae --checkpoint {input.ckpt} --data {params.data} --attack {params.attack} "
        "--out {output} --n 2 > {log} 2>&1"


rule attack_diagnostics:
    input:
        results("attacks", "{method}", "{combo}", "summary.json"),
    output:
        report(
            results("figures", "diagnostics", "{method}_{combo}.png"),
            caption="../report/diagnostics.rst",
            category="Attack diagnostics",
        ),
    params:
        attack=lambda wc, input: str(Path(input[0]).parent),
    log:
        results("logs", "diagnostics_{method}_{combo}.log"),
    benchmark:
        results("benchmarks", "diagnostics_{method}_{combo}.tsv"),
    shell:
        "{SAE} figure diagnostics --attack {params.attack} --out {output} > {log} 2>&1"


rule combos_figure:
    input:
        table1=results("tables", "table1.csv"),
        table2=results("tables", "table2.csv"),
    output:
        report(results("figures", "table2_combos.png"), caption="../report/combos.rst", category="Figures"),
    log:
        results("logs", "combos_figure.log"),
    benchmark:
        results("benchmarks", "combos_figure.tsv")
    shell:
        "{SAE} figure combos --tables {input.table1} {input.table2} --out {output} > {log} 2>&1"
