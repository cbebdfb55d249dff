"""Displacement fields in physical space: warping, composition, resampling, Jacobians.

A displacement field ``u`` is a tensor ``(N, 3, z, y, x)`` on a fixed :class:`Grid`, whose
channels are the LPS (x, y, z) components in mm. It maps fixed to moving,
``T(x) = x + u(x)`` (ITK's resampling direction, Slicer's "transform from parent"), so the
warped moving image is ``W(x) = M(x + u(x))``. Because displacements are in mm, resampling
a field to another grid never rescales its values.
"""

from __future__ import annotations

import numpy as np
import torch

from .grid import Grid
from .sampling import Interpolation, sample


def _check_field(field: torch.Tensor, grid: Grid) -> None:
    if field.dim() != 5 or field.shape[1] != 3 or tuple(field.shape[2:]) != grid.shape:
        raise ValueError(
            f"field must be (N, 3, {', '.join(map(str, grid.shape))}), got {tuple(field.shape)}"
        )


def mapped_points(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``x + u(x)`` for every voxel centre of ``grid``: ``(N, z, y, x, 3)`` LPS mm."""
    _check_field(field, grid)
    identity = grid.points(dtype=field.dtype, device=field.device)
    return identity + field.movedim(1, -1)


def warp(
    moving: torch.Tensor,
    moving_grid: Grid,
    field: torch.Tensor,
    fixed_grid: Grid,
    interpolation: Interpolation = "linear",
    fill: float = 0.0,
) -> torch.Tensor:
    """Warp a moving image onto the fixed grid: ``W(x) = M(x + u(x))``.

    Args:
        moving: ``(N, C, z, y, x)`` on ``moving_grid``.
        field: ``(N, 3, ...)`` displacement in mm on ``fixed_grid``.
        interpolation: ``"linear"`` for images, ``"nearest"`` for label maps.
        fill: value where ``x + u(x)`` falls outside the moving image (-1024 for CT in HU).
    """
    return sample(moving, moving_grid, mapped_points(field, fixed_grid),
                  interpolation=interpolation, padding="fill", fill=fill)


def resample_field(field: torch.Tensor, grid: Grid, target: Grid) -> torch.Tensor:
    """The same mapping ``x -> x + u(x)`` expressed on another grid (mm need no rescaling).

    Outside ``grid`` the nearest border displacement is used.
    """
    _check_field(field, grid)
    points = target.points(dtype=field.dtype, device=field.device)
    points = points.expand(field.shape[0], *points.shape)
    return sample(field, grid, points, padding="border")


def compose(
    first: torch.Tensor, second: torch.Tensor, grid: Grid, first_grid: Grid | None = None
) -> torch.Tensor:
    """Displacement of ``T_first o T_second``: ``u(x) = u2(x) + u1(x + u2(x))``.

    ``first`` (u1) is the field applied first to the moving image (e.g. a coarse level or
    an affine pre-alignment); ``second`` (u2) is the increment estimated afterwards, between
    the fixed image and the moving image already warped by u1. A fixed point maps through
    u2 first, then through u1. A plain sum ``u1 + u2`` is only right for small motion.

    Args:
        first: ``(N, 3, ...)`` on ``first_grid`` (default: ``grid``).
        second: ``(N, 3, ...)`` on ``grid``; the result lives on ``grid``.
    """
    points = mapped_points(second, grid)
    return second + sample(first, first_grid or grid, points, padding="border")


def spatial_gradient(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Derivatives of every channel w.r.t. physical LPS position.

    Central differences inside, one-sided at the border (exact for affine fields),
    taken along the index axes and mapped to mm through ``(D diag(spacing))^-1``, so
    anisotropic spacing and any direction matrix are honoured.

    Returns:
        ``(N, C, 3, z, y, x)`` with ``[:, c, k]`` = d field_c / d x_k, k in (x, y, z).
    """
    if field.dim() != 5:
        raise ValueError(f"field must be (N, C, z, y, x), got shape {tuple(field.shape)}")
    dz, dy, dx = torch.gradient(field, dim=(2, 3, 4), edge_order=1)
    inverse = np.linalg.inv(grid.index_to_physical_matrix)  # d index / d physical
    if np.allclose(inverse, np.diag(np.diag(inverse))):
        # axis-aligned grid (most CTs): a scale per axis, without the 3x3 contraction that
        # cost a large share of every optimisation step
        scales = np.diag(inverse)
        return torch.stack([d * float(k) for d, k in zip((dx, dy, dz), scales, strict=True)],
                           dim=2)
    index_gradient = torch.stack((dx, dy, dz), dim=2)  # d/d i_k in (x, y, z) index order
    di_dx = torch.as_tensor(inverse, dtype=field.dtype, device=field.device)
    # d f / d x_k = sum_m d f / d i_m * d i_m / d x_k
    return torch.einsum("ncmzyx,mk->nckzyx", index_gradient, di_dx)


def jacobian_matrix(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Jacobian of ``x + u(x)``: ``I + du/dx``, shape ``(N, 3, 3, z, y, x)``."""
    _check_field(field, grid)
    eye = torch.eye(3, dtype=field.dtype, device=field.device).view(1, 3, 3, 1, 1, 1)
    return spatial_gradient(field, grid) + eye


def jacobian_determinant(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``det(I + du/dx)`` with derivatives in mm per mm, shape ``(N, 1, z, y, x)``.

    Values below 1 mean local compression (exhale), above 1 expansion, <= 0 folding.
    Unlike SimpleITK's ``DisplacementFieldJacobianDeterminant`` this honours the
    direction matrix.
    """
    # unbind, not indexing: the backward of nine selections would allocate nine full-size
    # zero tensors per step of an optimisation
    (a, b, c), (d, e, f), (g, h, i) = (row.unbind(1) for row in
                                       jacobian_matrix(field, grid).unbind(1))
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return det.unsqueeze(1)
