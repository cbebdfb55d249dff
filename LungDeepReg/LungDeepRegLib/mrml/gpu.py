"""Is there a CUDA GPU, and how much of its memory is free? Asked in a short child process.

Why a child: ``torch.cuda.is_available()`` and ``mem_get_info()`` create a CUDA context,
which would then live (and hold GPU memory) inside Slicer's own process for the rest of the
session; and a broken torch (a missing DLL on Windows) would fail inside Slicer. The child
runs with the interpreter the registration uses (PythonSlicer), so it sees the same torch.
The widget starts the probe once and polls it from its timer: the panel never waits.

Standard library only: the widget imports this before torch is installed.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .dependencies import TORCH_REINSTALL, device_warning, torch_problem_message

PROBE_CODE = """
import json
try:
    import torch
    cuda = bool(torch.cuda.is_available())
    free = int(torch.cuda.mem_get_info()[0]) if cuda else None
    print(json.dumps({"cuda": cuda, "free": free}))
except ModuleNotFoundError as error:
    print(json.dumps({"cuda": False, "free": None, "missing": error.name == "torch",
                      "error": f"{type(error).__name__}: {error}"}))
except Exception as error:
    print(json.dumps({"cuda": False, "free": None, "error": f"{type(error).__name__}: {error}"}))
"""
PROBE_TIMEOUT_S = 120.0  # a first torch import on a cold disk can take a minute


@dataclass(frozen=True)
class GpuStatus:
    """What the child found. ``error``: torch did not import (``missing``: not installed)."""

    cuda_available: bool = False
    free_bytes: int | None = None
    error: str = ""
    missing: bool = False

    def warning(self, choice: str) -> str:
        """The panel's device line for the device ``choice`` (Auto, CPU, CUDA)."""
        if self.missing:
            return (f"PyTorch is not installed yet: Apply offers to install it (or run "
                    f"{TORCH_REINSTALL.replace(' --force-reinstall', '')}).")
        if self.error:
            return torch_problem_message(self.error)
        return device_warning(choice, self.cuda_available, self.free_bytes)


class GpuProbe:
    """:data:`PROBE_CODE` in a child process, polled without blocking."""

    def __init__(self, interpreter: str | Path, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.interpreter, self.timeout_s = str(interpreter), timeout_s
        self.process: subprocess.Popen | None = None
        self.result: GpuStatus | None = None
        self._started = 0.0

    def start(self) -> GpuProbe:
        self._started = time.monotonic()
        self.process = subprocess.Popen(
            [self.interpreter, "-c", PROBE_CODE], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace")
        return self

    def poll(self) -> GpuStatus | None:
        """The status once the child has answered (or failed, or timed out), else None."""
        if self.result is not None or self.process is None:
            return self.result
        if self.process.poll() is None:
            if time.monotonic() - self._started < self.timeout_s:
                return None
            self.process.kill()
        stdout, stderr = self.process.communicate()
        self.result = parse_probe_output(stdout, stderr, self.process.returncode)
        return self.result

    def wait(self, timeout_s: float | None = None) -> GpuStatus | None:
        """Poll until answered (scripts and tests; the widget polls from its timer)."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while (status := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return status


def parse_probe_output(stdout: str, stderr: str, returncode: int | None) -> GpuStatus:
    """The child's JSON line, or an error status naming what went wrong (a crash while
    importing torch prints no JSON at all)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        return GpuStatus(bool(answer.get("cuda")), answer.get("free"),
                         str(answer.get("error") or ""), bool(answer.get("missing")))
    last = (stderr.strip().splitlines() or [f"exit code {returncode}"])[-1]
    return GpuStatus(error=f"the GPU check failed: {last}")
