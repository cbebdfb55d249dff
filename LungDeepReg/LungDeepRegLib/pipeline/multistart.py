"""Instance optimisation from more than one start, the better one chosen half-way.

The network's output is not always the best place to start the refinement from. On
synthetic breathing pairs of the training CT (tuning seeds ``pair_seed(31337, 0..5)``, not
the benchmark's), the refinement after the network ended 0.34-0.58 mm mean lung endpoint
error, and from the affine start alone 0.38-0.48 mm: better on three pairs, worse on three.
Neither start's match *before* the refinement told which (the network matched better on
all six). The match after the coarse refinement levels did, on every one of those pairs and
on four of the six of the unseen CT (ct-64; the other two within 0.05 mm): there the large
motion has been found from both starts, and a start that left the refinement in a worse
basin shows it. So each start runs the coarse levels of its own schedule, the start whose
result matches better (NGF in the lung, :func:`.network.match_in_lung`) goes on, and only it
runs the costly finest level. Mean lung EPE on those six training-CT pairs: 0.47 mm after
the network, 0.42 from the affine start, 0.40 chosen this way.

Cost: the coarse levels are cheap (1/64 and 1/8 of a finest step per step), so a second
start adds about a fifth of the refinement's time, not a second refinement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import SimpleITK as sitk
import torch

from ..spatial import Grid, resample_field, warp
from .network import match_in_lung
from .optimise import ProgressCallback, StopCallback, sub_progress
from .refine import COARSE_LEVELS, FINEST_LEVEL, RefineConfig, RefineResult, refine

COARSE_SHARE = 0.4  # of the progress bar, for the coarse levels of all starts together

CropInputs = tuple[Grid, torch.Tensor, torch.Tensor, torch.Tensor]
CropFor = Callable[[sitk.Transform, RefineConfig], CropInputs]


@dataclass
class Start:
    """One start of the refinement: a pre-alignment and the field after it (or None)."""

    name: str
    transform: sitk.AffineTransform
    field: torch.Tensor | None  # (1, 3, z, y, x) mm on ``grid``, continuing ``transform``
    grid: Grid | None
    config: RefineConfig  # the schedule that suits this start


@dataclass
class MultistartResult:
    start: Start  # the start that was continued
    grid: Grid  # the crop grid of ``refined.field``
    refined: RefineResult  # coarse and finest levels of the chosen start
    scores: dict[str, float]  # match after the coarse levels, per start (lower is better)


def refine_from_best_start(starts: list[Start], crop_for: CropFor,
                           progress: ProgressCallback | None = None,
                           should_stop: StopCallback | None = None) -> MultistartResult:
    """Refine every start on its coarse levels, then the best-matching one on the finest.

    ``crop_for(transform, config)`` returns the crop grid, the fixed and the moving crop
    (network intensities, the moving one resampled through ``transform``) and the fixed lung
    mask. With one start this is one plain :func:`.refine` call.
    """
    if not starts:
        raise ValueError("the refinement needs at least one start")
    if len(starts) == 1:
        inputs = crop_for(starts[0].transform, starts[0].config)
        refined = _refine(starts[0], inputs, progress, should_stop)
        return MultistartResult(starts[0], inputs[0], refined, {})
    coarse: list[tuple[CropInputs, RefineResult]] = []
    scores: dict[str, float] = {}
    for index, start in enumerate(starts):
        inputs = crop_for(start.transform, start.config)
        share = sub_progress(progress, COARSE_SHARE * index / len(starts),
                       COARSE_SHARE * (index + 1) / len(starts))
        result = _refine(start, inputs, share, should_stop, COARSE_LEVELS)
        if result.cancelled:
            return MultistartResult(start, inputs[0], result, scores)
        grid, fixed, moving, mask = inputs
        with torch.no_grad():
            warped = warp(moving, grid, result.field, grid, fill=0.0)
            scores[start.name] = match_in_lung(fixed, warped, grid, mask)
        coarse.append((inputs, result))
    best = min(range(len(starts)), key=lambda i: scores[starts[i].name])  # ties: first
    (inputs, first), start = coarse[best], starts[best]
    grid, fixed, moving, mask = inputs
    second = refine(fixed, moving, grid, initial_field=first.field, config=start.config,
                    fixed_mask=mask, progress=sub_progress(progress, COARSE_SHARE, 1.0),
                    should_stop=should_stop, run_levels=FINEST_LEVEL)
    return MultistartResult(start, grid, _joined(first, second), scores)


def _refine(start: Start, inputs: CropInputs, progress: ProgressCallback | None,
            should_stop: StopCallback | None, run_levels: slice = slice(None)
            ) -> RefineResult:
    grid, fixed, moving, mask = inputs
    initial = None if start.field is None else resample_field(start.field, start.grid, grid)
    return refine(fixed, moving, grid, initial_field=initial, config=start.config,
                  fixed_mask=mask, progress=progress, should_stop=should_stop,
                  run_levels=run_levels)


def _joined(coarse: RefineResult, finest: RefineResult) -> RefineResult:
    """One result for the levels of both calls (the field is the finest call's)."""
    return RefineResult(finest.field, coarse.losses + finest.losses,
                        coarse.iterations + finest.iterations,
                        coarse.seconds + finest.seconds, finest.cancelled,
                        (coarse.grids or []) + (finest.grids or []))

