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


def all_outputs():
    return [
        data_manifest(),
        results("tables", "derender.md"),
        results("figures", "render_demo.png"),
        results("figures", "data_variations.png"),
    ]
