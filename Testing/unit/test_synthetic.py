"""Lung crop grids and synthetic pairs with known ground truth (data.synthetic).

Small grids (48x40x48) on the tiny real COPDGene CT keep the whole module to a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from crop_helpers import lung_crop_case
from geometry_helpers import FLIPPED

from LungDeepRegLib.data import (
    SyntheticPairSource,
    breathing_field,
    invert_field,
    make_pair,
    pair_seed,
    random_smooth_field,
)
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.preprocess import (
    lung_crop_grid,
    lung_mask,
    normalize_ct,
    resample_to_grid,
)
from LungDeepRegLib.spatial import (
    Grid,
    compose,
    image_to_tensor,
    jacobian_determinant,
    spatial_gradient,
    tensor_to_image,
    warp,
)

SIZE = (48, 40, 48)


@pytest.fixture(scope="module")
def ct(shared_data) -> sitk.Image:
    return read_image(shared_data / "cip" / "ct-64.nrrd")


@pytest.fixture(scope="module")
def case(ct):
    """The CT cropped to the lungs: (HU tensor, label tensor, grid)."""
    return lung_crop_case(ct, SIZE)


@pytest.fixture(scope="module")
def source(ct):
    return SyntheticPairSource([(ct, None)], SIZE, seed=11, length=8)


def lung_points(mask: sitk.Image) -> np.ndarray:
    zz, yy, xx = np.nonzero(sitk.GetArrayFromImage(mask))
    return Grid.from_image(mask).index_to_physical(np.stack((xx, yy, zz), axis=1))


def mean_abs(a: torch.Tensor, b: torch.Tensor, inside: torch.Tensor) -> float:
    return float((a - b)[inside].abs().mean())


# ---------------------------------------------------------------------------- crop
def test_crop_grid_has_size_and_holds_the_whole_lung(ct):
    mask = lung_mask(ct)
    grid = lung_crop_grid(ct, mask, SIZE, margin_mm=10.0)
    assert grid.size == SIZE
    assert grid.direction == Grid.from_image(ct).direction
    assert grid.contains(lung_points(mask), margin=1e-6).all()
    assert np.prod(grid.size) * np.prod(grid.spacing) < 0.9 * np.prod(
        np.asarray(ct.GetSize()) * ct.GetSpacing())  # a crop, not the whole image


def test_crop_grid_keeps_a_flipped_rotated_direction(ct):
    turned = sitk.Image(ct)
    turned.SetDirection(tuple(FLIPPED.ravel()))
    mask = lung_mask(turned)
    grid = lung_crop_grid(turned, mask, (32, 24, 40))
    assert np.allclose(grid.direction_matrix, FLIPPED)
    assert grid.contains(lung_points(mask), margin=1e-6).all()


def test_crop_grid_without_lung_uses_the_body():
    array = np.full((30, 40, 50), -1024.0, dtype=np.float32)
    array[10:20, 5:25, 20:40] = 40.0  # soft tissue only, no air inside
    image = sitk.GetImageFromArray(array)
    grid = lung_crop_grid(image, None, (8, 8, 8), margin_mm=0.0)
    assert np.allclose(grid.origin, (19.5, 4.5, 9.5))
    assert np.allclose(np.asarray(grid.spacing) * 7, (20.0, 20.0, 10.0))


def test_resample_to_grid_and_normalize(ct, case):
    _, labels, grid = case
    assert set(torch.unique(labels).tolist()) == {0, 1, 2}
    image = resample_to_grid(ct, grid)
    assert image.GetSize() == grid.size and image.GetPixelID() == ct.GetPixelID()
    finer_in_z = lung_crop_grid(ct, None, (16, 16, 120))  # 2.6 mm slices from 4 mm ones
    assert resample_to_grid(ct, finer_in_z).GetSize() == (16, 16, 120)
    hu = torch.tensor([-2000.0, -1024.0, 0.0, 3071.0, 5000.0])
    expected = torch.tensor([0.0, 0.0, 1024.0 / 4095.0, 1.0, 1.0])
    assert torch.allclose(normalize_ct(hu), expected)


# ---------------------------------------------------------------------------- fields
def test_breathing_field_is_cranio_caudal_and_grows_to_the_base(case):
    _, labels, grid = case
    generator = torch.Generator().manual_seed(0)
    field = breathing_field(grid, labels, generator, max_cc_mm=(30.0, 30.0))
    inside = labels[0, 0] > 0
    u_x, u_y, u_z = (field[0, k][inside] for k in range(3))
    assert float(u_z.max()) >= 25.0
    assert float(u_z.abs().mean()) > 2.5 * max(float(u_x.abs().mean()), float(u_y.abs().mean()))
    # lowest and highest fifth of the lung's slices (index z runs inferior to superior here)
    slices = torch.nonzero(inside.any(dim=(1, 2)))[:, 0]
    fifth = max(1, len(slices) // 5)
    base, apex = inside.clone(), inside.clone()
    base[slices[fifth]:] = False
    apex[:slices[-fifth]] = False
    u_base, u_apex = field[0, 2][base], field[0, 2][apex]
    assert float(u_base.mean()) > 15.0  # inhale base sits higher (+z) in the exhale image
    assert float(u_base.abs().mean()) > 5 * float(u_apex.abs().mean())
    assert float(jacobian_determinant(field, grid).min()) > 0.5


@pytest.mark.parametrize("seed", range(4))
def test_breathing_and_random_fields_never_fold(case, seed):
    _, labels, grid = case
    generator = torch.Generator().manual_seed(seed)
    for field in (breathing_field(grid, labels, generator), random_smooth_field(grid, generator)):
        assert float(jacobian_determinant(field, grid).min()) > 0.3


def test_random_field_is_smooth_and_bounded(case):
    grid = case[2]
    field = random_smooth_field(grid, torch.Generator().manual_seed(3))
    assert field.shape == (1, 3, *grid.shape)
    assert 2.0 < float(field.abs().max()) <= 10.0 + 5.0 + 2.5  # B-spline weights sum to 1
    assert float(spatial_gradient(field, grid).abs().max()) < 0.5  # mm per mm
    coarse = random_smooth_field(grid, torch.Generator().manual_seed(3), (100.0,), (10.0,))
    step = (coarse[..., 1:] - coarse[..., :-1]).abs().max()
    assert float(step) < 0.1 * float(coarse.abs().max())  # no voxel-scale texture


def test_inverse_field_undoes_the_field(case):
    _, labels, grid = case
    field = breathing_field(grid, labels, torch.Generator().manual_seed(1), (30.0, 30.0))
    inverse, residual = invert_field(field, grid)
    assert residual < 0.05
    assert float(compose(field, inverse, grid).abs().max()) < 0.05  # u(y + v(y)) + v(y)
    # the other order holds where x + u(x) stays in the grid, up to the linear
    # interpolation of v between voxel centres (6 mm here)
    inside = labels[0, 0] > 0
    assert float(compose(inverse, field, grid)[0][:, inside].abs().max()) < 0.3


# ----------------------------------------------------------------------------- pairs
def residual_and_initial(pair) -> tuple[float, float]:
    inside = pair.fixed_mask > 0
    warped = warp(pair.moving, pair.grid, pair.field, pair.grid)
    return mean_abs(warped, pair.fixed, inside), mean_abs(pair.moving, pair.fixed, inside)


def test_warped_moving_reproduces_fixed_in_the_lung(case):
    hu, labels, grid = case
    full = make_pair(hu, labels, grid, torch.Generator().manual_seed(5), labels=labels,
                     max_cc_mm=(30.0, 30.0))
    after, before = residual_and_initial(full)
    assert after < 0.5 * before  # density change and noise remain, by design
    assert full.inverse_residual_mm < 0.05
    # the exactness of M(x + u(x)) = F(x) shows on an image without voxel-scale detail
    # (two linear interpolations blur a 6 mm crop of a 4 mm CT noticeably)
    smooth, _ = image_to_tensor(sitk.SmoothingRecursiveGaussian(tensor_to_image(hu, grid), 8.0))
    args = dict(labels=labels, max_cc_mm=(30.0, 30.0))
    clean = make_pair(smooth, labels, grid, torch.Generator().manual_seed(5),
                      intensity_change=False, noise=False, **args)
    real = make_pair(smooth, labels, grid, torch.Generator().manual_seed(5), **args)
    assert torch.equal(clean.field, real.field)  # the flags do not change the draw
    clean_after, clean_before = residual_and_initial(clean)
    assert clean_after < 0.15 * clean_before
    assert clean_after < 0.5 * residual_and_initial(real)[0]


def test_compressed_lung_gets_denser(case):
    hu, labels, grid = case
    pair = make_pair(hu, labels, grid, torch.Generator().manual_seed(2), noise=False,
                     max_cc_mm=(30.0, 30.0))
    plain = make_pair(hu, labels, grid, torch.Generator().manual_seed(2), noise=False,
                      intensity_change=False, max_cc_mm=(30.0, 30.0))
    compressed = (warp(jacobian_determinant(pair.field, grid), grid, pair.inverse_field, grid,
                       fill=1.0) < 0.9) & (pair.moving_mask > 0)
    assert compressed.sum() > 100
    assert float((pair.moving - plain.moving)[compressed].mean()) > 0.005  # > 20 HU denser


def test_masks_and_labels_follow_the_motion(case):
    hu, labels, grid = case
    pair = make_pair(hu, labels, grid, torch.Generator().manual_seed(4), "mixed", labels=labels)
    back = warp(pair.moving_labels.float(), grid, pair.field, grid, interpolation="nearest")
    agree = (back == pair.fixed_labels.float())[pair.fixed_mask > 0].float().mean()
    assert float(agree) > 0.9
    assert set(torch.unique(pair.moving_labels).tolist()) == {0, 1, 2}
    assert pair.moving_mask.sum() < pair.fixed_mask.sum()  # exhale lungs are smaller
    assert float(pair.moving.min()) >= 0.0 and float(pair.moving.max()) <= 1.0


# ------------------------------------------------------------------- determinism, source
def test_pairs_are_reproducible_by_seed_and_index(source, ct):
    first, again, other = source.pair(3), source.pair(3), source.pair(4)
    for name in ("fixed", "moving", "field", "moving_mask", "moving_labels"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.field, other.field)
    elsewhere = SyntheticPairSource([(ct, None)], SIZE, seed=12).pair(3)
    assert not torch.equal(first.field, elsewhere.field)
    assert len({pair_seed(s, i) for s in range(3) for i in range(100)}) == 300


def test_source_is_a_dataset(source):
    assert len(source) == 8
    batch = next(iter(torch.utils.data.DataLoader(source, batch_size=2)))
    z, y, x = SIZE[::-1]
    assert batch["fixed"].shape == (2, 1, z, y, x)
    assert batch["field"].shape == (2, 3, z, y, x)
    assert batch["moving_labels"].dtype == torch.uint8
    assert batch["affine"].shape == (2, 4, 4)
    assert batch["index"].tolist() == [0, 1]
    with pytest.raises(IndexError):
        source[8]


def test_unknown_kind_is_refused(case):
    hu, labels, grid = case
    with pytest.raises(ValueError, match="kind"):
        make_pair(hu, labels, grid, torch.Generator(), "twist")


def test_moving_image_repeats_its_border_instead_of_inventing_air(case):
    hu, labels, grid = case
    options = dict(intensity_change=False, noise=False, max_cc_mm=(30.0, 30.0))
    border = make_pair(hu, labels, grid, torch.Generator().manual_seed(6), **options)
    air = make_pair(hu, labels, grid, torch.Generator().manual_seed(6), fill_hu=-1024.0,
                    **options)
    bottom = (0, 0, 0)  # the most inferior slice: the base was lifted from below the crop
    assert float(air.moving[bottom].mean()) < 0.02  # a slab of -1024 HU
    assert float(border.moving[bottom].mean()) > float(border.fixed[bottom].mean()) - 0.05
