"""Field bookkeeping of the pipeline: output grids, affine composition, the lungs' motion going
over into the body's outside the lung crop."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
import torch

from ..spatial import Grid

#: How fast the total field goes over from the lungs' motion into the body's outside the
#: lung crop (:func:`toward_body`). On the POPI tuning pairs (00->50, 00->60; light) the two
#: landmarks outside the lungs (a skin marker and the anterior chest wall, which move about
#: 1 mm) were mapped 3.3/4.5 and 2.9/4.0 mm off with the lungs' affine and deformable
#: motion carried out there; with the body at rest and a taper of 40, 20, 10 and 5 mm:
#: 3.0/3.9, 2.4/2.7, 1.2/1.5, 0.9/1.4 (00->50) and 2.7/3.4, 2.2/2.4, 1.2/1.3, 0.9/1.1
#: (00->60); the smallest Jacobian determinant over the whole field 0.75, 0.73, 0.70, 0.60,
#: 0.46 (00->50). 10 mm: nearly all of the gain, and smoother than 5.
BODY_TAPER_MM = 10.0
#: With the lung mask given, how far from the lungs the lungs' motion holds in full; beyond
#: it the weight fades with BODY_TAPER_MM inside the crop's box too (its corners hold the
#: shoulders and the abdomen, 60-90 mm from the lungs). On two synthetic full-resolution
#: tuning pairs (POPI 00, seeds pair_seed(31337, 0..1)) the field folded outside the lungs
#: on 0.0063 and 0.0119 % of the grid with the crop box alone, 0 and 0.0003 % with a 10 mm
#: margin, 0 and 0.0016 % with 20 mm; lung EPE unchanged (0.236, 0.300 mm). POPI tuning
#: pairs: landmarks 6 / 36 1.74 / 1.79 -> 1.41 / 1.74 and 1.51 / 1.57 -> 1.25 / 1.51 mm.
LUNG_MARGIN_MM = 10.0


def output_grid(fixed: sitk.Image, spacing_mm: float | None) -> Grid:
    """The fixed image's extent sampled at about ``spacing_mm`` (None: the fixed grid)."""
    grid = Grid.from_image(fixed)
    if spacing_mm is None or spacing_mm <= 0:
        return grid
    extent = (np.asarray(grid.size) - 1) * np.asarray(grid.spacing)
    # never finer than the fixed image itself
    size = tuple(int(min(n, math.ceil(e / spacing_mm) + 1))
                 for n, e in zip(grid.size, extent, strict=True))
    return grid.with_size(size)


def affine_matrix(transform: sitk.AffineTransform) -> tuple[np.ndarray, np.ndarray]:
    """``T(p) = A p + b`` of an ITK affine transform (fixed to moving, LPS mm)."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    offset = np.asarray(transform.GetTranslation()) + centre - matrix @ centre
    return matrix, offset


def toward_body(field: torch.Tensor, body: torch.Tensor, crop: Grid, target: Grid,
                taper_mm: float = BODY_TAPER_MM, lungs: sitk.Image | None = None,
                margin_mm: float = LUNG_MARGIN_MM) -> torch.Tensor:
    """``field`` inside the lung crop, blended outside it into ``body`` (the body's own
    displacement, e.g. of a rigid transform) with the Gaussian of the distance to the crop:
    the lungs' affine and deformable motion is not carried into a chest wall that hardly
    moves. With ``lungs`` (the fixed lung mask) the weight also fades with the distance to
    the lungs beyond ``margin_mm`` (:func:`lung_taper`), inside the crop's box too."""
    weight = torch.as_tensor(_outside_taper(crop, target, taper_mm), dtype=field.dtype)
    if lungs is not None:
        weight = weight * torch.as_tensor(lung_taper(lungs, target, margin_mm, taper_mm),
                                          dtype=field.dtype)
    weight = weight.to(field.device)
    return body + weight * (field - body)


def lung_taper(lungs: sitk.Image, target: Grid, margin_mm: float, taper_mm: float
               ) -> np.ndarray:
    """``(z, y, x)`` on ``target``: 1 within ``margin_mm`` of ``lungs``, beyond that the
    Gaussian (``taper_mm``) of the distance past the margin. The distance map is made on a
    grid of about ``taper_mm / 2`` voxels (cheap on a whole CT) and interpolated."""
    coarse = target.with_size(tuple(
        max(2, int(np.ceil((n - 1) * s / (taper_mm / 2))) + 1)
        for n, s in zip(target.size, target.spacing, strict=True)))
    reference = coarse.apply_to(sitk.Image(coarse.size, sitk.sitkUInt8))
    inside = sitk.Resample(sitk.Cast(lungs > 0, sitk.sitkUInt8), reference, sitk.Transform(),
                           sitk.sitkNearestNeighbor, 0)
    if not bool(sitk.GetArrayViewFromImage(inside).any()):
        return np.ones(target.shape)
    distance = sitk.SignedMaurerDistanceMap(inside, insideIsPositive=False,
                                            squaredDistance=False, useImageSpacing=True)
    beyond = sitk.Clamp(distance - margin_mm, sitk.sitkFloat32, 0.0, 1e9)
    weight = sitk.Exp(-0.5 * sitk.Square(beyond / taper_mm))
    fine = sitk.Resample(weight, target.apply_to(sitk.Image(target.size, sitk.sitkFloat32)),
                         sitk.Transform(), sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(fine)


def _outside_taper(crop: Grid, target: Grid, taper_mm: float) -> np.ndarray:
    """``exp(-d^2 / 2 taper_mm^2)`` of each ``target`` voxel's distance d (mm) outside
    ``crop``, ``(z, y, x)``.

    With the axes of both grids aligned (the crop is cut from the fixed image, whose
    directions the output grid keeps) the Gaussian of the distance is the product of one
    Gaussian per axis: three short vectors instead of a distance per voxel (3 s -> 0.1 s
    for a 251x251x141 grid).
    """
    to_crop = np.linalg.inv(crop.index_to_physical_matrix) @ target.index_to_physical_matrix
    offset = crop.physical_to_index(np.asarray(target.origin)[None])[0]
    size, spacing = np.asarray(crop.size), np.asarray(crop.spacing)
    if np.allclose(to_crop, np.diag(np.diag(to_crop)), atol=1e-9):
        factors = [np.exp(-0.5 * (_beyond(offset[a] + to_crop[a, a] * np.arange(n),
                                          size[a]) * spacing[a] / taper_mm) ** 2)
                   for a, n in enumerate(target.size)]
        x, y, z = factors
        return z[:, None, None] * y[None, :, None] * x[None, None, :]
    voxels = target.points(dtype=torch.float64).reshape(-1, 3).numpy()  # x fastest
    index = crop.physical_to_index(voxels)
    outside_mm = np.linalg.norm(_beyond(index, size) * spacing, axis=1)
    return np.exp(-0.5 * (outside_mm / taper_mm) ** 2).reshape(target.shape)


def _beyond(index: np.ndarray, size: np.ndarray | int) -> np.ndarray:
    """How far (voxels) continuous indices lie outside ``0 .. size - 1``."""
    return np.maximum(-index, 0.0) + np.maximum(index - (np.asarray(size) - 1), 0.0)


def compose_with_affine(deformable: torch.Tensor, grid: Grid,
                        transform: sitk.AffineTransform | None) -> torch.Tensor:
    """Total field of ``T_affine o (id + u)``: ``u_total(x) = A (x + u(x)) + b - x``.

    The deformable part was estimated between the fixed image and the moving image already
    resampled by the affine transform, so a fixed point moves through ``u`` first. The affine
    map is applied exactly (no interpolation of an affine field).
    """
    if transform is None:
        return deformable
    # u_total = A u + ((A - I) x + b)
    a = torch.as_tensor(affine_matrix(transform)[0], dtype=deformable.dtype,
                        device=deformable.device)
    total = torch.einsum("ij,njzyx->nizyx", a, deformable)
    return total + affine_field(grid, transform).to(deformable)


def affine_field(grid: Grid, transform: sitk.AffineTransform) -> torch.Tensor:
    """``(1, 3, z, y, x)`` displacement ``(A - I) x + b`` of ``transform`` on ``grid``.

    Affine in the voxel index, so it is summed from one vector per axis instead of a
    float64 point per voxel (1.6 s -> 0.3 s on a 251x251x141 grid).
    """
    matrix, offset = affine_matrix(transform)
    linear = (matrix - np.eye(3)) @ grid.index_to_physical_matrix  # mm per index step
    constant = (matrix - np.eye(3)) @ np.asarray(grid.origin) + offset
    z, y, x = (torch.arange(n, dtype=torch.float64) for n in grid.shape)
    column = lambda values: torch.as_tensor(values)[:, None, None, None]  # noqa: E731
    field = column(constant) + column(linear[:, 0]) * x[None, None, None, :] \
        + column(linear[:, 1]) * y[None, None, :, None] \
        + column(linear[:, 2]) * z[None, :, None, None]
    return field[None].float()
