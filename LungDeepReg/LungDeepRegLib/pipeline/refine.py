"""Instance optimisation: refine a displacement field on one image pair by gradient descent.

The loss is the one the networks are trained with (Hering et al. 2021, MedIA): NGF
(Haber & Modersitzki 2006; automatic edge parameter) + alpha curvature + gamma volume
change control psi_t (+ beta mask alignment when label maps are given). As in Heinrich's
instance optimisation (Heinrich & Hansen 2022, "Voxelmorph++", WBIR; Siebert, Hansen &
Heinrich 2021, "ConvexAdam"), the field is optimised directly with Adam, coarse to fine,
after the network (its output as the start) or alone from identity (``--model none``).

Parametrisation: the parameter of a level is the displacement field itself on the level
grid, ``(1, 3, z, y, x)`` in mm, so Adam's learning rate is about a step in mm; it doubles
on each coarser level (voxels twice as large). Each Adam update is smoothed with a Gaussian
of ``update_sigma`` voxels before it is applied (the fluid-like update smoothing of demons,
Vercauteren et al. 2009): Adam scales every voxel's step separately, which injects
voxel-size noise that the curvature term alone removes only slowly (sigma 0 gave 0.66 mm
mean lung EPE instead of 0.45 mm in the tuning below; 2 voxels over-smooths, 1.36 mm).

Choice of the refinement grid: one NGF + curvature + VCC step (forward and backward) costs
about 3 s at 192x160x192 and 0.13 s at 96x80x96 on two CPU cores, so steps on the network
grid itself would spend minutes. The finest level is therefore the lung crop at half the
network resolution, 96x80x96 (3-3.5 mm voxels), above 48x40x48 and 24x20x24 (1/8 and 1/64
of the cost per step) where the large motion is found. The default schedule, 100 + 60 + 30
steps, costs about 40 finest-level steps: an estimated 5-8 s on two free cores plus the
pyramid, inside the 10-20 s share of the one-minute budget (more steps bought < 0.02 mm).
The correction is upsampled and ADDED to the full-resolution start, so what a network
resolved on its finer grid stays.

Optional fine level (``RefineConfig.fine_spacing_mm``): on a CT finer than the 96x80x96
level (POPI full resolution: 0.98x0.98x2 mm against 3-3.5 mm), the crop is made at about
that spacing (never finer than the CT, at most ``fine_max_voxels``, float32) and one more
level runs on the crop itself, after the finest pyramid level and as a part of it (the
multistart's choice after the coarse levels is unchanged). Its learning rate is half the
finest level's. On a coarse CT (POPI light, 5x5x6 mm) the crop is the finest level already
and nothing changes. Measured in ``Testing/benchmark/results/refinement_ablation.md``.

Loss weights: ``losses.TUNED_WEIGHTS`` (alpha 30 curvature, gamma 3 volume change control,
t 0.2), chosen by ``Testing/benchmark/tune_loss_weights.py`` over 15 settings on four
synthetic breathing pairs of the training CT (tuning seeds ``pair_seed(31337, i)``): mean
lung EPE 0.388 mm against 0.432 mm with the paper's alpha 10 and gamma 0.01, no folding
(alpha 100 with gamma <= 0.1 folded); t 0.1, 0.2 and 0.5 alike
(``Testing/benchmark/results/loss_weights.md``).

Earlier tuning of the schedule (POPI phase 00 and CIP ct-64, seed 31337, 192x160x192 crops,
two pairs with 25-30 mm base motion): learning rates 0.25-1 mm alike; dropping the 96x80x96
level cost 0.3 mm, dropping 24x20x24 0.1 mm. NGF on the whole crop instead of the lung mask
gave 0.33 mm instead of 0.39; the paper's restriction to the lung was kept then because
synthetic fields do not slide at the pleura as real lungs do, and dropped on 2026-12-04 when
the real POPI tuning pairs agreed (``RefineConfig.use_mask``). The coarsest level is what
captures the largest motion: on the 30 mm test pair (48x40x48, Testing/unit/test_refine.py)
two levels instead of three left 13.6 mm instead of 3.2 mm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..networks.pyramid import downsample, level_grid
from ..spatial import Grid, resample_field
from .optimise import (
    Budget,
    Level,
    ProgressCallback,
    StopCallback,
    check_inputs,
    input_level,
    make_level,
    one_hot_pair,
    optimise_level,
    with_features,
)
from .refine_config import RefineConfig  # defined there, imported from here by callers

MIN_LEVEL_VOXELS = 6
ALL_LEVELS = slice(None)
COARSE_LEVELS = slice(None, -1)  # every level but the finest
FINEST_LEVEL = slice(-1, None)


@dataclass
class RefineResult:
    """Refined field ``(1, 3, z, y, x)`` mm on the input grid, plus how it was obtained."""

    field: torch.Tensor
    losses: list[list[float]]  # loss per step, one list per level (coarse to fine)
    iterations: list[int]  # steps done per level
    seconds: float
    cancelled: bool = False
    grids: list[Grid] | None = None  # the level grids, coarse to fine


def refinement_grid(grid: Grid, config: RefineConfig) -> Grid:
    """Finest refinement grid: the extent of ``grid`` with ``config.size`` (or spacing)."""
    if config.spacing_mm is None:
        size = config.size
    else:
        extent = np.asarray(grid.spacing) * (np.asarray(grid.size) - 1)
        size = tuple(int(n) for n in np.maximum(np.round(extent / config.spacing_mm) + 1, 3))
    # never finer than the input: that would only interpolate the same information
    size = tuple(min(int(a), int(b)) for a, b in zip(size, grid.size, strict=True))
    return grid if size == grid.size else grid.with_size(size)


def similarity_domain(mask: torch.Tensor | None, coverage: torch.Tensor | None
                      ) -> torch.Tensor | None:
    """Where the similarity is measured: ``mask`` (or everywhere) where the moving image has
    data. Past the moving field of view the crop repeats the image's border (multistart's
    ``border_extended``), which no anatomy of the fixed image matches: over the whole crop a
    pair without motion whose moving CT ends 6 slices inside the lungs drifted 2.0 mm with
    those voxels and stayed put without them (Testing/unit/test_refine_levels.py)."""
    if coverage is None or bool(coverage.all()):
        return mask
    covered = coverage.to(torch.float32)
    return covered if mask is None else mask * covered.to(mask)


def _has_fine_level(grid: Grid, finest: Grid, config: RefineConfig) -> bool:
    """Whether the optional fine level runs: asked for, and the input crop is finer than
    the finest pyramid level (on a coarse CT the crop is that level already)."""
    return (config.fine_spacing_mm is not None and config.fine_iterations > 0
            and grid is not finest and np.prod(grid.size) > np.prod(finest.size))


def _level_grids(finest: Grid, levels: int) -> list[Grid]:
    """Level grids, coarse to fine; levels with fewer than ``MIN_LEVEL_VOXELS`` voxels along
    an axis are left out (the curvature term needs 3, and such a grid holds no anatomy)."""
    grids = [level_grid(finest, level) for level in reversed(range(levels))]
    kept = [g for g in grids if min(g.size) >= MIN_LEVEL_VOXELS]
    return kept or [finest]


def _pyramid(source: Level, grids: list[Grid]) -> list[Level]:
    """Images of every level (coarse to fine), each made from the next finer one."""
    levels = [source if grids[-1] is source.grid else make_level(source, grids[-1])]
    for target in reversed(grids[:-1]):
        levels.insert(0, make_level(levels[0], target))
    return levels


def _coarse_to_fine(levels: list[Level], field: torch.Tensor, config: RefineConfig,
                    steps: list[int], rates: list[float], budget: Budget,
                    should_stop: StopCallback | None
                    ) -> tuple[torch.Tensor, list[list[float]], bool]:
    """Optimise level after level from ``field`` (on the coarsest level) with the learning
    rate ``rates[i]`` on level ``i``; returns the field on the finest level, the loss
    histories and whether it was cancelled."""
    losses: list[list[float]] = []
    for index, level in enumerate(levels):
        if index:  # mm need no rescaling between levels
            field = resample_field(field, levels[index - 1].grid, level.grid)
        field, history, cancelled = optimise_level(level, field, config, rates[index],
                                                   steps[index], budget, index, should_stop)
        losses.append(history)
        if cancelled:
            return resample_field(field, level.grid, levels[-1].grid), losses, True
    return field, losses, False


def refine(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    grid: Grid,
    initial_field: torch.Tensor | None = None,
    config: RefineConfig | None = None,
    fixed_mask: torch.Tensor | None = None,
    fixed_labels: torch.Tensor | None = None,
    moving_labels: torch.Tensor | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    run_levels: slice = ALL_LEVELS,
    moving_coverage: torch.Tensor | None = None,
) -> RefineResult:
    """Optimise the displacement field between ``fixed`` and ``moving`` coarse to fine.

    Args:
        fixed, moving: ``(1, 1, z, y, x)`` network intensities on ``grid`` (the moving image
            already pre-aligned and resampled onto the fixed crop grid).
        grid: geometry of both images and of the returned field.
        initial_field: ``(1, 3, z, y, x)`` mm on ``grid`` (e.g. the network output);
            None starts from identity.
        config: :class:`RefineConfig` (default: registration from identity).
        fixed_mask: ``(1, 1, z, y, x)`` lung mask; restricts the similarity when
            ``config.use_mask`` (off by default).
        fixed_labels, moving_labels: integer lung/lobe labels (0 background) on ``grid``;
            with both given and ``config.weights.mask > 0`` the mask alignment term is used.
        progress: called as ``progress(fraction, message)`` during the optimisation.
        should_stop: polled every step; True ends the optimisation early, and the field
            reached so far is returned (``cancelled=True``).
        run_levels: the pyramid levels (coarse to fine) to optimise; the others are
            skipped. ``COARSE_LEVELS`` then ``FINEST_LEVEL`` on the returned field does
            what one call does, with a look at the result in between (see
            :mod:`.multistart`). Each level keeps its learning rate in the full pyramid.
        moving_coverage: ``(1, 1, z, y, x)`` where the moving image has data (e.g. not past
            its field of view); the similarity is measured there only. None: everywhere.
    """
    config = config or RefineConfig()
    start = time.perf_counter()
    check_inputs(grid, fixed=fixed, moving=moving, initial_field=initial_field,
                 fixed_mask=fixed_mask, fixed_labels=fixed_labels, moving_labels=moving_labels)
    finest = refinement_grid(grid, config)
    grids = _level_grids(finest, config.levels)
    steps = config.level_iterations()[config.levels - len(grids):]  # levels left out
    rates = [config.learning_rate * 2.0 ** (len(grids) - 1 - i) for i in range(len(grids))]
    selected = list(range(len(grids)))[run_levels]
    if _has_fine_level(grid, finest, config) and selected and selected[-1] == len(grids) - 1:
        # the fine level belongs to the finest: it runs whenever the finest level runs
        grids, selected = grids + [grid], selected + [len(grids)]
        steps, rates = steps + [config.fine_iterations], rates + [config.learning_rate / 2]
    base = torch.zeros_like(fixed).expand(-1, 3, -1, -1, -1).clone() \
        if initial_field is None else initial_field.to(fixed.dtype).clone()
    if not selected:  # e.g. the coarse levels of a one-level pyramid
        return RefineResult(base, [], [], time.perf_counter() - start, False, [])
    grids = grids[selected[0]:selected[-1] + 1]
    steps, rates = steps[selected[0]:selected[-1] + 1], rates[selected[0]:selected[-1] + 1]
    labels = one_hot_pair(fixed_labels, moving_labels, config)
    mask = similarity_domain(fixed_mask if config.use_mask else None, moving_coverage)
    levels = [with_features(level, config.features)
              for level in _pyramid(input_level(fixed, moving, grid, mask, labels), grids)]
    budget = Budget(grids, steps, progress)
    with torch.enable_grad():  # a caller's torch.no_grad() must not stop the optimisation
        field, losses, cancelled = _coarse_to_fine(levels, downsample(base, grid, grids[0]),
                                                   config, steps, rates, budget, should_stop)
    # add the correction, not the coarse field itself: the detail of ``base`` stays
    last = grids[-1]
    result = base + resample_field(field - downsample(base, grid, last), last, grid)
    if progress is not None:
        progress(1.0, "refinement cancelled" if cancelled else "refinement done")
    return RefineResult(result.detach(), losses, [len(h) for h in losses],
                        time.perf_counter() - start, cancelled, grids)
