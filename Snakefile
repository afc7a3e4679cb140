# sae: the workflow that regenerates the paper's tables and figures.
#   snakemake --cores all                                  default scale, CPU
#   snakemake --cores 2 --configfile config/smoke.yaml     minutes, used by the tests
#   snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml
# Configuration keys are documented in config/README.md and validated before any job starts.
import os

from snakemake.utils import min_version, validate

from sae.config import check_config
from sae.cpu import kernel_env

min_version("8.0")


# The default config, unless the command line names one: a --configfile replaces it rather than
# being merged into it (so a config that lists one detector trains one detector).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")
check_config(config)  # what the schema cannot say: the victim is trained, detector options exist
# Every job inherits this environment: CPU kernels pinned to AVX2, so that any x86-64 machine
# computes the same bits (sae/cpu.py); `cpu_kernels: native` leaves each machine its fastest.
os.environ.update(kernel_env(config.get("cpu_kernels", "avx2")))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/detectors.smk"
include: "workflow/rules/attacks.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/report.smk"


onstart:
    preflight()


rule all:
    input:
        all_outputs(),
        results("tables", "provenance.md"),
        results("figures", "runtime.png"),
