"""Atomic output: write under a temporary name, rename only when complete.

Writers that produce several files for one output (``.mhd`` + ``.raw``) are handled by
writing into a private temporary folder beside the target and moving every file it holds.
Outputs that belong together (one registration's) are made in a :func:`staging_folder` and
moved in by :func:`publish`. Every private folder is named ``.<name>.<random>.partial``; one
that a killed process left behind is removed by the next :func:`staging_folder` there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
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


STAGING_GLOB = ".*.partial"


@contextmanager
def staging_folder(target: str | Path) -> Iterator[Path]:
    """A private folder inside ``target`` (created if needed) for outputs that must appear
    together; :func:`publish` moves them into ``target``. The folder is removed on exit,
    and so are staging folders left in ``target`` by a killed run."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=".outputs.", suffix=".partial", dir=target))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(folder: str | Path) -> None:
    """Remove the ``.<name>.*.partial`` folders in ``folder`` (never plain files)."""
    for entry in Path(folder).glob(STAGING_GLOB):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def publish(staging: Path, target: Path, replaced: Iterable[str], last: str) -> None:
    """Move every file of ``staging`` into ``target``, replacing an earlier set.

    ``last`` (the file that marks a set as complete) is removed first and moved in last, so
    a crash in between leaves a folder without it; the other names in ``replaced`` are
    removed before the new files arrive, so none of an earlier set stays beside the new one.
    """
    (target / last).unlink(missing_ok=True)
    for name in replaced:
        if (target / name).is_file():
            (target / name).unlink()
    produced = sorted(staging.iterdir(), key=lambda path: path.name == last)
    for path in produced:
        os.replace(path, target / path.name)


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
