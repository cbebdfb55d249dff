"""Where training pairs come from: synthetic pairs from real CTs, and/or a manifest of pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.motion import DEFAULT_ATLAS, MotionAtlas
from ..data.synthetic import SyntheticPairSource
from ..errors import InputError
from .config import Config

VALIDATION_SEED_OFFSET = 1000  # validation pairs never share a seed with training pairs


class InterleavedSource:
    """Alternates between sources by index (index k goes to source k mod n)."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources

    def pair(self, index: int) -> Any:
        count = len(self.sources)
        return self.sources[index % count].pair(index // count)


def _atlas(config: Config) -> MotionAtlas | None:
    """The motion atlas that ``data.motion_atlas`` names (None when empty)."""
    name = config.data.motion_atlas
    if not name:
        return None
    path = DEFAULT_ATLAS if name == "default" else Path(name)
    if not path.is_file():
        raise InputError(path, "motion atlas not found (data.motion_atlas)")
    return MotionAtlas.load(path)


def build_sources(config: Config) -> tuple[Any, Any | None]:
    """(training source, validation source) described by ``config.data``."""
    data, size = config.data, config.model.input_size
    train, validation = [], []
    if data.synthetic_cts:
        options = {"size": size, "kind": data.synthetic_kind, "atlas": _atlas(config),
                   "atlas_share": data.atlas_share, "atlas_exclude": data.atlas_exclude,
                   "augment": data.augment, "affine_free": data.affine_free,
                   "small_motion_share": data.small_motion_share}
        synthetic = SyntheticPairSource(data.synthetic_cts, seed=data.seed, **options)
        train.append(synthetic)
        validation.append(synthetic.with_seed(data.seed + VALIDATION_SEED_OFFSET))
    if data.manifest:
        from ..data.manifest import ManifestPairSource

        manifest = ManifestPairSource(data.manifest, size=size)
        train.append(manifest.training_split(data.validation_pairs))
        validation.append(manifest.validation_split(data.validation_pairs))
    if not train:
        raise InputError(config.source, "no training data: set data.synthetic_cts and/or "
                                        "data.manifest")
    training_source = train[0] if len(train) == 1 else InterleavedSource(train)
    validation_source = validation[0] if len(validation) == 1 else InterleavedSource(validation)
    return training_source, validation_source
