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
start adds about a fifth of the refinement's time, not a second refinement. The final
comparison below costs one more crop (the identity's) and one NGF per candidate.

No worse than doing nothing. On real pairs with little motion (POPI light 00->10 and
00->20, evaluation pairs) the registration ended worse than its start: 0.47 -> 0.82 mm and
0.75 -> 1.22 mm mean TRE, and worse in NGF too. Two causes, both found on the tuning data
(a zero-motion pair, POPI light 00 against itself, and the tuning pairs):

1. Where the lungs touch the field of view, the affine start maps the crop's edge slice
   just outside the moving image, and the resampled moving crop held -1024 HU there: a slab
   of "air" against lung in the fixed crop, a false edge inside the lung mask. NGF matched
   it by dragging the field (47 mm at the edge slice, 1.5 mm mean in the lung of a pair
   with no motion at all). :func:`border_extended` gives such voxels the nearest moving
   voxel's value instead (ITK's nearest-neighbour extrapolation), as the synthetic pairs
   repeat the border (:func:`~LungDeepRegLib.data.make_pair`): 0.07 mm mean in the lung.
2. A start chosen after the coarse levels can still end worse than no deformation at all
   (the networks add 4-5 mm of motion to a pair without motion, and the refinement does
   not remove all of it). So the final result is compared with the unrefined starts
   (the affine alone among them) and with ``baselines`` (the caller passes the identity,
   no registration), by the same NGF in the lung on the crop grid, and kept only if it
   matches better: the principle of a descent method, applied to the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import NamedTuple

import SimpleITK as sitk
import torch

from ..preprocess.crop import normalize_ct
from ..spatial import Grid, image_to_tensor, resample_field, warp
from .network import match_in_lung
from .optimise import ProgressCallback, StopCallback, sub_progress
from .refine import COARSE_LEVELS, FINEST_LEVEL, RefineResult, refine
from .refine_config import RefineConfig

COARSE_SHARE = 0.4  # of the progress bar, for the coarse levels of all starts together
REFINED = "refined"  # name of the refined result in the final comparison

class CropInputs(NamedTuple):
    """A start's crop: grid, fixed and moving images (network intensities), the fixed lung
    mask (float 0/1) and where the moving image has data (None: everywhere)."""

    grid: Grid
    fixed: torch.Tensor
    moving: torch.Tensor
    lungs: torch.Tensor
    coverage: torch.Tensor | None = None


CropFor = Callable[[sitk.Transform, RefineConfig], tuple]


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
    start: Start  # the start that was continued (or kept unrefined, see ``kept``)
    grid: Grid  # the crop grid of ``refined.field``
    refined: RefineResult  # coarse and finest levels of the chosen start
    scores: dict[str, float]  # match after the coarse levels, per start (lower is better)
    # final comparison: NGF in the lung of the refined result and of every unrefined start
    # and baseline; ``kept`` names the winner ("refined" when the refinement is kept)
    final_scores: dict[str, float] = dataclass_field(default_factory=dict)
    kept: str = REFINED


def refine_from_best_start(starts: list[Start], crop_for: CropFor,
                           progress: ProgressCallback | None = None,
                           should_stop: StopCallback | None = None,
                           baselines: list[Start] | None = None) -> MultistartResult:
    """Refine every start on its coarse levels, then the best-matching one on the finest;
    keep the result only if it matches better than every unrefined start and baseline.

    ``crop_for(transform, config)`` returns the crop grid, the fixed and the moving crop
    (network intensities, the moving one resampled through ``transform``) and the fixed lung
    mask; all starts share the crop grid and mask. ``baselines`` are candidates that are
    never refined (e.g. the identity: no registration). With one start and no baselines the
    refinement is one plain :func:`.refine` call, still checked against its start.
    """
    if not starts:
        raise ValueError("the refinement needs at least one start")
    crops = [CropInputs(*crop_for(start.transform, start.config)) for start in starts]
    if len(starts) == 1:
        refined = _refine(starts[0], crops[0], progress, should_stop)
        chosen = MultistartResult(starts[0], crops[0][0], refined, {})
    else:
        chosen = _best_after_coarse_levels(starts, crops, progress, should_stop)
    if chosen.refined.cancelled:
        return chosen
    extra = list(baselines or [])
    crops += [CropInputs(*crop_for(baseline.transform, baseline.config)) for baseline in extra]
    return _no_worse_than_doing_nothing(chosen, starts + extra, crops)


def _best_after_coarse_levels(starts: list[Start], crops: list[CropInputs],
                              progress: ProgressCallback | None,
                              should_stop: StopCallback | None) -> MultistartResult:
    coarse: list[tuple[CropInputs, RefineResult]] = []
    scores: dict[str, float] = {}
    for index, (start, inputs) in enumerate(zip(starts, crops, strict=True)):
        share = sub_progress(progress, COARSE_SHARE * index / len(starts),
                             COARSE_SHARE * (index + 1) / len(starts))
        result = _refine(start, inputs, share, should_stop, COARSE_LEVELS)
        if result.cancelled:
            return MultistartResult(start, inputs[0], result, scores)
        scores[start.name] = _match(inputs, result.field)
        coarse.append((inputs, result))
    best = min(range(len(starts)), key=lambda i: scores[starts[i].name])  # ties: first
    (inputs, first), start = coarse[best], starts[best]
    second = _refine(start, inputs, sub_progress(progress, COARSE_SHARE, 1.0), should_stop,
                     FINEST_LEVEL, first.field)
    return MultistartResult(start, inputs.grid, _joined(first, second), scores)


def _no_worse_than_doing_nothing(chosen: MultistartResult, candidates: list[Start],
                                 crops: list[CropInputs]) -> MultistartResult:
    """``chosen`` if its field matches better (NGF in the lung on the crop grid) than each
    candidate without refinement (``crops[i]`` the inputs of ``candidates[i]``), else the
    best of those (ties: the first, the simplest). An exact tie keeps doing less.
    """
    final: dict[str, float] = {}
    best_name, best_start, best_inputs = REFINED, chosen.start, None
    for candidate, inputs in zip(candidates, crops, strict=True):
        field = _start_field(candidate, inputs)
        final[candidate.name] = _match(inputs, field)
        if best_inputs is None or final[candidate.name] < final[best_name]:
            best_name, best_start, best_inputs = candidate.name, candidate, inputs
    own = next(i for i, candidate in enumerate(candidates) if candidate is chosen.start)
    final[REFINED] = _match(crops[own], chosen.refined.field)
    chosen.final_scores = final
    if best_inputs is None or final[REFINED] < final[best_name]:
        return chosen
    grid = best_inputs[0]
    field = _start_field(best_start, best_inputs)
    kept = RefineResult(field, chosen.refined.losses, chosen.refined.iterations,
                        chosen.refined.seconds, False, chosen.refined.grids)
    return MultistartResult(best_start, grid, kept, chosen.scores, final, best_name)


def _start_field(start: Start, inputs: CropInputs) -> torch.Tensor:
    """The start's own field on the crop grid of ``inputs`` (zeros when it has none), on
    the crop's device."""
    grid, fixed = inputs[0], inputs[1]
    if start.field is None:
        return torch.zeros((1, 3, *grid.shape), device=fixed.device)
    return resample_field(start.field.to(fixed.device), start.grid, grid).float()


def _match(inputs: CropInputs, field: torch.Tensor) -> float:
    """NGF in the lung of the moving crop warped by ``field`` (:func:`.network.match_in_lung`)."""
    grid, moving = inputs.grid, inputs.moving
    with torch.no_grad():
        warped = warp(moving, grid, field.to(moving), grid, fill=0.0)
        return match_in_lung(inputs.fixed, warped, grid, inputs.lungs)


def _reference(grid: Grid) -> sitk.Image:
    reference = sitk.Image(list(grid.size), sitk.sitkUInt8)
    reference.SetOrigin(grid.origin)
    reference.SetSpacing(grid.spacing)
    reference.SetDirection(grid.direction)
    return reference


def moving_coverage(moving: sitk.Image, transform: sitk.Transform, grid: Grid
                    ) -> torch.Tensor:
    """``(1, 1, z, y, x)`` bool: the voxels of ``grid`` whose partner through ``transform``
    lies inside ``moving`` (where the moving image has data)."""
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    inside = sitk.Resample(ones, _reference(grid), transform, sitk.sitkNearestNeighbor, 0.0)
    return image_to_tensor(inside)[0] > 0


def border_extended(moving: sitk.Image, transform: sitk.Transform, grid: Grid,
                    crop: torch.Tensor, coverage: torch.Tensor | None = None) -> torch.Tensor:
    """``crop`` (``moving`` resampled onto ``grid`` through ``transform``, network
    intensities) with every voxel whose partner lies outside ``moving`` set to the nearest
    moving voxel's value instead of the -1024 HU fill (see the module docstring, cause 1).

    Inside the moving image the crop is unchanged (it is anti-aliased there; the border
    values are not, which matters little one voxel outside the field of view).
    ``coverage`` (:func:`moving_coverage`, when the caller has it) saves computing it again.
    """
    if coverage is None:
        coverage = moving_coverage(moving, transform, grid)
    valid = coverage.to(crop.device)
    if bool(valid.all()):
        return crop
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(_reference(grid))
    resampler.SetTransform(transform)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetUseNearestNeighborExtrapolator(True)
    extended = normalize_ct(image_to_tensor(resampler.Execute(moving))[0]).to(crop)
    return torch.where(valid, crop, extended)


def _refine(start: Start, inputs: CropInputs, progress: ProgressCallback | None,
            should_stop: StopCallback | None, run_levels: slice = slice(None),
            initial: torch.Tensor | None = None) -> RefineResult:
    """Refine from ``initial`` on the crop grid, or by default from the start's field."""
    grid = inputs.grid
    if initial is None and start.field is not None:
        initial = resample_field(start.field, start.grid, grid)
    return refine(inputs.fixed, inputs.moving, grid, initial_field=initial,
                  config=start.config, fixed_mask=inputs.lungs, progress=progress,
                  should_stop=should_stop, run_levels=run_levels,
                  moving_coverage=inputs.coverage)


def _joined(coarse: RefineResult, finest: RefineResult) -> RefineResult:
    """One result for the levels of both calls (the field is the finest call's)."""
    return RefineResult(finest.field, coarse.losses + finest.losses,
                        coarse.iterations + finest.iterations,
                        coarse.seconds + finest.seconds, finest.cancelled,
                        (coarse.grids or []) + (finest.grids or []))

