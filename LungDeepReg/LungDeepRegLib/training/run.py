"""One training run from a config to a stored model, and the crop cache it can train from.

The logic class (:class:`LungDeepRegLogic`), the command line and the script that trains on
a lent GPU machine (``Testing/benchmark/train_on_device.py``, where there is no SimpleITK)
all call :func:`train_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..data.crop_cache import save_crops
from ..data.synthetic import SyntheticPairSource
from ..errors import InputError
from .config import Config
from .distributed import shutdown
from .export import export_trained_model
from .sources import build_sources
from .trainer import ProgressCallback, Trainer, TrainingResult


def train_model(config: Config, *, resume: bool = False, progress: ProgressCallback | None = None,
                should_stop: Callable[[], bool] | None = None,
                command: str | None = None) -> TrainingResult:
    """Train as ``config`` says; export weights and model card when it finishes."""
    train_source, validation_source = build_sources(config)
    trainer = Trainer(config, train_source, validation_source, progress, should_stop)
    try:
        result = trainer.run(resume=resume)
        if result.status == "finished" and trainer.context.is_main:
            result.model_path = export_trained_model(trainer, result, command)
    finally:
        shutdown(trainer.context)
    return result


def export_crops(config: Config, path: str | Path) -> Path:
    """Write the crop cache of ``data.synthetic_cts`` at ``model.input_size``
    (:mod:`LungDeepRegLib.data.crop_cache`): the same CTs, crops and atlas exclusions that
    training from the CTs uses, so that a machine without SimpleITK trains from it."""
    data = config.data
    if not data.synthetic_cts:
        raise InputError(config.source or "configuration",
                         "data.synthetic_cts is empty: no CT to crop")
    source = SyntheticPairSource(data.synthetic_cts, size=tuple(config.model.input_size),
                                 atlas_exclude=data.atlas_exclude)
    crops = [replace(crop, atlas_excluded=not allowed)
             for crop, allowed in zip(source.cases, source.atlas_allowed, strict=True)]
    return save_crops(path, crops)
