"""Choice of the compute device, shared by registration and training."""

from __future__ import annotations

import warnings

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
