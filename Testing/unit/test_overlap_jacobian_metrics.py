"""Overlap (Dice, ASD, HD95) and Jacobian regularity metrics on known shapes and real labels.

Surface distances are checked against a brute-force reference written here (26-neighbour
surface voxels, all pairwise distances in mm), independent of the SimpleITK filters used in
the engine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.metrics.jacobian import (
    folding_fraction,
    jacobian_summary,
    sd_log_jacobian,
)
from LungDeepRegLib.metrics.overlap import label_overlap
from LungDeepRegLib.spatial.flow import jacobian_determinant
from LungDeepRegLib.spatial.grid import Grid

SPACING = (0.7, 1.1, 2.5)  # (x, y, z) mm, deliberately anisotropic
ORIGIN = (-40.0, 12.5, -200.0)


def _image(array: np.ndarray, spacing=SPACING) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(ORIGIN)
    return image


def _surface_points(mask: np.ndarray, spacing) -> np.ndarray:
    """Voxels of ``mask`` with a background voxel among their 26 neighbours, in mm (x, y, z)."""
    padded = np.pad(mask, 1)
    all_inside = np.ones_like(mask, dtype=bool)
    nz, ny, nx = mask.shape
    for dz in (0, 1, 2):
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                all_inside &= padded[dz:dz + nz, dy:dy + ny, dx:dx + nx].astype(bool)
    zyx = np.argwhere(mask.astype(bool) & ~all_inside)
    return zyx[:, ::-1] * np.asarray(spacing)


def _reference_distances(a: np.ndarray, b: np.ndarray, spacing) -> dict[str, float]:
    pa, pb = _surface_points(a, spacing), _surface_points(b, spacing)
    pairwise = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1)
    a_to_b, b_to_a = pairwise.min(axis=1), pairwise.min(axis=0)
    pooled = np.concatenate((a_to_b, b_to_a))
    return {"asd_mm": pooled.mean(), "hd_mm": pooled.max(),
            "hd95_mm": max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95))}


def _box(shape, start, size) -> np.ndarray:
    array = np.zeros(shape, dtype=np.uint8)
    array[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = 1
    return array


# ------------------------------------------------------------------------------ overlap
def test_identical_maps_overlap_perfectly():
    labels = _box((20, 24, 28), (3, 4, 5), (8, 10, 12))
    labels[12:18, 2:8, 3:9] = 3
    result = label_overlap(_image(labels), _image(labels))
    assert sorted(result) == [1, 3]
    for values in result.values():
        assert values["dice"] == pytest.approx(1.0)
        assert values["asd_mm"] == pytest.approx(0.0, abs=1e-5)
        assert values["hd95_mm"] == pytest.approx(0.0, abs=1e-5)
        assert values["volume_fixed_ml"] == values["volume_moving_ml"]
        assert values["note"] == ""
    voxel_ml = math.prod(SPACING) / 1000
    assert result[1]["volume_fixed_ml"] == pytest.approx(8 * 10 * 12 * voxel_ml)


@pytest.mark.parametrize("axis", [0, 1, 2])  # array axes z, y, x
def test_shifted_box_distances_in_mm(axis):
    """A box shifted by k voxels: Dice (T - k) / T, HD95 = HD = k * spacing of that axis."""
    k, thickness, width = 2, 4, 10
    size = [width] * 3
    size[axis] = thickness
    shape = (18, 18, 18)
    start = [4, 4, 4]
    fixed = _box(shape, start, size)
    start[axis] += k
    moving = _box(shape, start, size)
    spacing_mm = SPACING[2 - axis]
    result = label_overlap(_image(fixed), _image(moving), labels=[1])[1]
    assert result["dice"] == pytest.approx((thickness - k) / thickness)
    assert result["hd95_mm"] == pytest.approx(k * spacing_mm, abs=1e-4)
    assert result["hd_mm"] == pytest.approx(k * spacing_mm, abs=1e-4)
    reference = _reference_distances(fixed, moving, SPACING)
    assert result["asd_mm"] == pytest.approx(reference["asd_mm"], abs=1e-4)
    assert 0 < result["asd_mm"] < k * spacing_mm


def test_irregular_shapes_match_brute_force():
    """Blobs with thin and curved parts, where surface definitions differ, and the border."""
    z, y, x = np.mgrid[:16, :20, :24]
    fixed = ((z - 8) ** 2 / 30 + (y - 10) ** 2 / 40 + (x - 10) ** 2 / 60
             + 0.4 * np.sin(x / 2.0) < 1).astype(np.uint8)
    moving = ((z - 7) ** 2 / 25 + (y - 11) ** 2 / 50 + (x - 13) ** 2 / 70
              + 0.3 * np.cos(y / 2.0) < 1).astype(np.uint8)
    moving[:, :, 22:] = 1  # touches the image border: the border counts as surface
    moving[8, 3:17, 5] = 1  # a one-voxel-thin line
    result = label_overlap(_image(fixed), _image(moving), labels=[1])[1]
    reference = _reference_distances(fixed, moving, SPACING)
    for key in ("asd_mm", "hd95_mm", "hd_mm"):
        assert result[key] == pytest.approx(reference[key], abs=1e-4), key
    intersection = np.count_nonzero(fixed & moving)
    dice = 2 * intersection / (fixed.sum() + moving.sum())
    assert result["dice"] == pytest.approx(dice)


def test_sphere_dice_matches_lens_volume():
    """Two spheres of radius r, centres d apart: Dice = lens volume / sphere volume."""
    spacing = (0.8, 0.8, 1.5)
    radius, distance = 12.0, 9.0
    shape = (24, 48, 56)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(float)
    px, py, pz = x * spacing[0], y * spacing[1], z * spacing[2]
    centre = np.array([20.0, 19.0, 17.0])

    def sphere(c):
        return ((px - c[0]) ** 2 + (py - c[1]) ** 2 + (pz - c[2]) ** 2 <= radius**2)

    fixed, moving = sphere(centre), sphere(centre + [distance, 0.0, 0.0])
    result = label_overlap(_image(fixed, spacing), _image(moving, spacing))[1]
    sphere_ml = 4 / 3 * math.pi * radius**3 / 1000
    lens_ml = math.pi * (4 * radius + distance) * (2 * radius - distance) ** 2 / 12 / 1000
    assert result["volume_fixed_ml"] == pytest.approx(sphere_ml, rel=0.03)
    assert result["dice"] == pytest.approx(lens_ml / sphere_ml, abs=0.02)
    # the moved sphere's far cap lies `distance` away; no surface point is further
    assert result["hd_mm"] == pytest.approx(distance, abs=0.8)


def test_empty_labels_give_nan_with_a_note():
    fixed = _box((10, 10, 10), (2, 2, 2), (4, 4, 4))
    moving = np.zeros_like(fixed)
    moving[1:3, 1:3, 1:3] = 2
    result = label_overlap(_image(fixed), _image(moving), labels=[1, 2, 7])
    assert sorted(result) == [1, 2, 7]
    assert result[1]["dice"] == 0.0 and "warped" in result[1]["note"]
    assert result[2]["dice"] == 0.0 and "fixed" in result[2]["note"]
    assert all(math.isnan(result[1][key]) for key in ("asd_mm", "hd95_mm", "hd_mm"))
    assert result[1]["volume_moving_ml"] == 0.0
    assert all(math.isnan(result[7][key]) for key in ("dice", "asd_mm", "hd95_mm"))
    assert "both" in result[7]["note"]
    assert sorted(label_overlap(_image(fixed), _image(moving))) == [1, 2]  # found labels


def test_different_grids_are_refused():
    labels = _box((10, 10, 10), (2, 2, 2), (4, 4, 4))
    with pytest.raises(ValueError, match="grid"):
        label_overlap(_image(labels), _image(labels, spacing=(1.0, 1.0, 1.0)))


def test_real_lobe_map_against_itself_shifted(shared_data):
    """CIP 5-lobe map (codes 4..8 in the low byte), every 2nd voxel, shifted 2 voxels in x."""
    image = sitk.ReadImage(str(shared_data / "cip" / "crop_ct_interactiveLobeSegmentation.nrrd"))
    lobes = (sitk.GetArrayFromImage(image) & 0xFF)[::2, ::2, ::2]
    spacing = tuple(2 * s for s in image.GetSpacing())
    shifted = np.zeros_like(lobes)
    shifted[:, :, 2:] = lobes[:, :, :-2]  # no lobe reaches the last two columns
    assert not lobes[:, :, -2:].any()
    fixed = _image(lobes, spacing)

    same = label_overlap(fixed, _image(lobes, spacing))
    assert sorted(same) == [4, 5, 6, 7, 8]
    for values in same.values():
        assert values["dice"] == pytest.approx(1.0)
        assert values["hd95_mm"] == pytest.approx(0.0, abs=1e-5)

    moved = label_overlap(fixed, _image(shifted, spacing))
    shift_mm = 2 * spacing[0]
    for label, values in moved.items():
        a, b = lobes == label, shifted == label
        expected_dice = 2 * np.count_nonzero(a & b) / (a.sum() + b.sum())
        assert values["dice"] == pytest.approx(expected_dice)
        assert values["volume_fixed_ml"] == pytest.approx(values["volume_moving_ml"])
        # every surface voxel has its shifted copy on the other surface
        assert 0 < values["asd_mm"] <= values["hd95_mm"] <= shift_mm + 1e-4
        assert values["hd_mm"] == pytest.approx(shift_mm, abs=1e-4)


# ----------------------------------------------------------------------------- Jacobian
def test_known_determinants_give_exact_metrics():
    det = np.array([1.0, math.e, 1 / math.e, math.e, -0.5, 0.0, 2.0, 1.0])
    assert folding_fraction(det) == pytest.approx(2 / 8)
    head = det[:4]  # logs 0, 1, -1, 1: mean 1/4, SD sqrt(0.6875)
    assert sd_log_jacobian(head) == pytest.approx(math.sqrt(0.6875))
    # folded voxels enter at log(1e-9)
    assert sd_log_jacobian(np.array([0.0, 1.0])) == pytest.approx(-math.log(1e-9) / 2)


def test_mask_restricts_the_region_for_torch_batches():
    det = torch.ones(2, 1, 4, 5, 6)
    det[:, :, 0] = -1.0  # folding only in slice 0, outside the mask
    det[0, 0, 2, 2, 2] = math.e
    mask = torch.zeros(4, 5, 6, dtype=torch.bool)
    mask[1:] = True
    inside = jacobian_summary(det, mask)
    assert inside["region"] == "lung mask"
    assert inside["voxels"] == 2 * 3 * 5 * 6
    assert inside["folding_count"] == 0 and inside["folding_fraction"] == 0.0
    assert inside["max_det"] == pytest.approx(math.e)
    values = np.ones(inside["voxels"])
    values[0] = math.e
    assert inside["sd_log_jacobian"] == pytest.approx(np.log(values).std())
    whole = jacobian_summary(det.numpy())
    assert whole["region"] == "whole image"
    assert whole["folding_count"] == 2 * 5 * 6
    assert whole["folding_fraction"] == pytest.approx(0.25)
    assert whole["min_det"] == -1.0
    assert folding_fraction(det, mask.numpy().astype(np.uint8)) == 0.0


def test_empty_region_and_bad_mask():
    det = np.ones((3, 3, 3))
    empty = jacobian_summary(det, np.zeros((3, 3, 3)))
    assert empty["voxels"] == 0 and math.isnan(empty["sd_log_jacobian"])
    assert math.isnan(folding_fraction(det, np.zeros((3, 3, 3))))
    with pytest.raises(ValueError, match="mask"):
        folding_fraction(det, np.ones((2, 3, 3)))


def test_identity_field_is_regular():
    grid = Grid((6, 5, 4), (0.7, 1.1, 2.5))
    det = jacobian_determinant(torch.zeros(1, 3, *grid.shape), grid)
    summary = jacobian_summary(det)
    assert summary["folding_fraction"] == 0.0
    assert summary["sd_log_jacobian"] == pytest.approx(0.0, abs=1e-6)
    assert summary["mean_det"] == pytest.approx(1.0)
