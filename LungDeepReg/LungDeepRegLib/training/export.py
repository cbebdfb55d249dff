"""Turn a finished training run into a shipped-style model: weights, model card and the
learning curve (validation loss and endpoint error against optimiser steps)."""

from __future__ import annotations

import csv
import datetime
import io
import json
import sys
from pathlib import Path

from ..data.crop_cache import cached_ct_names, is_crop_cache
from ..data.motion import DEFAULT_ATLAS
from ..io.atomic import write_text
from ..models import INTENSITY
from ..models.store import file_sha256, save_model
from ..models.store import model_card as stored_card
from .config import Config
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
            "data": _data_summary(config),
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


def _training_cts(paths: list[str]) -> tuple[list[str], list[str]]:
    """File names of the training CTs (a crop cache's own CTs in its place), and of those
    its cache excludes from the motion atlas."""
    names: list[str] = []
    excluded: list[str] = []
    for path in paths:
        if not is_crop_cache(path):
            names.append(Path(path).name)
            continue
        for name, atlas_excluded in cached_ct_names(path):
            names.append(Path(name).name)
            excluded += [Path(name).name] if atlas_excluded else []
    return names, excluded


def _data_summary(config: Config) -> dict:
    data = config.data
    cts, cache_excluded = _training_cts(data.synthetic_cts)
    summary = {"synthetic_cts": cts, "synthetic_kind": data.synthetic_kind,
               "manifest": Path(data.manifest).name if data.manifest else None}
    caches = [Path(p).name for p in data.synthetic_cts if is_crop_cache(p)]
    if caches:
        summary["crop_caches"] = caches
    if data.motion_atlas:
        atlas = DEFAULT_ATLAS if data.motion_atlas == "default" else Path(data.motion_atlas)
        summary.update(motion_atlas=atlas.name, motion_atlas_sha256=file_sha256(atlas),
                       atlas_share=data.atlas_share,
                       atlas_exclude=[Path(p).name for p in data.atlas_exclude]
                       + cache_excluded)
    summary.update(augment=data.augment, affine_free=data.affine_free)
    if data.small_motion_share:
        summary["small_motion_share"] = data.small_motion_share
    if config.train.init_model:  # fine-tuned: which weights it started from (the trainer
        start = stored_card(config.train.init_model)  # loaded them against this checksum)
        summary["initial_model"] = {"name": start["name"], "sha256": start["sha256"]}
    return summary


def export_trained_model(trainer: Trainer, result: TrainingResult,
                         command: str | None = None) -> Path:
    """Write ``<output_dir>/<model_name>.safetensors`` with its JSON and Markdown card, and
    ``<model_name>.learning_curve.csv`` from the run's log."""
    name = trainer.config.train.model_name
    card = model_card(trainer, result, command)
    curve = write_learning_curve(result.output_dir, name, trainer.config)
    if curve is not None:
        card["training"]["learning_curve"] = curve.name
    return save_model(trainer.model, result.output_dir, name, card)


LEARNING_CURVE_SUFFIX = ".learning_curve.csv"


def write_learning_curve(output_dir: Path, name: str, config: Config) -> Path | None:
    """One row per validation (after every epoch): the run's optimiser step counted over all
    levels, the level, the epoch and every validation term (``endpoint_error`` in mm on
    synthetic pairs). None when the log holds no validation."""
    log = Path(output_dir) / "train_log.jsonl"
    if not log.is_file():
        return None
    per_level = config.train.epochs_per_level * config.train.steps_per_epoch
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "validation" not in record:
            continue
        step = record["stage"] * per_level + record["epoch"] * config.train.steps_per_epoch
        rows.append({"step": step, "level": record["stage"] + 1, "epoch": record["epoch"],
                     **{k: round(v, 5) for k, v in record["validation"].items()}})
    if not rows:
        return None
    rows = list({row["step"]: row for row in rows}.values())  # a resumed epoch: last wins
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(Path(output_dir) / f"{name}{LEARNING_CURVE_SUFFIX}", text.getvalue())
