"""The one logic class behind the Slicer widget, the command line and batch scripts.

``LungDeepRegLogic`` is importable without Slicer; the Slicer module re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .training.config import Config, load_config
from .training.distributed import shutdown
from .training.export import export_trained_model
from .training.sources import build_sources
from .training.trainer import Trainer, TrainingResult


class LungDeepRegLogic:
    """Registration, training and evaluation entry points (parameters in, results out)."""

    def train(self, config: Config | str | Path | None = None, *, resume: bool = False,
              overrides: list[str] | None = None,
              progress: Callable[[float, str], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              command: str | None = None) -> TrainingResult:
        """Train a multilevel model as ``config`` describes (a Config, a TOML path, or None
        for the defaults); export weights and model card when it finishes."""
        if not isinstance(config, Config):
            config = load_config(config, overrides)
        train_source, validation_source = build_sources(config)
        trainer = Trainer(config, train_source, validation_source, progress, should_stop)
        try:
            result = trainer.run(resume=resume)
            if result.status == "finished" and trainer.context.is_main:
                result.model_path = export_trained_model(trainer, result, command)
        finally:
            shutdown(trainer.context)
        return result
