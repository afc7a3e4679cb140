# Figures (tagged for `snakemake --report`).


rule render_demo:
    output:
        report(
            results("figures", "render_demo.png"),
            caption="../report/render_demo.rst",
            category="Figures",
        ),
    params:
        seed=config["figures"]["demo_seed"],
        size=size_arg(config["figures"]["demo_size"]),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        results("logs", "render_demo.log"),
    benchmark:
        results("benchmarks", "render_demo.tsv")
    shell:
        "{SAE} render demo --out {output} --seed {params.seed} {params.size} > {log} 2>&1"


rule data_figure:
    input:
        data_manifest(),
    output:
        report(
            results("figures", "data_variations.png"),
            caption="../report/data_variations.rst",
            category="Figures",
        ),
    params:
        data=results("data", "eval", "vkitti2"),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        results("logs", "data_figure.log"),
    benchmark:
        results("benchmarks", "data_figure.tsv")
    shell:
        "{SAE} data figure --data {params.data} --out {output} > {log} 2>&1"


rule claims:
    input:
        [results("tables", f"{t}.md") for t in ("table1", "table2", "baselines", *AUGMENT_TABLES, "transfer")],
        results("tables", "fid.json"),
    output:
        md=report(results("tables", "claims.md"), caption="../report/claims.rst", category="Tables"),
        csv=results("tables", "claims.csv"),
        json=results("tables", "claims.json"),
    params:
        results=results(),
        method=config["attacks"]["method"],
        transfer=" ".join(TRANSFER),
        difficulty=config["metrics"]["difficulty"],
        resamples=config["metrics"].get("bootstrap", 200),
        seed=config["seed"],
        stem=results("tables", "claims"),
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        results("logs", "claims.log"),
    benchmark:
        results("benchmarks", "claims.tsv")
    shell:
        "{SAE} table claims --results {params.results} --victim {VICTIM} --method {params.method} "
        "--headline {HEADLINE} --transfer {params.transfer} --difficulty {params.difficulty} "
        "--resamples {params.resamples} --seed {params.seed} --out {params.stem} > {log} 2>&1"


rule provenance:
    input:
        all_outputs(),
    output:
        md=report(results("tables", "provenance.md"), caption="../report/provenance.rst", category="Provenance"),
        figure=report(results("figures", "runtime.png"), caption="../report/runtime.rst", category="Provenance"),
    params:
        config=lambda wc: json_arg(config),
        benchmarks=results("benchmarks"),
    log:
        results("logs", "provenance.log"),
    benchmark:
        results("benchmarks", "provenance.tsv"),
    shell:
        "{SAE} provenance --config-json {params.config} --benchmarks {params.benchmarks} --out {output.md} "
        "--figure {output.figure} > {log} 2>&1"
