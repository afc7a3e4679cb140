"""Pinned CPU kernels (sae/cpu.py): the environment that makes every x86-64 CPU run kernels of one
instruction set, and what it does and does not change."""

import json
import os
import subprocess
import sys

import pytest
import torch

from sae.cpu import PIN_NAMES, kernel_env
from sae.doctor import check

# A child process's view: torch's kernel level, NumPy's enabled dispatch targets, and the bits of
# a detector's training steps, a rendered frame with its θ-gradients and a matrix product.
_PROBE = r"""
import hashlib, json, numpy as np, torch
torch.set_num_threads(1)
from numpy._core._multiarray_umath import __cpu_dispatch__ as d, __cpu_features__ as f
from sae.detectors.train import build_detector
from sae.data.street import street_scene
from sae.render.renderer import render
from sae.scene import editor
digest = hashlib.sha256()
torch.manual_seed(0)
m = build_detector("squeezedet", (64, 160), {"width": 0.25, "dropout": 0.0, "batch_norm": True}).train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
x = torch.rand(4, 3, 64, 160, generator=torch.Generator().manual_seed(1))
tg = [{"boxes": torch.tensor([[40.0, 10.0, 90.0, 40.0]]), "labels": torch.tensor([0])}] * 4
for _ in range(2):
    loss = m.loss(m(x), tg)["total"]; opt.zero_grad(); loss.backward(); opt.step()
s = street_scene(seed=5, height=60, width=200, n_cars=3, n_pedestrians=1, n_cyclists=0)
th = editor.zero_theta(s, requires_grad=True)
img = render(editor.apply(s, th)).image
(img * torch.linspace(0, 1, img.numel(), dtype=img.dtype).reshape(img.shape)).sum().backward()
a = np.random.default_rng(2).random((200, 300))
for t in [*m.state_dict().values(), img, *[v.grad for v in th.values()], torch.from_numpy(np.exp(a) @ a.T)]:
    digest.update(t.detach().contiguous().numpy().tobytes())
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "numpy": [t for t in d if f.get(t)], "bits": digest.hexdigest()}))
"""


def _probe(env: dict) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in PIN_NAMES}
    proc = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_kernel_env_modes():
    assert kernel_env("native") == {}
    env = kernel_env("avx2")
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["MKL_CBWR"] == "AVX2"
    # NumPy's AVX-512 targets, by the names the installed NumPy dispatches
    assert all(t.startswith("AVX512") or t == "X86_V4" for t in env.get("NPY_DISABLE_CPU_FEATURES", "").split())
    with pytest.raises(ValueError, match="cpu_kernels: 'fast'"):
        kernel_env("fast")


_NATIVE = torch.backends.cpu.get_cpu_capability()


@pytest.mark.skipif(_NATIVE not in ("AVX2", "AVX512"), reason="not an x86-64 CPU with AVX2")
def test_pinned_kernels_run_avx2_and_change_nothing_on_an_avx2_cpu():
    """Pinned, torch runs AVX2 kernels and NumPy no AVX-512 target; where AVX2 is the CPU's best
    (the machine the committed tables come from), the pins change no bit — and the probe does
    see the kernel level (torch's generic kernels give other bits), so equal bits mean the same
    kernels, not a probe blind to them."""
    pinned = _probe(kernel_env("avx2"))
    assert pinned["capability"] == "AVX2"
    assert not [t for t in pinned["numpy"] if t.startswith("AVX512") or t == "X86_V4"], pinned
    generic = _probe({"ATEN_CPU_CAPABILITY": "default"})
    assert generic["bits"] != pinned["bits"]
    if _NATIVE == "AVX2":
        assert _probe({})["bits"] == pinned["bits"]


def test_doctor_warns_when_pinned_kernels_are_not_avx2(monkeypatch):
    for k, v in kernel_env("avx2").items():
        monkeypatch.setenv(k, v)
    result = check({"device": "cpu", "cpu_kernels": "avx2"})
    assert result["info"]["cpu_kernels"] == "avx2" and not result["problems"]
    import sae.cpu

    real = sae.cpu.describe
    monkeypatch.setattr(sae.cpu, "describe", lambda: {**real(), "torch_cpu_capability": "DEFAULT"})
    result = check({"device": "cpu", "cpu_kernels": "avx2"})
    assert any("runs DEFAULT kernels" in w for w in result["warnings"]), result
    assert not result["problems"]  # a warning: the run works, its last bits are this CPU's
    native = check({"device": "cpu", "cpu_kernels": "native"})
    assert native["info"]["cpu_kernels"] == "native" and not native["warnings"]
