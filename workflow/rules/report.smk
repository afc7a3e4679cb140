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


rule provenance:
    input:
        all_outputs(),
    output:
        report(results("tables", "provenance.md"), caption="../report/provenance.rst", category="Provenance"),
    params:
        config=lambda wc: json_arg(config),
        benchmarks=results("benchmarks"),
    log:
        results("logs", "provenance.log"),
    benchmark:
        results("benchmarks", "provenance.tsv"),
    shell:
        "{SAE} provenance --config-json {params.config} --benchmarks {params.benchmarks} --out {output} > {log} 2>&1"
