"""Choice of the compute device, shared by registration and training."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    A CUDA device asked for on a machine without CUDA falls back to the CPU with a warning.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA was requested but is not available: running on the CPU",
                      stacklevel=2)
        return torch.device("cpu")
    return device


DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_problem(name: str) -> str | None:
    """Why ``name`` cannot run a registration here, or None when it can.

    Names other than ``auto``, ``cpu``, ``cuda`` and ``cuda:N`` are refused (torch knows more
    device types, but the engine is tested on these only), and so is CUDA on a machine
    without it: a user who asks for the GPU by name should not get a silent CPU run.
    """
    if not DEVICE_NAME.fullmatch(name):
        return f"unknown device {name!r}; use auto, cpu, cuda or cuda:N"
    if not name.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return "CUDA was requested but is not available here; use --device cpu or auto"
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return (f"there is no CUDA device {index}: this machine has "
                f"{torch.cuda.device_count()}")
    return None


def cpu_count() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_count(requested: int | None = None) -> int:
    """The CPU thread policy of every command.

    ``requested`` (``--threads``) wins, then ``LUNGDEEPREG_THREADS``, then ``OMP_NUM_THREADS``;
    otherwise all CPUs of the process divided among the processes of one machine under
    ``torchrun`` (``LOCAL_WORLD_SIZE``), so that shards never oversubscribe the cores.
    The package also makes idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``, see
    ``LungDeepRegLib/__init__.py``), which keeps a busy machine from multiplying step times.
    """
    for value in (requested, os.environ.get("LUNGDEEPREG_THREADS"),
                  os.environ.get("OMP_NUM_THREADS")):
        if value not in (None, "", 0, "0"):
            return max(1, int(value))
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpu_count() // max(1, local_processes))


def configure_threads(requested: int | None = None) -> int:
    """Apply :func:`thread_count` to torch (intra-op) and SimpleITK; returns the count."""
    import SimpleITK as sitk  # SimpleITK's filters use their own thread pool

    count = thread_count(requested)
    torch.set_num_threads(count)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    return count


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with at most ``count`` torch CPU threads, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(count, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
