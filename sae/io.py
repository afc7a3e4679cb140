"""Atomic file output: write to a temporary file beside the target, then rename over it.

An interrupted job leaves either the old file or the new one, never half of one, so a rerun
(by Snakemake or by hand) resumes cleanly. Files get the usual permissions (``0666 & ~umask``),
not the private ones of a temporary file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (LF line endings) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="\n")


#: What :func:`atomic_path` names its temporaries: the target's name, mkstemp's 8 random
#: characters, ``.tmp``.
_TEMPORARY = re.compile(r".+[a-z0-9_]{8}\.tmp")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named as :func:`atomic_path` names its temporaries."""
    return bool(_TEMPORARY.fullmatch(Path(path).name))


def remove_stale_temporaries(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporaries that writers killed inside :func:`atomic_path` left under ``root``
    (SIGKILL skips its cleanup); returns them. Call it only on a folder that no other process is
    writing (a job's own output folder, as it starts)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in (root.rglob("*.tmp") if recursive else root.glob("*.tmp")) if p.is_file() and is_temporary(p)]
    for p in found:
        p.unlink(missing_ok=True)
    return found
