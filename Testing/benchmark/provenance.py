"""What every tuning or ablation results file records about its own making."""

from __future__ import annotations

import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path


def command_line(script: str) -> str:
    """The command that ran ``script`` (its ``__file__``), as a user would type it."""
    return "python " + shlex.join([f"Testing/benchmark/{Path(script).name}", *sys.argv[1:]])


def header(script: str, threads: int) -> dict:
    """``date``, ``command`` and ``machine`` of a results file made by ``script``."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command_line(script),
            "machine": f"{platform.machine()}, {threads} thread(s), {platform.platform()}"}
