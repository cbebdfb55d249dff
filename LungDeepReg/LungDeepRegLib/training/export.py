"""Turn a finished training run into a shipped-style model: weights plus model card."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from ..models import INTENSITY
from ..models.store import save_model
from .trainer import Trainer, TrainingResult, hardware_description


def model_card(trainer: Trainer, result: TrainingResult, command: str | None) -> dict:
    """The JSON model card of a finished run (the store adds the sha256)."""
    config = trainer.config
    return {
        "name": config.train.model_name,
        "version": "1",  # the model's own version; the engine version is added by the store
        "architecture": {"type": "MultilevelNet", "levels": config.model.levels,
                         "base_filters": config.model.base_filters,
                         "depth": config.model.depth, "image_channels": 1},
        "input": {"size_xyz": list(config.model.input_size), "intensity": INTENSITY,
                  "crop": "lung bounding box of the fixed image plus 10 mm, resampled to "
                          "size_xyz"},
        "training": {
            "data": {"synthetic_cts": [Path(p).name for p in config.data.synthetic_cts],
                     "synthetic_kind": config.data.synthetic_kind,
                     "manifest": Path(config.data.manifest).name if config.data.manifest
                     else None},
            "command": command or " ".join(sys.argv),
            "seed": config.train.seed,
            "wall_time_s": round(result.wall_time_s, 1),
            "hardware": hardware_description(trainer.device),
            "world_size": trainer.context.world_size,
            "config": config.to_dict(),
        },
        "metrics": {"validation": result.validation},
        "created": datetime.date.today().isoformat(),
    }


def export_trained_model(trainer: Trainer, result: TrainingResult,
                         command: str | None = None) -> Path:
    """Write ``<output_dir>/<model_name>.safetensors`` with its JSON and Markdown card."""
    card = model_card(trainer, result, command)
    return save_model(trainer.model, result.output_dir, trainer.config.train.model_name, card)
