"""The weight that fades the lungs' motion into the body's outside the lung crop: the
Gaussian of the distance to the crop, per axis or per voxel."""

from __future__ import annotations

import numpy as np
import pytest

from LungDeepRegLib.pipeline.fields import BODY_TAPER_MM, _outside_taper
from LungDeepRegLib.spatial import Grid


def _brute_force_taper(crop: Grid, target: Grid) -> np.ndarray:
    """Distance outside the crop voxel by voxel, as the definition says."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in target.shape), indexing="ij")
    index = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(float)
    inside = crop.physical_to_index(target.index_to_physical(index))
    below = np.maximum(-inside, 0.0)
    above = np.maximum(inside - (np.asarray(crop.size) - 1), 0.0)
    mm = np.linalg.norm((below + above) * np.asarray(crop.spacing), axis=1)
    return np.exp(-0.5 * (mm / BODY_TAPER_MM) ** 2).reshape(target.shape)


ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
TILTED = tuple(np.ravel(np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0],
                                  [0, 0, 1]])))


@pytest.mark.parametrize("direction", [Grid((1, 1, 1)).direction, ROTATED])
def test_separable_taper_equals_the_distance_per_voxel(direction):
    target = Grid((40, 36, 30), (2.0, 2.0, 2.5), (-40.0, -30.0, 10.0), direction)
    crop = Grid((12, 10, 8), (3.1, 2.7, 4.0), (0.0, 0.0, 0.0), direction)
    crop = Grid(crop.size, crop.spacing, tuple(target.index_to_physical(
        np.array([[12.3, 9.1, 7.7]]))[0]), direction)
    taper = _outside_taper(crop, target, BODY_TAPER_MM)
    np.testing.assert_allclose(taper, _brute_force_taper(crop, target), rtol=1e-10, atol=1e-12)
    assert taper.max() == 1.0 and taper.min() < 0.5  # 1 inside, fading outside


def test_taper_of_a_crop_not_aligned_with_the_output_grid():
    target = Grid((30, 28, 20), (2.0, 2.0, 2.5), (-30.0, -30.0, 0.0))
    crop = Grid((10, 9, 8), (3.0, 3.0, 3.0), (-5.0, -8.0, 12.0), TILTED)
    np.testing.assert_allclose(_outside_taper(crop, target, BODY_TAPER_MM),
                               _brute_force_taper(crop, target), rtol=1e-10, atol=1e-12)
