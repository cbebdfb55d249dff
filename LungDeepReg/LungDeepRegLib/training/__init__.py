"""Progressive, resumable, optionally distributed training of the multilevel network."""

from .config import Config, load_config
from .trainer import Trainer, TrainingResult

__all__ = ["Config", "Trainer", "TrainingResult", "load_config"]
