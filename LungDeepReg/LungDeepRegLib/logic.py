"""The one logic class behind the Slicer widget, the command line and batch scripts.

``LungDeepRegLogic`` is importable without Slicer; the Slicer module re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .pipeline.batch import read_batch_manifest, run_batch
from .pipeline.demo import build_demo_pair
from .pipeline.register import (
    RegistrationInputs,
    RegistrationOptions,
    RegistrationResult,
)
from .pipeline.register import register as register_pair
from .training.config import Config, load_config
from .training.run import export_crops, train_model
from .training.trainer import TrainingResult

Progress = Callable[[float, str], None]


class LungDeepRegLogic:
    """Registration, batch, demo and training entry points (parameters in, results out).

    The Slicer widget fills these parameters (in a background ``PythonSlicer`` process that
    runs the command line, which calls this class); scripts call it directly.
    """

    def register(self, inputs: RegistrationInputs, out_dir: str | Path,
                 options: RegistrationOptions | None = None, *,
                 progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None) -> RegistrationResult:
        """Register one pair and write the field, warped images, metrics and QA report."""
        return register_pair(inputs, Path(out_dir), options, progress, should_stop)

    def batch(self, manifest: str | Path, out_dir: str | Path,
              options: RegistrationOptions | None = None,
              shard: tuple[int, int] = (1, 1),
              on_pair: Callable[[object, dict], None] | None = None) -> list[dict]:
        """Register every pair of a CSV manifest (failures isolated, finished pairs skipped)."""
        return run_batch(read_batch_manifest(manifest), Path(out_dir),
                         options or RegistrationOptions(), shard, on_pair)

    def demo_pair(self, folder: str | Path) -> RegistrationInputs:
        """Write the bundled sample breathing pair (with landmarks) into ``folder``."""
        return build_demo_pair(Path(folder))

    def train(self, config: Config | str | Path | None = None, *, resume: bool = False,
              overrides: list[str] | None = None,
              progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None,
              command: str | None = None) -> TrainingResult:
        """Train a multilevel model as ``config`` describes (a Config, a TOML path, or None
        for the defaults); export weights and model card when it finishes."""
        if not isinstance(config, Config):
            config = load_config(config, overrides)
        return train_model(config, resume=resume, progress=progress, should_stop=should_stop,
                           command=command)

    def export_crops(self, config: Config | str | Path | None, path: str | Path, *,
                     overrides: list[str] | None = None) -> Path:
        """Write the training CTs of ``config`` as a crop cache (``.npz``) that trains
        where SimpleITK is not installed (e.g. a GPU machine)."""
        if not isinstance(config, Config):
            config = load_config(config, overrides)
        return export_crops(config, path)
