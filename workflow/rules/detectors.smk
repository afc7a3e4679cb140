# The victims: pre-train on the KITTI-like split, fine-tune on identity re-rendered
# VKITTI-like frames (the paper's protocol), evaluate on the evaluation split.


rule pretrain:
    input:
        data_manifest(),
    output:
        checkpoint("{detector}", "pretrain"),
    priority: 20  # every attack and recipe waits for the victim
    params:
        args=lambda wc: train_args(wc.detector, "pretrain"),
        data=results("data", "pretrain", "kitti"),
        out=lambda wc, output: str(Path(output[0]).parent),
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpu(),
    log:
        results("logs", "pretrain_{detector}.log"),
    benchmark:
        results("benchmarks", "pretrain_{detector}.tsv")
    shell:
        "{SAE} train {params.args} --data {params.data} --out {params.out} > {log} 2>&1"


rule finetune:
    input:
        checkpoint("{detector}", "pretrain"),
    output:
        checkpoint("{detector}", "finetune"),
    priority: 20  # every attack and recipe waits for the victim
    params:
        args=lambda wc: train_args(wc.detector, "finetune"),
        data=results("data", "finetune", "vkitti2"),
        pretrain_data=results("data", "pretrain", "kitti"),
        mix=config["train"]["finetune_pretrain_weight"],
        out=lambda wc, output: str(Path(output[0]).parent),
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpu(),
    log:
        results("logs", "finetune_{detector}.log"),
    benchmark:
        results("benchmarks", "finetune_{detector}.tsv")
    shell:
        "{SAE} train {params.args} --rerender --init {input} "
        "--data {params.data}:1 {params.pretrain_data}:{params.mix} --out {params.out} > {log} 2>&1"


rule victims_table:
    input:
        [results("eval", d, "baseline", "benign", "metrics.json") for d in DETECTORS],
    output:
        md=report(results("tables", "victims.md"), caption="../report/tables.rst", category="Tables"),
        csv=results("tables", "victims.csv"),
    params:
        models=" ".join(f"{d}={results('models', d)}:{results('eval', d, 'baseline', 'benign')}" for d in DETECTORS),
        difficulty=config["metrics"]["difficulty"],
        stem=results("tables", "victims"),
    log:
        results("logs", "victims_table.log"),
    benchmark:
        results("benchmarks", "victims_table.tsv")
    shell:
        "{SAE} table victims --models {params.models} --difficulty {params.difficulty} "
        "--title 'The victims on the benign evaluation split (identity re-rendered)' --out {params.stem} > {log} 2>&1"
