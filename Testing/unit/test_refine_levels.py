"""The refinement's optional fine level and its no-worse-than-doing-nothing guarantee.

Small real CT (CIP ct-64, about 4.2 mm voxels) on a 48x40x48 lung crop; the refinement
pyramid's finest level is 24x20x24 here, so the crop itself plays the part of the fine
level that, in the pipeline, sits near the fixed CT's native resolution.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_refine import one_thread  # noqa: F401  (autouse: one intra-op thread, see there)

from LungDeepRegLib.data import random_smooth_field
from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.losses import TUNED_WEIGHTS
from LungDeepRegLib.pipeline import crops
from LungDeepRegLib.pipeline.crops import (
    MAX_UPSAMPLING,
    THICK_SLICE_VOLUME_WEIGHT,
    native_size,
    refine_config,
)
from LungDeepRegLib.pipeline.multistart import (
    REFINED,
    Start,
    border_extended,
    moving_coverage,
    refine_from_best_start,
)
from LungDeepRegLib.pipeline.refine import COARSE_LEVELS, FINEST_LEVEL, refine
from LungDeepRegLib.pipeline.refine_config import RefineConfig
from LungDeepRegLib.preprocess import lung_crop_grid, lung_labels, normalize_ct, resample_to_grid
from LungDeepRegLib.spatial import image_to_tensor, warp

SIZE = (48, 40, 48)
PYRAMID = (24, 20, 24)  # the finest pyramid level, half the crop
SEED = 20240
# 1 mm steps on the 11.6 mm pyramid level; the fine level (5.8 mm) takes half
COARSE = RefineConfig(size=PYRAMID, levels=2, iterations=(30, 20), learning_rate=1.0)
FINE = RefineConfig(size=PYRAMID, levels=2, iterations=(30, 20), learning_rate=1.0,
                    fine_spacing_mm=1.0, fine_iterations=30)


@pytest.fixture(scope="module")
def ct(shared_data):
    image = read_image(shared_data / "cip" / "ct-64.nrrd")
    labels = lung_labels(image)
    grid = lung_crop_grid(image, labels, SIZE)
    fixed = normalize_ct(image_to_tensor(resample_to_grid(image, grid))[0])
    mask = image_to_tensor(resample_to_grid(labels, grid, "nearest", 0))[0]
    return image, labels, grid, fixed, (mask > 0).float()


def lung_epe(mask: torch.Tensor, field: torch.Tensor, truth: torch.Tensor) -> float:
    return float((field - truth).norm(dim=1, keepdim=True)[mask > 0].mean())


def test_fine_level_recovers_a_known_small_displacement(ct):
    """A smooth field of about 2 mm in the lung: the fine level (the crop) ends closer to it
    than the pyramid alone, and runs as the last level, inside the finest-level call of the
    multistart. Measured: lung EPE 1.94 -> 1.49 (pyramid) -> 1.29 mm (fine level)."""
    _, _, grid, fixed, mask = ct
    generator = torch.Generator().manual_seed(SEED)
    truth = random_smooth_field(grid, generator, (50.0, 25.0), (6.0, 3.0))
    moving = warp(fixed, grid, -truth, grid)  # M(x + u(x)) ~ F(x) for a small smooth u
    initial = lung_epe(mask, torch.zeros_like(truth), truth)
    coarse = refine(fixed, moving, grid, config=COARSE, fixed_mask=mask)
    fine = refine(fixed, moving, grid, config=FINE, fixed_mask=mask)
    assert len(coarse.iterations) == 2 and len(fine.iterations) == 3
    assert fine.grids[-1] is grid and fine.grids[-2].size == PYRAMID
    before, after = lung_epe(mask, coarse.field, truth), lung_epe(mask, fine.field, truth)
    assert after < before < initial, f"EPE {initial:.2f} -> {before:.2f} -> {after:.2f} mm"
    assert after < 0.75 * initial
    quick = RefineConfig(size=PYRAMID, levels=2, iterations=(2, 2), fine_spacing_mm=1.0,
                         fine_iterations=2)
    split = refine(fixed, moving, grid, config=quick, fixed_mask=mask,
                   run_levels=COARSE_LEVELS)
    assert len(split.iterations) == 1  # the fine level is not a coarse level
    rest = refine(fixed, moving, grid, split.field, quick, fixed_mask=mask,
                  run_levels=FINEST_LEVEL)
    assert rest.iterations == [2, 2]  # the finest pyramid level and the fine level


def test_fine_crop_size_keeps_the_budget_and_never_shrinks_below_the_pyramid():
    config = RefineConfig(fine_spacing_mm=1.5, fine_max_voxels=1_000_000)
    size = config.crop_size((300.0, 240.0, 280.0))
    assert all(s >= p for s, p in zip(size, config.size, strict=True))
    assert size[0] * size[1] * size[2] <= 1_000_000
    assert RefineConfig().crop_size((300.0, 240.0, 280.0)) == RefineConfig().size
    with pytest.raises(ValueError):
        RefineConfig(fine_spacing_mm=0.0)


def test_no_motion_ends_no_worse_than_its_start(ct):
    """Fixed = moving: a start that adds motion (as the networks do on such pairs) and the
    affine start alone; the result must be no worse than doing nothing, exactly."""
    _, _, grid, fixed, mask = ct
    generator = torch.Generator().manual_seed(SEED + 1)
    noise = random_smooth_field(grid, generator, (50.0, 25.0), (4.0, 2.0))
    identity = sitk.AffineTransform(3)
    starts = [Start("affine, no network", identity, None, None, COARSE),
              Start("network", identity, noise, grid, COARSE)]
    result = refine_from_best_start(starts, lambda transform, config: (grid, fixed, fixed, mask),
                                    baselines=[Start("identity", identity, None, None, COARSE)])
    assert result.kept != REFINED and set(result.final_scores) == {
        "affine, no network", "network", "identity", REFINED}
    assert lung_epe(mask, result.refined.field, torch.zeros_like(noise)) == 0.0


def test_border_extension_stops_the_drift_at_a_cut_field_of_view(ct):
    """The moving CT ends a few slices inside the fixed lungs (the lungs touch the field of
    view); with the -1024 HU fill the refinement of a pair without motion drifts, with the
    border extended and the similarity kept to where the moving CT has data (as the
    pipeline's crops do) it stays put."""
    image, _, grid, fixed, mask = ct
    cut = image[:, :, : image.GetSize()[2] - 6]
    raw = normalize_ct(image_to_tensor(resample_to_grid(cut, grid))[0])
    extended = border_extended(cut, sitk.AffineTransform(3), grid, raw)
    assert not torch.equal(raw, extended)
    inside = raw > 0
    assert torch.equal(extended[inside], raw[inside])  # the crop is kept inside the image
    coverage = moving_coverage(cut, sitk.AffineTransform(3), grid)
    assert not bool(coverage.all()) and bool(coverage[inside].all())
    zero = torch.zeros((1, 3, *grid.shape))
    drift = {name: lung_epe(mask, refine(fixed, moving, grid, config=COARSE, fixed_mask=mask,
                                         moving_coverage=covered).field, zero)
             for name, moving, covered in (("fill", raw, None),
                                           ("extended", extended, coverage))}
    assert drift["extended"] < 0.5 * drift["fill"], drift


def test_refinement_crop_is_never_finer_than_the_ct_allows(ct, monkeypatch):
    """A coarse CT gets a crop at most MAX_UPSAMPLING times finer than its voxels (the
    default 1: its own voxels), and a CT finer than the crop keeps the configured size."""
    image, labels, *_ = ct
    size = (200, 200, 200)
    crop = lung_crop_grid(image, labels, size=size)
    extent = [sp * (n - 1) for sp, n in zip(crop.spacing, crop.size, strict=True)]
    for factor in (MAX_UPSAMPLING, 2.0):
        monkeypatch.setattr(crops, "MAX_UPSAMPLING", factor)
        monkeypatch.setattr(crops, "THICK_SLICE_UPSAMPLING", factor)
        made = native_size(image, labels, size)
        for voxels, length, spacing in zip(made, extent, image.GetSpacing(), strict=True):
            assert length / spacing * factor <= voxels - 1 <= length / spacing * factor + 1
    assert native_size(image, labels, (16, 12, 16)) == (16, 12, 16)


def test_thick_slices_get_a_finer_crop_along_the_slices_only():
    """0.8x0.8x5 mm: the crop may be 2x finer than the slices (2.5 mm) but never finer
    than the in-plane pixels; 5x5x6 mm (near-isotropic) keeps its own voxels."""
    def made(spacing: tuple[float, float, float]) -> np.ndarray:
        image = sitk.Image([200, 200, 60], sitk.sitkInt16)
        image.SetSpacing(spacing)
        lungs = sitk.Image([200, 200, 60], sitk.sitkUInt8)
        lungs.CopyInformation(image)
        lungs[20:180, 30:170, 5:55] = 1
        size = np.asarray(native_size(image, lungs, (400, 400, 400)))
        extent = np.asarray(lung_crop_grid(image, lungs, size=(9, 9, 9)).spacing) * 8
        return extent / (size - 1)  # the crop's spacing (x, y, z)

    np.testing.assert_allclose(made((0.8, 0.8, 5.0)), (0.8, 0.8, 2.5), rtol=0.02)
    np.testing.assert_allclose(made((5.0, 5.0, 6.0)), (5.0, 5.0, 6.0), rtol=0.02)


def test_thick_slices_get_the_lighter_volume_weight_in_every_schedule():
    """0.8x0.8x5 mm and POPI's 0.98x0.98x2 mm count as thick slices (gamma 1, from
    identity and after a network); 5x5x6 and 2x2x2.5 mm keep the tuned gamma 3, and so
    does a caller that does not give the spacing."""
    for after_network in (False, True):
        thick = refine_config(None, after_network, fixed_spacing=(0.8, 0.8, 5.0))
        assert thick.weights.volume == THICK_SLICE_VOLUME_WEIGHT
        assert refine_config(None, after_network, fixed_spacing=(0.977, 0.977, 2.0)
                             ).weights.volume == THICK_SLICE_VOLUME_WEIGHT
        for spacing in ((5.0, 5.0, 6.0), (2.0, 2.0, 2.5), None):
            config = refine_config(None, after_network, fixed_spacing=spacing)
            assert config.weights.volume == TUNED_WEIGHTS.volume
            assert config.weights.curvature == thick.weights.curvature
    assert TUNED_WEIGHTS.volume > THICK_SLICE_VOLUME_WEIGHT
