"""Pin the CPU kernels' instruction set, so that CPUs of different widths run the same code paths.

PyTorch, oneDNN, MKL and NumPy each pick their kernels at run time from the instructions the CPU
has. An AVX-512 machine sums in wider vectors than an AVX2 one, so the last bits of a convolution
or a reduction differ, and training amplifies them: the same code, config and seed gave a victim
mAP of 70.2 on one 2-core machine and 66.1 on another (see results/README.md). Each library has
a switch that caps its choice, read from the environment when it starts:

* ``ATEN_CPU_CAPABILITY=avx2`` — PyTorch's own vectorised kernels (element-wise, reductions);
* ``ONEDNN_MAX_CPU_ISA=AVX2`` — oneDNN's convolutions;
* ``MKL_CBWR=AVX2`` — MKL's conditional numerical reproducibility (its matrix products);
* ``NPY_DISABLE_CPU_FEATURES`` — NumPy's AVX-512 dispatch targets (taken from the NumPy
  installed, whose names change between versions).

With them every CPU that has AVX2 (x86-64 since about 2013) runs kernels of the same instruction
set; on an AVX2-only CPU they change nothing. Same thread count too: the default config runs
one-thread jobs. Measured, they are not the whole story: an Intel Xeon with AVX-512 and an AMD
EPYC with AVX2 trained different victims from the same seed under these pins (results/README.md);
what else picks a summation order there (cache-size blocking, vendor dispatch) is still open.
The workflow sets them for every job unless the config's ``cpu_kernels`` is ``native``.

Apart from the pins, :func:`flush_denormals` makes the CPU treat subnormal floats (magnitudes
below ~1.2e-38 in float32) as zero. A trained detector's weights, activations and gradients hold
many of them, and x86 CPUs compute on subnormals through a slow microcode path: a SqueezeDet
training step of the default config (621×188, batch 8, one thread) from the committed pre-trained
weights took 0.548 s with them and 0.423 s flushed, while one from freshly initialised weights
(no subnormals yet) took the same either way; the workflow's pre-training slowed from 0.62 to
0.75 s per step as they accumulated. The flags (x86's FTZ and DAZ) are part of the instruction
set's definition, so flushing gives the same bits on every x86-64 CPU; the ``sae`` command line
sets them first thing, like :func:`sae.memory.retain_freed_memory`.
"""

from __future__ import annotations

#: The values of the config key ``cpu_kernels``.
MODES = ("avx2", "native")
#: The environment variables :func:`kernel_env` may set.
PIN_NAMES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "NPY_DISABLE_CPU_FEATURES")


def flush_denormals() -> bool:
    """Flush subnormal floats to zero in this process's CPU arithmetic (see the module's
    docstring); returns whether the CPU supports it (x86 with SSE3; elsewhere nothing changes).
    Process-wide and sticky: a library user calls it once at the start of a script."""
    import torch

    return bool(torch.set_flush_denormal(True))


def _numpy_dispatch() -> tuple[list[str], dict[str, bool]]:
    """NumPy's run-time dispatch targets and the CPU features it found."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath as umath
    return list(umath.__cpu_dispatch__), dict(umath.__cpu_features__)


def kernel_env(mode: str = "avx2") -> dict[str, str]:
    """Environment variables that pin the CPU kernels (``mode="avx2"``), or none (``"native"``:
    each machine's fastest kernels, whose last bits depend on the CPU)."""
    if mode not in MODES:
        raise ValueError(f"cpu_kernels: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "native":
        return {}
    env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    numpy_off = [name for name in _numpy_dispatch()[0] if name.startswith("AVX512") or name == "X86_V4"]
    if numpy_off:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(numpy_off)
    return env


def describe() -> dict:
    """What this process runs: the CPU's model, PyTorch's kernel level, NumPy's enabled dispatch
    targets and the pinning variables set (for ``sae doctor`` and the provenance table)."""
    import os
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dispatch, features = _numpy_dispatch()
    return {
        "cpu_model": model,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy_dispatch": [d for d in dispatch if features.get(d)],
        "pinned": {k: os.environ[k] for k in PIN_NAMES if k in os.environ},
    }
