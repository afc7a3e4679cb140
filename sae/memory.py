"""Keep freed memory in the process instead of handing it back to the kernel (glibc only).

PyTorch's CPU tensors come from ``malloc``. glibc serves every request above its mmap threshold
(at most 32 MB on 64-bit Linux) with a fresh ``mmap`` and returns it with ``munmap`` on free, and
it trims the heap's top whenever more than the trim threshold is free there. A full-frame
temporary of the renderer (a batch of 8 RGB frames at 1242×375 in float32 is 45 MB) is such a
request: every time it is allocated the kernel maps and zero-fills ~11 000 fresh pages, and the
tensor's first write page-faults on each of them. Measured on the 2-core CI machine: allocating
and zero-filling one such buffer 23 ms, 1.8 ms once freed memory is reused; a renderer
forward+backward at 1242×375, batch 8, 1.77 → 1.27 s.

:func:`retain_freed_memory` tells glibc to serve every request from its heap and to never trim
it, so a buffer freed by one step is reused by the next. The process's resident memory then
stays at its peak instead of falling back between steps, and the peak can grow a little with the
heap's fragmentation (the render bench at 1242×375, batch 8: 1527 → 1619 MB). The ``sae``
command line calls it first thing; a library user calls it once at the start of a script.
Elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: ``mallopt`` parameters (glibc's ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_done = False


def retain_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep and reuse freed memory. Returns whether it took effect (once
    per process; later calls return the first call's answer)."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # No mmap for large requests (they come from the heap), and a heap top that is never trimmed.
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done
