"""Spatial operations in physical space, checked against SimpleITK and analytic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from geometry_helpers import FLIPPED, ROTATED, rotation

from LungDeepRegLib.spatial import (
    Grid,
    compose,
    field_to_image,
    image_to_tensor,
    jacobian_determinant,
    resample,
    resample_field,
    sample,
    sample_points,
    warp,
)


def smooth_field(grid: Grid, amplitude: float = 6.0, dtype=torch.float64) -> torch.Tensor:
    """A smooth displacement of several mm, evaluated analytically at the grid points."""
    p = grid.points(dtype=dtype)
    return analytic_field(p, amplitude).movedim(-1, 0)[None]


def analytic_field(p: torch.Tensor, amplitude: float = 6.0) -> torch.Tensor:
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    ux = amplitude * torch.sin(2 * math.pi * y / 140.0 + 0.3)
    uy = 0.7 * amplitude * torch.cos(2 * math.pi * z / 90.0) * torch.sin(2 * math.pi * x / 170.0)
    uz = amplitude * torch.sin(2 * math.pi * (x + y) / 200.0 + 1.0)
    return torch.stack((ux, uy, uz), dim=-1)


# ---------------------------------------------------------------------------------- grid
def test_grid_matches_simpleitk_index_to_physical():
    image = sitk.Image(7, 5, 4, sitk.sitkFloat32)
    image.SetSpacing((0.8, 1.3, 2.5))
    image.SetOrigin((-10.0, 4.0, 33.0))
    image.SetDirection(tuple(FLIPPED.ravel()))
    grid = Grid.from_image(image)
    index = np.array([[0.0, 0.0, 0.0], [6.0, 4.0, 3.0], [2.5, 1.25, 0.5]])
    expected = [image.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in index]
    np.testing.assert_allclose(grid.index_to_physical(index), expected, atol=1e-10)
    np.testing.assert_allclose(grid.physical_to_index(expected), index, atol=1e-10)
    pts = grid.points(dtype=torch.float64)
    assert pts.shape == (4, 5, 7, 3)
    np.testing.assert_allclose(pts[3, 4, 6].numpy(), expected[1], atol=1e-10)


def test_normalized_coordinates_hit_voxel_centres():
    grid = Grid((9, 6, 5), (0.7, 1.1, 2.0), (3.0, -2.0, 1.0), tuple(ROTATED.ravel()))
    corners = grid.index_to_physical(np.array([[0, 0, 0], [8, 5, 4]]))
    normalized = grid.physical_to_normalized(torch.as_tensor(corners))
    np.testing.assert_allclose(normalized.numpy(), [[-1, -1, -1], [1, 1, 1]], atol=1e-12)


def test_resample_onto_another_grid_is_sampling_at_its_voxel_centres():
    """The per-axis coordinates of ``resample`` equal the per-voxel physical points, also
    between grids of other directions, spacings and origins (and outside: border)."""
    grid = Grid((11, 9, 7), (2.0, 2.5, 3.0), (-10.0, 200.0, -300.0), tuple(ROTATED.ravel()))
    target = Grid((17, 13, 8), (1.1, 1.7, 2.9), (-16.0, 196.0, -309.0), tuple(FLIPPED.ravel()))
    volume = torch.randn((2, 3, *grid.shape), generator=torch.Generator().manual_seed(3),
                         dtype=torch.float64)
    points = target.points(dtype=torch.float64)
    expected = sample(volume, grid, points.expand(2, *points.shape), padding="border")
    np.testing.assert_allclose(resample(volume, grid, target).numpy(), expected.numpy(),
                               atol=1e-12)
    coordinates = grid.normalized_coordinates_of(target, torch.float64)
    np.testing.assert_allclose(coordinates.numpy(),
                               grid.physical_to_normalized(points).numpy(), atol=1e-12)
    assert float(coordinates.abs().max()) > 1.0  # some target voxels lie outside the grid


# -------------------------------------------------------------------- warp vs SimpleITK
@pytest.fixture(scope="module")
def rotated_popi(shared_data) -> sitk.Image:
    """A crop of the POPI CT (0.977 x 0.977 x 2 mm) with a rotated direction set on it."""
    image = sitk.ReadImage(str(shared_data / "popi" / "popi_phase00.nii.gz"), sitk.sitkFloat32)
    image = image[150:310, 170:330, 40:100]
    image.SetDirection(tuple(ROTATED.ravel()))
    return image


def test_warp_matches_simpleitk_resample(rotated_popi):
    moving = rotated_popi
    # a fixed grid that differs from the moving one: other size, spacing, origin, direction
    centre = np.asarray(moving.TransformContinuousIndexToPhysicalPoint(
        [s / 2 for s in moving.GetSize()]))
    direction = rotation(1, 8.0) @ ROTATED
    size = (70, 64, 40)
    spacing = (1.9, 2.1, 2.6)
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    fixed_grid = Grid(size, spacing, tuple(origin), tuple(direction.ravel()))
    field = smooth_field(fixed_grid, amplitude=6.0)

    transform = sitk.DisplacementFieldTransform(field_to_image(field, fixed_grid))
    reference = fixed_grid.apply_to(sitk.Image(size, sitk.sitkFloat32))
    expected = sitk.GetArrayFromImage(
        sitk.Resample(moving, reference, transform, sitk.sitkLinear, -1024.0))

    moving_tensor, moving_grid = image_to_tensor(moving, dtype=torch.float64)
    warped = warp(moving_tensor, moving_grid, field, fixed_grid, fill=-1024.0)[0, 0].numpy()

    interior = (slice(3, -3),) * 3
    # exclude voxels whose mapped point is near the moving image's border (padding rules differ)
    mapped = fixed_grid.points(dtype=torch.float64) + field[0].movedim(0, -1)
    inside = moving_grid.contains(mapped.reshape(-1, 3).numpy(), margin=-1.0).reshape(
        fixed_grid.shape)
    difference = np.abs(warped - expected)[interior][inside[interior]]
    assert inside[interior].mean() > 0.5, "test setup: most of the fixed grid must map inside"
    assert difference.max() < 1e-3 * (3071 + 1024)


def test_sample_points_nearest_and_fill():
    grid = Grid((4, 3, 2), (2.0, 2.0, 3.0))
    volume = torch.arange(24, dtype=torch.float64).reshape(1, 2, 3, 4)
    pts = torch.tensor([[2.0, 2.0, 3.0], [2.9, 2.2, 2.0], [100.0, 0.0, 0.0]], dtype=torch.float64)
    nearest = sample_points(volume, grid, pts, interpolation="nearest", fill=-5.0)[:, 0]
    np.testing.assert_allclose(nearest.numpy(), [17.0, 17.0, -5.0])


# ------------------------------------------------------------------------- composition
def test_composition_matches_analytic_and_plain_sum_does_not():
    grid = Grid((60, 56, 40), (2.0, 2.0, 2.5), (-60.0, -50.0, -40.0), tuple(ROTATED.ravel()))
    points = grid.points(dtype=torch.float64)
    u1 = analytic_field(points, amplitude=12.0)
    u2 = analytic_field(points.flip(-1), amplitude=9.0)  # a different smooth field
    expected = u2 + analytic_field(points + u2, amplitude=12.0)  # u2(x) + u1(x + u2(x))

    to_field = lambda u: u.movedim(-1, 0)[None]  # noqa: E731
    composed = compose(to_field(u1), to_field(u2), grid)[0].movedim(0, -1)
    plain_sum = u1 + u2

    interior = (slice(8, -8),) * 3
    composed_error = (composed - expected)[interior].norm(dim=-1)
    sum_error = (plain_sum - expected)[interior].norm(dim=-1)
    assert composed_error.max() < 0.1  # linear interpolation of u1 only
    assert sum_error.mean() > 2.0  # a plain sum is wrong by millimetres
    assert composed_error.mean() < 0.02 * sum_error.mean()


def test_resample_field_keeps_mm_displacements():
    fine = Grid((40, 36, 30), (1.5, 1.5, 2.0), (5.0, -3.0, 2.0), tuple(FLIPPED.ravel()))
    coarse = fine.with_size((20, 18, 15))
    field = smooth_field(fine, amplitude=5.0)
    on_coarse = resample_field(field, fine, coarse)
    expected = smooth_field(coarse, amplitude=5.0)
    assert (on_coarse - expected).abs().max() < 0.15
    back = resample_field(on_coarse, coarse, fine)
    assert (back - field)[..., 4:-4, 4:-4, 4:-4].abs().max() < 0.3


# --------------------------------------------------------------------------- Jacobian
@pytest.mark.parametrize("direction", [FLIPPED, ROTATED])
def test_jacobian_exact_for_affine_fields(direction):
    grid = Grid((11, 9, 7), (0.9, 1.4, 2.5), (12.0, -7.0, 30.0), tuple(direction.ravel()))
    matrix = np.array([[0.10, -0.05, 0.02], [0.03, -0.20, 0.04], [-0.06, 0.01, 0.15]])
    points = grid.points(dtype=torch.float64)
    u = points @ torch.as_tensor(matrix).T + torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64)
    det = jacobian_determinant(u.movedim(-1, 0)[None], grid)
    np.testing.assert_allclose(det.numpy(), np.linalg.det(np.eye(3) + matrix), rtol=1e-12)


def test_jacobian_in_slabs_equals_the_whole_field_at_once():
    """A large field without gradient is done slab by slab: the same values, slab borders
    and the grid's first and last slices included."""
    from LungDeepRegLib.spatial import flow

    grid = Grid((23, 19, 2 * flow.JACOBIAN_SLAB + 7), (0.8, 1.1, 2.5), (3.0, 4.0, 5.0),
                tuple(ROTATED.ravel()))
    field = smooth_field(grid) + 0.3 * torch.randn((1, 3, *grid.shape), dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(2))
    whole = flow._determinant(field, grid)
    assert torch.equal(jacobian_determinant(field, grid), whole)
    with_gradient = jacobian_determinant(field.clone().requires_grad_(True), grid)
    assert torch.allclose(with_gradient, whole)


def test_jacobian_matches_analytic_nonlinear_field():
    grid = Grid((48, 44, 30), (1.1, 0.9, 2.5), (-20.0, 10.0, -35.0), tuple(FLIPPED.ravel()))
    p = grid.points(dtype=torch.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    a, k = 4.0, 2 * math.pi / 60.0
    u = torch.stack((a * torch.sin(k * x + 0.5 * k * y), a * torch.cos(k * y),
                     a * torch.sin(k * z) + 0.002 * x * x), dim=-1)
    j = torch.zeros(*x.shape, 3, 3, dtype=torch.float64)
    j[..., 0, 0] = 1 + a * k * torch.cos(k * x + 0.5 * k * y)
    j[..., 0, 1] = 0.5 * a * k * torch.cos(k * x + 0.5 * k * y)
    j[..., 1, 1] = 1 - a * k * torch.sin(k * y)
    j[..., 2, 2] = 1 + a * k * torch.cos(k * z)
    j[..., 2, 0] = 0.004 * x
    expected = torch.linalg.det(j)
    field = u.movedim(-1, 0)[None]
    det = jacobian_determinant(field, grid)[0, 0]
    interior = (slice(1, -1),) * 3
    assert expected.min() < 0.8 and expected.max() > 1.2  # a strongly nonlinear field
    assert (det - expected)[interior].abs().max() < 0.02
    # the same field treated as if its grid were isotropic 1 mm with identity direction:
    # mixing voxel steps and mm gives a clearly wrong determinant
    naive = jacobian_determinant(field, Grid(grid.size))[0, 0]
    assert (naive - expected)[interior].abs().max() > 0.2
