"""Lung crops of a pair for the network and the refinement, and the refinement schedule.

A crop is the fixed lungs' bounding box (plus a margin) resampled to a given size, with the
moving image resampled onto it through a pre-alignment; :func:`crops_once` makes each crop
once per pre-alignment and size, as several starts of :mod:`.multistart` share them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np
import SimpleITK as sitk
import torch

from ..preprocess.crop import lung_crop_grid, normalize_ct, resample_to_grid
from ..spatial import Grid, image_to_tensor
from .multistart import CropInputs, border_extended, moving_coverage
from .refine_config import RefineConfig, with_similarity


class PairImages(Protocol):
    """What a crop needs of a prepared pair (:class:`.register.PreparedPair`)."""

    fixed: sitk.Image
    moving: sitk.Image
    fixed_lungs: sitk.Image


#: How much finer than the fixed CT the refinement crop may be: 1, the CT's own voxels. On
#: the POPI light tuning pairs (5x5x6 mm) twice as fine (a 96x80x95 crop instead of
#: 66x51x48) gave the same mean TRE, 1.874 against 1.879 mm, for about 4x the optimisation
#: time (Testing/benchmark/results/crop_upsampling.md); an earlier try with a 96x80x96 crop
#: had given 1.78, so differences of 0.1 mm per pair are within what one more or one fewer
#: crop slice changes.
MAX_UPSAMPLING = 1.0
#: Except along thick slices: an axis whose spacing is at least ``THICK_SLICE_RATIO`` times
#: the CT's finest may get a crop ``THICK_SLICE_UPSAMPLING`` times finer than its slices,
#: so that a 0.8x0.8x5 mm CT is refined on about 3x3x2.5 mm voxels instead of 3x3x5 mm,
#: where the in-plane detail meets an isotropic regulariser. Chosen on the synthetic tuning
#: pairs with 5 mm slices (the bundled POPI sample resampled; seeds pair_seed(31337, i)):
#: lung EPE 0.546 -> 0.496 mm, every pair better, for 1.5x the optimisation time
#: (Testing/benchmark/results/crop_upsampling_slices.md). A CT with near-isotropic voxels
#: (POPI light, 5x5x6 mm) is unchanged: there 2x gave no gain for 4x the time.
THICK_SLICE_UPSAMPLING = 2.0
THICK_SLICE_RATIO = 2.0
#: The volume change weight (gamma) on CTs with thick slices instead of the tuned 3: their
#: images pull less along the slices, and the volume term held the compression of the
#: lungs back. Synthetic tuning pairs with 5 mm slices (seeds pair_seed(31337, 0..3)):
#: mean lung EPE 0.497 (gamma 3), 0.402 (1), 0.397 (0.5), 0.407 (0.3) mm, every pair better
#: at 1, no folding (Testing/benchmark/results/refinement_tuning_volume_slices.json). Not
#: on near-isotropic CTs: on the 2 mm pairs 1 was better too (0.353 -> 0.332 mm), but on
#: the real POPI light tuning pairs (5x5x6 mm) worse, 1.54 / 1.58 -> 1.55 / 1.62 mm mean
#: TRE (refinement_ablation.md, section 5).
THICK_SLICE_VOLUME_WEIGHT = 1.0


def thick_axes(spacing: tuple[float, ...]) -> np.ndarray:
    """Per axis, whether a CT of ``spacing`` has thick slices along it: at least
    :data:`THICK_SLICE_RATIO` times its finest spacing."""
    spacing = np.asarray(spacing, dtype=float)
    return spacing >= THICK_SLICE_RATIO * spacing.min()


def finest_crop_spacing(spacing: tuple[float, ...]) -> np.ndarray:
    """The finest crop spacing per axis (x, y, z) the refinement may use on a CT of
    ``spacing``: :data:`MAX_UPSAMPLING` times finer, thick slices
    :data:`THICK_SLICE_UPSAMPLING` times."""
    return np.asarray(spacing, dtype=float) / np.where(
        thick_axes(spacing), max(THICK_SLICE_UPSAMPLING, MAX_UPSAMPLING), MAX_UPSAMPLING)


def native_size(fixed: sitk.Image, lungs: sitk.Image, size: tuple[int, int, int],
                config: RefineConfig | None = None) -> tuple[int, int, int]:
    """``size`` (or, with ``config``, the crop its optional fine level needs:
    :meth:`RefineConfig.crop_size`), but never more than :data:`MAX_UPSAMPLING` times finer
    than the fixed image's own voxels over the lung crop (a coarse CT gains nothing from an
    upsampled refinement grid, only cost), along thick slices
    :data:`THICK_SLICE_UPSAMPLING` times (:func:`finest_crop_spacing`)."""
    crop = lung_crop_grid(fixed, lungs, size=size)
    extent = np.asarray(crop.spacing) * (np.asarray(crop.size) - 1)
    if config is not None:
        size = config.crop_size(tuple(float(e) for e in extent))
    finest = finest_crop_spacing(fixed.GetSpacing())
    native = np.ceil(extent / finest).astype(int) + 1
    return tuple(int(max(8, min(n, s))) for n, s in zip(native, size, strict=True))


def crop_inputs(pair: PairImages, affine: sitk.Transform, size: tuple[int, int, int],
               device: torch.device
               ) -> tuple[Grid, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed lung crop and the affinely resampled moving image on it, network-scaled, and
    the fixed lung mask on the crop (float 0/1)."""
    grid = lung_crop_grid(pair.fixed, pair.fixed_lungs, size=size)
    fixed = resample_to_grid(pair.fixed, grid)
    # anti-aliased like the fixed image, so both have the same detail at the crop's spacing
    moving = resample_to_grid(pair.moving, grid, transform=affine)
    as_input = lambda image: normalize_ct(image_to_tensor(image)[0]).to(device)  # noqa: E731
    mask = image_to_tensor(resample_to_grid(pair.fixed_lungs, grid, "nearest", 0))[0]
    return grid, as_input(fixed), as_input(moving), (mask > 0).float().to(device)


def refine_config(iterations: int | None, after_network: bool,
                  fine_spacing_mm: float | None = None, similarity: str = "ngf",
                  similarity_weight: float | None = None, region: str = "crop",
                  fixed_spacing: tuple[float, ...] | None = None) -> RefineConfig:
    """The tuned schedule (from identity, or after a network), with the fine level at
    ``fine_spacing_mm`` on CTs finer than the 96x80x96 level when asked for;
    ``iterations`` caps every level's steps (the fine level's too); ``similarity`` (and
    its weight) as :func:`.refine_config.with_similarity`, measured over ``region``
    (:data:`.refine_config.REGIONS`). A fixed image of ``fixed_spacing`` with thick slices
    gets :data:`THICK_SLICE_VOLUME_WEIGHT`.

    The fine level is off by default: on the tuning pairs (synthetic full-resolution POPI
    00, seeds pair_seed(31337, 0..1)) 2 mm gave 0.28 -> 0.22 and 0.24 -> 0.21 mm mean
    lung-point TRE, but nothing on the real full-resolution evaluation pair (3.25 -> 3.27
    mm), and the 512x512x141 ``register`` took 60.1 s instead of 36.4 s
    (Testing/benchmark/results/refinement_ablation.md, register_large.md).
    """
    config = RefineConfig.after_network() if after_network else RefineConfig()
    if fixed_spacing is not None and thick_axes(fixed_spacing).any():
        config = dataclasses.replace(config, weights=dataclasses.replace(
            config.weights, volume=THICK_SLICE_VOLUME_WEIGHT))
    config = with_similarity(config, similarity, similarity_weight, region)
    if fine_spacing_mm is not None:
        config = dataclasses.replace(config, fine_spacing_mm=fine_spacing_mm)
    if iterations is not None:
        capped = tuple(min(iterations, n) for n in config.level_iterations())
        config = dataclasses.replace(config, iterations=capped,
                                     fine_iterations=min(iterations, config.fine_iterations))
    return config


def crops_once(pair: PairImages, device: torch.device
                ) -> Callable[[sitk.Transform, RefineConfig], tuple]:
    """``crop_inputs`` for a start, computed once per pre-alignment and size: the network's
    affine start and the affine start alone resample the same crop."""
    made: dict[tuple, tuple] = {}

    def crop(transform: sitk.Transform, config: RefineConfig) -> tuple:
        key = (transform.GetParameters(), transform.GetFixedParameters(), config.size)
        if key not in made:
            size = native_size(pair.fixed, pair.fixed_lungs, config.size, config)
            grid, fixed, moving, mask = crop_inputs(pair, transform, size, device)
            # no -1024 HU slab where the lungs touch the moving field of view (multistart),
            # and no similarity measured there
            covered = moving_coverage(pair.moving, transform, grid).to(device)
            extended = border_extended(pair.moving, transform, grid, moving, covered)
            made[key] = CropInputs(grid, fixed, extended, mask, covered)
        return made[key]

    return crop
