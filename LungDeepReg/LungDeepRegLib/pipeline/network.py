"""The network step of the pipeline, with the choice of its starting point.

The shipped networks learnt breathing motion from identity-aligned synthetic pairs; after
a lung-aware affine pre-alignment the remaining motion can look unlike anything they saw
(the affine map already lifts the diaphragm, so the apex seems to move the other way), and
a network may then add back motion the affine part removed. On the demo pair the network
after the affine start left 6.5 mm TRE where the affine alone left 2.5 mm, while the same
network from the unaligned crop reached 1.3 mm. Real pairs can need the affine start
(patient shift between scans). So the network runs from both starts and the result whose
warped moving image matches the fixed image better (NGF distance inside the lung, the
similarity term of the loss) is kept, with its start; the instance optimisation goes on
from there. The affine start without the network is the third candidate: on real POPI
breathing (00 to 50) the network's output matched worse than the affine alone and the
refinement from it ended 0.3 mm behind the refinement from the affine; a network that does
not improve the match is not used (``field`` None), and the refinement then runs its
schedule from identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import SimpleITK as sitk
import torch

from ..losses.functional import ngf_distance
from ..spatial import Grid, warp

NO_NETWORK = "affine, no network"
CropPair = Callable[[sitk.Transform], tuple[Grid, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class NetworkResult:
    grid: Grid
    field: torch.Tensor | None  # (1, 3, z, y, x) mm on ``grid`` after ``start``; None:
    # the network did not improve on the affine start and is not used
    start: sitk.AffineTransform  # the pre-alignment the field continues
    start_name: str  # "affine", "identity" or "affine, no network"
    scores: dict[str, float]  # NGF distance in the lung of each start (lower is better)


def network_from_best_start(model: torch.nn.Module, crop_pair: CropPair,
                            affine: sitk.AffineTransform) -> NetworkResult:
    """Run ``model`` from the affine and the identity start; keep the better-matching one.

    ``crop_pair(transform)`` returns the crop grid, the fixed and the moving crop (network
    intensities, the moving one resampled through ``transform``) and the fixed lung mask.
    """
    scores: dict[str, float] = {}
    candidates: dict[str, NetworkResult] = {}
    for name, transform in (("affine", affine), ("identity", sitk.AffineTransform(3))):
        grid, fixed, moving, mask = crop_pair(transform)
        with torch.inference_mode():
            field = model(fixed, moving, grid).float()
            scores[name] = _ngf(fixed, warp(moving, grid, field, grid), grid, mask)
            candidates[name] = NetworkResult(grid, field, transform, name, scores)
            if name == "affine":  # the start itself, without the network
                scores[NO_NETWORK] = _ngf(fixed, moving, grid, mask)
                candidates[NO_NETWORK] = NetworkResult(grid, None, transform, NO_NETWORK,
                                                       scores)
    # ties go to the simpler candidate: the affine start without the network comes first
    best = min((NO_NETWORK, "affine", "identity"), key=lambda name: scores[name])
    return candidates[best]


def _ngf(fixed: torch.Tensor, warped: torch.Tensor, grid: Grid, mask: torch.Tensor) -> float:
    return float(ngf_distance(fixed, warped, grid, mask=mask))
