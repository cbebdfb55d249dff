"""Training configuration: one TOML file read by the CLI and the logic class alike.

Defaults live in ``default.toml`` beside this module; a user file overrides any subset, and
``overrides`` (``section.key=value`` strings from ``--set``) override both.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..losses import SIMILARITY_TERMS, TUNED_T, TUNED_WEIGHTS, LossWeights
from ..models.store import is_model_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")
#: Similarity weights that are not ``[loss]`` keys (``similarity`` chooses the term).
CHOSEN_BY_SIMILARITY = tuple(name for name in SIMILARITY_TERMS if name != "ngf")
#: The :class:`LossWeights` fields that are flat keys of ``[loss]``.
WEIGHT_KEYS = tuple(f.name for f in fields(LossWeights) if f.name not in CHOSEN_BY_SIMILARITY)


@dataclass
class ModelConfig:
    levels: int = 3
    base_filters: int = 16
    depth: int = 3
    input_size: tuple[int, int, int] = (96, 80, 96)


@dataclass
class LossConfig:
    """The ``[loss]`` section: the loss weights plus the settings that are not weights.

    ``weights`` is the one type of the weights (the instance optimisation's
    :class:`~LungDeepRegLib.pipeline.refine_config.RefineConfig` holds one too). In TOML, and
    in :meth:`Config.to_dict` (checkpoints, model cards), they stay flat keys of ``[loss]``
    (``curvature = 30``, ``--set loss.curvature=30``), the format files and shipped model
    cards were written in. ``ncc`` and ``mse`` are not keys: ``similarity``
    picks the one similarity term and ``ngf`` is its weight
    (:meth:`~LungDeepRegLib.losses.LossWeights.with_similarity`).
    """

    weights: LossWeights = TUNED_WEIGHTS
    similarity: str = "ngf"
    ngf_epsilon: float | str = "auto"
    supervised: float = 1.0
    t_coarsest: float = TUNED_T

    def __post_init__(self) -> None:
        unused = [name for name in CHOSEN_BY_SIMILARITY if getattr(self.weights, name)]
        if unused:  # they would be dropped silently by build_loss and by to_dict
            raise ValueError(f"loss weights {unused} are set by similarity, not directly")

    def t_for_stage(self, stage: int) -> float:
        """psi_t barrier: ``t_coarsest`` on the coarsest level, halved per finer level."""
        return self.t_coarsest / 2**stage

    @staticmethod
    def keys() -> list[str]:
        """The flat keys of ``[loss]``."""
        settings = [f.name for f in fields(LossConfig) if f.name != "weights"]
        return settings + list(WEIGHT_KEYS)

    @classmethod
    def from_flat(cls, entries: dict[str, Any]) -> LossConfig:
        """From flat ``[loss]`` keys; weights not given keep the tuned values."""
        weights = {key: entries[key] for key in WEIGHT_KEYS if key in entries}
        settings = {key: value for key, value in entries.items() if key not in WEIGHT_KEYS}
        return cls(weights=replace(TUNED_WEIGHTS, **weights), **settings)

    def to_flat(self) -> dict[str, Any]:
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "weights"}
        return {**settings, **{key: getattr(self.weights, key) for key in WEIGHT_KEYS}}


@dataclass
class DataConfig:
    synthetic_cts: list[str] = field(default_factory=list)
    synthetic_kind: str = "mixed"
    motion_atlas: str = ""  # "" none, "default" the shipped atlas, or an .npz path
    atlas_share: float = 0.5  # of the synthetic pairs that move by a real atlas field
    atlas_exclude: list[str] = field(default_factory=list)  # CTs that keep `synthetic_kind`
    augment: bool = False  # blur, HU offset, noise, cut moving field of view
    affine_free: bool = False  # remove each field's affine part (what the affine leaves)
    small_motion_share: float = 0.0  # pairs whose motion is scaled toward none (nearby phases)
    manifest: str = ""
    seed: int = 0
    validation_pairs: int = 4


@dataclass
class TrainConfig:
    epochs_per_level: int = 4
    steps_per_epoch: int = 50
    pairs_per_step: int = 1
    pair_workers: int = 0  # processes that make training pairs ahead (0: the trainer itself)
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    checkpoint_every: int = 25
    output_dir: str = "training-output"
    model_name: str = "lungdeepreg-custom"
    # a stored model (name or path) to start from instead of random weights: fine-tuning
    init_model: str = ""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = ""  # the file it was read from (for the model card)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "loss": self.loss.to_flat()}


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
    known = set(LossConfig.keys()) if cls is LossConfig else {f.name for f in fields(cls)}
    unknown = sorted(set(entries) - known)
    if unknown:
        raise InputError(source or "configuration",
                         f"unknown key(s) in [{section}]: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    entries = dict(entries)
    if "input_size" in entries:
        entries["input_size"] = tuple(int(v) for v in entries["input_size"])
    if cls is LossConfig:
        try:
            return LossConfig.from_flat(entries)
        except ValueError as error:  # e.g. a negative weight (LossWeights checks them)
            raise InputError(source or "configuration", f"[{section}]: {error}") from None
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
    data.synthetic_cts = _resolved_list(base, data.synthetic_cts)
    data.atlas_exclude = _resolved_list(base, data.atlas_exclude)
    if data.motion_atlas not in ("", "default") and not Path(data.motion_atlas).is_absolute():
        data.motion_atlas = str((base / data.motion_atlas).resolve())
    if data.manifest and not Path(data.manifest).is_absolute():
        data.manifest = str((base / data.manifest).resolve())
    init = config.train.init_model
    if init and is_model_path(init) and not Path(init).is_absolute():
        config.train.init_model = str((base / init).resolve())  # a path, not a model name


def _resolved_list(base: Path, paths: list[str]) -> list[str]:
    return [str((base / p).resolve()) if not Path(p).is_absolute() else p for p in paths]
