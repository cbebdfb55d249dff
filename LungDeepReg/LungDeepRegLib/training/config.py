"""Training configuration: one TOML file read by the CLI and the logic class alike.

Defaults live in ``default.toml`` beside this module; a user file overrides any subset, and
``overrides`` (``section.key=value`` strings from ``--set``) override both.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..losses import TUNED_T, TUNED_WEIGHTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")


@dataclass
class ModelConfig:
    levels: int = 3
    base_filters: int = 16
    depth: int = 3
    input_size: tuple[int, int, int] = (96, 80, 96)


@dataclass
class LossConfig:
    similarity: str = "ngf"
    ngf: float = TUNED_WEIGHTS.ngf
    ngf_epsilon: float | str = "auto"
    curvature: float = TUNED_WEIGHTS.curvature
    mask: float = TUNED_WEIGHTS.mask
    volume: float = TUNED_WEIGHTS.volume
    keypoints: float = TUNED_WEIGHTS.keypoints
    supervised: float = 1.0
    t_coarsest: float = TUNED_T

    def t_for_stage(self, stage: int) -> float:
        """psi_t barrier: ``t_coarsest`` on the coarsest level, halved per finer level."""
        return self.t_coarsest / 2**stage


@dataclass
class DataConfig:
    synthetic_cts: list[str] = field(default_factory=list)
    synthetic_kind: str = "mixed"
    manifest: str = ""
    seed: int = 0
    validation_pairs: int = 4


@dataclass
class TrainConfig:
    epochs_per_level: int = 4
    steps_per_epoch: int = 50
    pairs_per_step: int = 1
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    checkpoint_every: int = 25
    output_dir: str = "training-output"
    model_name: str = "lungdeepreg-custom"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = ""  # the file it was read from (for the model card)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "data": DataConfig, "train": TrainConfig}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the user's TOML file, then ``section.key=value`` overrides."""
    values = _read_toml(DEFAULT_CONFIG)
    base = DEFAULT_CONFIG.parent
    if path is not None:
        path = Path(path)
        for section, entries in _read_toml(path).items():
            values.setdefault(section, {}).update(entries)
        base = path.parent
    for item in overrides or []:
        section, key, value = _parse_override(item)
        values.setdefault(section, {})[key] = value
    config = Config(source=str(path or DEFAULT_CONFIG))
    for section, cls in SECTIONS.items():
        setattr(config, section, _build(cls, values.get(section, {}), section, path))
    _resolve_paths(config, base, output_relative_to_file=path is not None)
    return config


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (checkpoints, cards)."""
    config = Config(source=values.get("source", ""))
    for section, cls in SECTIONS.items():
        setattr(config, section, _build(cls, values.get(section, {}), section, None))
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, "configuration file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise InputError(path, f"is not valid TOML ({error})") from None


def _build(cls: type, entries: dict[str, Any], section: str, source: Path | None) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(entries) - known)
    if unknown:
        raise InputError(source or "configuration",
                         f"unknown key(s) in [{section}]: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    entries = dict(entries)
    if "input_size" in entries:
        entries["input_size"] = tuple(int(v) for v in entries["input_size"])
    return cls(**entries)


def _parse_override(item: str) -> tuple[str, str, Any]:
    name, separator, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not separator or not dot or section not in SECTIONS:
        raise InputError(item, "an override is section.key=value with section one of "
                               f"{', '.join(SECTIONS)}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare string
    return section, key.strip(), value


def _resolve_paths(config: Config, base: Path, output_relative_to_file: bool) -> None:
    """Data paths are relative to the config file; so is the output folder when the user's
    file names it (the default ``training-output`` is relative to the working folder)."""
    data = config.data
    output = Path(config.train.output_dir)
    if output_relative_to_file and not output.is_absolute():
        config.train.output_dir = str((base / output).resolve())
    data.synthetic_cts = [str((base / p).resolve()) if not Path(p).is_absolute() else p
                          for p in data.synthetic_cts]
    if data.manifest and not Path(data.manifest).is_absolute():
        data.manifest = str((base / data.manifest).resolve())
