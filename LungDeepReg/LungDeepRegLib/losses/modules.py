"""Thin ``torch.nn.Module`` wrappers around :mod:`.functional` and the combined training loss.

Inputs are keyword-only tensors (``fixed=``, ``warped=``, ``field=`` ...), so a swapped
fixed/moving pair fails loudly instead of silently computing the wrong term.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from ..spatial import Grid, sample
from . import functional
from .functional import Reduction

SIMILARITY_TERMS = ("ngf", "ncc", "mse")


class NGFLoss(nn.Module):
    """:func:`.functional.ngf_distance`; ``epsilon=None`` picks the edge parameter itself."""

    def __init__(self, epsilon: float | None = None, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.epsilon, self.reduction = epsilon, reduction

    def forward(self, *, fixed: torch.Tensor, warped: torch.Tensor, grid: Grid,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.ngf_distance(fixed, warped, grid, self.epsilon, mask, self.reduction)


class CurvatureLoss(nn.Module):
    """:func:`.functional.curvature_regularizer`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, *, field: torch.Tensor, grid: Grid,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.curvature_regularizer(field, grid, mask, self.reduction)


class VolumeChangeLoss(nn.Module):
    """:func:`.functional.volume_change_control` with threshold ``t`` (0.2 coarsest level)."""

    def __init__(self, t: float = 0.2, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.t, self.reduction = t, reduction

    def forward(self, *, field: torch.Tensor, grid: Grid,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.volume_change_control(field, grid, self.t, mask, self.reduction)


class MaskAlignmentLoss(nn.Module):
    """:func:`.functional.mask_alignment` on one-hot label maps."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, *, fixed: torch.Tensor, warped: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.mask_alignment(fixed, warped, mask, self.reduction)


class KeypointLoss(nn.Module):
    """:func:`.functional.keypoint_loss` (mm^2)."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, *, mapped_points: torch.Tensor, moving_points: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.keypoint_loss(mapped_points, moving_points, mask, self.reduction)


class LocalNCCLoss(nn.Module):
    """:func:`.functional.local_ncc` (``1 - mean local NCC``)."""

    def __init__(self, window: int = 9, epsilon: float = 1e-5,
                 reduction: Reduction = "mean") -> None:
        super().__init__()
        self.window, self.epsilon, self.reduction = window, epsilon, reduction

    def forward(self, *, fixed: torch.Tensor, warped: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.local_ncc(fixed, warped, self.window, mask, self.epsilon, self.reduction)


class MSELoss(nn.Module):
    """:func:`.functional.mse`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, *, fixed: torch.Tensor, warped: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.mse(fixed, warped, mask, self.reduction)


class EndpointErrorLoss(nn.Module):
    """:func:`.functional.endpoint_error` (mm)."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, *, field: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return functional.endpoint_error(field, target, mask, self.reduction)


# ------------------------------------------------------------------------ combined loss
@dataclass(frozen=True)
class LossWeights:
    """Weights of L = D + alpha R_curv + beta B_mask + gamma V_vcc + delta K (Hering 2021).

    Defaults are the paper's coarsest level; under our units (mm, means) they are starting
    points to tune, not final values. A weight of 0 switches a term off (not computed).
    The one type of the weights: training's ``LossConfig`` and the instance optimisation's
    ``RefineConfig`` each hold one instead of copies of its fields.
    """

    ngf: float = 1.0
    curvature: float = 10.0
    mask: float = 1.0
    volume: float = 0.01
    keypoints: float = 0.0
    ncc: float = 0.0
    mse: float = 0.0

    def __post_init__(self) -> None:
        for item in fields(self):
            if getattr(self, item.name) < 0:
                raise ValueError(f"loss weight {item.name} must be >= 0")

    def with_similarity(self, name: str, weight: float = 1.0) -> LossWeights:
        """A copy whose only similarity term is ``name`` (``"ngf"``, ``"ncc"`` or ``"mse"``)."""
        if name not in SIMILARITY_TERMS:
            raise ValueError(f"similarity must be one of {SIMILARITY_TERMS}, got {name!r}")
        chosen = {term: (weight if term == name else 0.0) for term in SIMILARITY_TERMS}
        return replace(self, **chosen)


#: The weights tuned under our units (``Testing/benchmark/tune_loss_weights.py``, results in
#: ``Testing/benchmark/results/loss_weights.md``): the defaults of the instance optimisation
#: and of new training runs. ``LossWeights()`` keeps the paper's values. The refinement of a
#: CT with thick slices lowers the volume weight (``pipeline.crops.THICK_SLICE_VOLUME_WEIGHT``).
TUNED_WEIGHTS = LossWeights(curvature=30.0, volume=3.0)
#: psi_t threshold: 0.1, 0.2 and 0.5 gave the same error in that tuning; the paper's 0.2 stays.
TUNED_T = 0.2


def map_points(field: torch.Tensor, grid: Grid, points: torch.Tensor) -> torch.Tensor:
    """``y(p) = p + u(p)`` for points ``(N, P, 3)`` LPS mm (field linearly interpolated)."""
    displacement = sample(field, grid, points, padding="border")  # (N, 3, P)
    return points + displacement.movedim(1, -1)


class RegistrationLoss(nn.Module):
    """Weighted sum of the Hering et al. (2021) terms; returns ``(total, terms)``.

    ``terms`` maps each computed term name to its UNWEIGHTED value (for logging). A term is
    computed when its weight is > 0 and its inputs are given: the mask term needs
    ``fixed_lobes`` and ``warped_lobes``, the keypoint term ``fixed_points`` and
    ``moving_points``; otherwise it is skipped and absent from ``terms``. The fixed (lung)
    mask restricts the similarity terms only, as NGF is restricted in the paper.
    """

    def __init__(self, weights: LossWeights | None = None, ngf_epsilon: float | None = None,
                 ncc_window: int = 9) -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        self.ngf_epsilon, self.ncc_window = ngf_epsilon, ncc_window

    def forward(
        self,
        *,
        fixed: torch.Tensor,
        warped: torch.Tensor,
        field: torch.Tensor,
        grid: Grid,
        t: float = 0.2,
        fixed_mask: torch.Tensor | None = None,
        fixed_lobes: torch.Tensor | None = None,
        warped_lobes: torch.Tensor | None = None,
        fixed_points: torch.Tensor | None = None,
        moving_points: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = self._similarity(fixed, warped, grid, fixed_mask)
        w = self.weights
        if w.curvature > 0:
            terms["curvature"] = functional.curvature_regularizer(field, grid)
        if w.volume > 0:
            terms["volume"] = functional.volume_change_control(field, grid, t)
        if w.mask > 0 and fixed_lobes is not None and warped_lobes is not None:
            terms["mask"] = functional.mask_alignment(fixed_lobes, warped_lobes)
        if w.keypoints > 0 and fixed_points is not None and moving_points is not None:
            mapped = map_points(field, grid, fixed_points)
            terms["keypoints"] = functional.keypoint_loss(mapped, moving_points)
        total = sum((getattr(w, name) * value for name, value in terms.items()),
                    field.new_zeros(()))
        return total, terms

    def _similarity(self, fixed: torch.Tensor, warped: torch.Tensor, grid: Grid,
                    mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.weights.ngf > 0:
            terms["ngf"] = functional.ngf_distance(fixed, warped, grid, self.ngf_epsilon, mask)
        if self.weights.ncc > 0:
            terms["ncc"] = functional.local_ncc(fixed, warped, self.ncc_window, mask)
        if self.weights.mse > 0:
            terms["mse"] = functional.mse(fixed, warped, mask)
        return terms
