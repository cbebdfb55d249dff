"""Atomic output: write under a temporary name, rename only when complete.

Writers that produce several files for one output (``.mhd`` + ``.raw``) are handled by
writing into a private temporary folder beside the target and moving every file it holds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path with the same file name; move it to ``path`` on success.

    On an exception nothing is left behind, and an existing file at ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial",
                                    dir=target.parent))
    try:
        yield staging / target.name
        mode = 0o666 & ~_umask()  # some writers create 0600 files; outputs are shared
        for produced in staging.iterdir():
            os.chmod(produced, mode)
            os.replace(produced, target.parent / produced.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, data: object) -> Path:
    """Write JSON atomically (indented, NaN written as null so strict parsers read it)."""
    def clean(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return write_text(path, json.dumps(clean(data), indent=2) + "\n")
