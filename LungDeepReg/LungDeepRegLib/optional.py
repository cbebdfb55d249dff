"""Imports that only some code paths need.

SimpleITK reads, writes and resamples images. Training from cached crops
(:mod:`LungDeepRegLib.data.crop_cache`) needs torch and numpy alone, and the GPU machines we
train on have no SimpleITK (nor a way to install it). The modules on that path import it
through :func:`optional_module`: where SimpleITK is installed this is the module itself, so
nothing changes; where it is not, a stand-in that names the missing package on first use
instead of failing at import.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class MissingModule:
    """Stands in for a package that is not installed; any attribute access raises."""

    def __init__(self, name: str, error: ImportError) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_error", error)

    def __getattr__(self, attribute: str) -> Any:
        raise ModuleNotFoundError(
            f"{self._name} is not installed ({self._error}); it is needed to read, write or "
            f"resample images ({self._name}.{attribute}). Install it with "
            f"'pip install {self._name}', or train from a crop cache (.npz) made where it is "
            "installed: lungdeepreg train --config CONFIG --export-crops CROPS.npz")


def optional_module(name: str) -> ModuleType | Any:
    """The module ``name``, or a :class:`MissingModule` when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        return MissingModule(name, error)
