"""Synthetic pair source: real CTs in, reproducible pairs with dense ground truth out.

Following Sokooti et al. (2017, MICCAI) and Eppenhof et al. (2020, IEEE TMI), a few real
CTs give unlimited training pairs with known displacement fields; each CT is cropped to the
lungs and resampled to the network grid once (Hering et al. 2021, MedIA: 192x160x192), and
pair ``i`` is drawn from a generator seeded with ``(seed, i)`` only. Training, validation
and benchmark sets therefore differ by their ``seed`` and never share a pair, and any pair
can be rebuilt from its seed and index alone.

This module is the public face of the synthetic data: it re-exports the field generators
(:mod:`.fields`) and the pair builder (:mod:`.pairs`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..preprocess.crop import NETWORK_SIZE
from .augment import augment_pair
from .crop_cache import CroppedCt, crop_ct, is_crop_cache, load_crops
from .fields import (
    breathing_field,
    invert_field,
    random_smooth_field,
    uniform,
    with_random_detail,
    without_affine_part,
)
from .motion import MotionAtlas
from .pairs import DEFAULT_MAX_CC_MM, PairKind, SyntheticPair, draw_field, make_pair

# a CT file or DICOM folder, a crop cache (.npz), or (CT image, lung mask or None)
CtSource = str | Path | tuple
#: Scale of a small-motion pair's field: U(0, this) times its drawn size. The affine-free
#: fields are about 1.5-3 mm in the lung; real pairs of nearby breathing phases leave a
#: fraction of a millimetre after the affine (POPI light 00 -> 10: 0.5 mm mean TRE before
#: any registration), and a scan against itself none at all.
SMALL_MOTION_SCALE = 0.3

__all__ = ["CtSource", "PairKind", "SyntheticPair", "SyntheticPairSource", "breathing_field",
           "invert_field", "make_pair", "pair_seed", "random_smooth_field"]


def pair_seed(seed: int, index: int) -> int:
    """64-bit generator seed of pair ``index`` of the stream ``seed``.

    NumPy's ``SeedSequence`` hashes the pair ``(seed, index)``, so neighbouring seeds or
    indices give unrelated streams (``seed * N + index`` would make streams overlap).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got {seed}, {index}")
    state = np.random.SeedSequence((int(seed), int(index))).generate_state(1, np.uint64)
    return int(state[0])


class SyntheticPairSource(Dataset):
    """Reproducible synthetic pairs from a list of real CTs, usable as a torch ``Dataset``.

    Every CT is read once (:func:`read_image`), its lungs found (:func:`lung_labels`, or the
    given mask split into left and right), cropped (:func:`lung_crop_grid`) and resampled
    to ``size`` (:func:`.crop_cache.crop_ct`), or read so prepared from a crop cache; pairs are
    then made on the fly. Pair ``index`` uses CT ``index % len(self.cases)`` and a generator
    seeded by :func:`pair_seed`, so it is the same in every run, process and ``DataLoader``
    worker.

    Args:
        cts: CT file paths (or DICOM folders), crop caches (``.npz``, :mod:`.crop_cache`: each
            gives the CTs it holds, cropped to ``size``), or ``(ct image, lung mask or
            None)`` pairs.
        size: network grid (x, y, z) voxels.
        seed: the stream; use different seeds for training, validation and benchmarks.
        kind: ``"breathing"``, ``"random"`` or ``"mixed"`` (see :func:`make_pair`).
        length: the nominal ``len()`` (the stream itself is unbounded).
        margin_mm: crop margin around the lungs.
        atlas: real breathing fields (:class:`.motion.MotionAtlas`); a share ``atlas_share``
            of the pairs moves by one of them (composed with a random smooth field of half
            the default amplitudes) instead of the ``kind`` model.
        atlas_exclude: CTs that keep the ``kind`` model: the atlas' own patient(s) (no
            pair then shows a patient's anatomy moving with that patient's own motion) and
            CTs with part of the lungs only (a lung box the atlas cannot be mapped onto).
        augment: degrade both images as clinical scans vary (:func:`.augment.augment_pair`).
        affine_free: remove the least-squares affine part (in the lungs) of every field
            (:func:`.fields.without_affine_part`): the residual motion that the pipeline's
            affine pre-alignment leaves to the network.
        small_motion_share: share of the pairs whose field is scaled by U(0,
            :data:`SMALL_MOTION_SCALE`): breaths between nearby phases, down to no motion.
            Networks trained without them add their usual motion to a pair that barely
            moves: 0.50 mm mean in the lung for two identical images; a round with a
            quarter of such pairs halved that, but found less of the real motion on the
            tuning pairs (Testing/benchmark/results/network_small_motion.md,
            network_motion_share_af4.md). 0 (the default) draws nothing more, so the pairs
            of the other options stay as they were.
        **pair_options: passed to :func:`make_pair` (``max_cc_mm``, ``intensity_change``,
            ``noise``).
    """

    def __init__(self, cts: Sequence[CtSource], size: tuple[int, int, int] = NETWORK_SIZE,
                 seed: int = 0, kind: PairKind = "breathing", length: int = 1000,
                 margin_mm: float = 10.0, atlas: MotionAtlas | None = None,
                 atlas_share: float = 0.5, atlas_exclude: Sequence[str | Path] = (),
                 augment: bool = False, affine_free: bool = False,
                 small_motion_share: float = 0.0, **pair_options: object) -> None:
        if not cts:
            raise ValueError("SyntheticPairSource needs at least one CT")
        pair_seed(seed, 0)  # validates the seed
        self.seed, self.kind, self.length = int(seed), kind, int(length)
        self.pair_options = pair_options
        self.atlas, self.atlas_share, self.augment = atlas, float(atlas_share), augment
        self.affine_free = affine_free
        if not 0.0 <= small_motion_share <= 1.0:
            raise ValueError(f"small_motion_share must lie in [0, 1], got {small_motion_share}")
        self.small_motion_share = float(small_motion_share)
        excluded = {_resolved(path) for path in atlas_exclude}
        self.cases = [crop for ct in cts for crop in _crops(ct, tuple(size), margin_mm)]
        self.atlas_allowed = [not case.atlas_excluded and _resolved(case.name) not in excluded
                              for case in self.cases]

    def with_seed(self, seed: int) -> SyntheticPairSource:
        """The same CTs and options with another stream (e.g. validation pairs): the CTs
        are not read or cropped again."""
        pair_seed(seed, 0)  # validates the seed
        other = copy.copy(self)
        other.seed = int(seed)
        return other

    def pair(self, index: int) -> SyntheticPair:
        """Pair ``index`` of this stream (deterministic in ``(seed, index)``)."""
        number = index % len(self.cases)
        case = self.cases[number]
        generator = torch.Generator().manual_seed(pair_seed(self.seed, index))
        field = None
        uses_atlas = self.atlas is not None and self.atlas_allowed[number]
        if uses_atlas and uniform(generator, 0.0, 1.0) < self.atlas_share:
            field = self._atlas_field(case, generator)
        kind = self.kind if field is None else "atlas"
        if self.affine_free:
            if field is None:
                field = self._drawn_field(case, generator)
            field = without_affine_part(field, case.grid, case.labels)
        if self.small_motion_share and uniform(generator, 0.0, 1.0) < self.small_motion_share:
            if field is None:
                field = self._drawn_field(case, generator)
            field = field * uniform(generator, 0.0, SMALL_MOTION_SCALE)
        pair = make_pair(case.hu, case.labels, case.grid, generator, self.kind,
                         labels=case.labels, field=field, **self.pair_options)
        pair.kind = kind
        return augment_pair(pair, generator) if self.augment else pair

    def _drawn_field(self, case: CroppedCt, generator: torch.Generator) -> torch.Tensor:
        """A field of the ``kind`` model, as :func:`make_pair` would draw it."""
        max_cc_mm = self.pair_options.get("max_cc_mm", DEFAULT_MAX_CC_MM)
        return draw_field(self.kind, case.grid, case.labels, generator, max_cc_mm)

    def _atlas_field(self, case: CroppedCt, generator: torch.Generator) -> torch.Tensor:
        assert self.atlas is not None
        real = self.atlas.draw(case.grid, case.labels, generator)
        return with_random_detail(real, case.grid, generator)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """``pair(index).as_dict()`` plus ``index``: tensors without the batch dimension."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} outside 0..{self.length - 1}")
        items = self.pair(index).as_dict()
        items["index"] = torch.tensor(index)
        return items


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def _crops(source: CtSource, size: tuple[int, int, int], margin_mm: float
           ) -> list[CroppedCt]:
    """The crops of a cache, or of one CT cropped to ``size`` (x, y, z voxels)."""
    if not is_crop_cache(source):
        return [crop_ct(source, size, margin_mm)]
    crops = load_crops(source)
    for crop in crops:
        if crop.grid.size != size:
            raise InputError(source, f"{crop.name} was cropped to {crop.grid.size} voxels, "
                                     f"not {size}: export the crops at this input size")
    return crops
