"""The discrete displacement search (pipeline.discrete): labels, cost volume, coupled convex
step, voxel-to-mm conversion, and a known translation recovered on a real CT crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.pipeline.demo import sample_path
from LungDeepRegLib.pipeline.discrete import (
    SearchConfig,
    cost_volume,
    coupled_convex,
    discrete_search,
    labels,
    search_grids,
    to_millimetres,
)
from LungDeepRegLib.preprocess import lung_crop_grid, lung_labels, normalize_ct, resample_to_grid
from LungDeepRegLib.spatial import Grid, image_to_tensor, warp


def test_labels_are_every_offset_within_the_radius_once() -> None:
    offsets = labels(2)
    assert offsets.shape == (125, 3)
    assert offsets.abs().max() == 2
    assert len({tuple(row) for row in offsets.tolist()}) == 125


def test_the_feature_grid_puts_every_control_point_on_a_feature_voxel() -> None:
    grid = Grid((60, 50, 40), (3.0, 4.0, 5.0), (10.0, -20.0, 30.0),
                (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    control, features = search_grids(grid, SearchConfig(control_size=(12, 10, 8)))
    assert features.size == (23, 19, 15)
    index = np.array([[2.0, 4.0, 6.0]])  # feature voxel 2c for control voxel c = (1, 2, 3)
    np.testing.assert_allclose(features.index_to_physical(index),
                               control.index_to_physical(index / 2), atol=1e-9)


def test_the_cost_volume_is_lowest_at_the_true_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    moving = torch.rand((1, 4, 29, 25, 31), generator=generator)
    shift = (2, -1, 3)  # z, y, x in feature voxels: F(x) = M(x + shift)
    fixed = torch.roll(moving, shifts=tuple(-s for s in shift), dims=(2, 3, 4))
    cost = cost_volume(fixed, moving, radius=3)
    assert cost.shape == (343, 15, 13, 16)
    best = labels(3)[cost.argmin(0)]  # (z, y, x, 3) per control point
    interior = best[3:-3, 3:-3, 3:-3].reshape(-1, 3)  # away from the repeated border
    assert (interior == torch.tensor(shift, dtype=torch.float32)).all(dim=1).float().mean() > 0.95


def test_coupling_fills_points_without_information_from_their_neighbours() -> None:
    offsets = labels(2)
    target = torch.tensor([1.0, -2.0, 0.0])
    cost = ((offsets - target).square().sum(1)).view(-1, 1, 1, 1).expand(-1, 8, 8, 8).clone()
    cost[:, 3:5, 3:5, 3:5] = 1.0  # no information: every label costs the same
    field = coupled_convex(cost, offsets, SearchConfig(smoothing=1))
    assert torch.allclose(field[0, :, 4, 4, 4], target, atol=1e-5)
    assert torch.allclose(field[0, :, 0, 0, 0], target, atol=1e-5)


def test_voxel_offsets_become_lps_millimetres_through_direction_and_spacing() -> None:
    grid = Grid((5, 5, 5), (2.0, 3.0, 4.0), (0.0, 0.0, 0.0),
                (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    field = torch.zeros((1, 3, 2, 2, 2))
    field[:, 0], field[:, 1], field[:, 2] = 1.0, 2.0, 3.0  # z, y, x voxels
    expected = grid.index_to_physical_matrix @ np.array([3.0, 2.0, 1.0])  # x, y, z voxels
    np.testing.assert_allclose(to_millimetres(field, grid)[0, :, 0, 0, 0].numpy(), expected)


@pytest.fixture(scope="module")
def lung_crop() -> tuple[Grid, torch.Tensor, torch.Tensor]:
    ct = read_image(sample_path())
    lungs = lung_labels(ct)
    grid = lung_crop_grid(ct, lungs, size=(64, 48, 64))
    image = normalize_ct(image_to_tensor(resample_to_grid(ct, grid))[0])
    mask = image_to_tensor(resample_to_grid(lungs, grid, "nearest", 0))[0] > 0
    return grid, image, mask


def test_a_known_translation_is_found_in_the_lungs(lung_crop) -> None:
    grid, fixed, mask = lung_crop
    config = SearchConfig(control_size=(32, 24, 32), radius=4)
    spacing = torch.tensor(search_grids(grid, config)[1].spacing, dtype=torch.float32)
    # whole feature voxels (x, y, z), so that one label is exact: sign and axes are tested
    shift = spacing * torch.tensor([1.0, -1.0, 2.0])
    moving = warp(fixed, grid, -shift.view(1, 3, 1, 1, 1).expand(1, 3, *grid.shape).clone(),
                  grid)  # M(x) = F(x - shift), so F(x) = M(x + shift)
    field = discrete_search(fixed, moving, grid, config=config)
    assert field.shape == (1, 3, *grid.shape)
    inside = field[0][:, mask[0, 0]]  # (3, voxels in the lungs)
    error = (inside - shift.view(3, 1)).norm(dim=0)
    assert float(error.median()) < 0.5
    assert float((error < 0.5 * float(spacing.min())).float().mean()) > 0.9
