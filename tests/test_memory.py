"""sae.memory: glibc keeps freed memory, so a large buffer allocated again costs no page faults."""

import resource
import sys

import pytest
import torch

from sae.memory import retain_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_large_buffer_is_reused_without_page_faults():
    assert retain_freed_memory()  # (conftest called it already; the answer stays)
    n = 48 * 2**20 // 4  # 48 MB of float32: above glibc's largest mmap threshold (32 MB)
    for _ in range(2):
        torch.zeros(n)  # allocated and freed (the heap grows to hold it)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.zeros(n)  # each freed at once; without retain_freed_memory each maps fresh pages
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # 5 fresh 48 MB buffers would cost ≥ 5 × 12 000 minor faults of 4 kB pages
    assert faults < 2000, faults
