"""The deformable field outside the lung crop: interpolated inside, tapered outside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LungDeepRegLib.pipeline.fields import TAPER_MM, _outside_taper, extend_field
from LungDeepRegLib.spatial import Grid


def _brute_force_taper(crop: Grid, target: Grid) -> np.ndarray:
    """Distance outside the crop voxel by voxel, as the definition says."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in target.shape), indexing="ij")
    index = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(float)
    inside = crop.physical_to_index(target.index_to_physical(index))
    below = np.maximum(-inside, 0.0)
    above = np.maximum(inside - (np.asarray(crop.size) - 1), 0.0)
    mm = np.linalg.norm((below + above) * np.asarray(crop.spacing), axis=1)
    return np.exp(-0.5 * (mm / TAPER_MM) ** 2).reshape(target.shape)


ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
TILTED = tuple(np.ravel(np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0],
                                  [0, 0, 1]])))


@pytest.mark.parametrize("direction", [Grid((1, 1, 1)).direction, ROTATED])
def test_separable_taper_equals_the_distance_per_voxel(direction):
    target = Grid((40, 36, 30), (2.0, 2.0, 2.5), (-40.0, -30.0, 10.0), direction)
    crop = Grid((12, 10, 8), (3.1, 2.7, 4.0), (0.0, 0.0, 0.0), direction)
    crop = Grid(crop.size, crop.spacing, tuple(target.index_to_physical(
        np.array([[12.3, 9.1, 7.7]]))[0]), direction)
    taper = _outside_taper(crop, target)
    np.testing.assert_allclose(taper, _brute_force_taper(crop, target), rtol=1e-10, atol=1e-12)
    assert taper.max() == 1.0 and taper.min() < 0.5  # 1 inside, fading outside


def test_taper_of_a_crop_not_aligned_with_the_output_grid():
    target = Grid((30, 28, 20), (2.0, 2.0, 2.5), (-30.0, -30.0, 0.0))
    crop = Grid((10, 9, 8), (3.0, 3.0, 3.0), (-5.0, -8.0, 12.0), TILTED)
    np.testing.assert_allclose(_outside_taper(crop, target), _brute_force_taper(crop, target),
                               rtol=1e-10, atol=1e-12)


def test_extended_field_is_the_field_inside_and_fades_outside():
    crop = Grid((8, 8, 8), (4.0, 4.0, 4.0), (20.0, 20.0, 20.0))
    target = Grid((40, 40, 40), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    field = torch.ones(1, 3, 8, 8, 8, dtype=torch.float64) * torch.tensor([1.0, -2.0, 3.0],
                                                                         dtype=torch.float64
                                                                         ).view(1, 3, 1, 1, 1)
    extended = extend_field(field, crop, target)
    inside = extended[0, :, 20, 20, 20]  # (40, 40, 40) mm is inside the crop
    np.testing.assert_allclose(inside.numpy(), [1.0, -2.0, 3.0], atol=1e-12)
    corner = extended[0, :, 0, 0, 0]  # 20 mm outside the crop along each axis
    expected = np.exp(-0.5 * 3 * 20.0**2 / TAPER_MM**2) * np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(corner.numpy(), expected, rtol=1e-10)
