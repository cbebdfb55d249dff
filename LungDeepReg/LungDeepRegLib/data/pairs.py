"""Synthetic inhale/exhale training pairs with known dense ground truth.

One real CT becomes any number of registration pairs (Sokooti et al. 2017, MICCAI;
Eppenhof et al. 2020, IEEE TMI): the CT is the fixed (inhale) image, a known field ``u``
(fixed to moving, mm, LPS) is drawn, and the moving (exhale) image is built so that the
ground truth holds exactly, ``M(x + u(x)) = F(x)``: with the inverse ``v`` of ``u``,
``M(y) = F(y + v(y))``. The networks of Hering et al. (2021, MedIA) are then trained or
validated against ``u`` itself, not only against image similarity.

The exhale image also gets the density change of real breathing: lung parenchyma is a
mixture of air and tissue, and compressing it by ``det J`` raises its tissue fraction by
``1 / det J`` (mass preservation, cf. Yin et al. 2009, Med Phys), so ``HU + 1000`` scales by
``1 / det J`` there; vessels and other tissue (above -200 HU) keep their value. Mild noise
and a global intensity jitter keep the networks from relying on identical intensities.

Everything random comes from one ``torch.Generator``: a pair is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..preprocess.crop import HU_MAX, HU_MIN, normalize_ct
from ..spatial import Grid, jacobian_determinant, mapped_points, sample, warp
from .fields import (
    breathing_field,
    invert_field,
    random_smooth_field,
    uniform,
    with_random_detail,
)

PairKind = Literal["breathing", "random", "mixed"]
MIN_DETERMINANT = 0.1  # a drawn field is scaled down until det(J) exceeds this everywhere
DENSITY_FACTOR_RANGE = (0.5, 2.0)  # clip of 1 / det J in the density model
PARENCHYMA_HU = (-500.0, -200.0)  # density change fades out between these values
NOISE_SD_HU = (0.0, 20.0)
DEFAULT_MAX_CC_MM = (10.0, 30.0)  # range of the drawn cranio-caudal breathing amplitude
JITTER_SCALE = (0.98, 1.02)
JITTER_OFFSET_HU = (-10.0, 10.0)

__all__ = ["PairKind", "SyntheticPair", "draw_field", "make_pair"]


@dataclass
class SyntheticPair:
    """A synthetic registration pair on one grid; all tensors have a batch dimension of 1.

    ``fixed`` and ``moving`` are network intensities (:func:`normalize_ct`), ``field`` the
    ground truth ``u`` (fixed to moving, mm, LPS): ``moving(x + u(x)) ~ fixed(x)``.
    ``inverse_field`` is ``v`` (moving to fixed) and ``inverse_residual_mm`` the largest
    ``|v(y) + u(y + v(y))|``. Masks are float 0/1, labels uint8 (0, 1 left, 2 right).
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    field: torch.Tensor
    fixed_mask: torch.Tensor
    moving_mask: torch.Tensor
    grid: Grid
    fixed_labels: torch.Tensor | None = None
    moving_labels: torch.Tensor | None = None
    inverse_field: torch.Tensor | None = None
    inverse_residual_mm: float = 0.0
    kind: str = "breathing"

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Tensors without the batch dimension (for a ``DataLoader``), plus the grid's
        4x4 index-to-LPS ``affine`` (float64) so that losses can work in mm."""
        names = ("fixed", "moving", "field", "fixed_mask", "moving_mask", "fixed_labels",
                 "moving_labels")
        items = {n: getattr(self, n)[0] for n in names if getattr(self, n) is not None}
        items["affine"] = torch.as_tensor(self.grid.affine, dtype=torch.float64)
        return items


def make_pair(ct_hu: torch.Tensor, lung_mask: torch.Tensor, grid: Grid,
              generator: torch.Generator, kind: PairKind = "breathing", *,
              labels: torch.Tensor | None = None, field: torch.Tensor | None = None,
              max_cc_mm: tuple[float, float] = DEFAULT_MAX_CC_MM,
              intensity_change: bool = True, noise: bool = True,
              fill_hu: float | None = None) -> SyntheticPair:
    """Build one synthetic inhale/exhale pair from a CT (the inhale image) on ``grid``.

    Args:
        ct_hu: ``(1, 1, z, y, x)`` HU on ``grid`` (e.g. the lung crop).
        lung_mask: ``(1, 1, z, y, x)``, non-zero inside the lungs.
        generator: the only source of randomness (CPU generator).
        kind: ``"breathing"`` (:func:`breathing_field`), ``"random"``
            (:func:`random_smooth_field`) or ``"mixed"`` (breathing, then a random field of
            half the default amplitudes, composed).
        labels: optional left/right lung labels (0/1/2) on ``grid``, warped along.
        field: a given ground-truth field instead of a drawn one.
        max_cc_mm: range of the cranio-caudal breathing amplitude.
        intensity_change: apply the density change inside the lung.
        noise: add Gaussian noise and a global intensity jitter to the moving image.
        fill_hu: value of moving voxels whose source ``y + v(y)`` lies outside the grid;
            None (default) repeats the border instead. The crop ends 10 mm below the lungs
            and the breathing field lifts the base by up to 30 mm, so a constant -1024
            would paint a slab of "air" under the diaphragm of every exhale image, a cue
            that real exhale scans never show; the repeated abdomen border is closer.
    """
    device = ct_hu.device
    mask = (lung_mask > 0).to(torch.float32)
    if field is None:
        field = draw_field(kind, grid, mask, generator, max_cc_mm)
    field, determinant = _keep_invertible(field.to(device), grid)
    inverse, residual = invert_field(field, grid)
    # drawn whatever the flags, so that the flags never change the field of a seed
    noise_sd, scale, offset = (uniform(generator, *r) for r in
                               (NOISE_SD_HU, JITTER_SCALE, JITTER_OFFSET_HU))

    if fill_hu is None:
        moving_hu = sample(ct_hu, grid, mapped_points(inverse, grid), padding="border")
    else:
        moving_hu = warp(ct_hu, grid, inverse, grid, fill=fill_hu)
    soft_mask = warp(mask, grid, inverse, grid)
    if intensity_change:
        moving_hu = _density_change(moving_hu, soft_mask, determinant, inverse, grid)
    if noise:
        shape = tuple(moving_hu.shape)
        moving_hu = moving_hu + noise_sd * torch.randn(shape, generator=generator).to(device)
        moving_hu = (moving_hu - HU_MIN) * scale + HU_MIN + offset
    moving_hu = moving_hu.clamp(HU_MIN, HU_MAX)

    moving_labels = None
    if labels is not None:
        moving_labels = warp(labels.to(torch.float32), grid, inverse, grid,
                             interpolation="nearest").round().to(torch.uint8)
        labels = labels.to(torch.uint8)
    return SyntheticPair(
        fixed=normalize_ct(ct_hu), moving=normalize_ct(moving_hu), field=field,
        fixed_mask=mask, moving_mask=(soft_mask >= 0.5).to(torch.float32), grid=grid,
        fixed_labels=labels, moving_labels=moving_labels, inverse_field=inverse,
        inverse_residual_mm=residual, kind=kind)


def draw_field(kind: str, grid: Grid, mask: torch.Tensor, generator: torch.Generator,
                max_cc_mm: tuple[float, float]) -> torch.Tensor:
    if kind == "breathing":
        return breathing_field(grid, mask, generator, max_cc_mm=max_cc_mm)
    if kind == "random":
        return random_smooth_field(grid, generator).to(mask.device)
    if kind == "mixed":
        breathing = breathing_field(grid, mask, generator, max_cc_mm=max_cc_mm)
        return with_random_detail(breathing, grid, generator)
    raise ValueError(f"kind must be 'breathing', 'random' or 'mixed', got {kind!r}")


def _keep_invertible(field: torch.Tensor, grid: Grid, attempts: int = 8
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``field`` down until ``det(J) > MIN_DETERMINANT`` on the whole grid.

    The generators stay far from folding by design; this guards the ground truth against
    a rare extreme draw (or a given field) rather than shipping a folded pair.
    Returns the field and its Jacobian determinant.
    """
    for _ in range(attempts):
        determinant = jacobian_determinant(field, grid)
        if float(determinant.min()) > MIN_DETERMINANT:
            return field, determinant
        field = 0.7 * field
    raise ValueError("the synthetic field folds even after scaling it down")


def _density_change(moving_hu: torch.Tensor, soft_mask: torch.Tensor,
                    determinant: torch.Tensor, inverse: torch.Tensor, grid: Grid
                    ) -> torch.Tensor:
    """Exhale HU: inside the lung parenchyma ``HU + 1000`` times ``1 / det J``.

    ``determinant`` is ``det J`` of the inhale-to-exhale map on the fixed grid; it is taken
    at the inhale point ``y + v(y)`` that the exhale voxel ``y`` came from.
    """
    determinant = warp(determinant, grid, inverse, grid, fill=1.0)
    factor = (1.0 / determinant.clamp(min=1e-3)).clamp(*DENSITY_FACTOR_RANGE)
    low, high = PARENCHYMA_HU
    parenchyma = ((high - moving_hu) / (high - low)).clamp(0.0, 1.0)
    change = (moving_hu + 1000.0) * (factor - 1.0)
    return moving_hu + soft_mask * parenchyma * change
