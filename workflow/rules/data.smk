# The data: the embedded Virtual-KITTI-like data set (VKITTI2 + KITTI layouts + IR).


rule generate_data:
    output:
        data_manifest(),
    params:
        out=results("data"),
        scale=config["data"]["scale"],
        seed=config["seed"],
        size=size_arg(config["data"]["size"]),
    threads: config["data"]["workers"]
    resources:
        mem_mb=4000,
        runtime=120,
    log:
        results("logs", "generate_data.log"),
    benchmark:
        results("benchmarks", "generate_data.tsv")
    shell:
        "{SAE} data generate --scale {params.scale} --out {params.out} --seed {params.seed} "
        "{params.size} --workers {threads} > {log} 2>&1"


rule derender_report:
    input:
        data_manifest(),
    output:
        md=results("tables", "derender.md"),
        csv=results("tables", "derender.csv"),
    params:
        data=results("data", "eval", "vkitti2"),
        limit=config["data"]["derender_frames"],
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        results("logs", "derender_report.log"),
    benchmark:
        results("benchmarks", "derender_report.tsv")
    shell:
        "{SAE} data derender --data {params.data} --limit {params.limit} --out {output.md} > {log} 2>&1"
