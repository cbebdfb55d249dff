"""The engine's user-facing error: bad input, named by file and problem."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input. The CLI prints ``error: <source>: <problem>`` and exits with code 2."""

    exit_code = 2

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = str(source) if source is not None else None
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)
