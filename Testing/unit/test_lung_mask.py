"""Automatic lung mask on CTs as they come (preprocess.lung_mask, body, hu, sides).

Targets (issue 13): Dice >= 0.95 and volume within 10 % on every POPI variant (reference:
the mask of the uncut image, cut the same way), Dice >= 0.90 on the CIP CT, volume within
10 % everywhere. The POPI variants are built from a 2.9x2.9x4 mm block average of POPI so
that the module stays within a few tens of seconds; the benchmark runs them at full size.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from mask_variants import POPI_VARIANTS, dice, popi_variants, shifted

from LungDeepRegLib.preprocess import (
    body_air_region,
    hu_image,
    left_right_lungs,
    lung_labels,
    lung_mask,
    lung_volume_ml,
    storage_offset,
)


def volume_error(mask: np.ndarray, reference: np.ndarray) -> float:
    return abs(mask.sum() / reference.sum() - 1.0)


@pytest.fixture(scope="module")
def popi(shared_data) -> tuple[sitk.Image, np.ndarray]:
    """POPI block-averaged to 2.9x2.9x4 mm (int16 kept) and its uncut lung labels."""
    ct = sitk.BinShrink(sitk.ReadImage(str(shared_data / "popi" / "popi_phase00.nii.gz")),
                        [3, 3, 2])
    return ct, sitk.GetArrayFromImage(lung_labels(ct))


@pytest.fixture(scope="module")
def variants(popi):
    return popi_variants(*popi)


def test_uncut_popi_has_two_plausible_lungs(popi):
    ct, labels = popi
    ml = float(np.prod(ct.GetSpacing())) / 1000.0
    left, right = ((labels == k).sum() * ml for k in (1, 2))
    assert 2000.0 < left < 3500.0 and 2500.0 < right < 4000.0
    x = np.arange(labels.shape[2])  # identity direction: index x grows to patient left
    assert x[np.nonzero(labels == 1)[2]].mean() > x[np.nonzero(labels == 2)[2]].mean()


@pytest.mark.parametrize("index", range(len(POPI_VARIANTS)), ids=POPI_VARIANTS)
def test_popi_variant(popi, variants, index):
    _, full = popi
    variant = variants[index]
    labels = sitk.GetArrayFromImage(lung_labels(variant.image))
    mask, reference = labels > 0, full[variant.box] > 0
    assert dice(mask, reference) >= 0.95
    assert volume_error(mask, reference) <= 0.10
    if variant.side is not None:  # one lung: labelled by its side of the body
        assert (labels == variant.side).sum() >= 0.99 * mask.sum()
    if variant.identical:  # index-space algorithm, HU restored exactly
        assert np.array_equal(mask, reference)
    if variant.swapped:  # the labels follow the physical x axis
        assert np.array_equal(labels, np.where(full > 0, 3 - full, 0))


def test_cip_low_resolution(shared_data):
    ct = sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"))
    reference = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_data / "cip" / "wholeLung-64.nrrd"))) > 0
    labels = sitk.GetArrayFromImage(lung_labels(ct))
    assert dice(labels > 0, reference) >= 0.90
    assert volume_error(labels > 0, reference) <= 0.10
    assert set(np.unique(labels)) == {0, 1, 2}


def test_abdomen_ct_keeps_lung_bases_not_gas(shared_data):
    """Stomach and bowel gas (about 350 ml here) is enclosed air too but not lung."""
    ct = sitk.ReadImage(str(shared_data / "totalseg" / "example_ct.nii.gz"))
    reference = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_data / "totalseg" / "lobes" / "lung.nii.gz"))) > 0
    labels = lung_labels(ct)
    array = sitk.GetArrayFromImage(labels)
    assert dice(array > 0, reference) >= 0.90
    assert volume_error(array > 0, reference) <= 0.10
    right = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_data / "totalseg" / "lobes" / "lung_lower_lobe_right.nii.gz")))
    assert (array[right > 0] == 2).mean() > 0.95  # direction diag(-1, -1, 1) respected
    region = body_air_region(ct)
    assert lung_volume_ml(region) > lung_volume_ml(labels) + 200.0  # the gas is in there
    assert sitk.GetArrayFromImage(region)[array > 0].mean() > 0.97


def test_body_air_region_contains_the_lungs(popi):
    ct, labels = popi
    region = body_air_region(ct)
    inside = sitk.GetArrayFromImage(region)
    assert region.GetSize() == ct.GetSize() and region.GetPixelID() == sitk.sitkUInt8
    assert inside[labels > 0].mean() > 0.97
    lungs_ml = (labels > 0).sum() * float(np.prod(ct.GetSpacing())) / 1000.0
    assert lung_volume_ml(region) < 1.3 * lungs_ml  # outside air is not in it


def test_thick_slices_give_a_plausible_lung_pair(shared_data):
    ct = sitk.ReadImage(str(shared_data / "lung_pet_ct_dx" / "lung_dx_a0002.nii.gz"))
    labels = lung_labels(ct)
    ml = float(np.prod(ct.GetSpacing())) / 1000.0
    sides = [np.count_nonzero(sitk.GetArrayViewFromImage(labels) == k) * ml for k in (1, 2)]
    assert 2000.0 < sum(sides) < 9000.0 and min(sides) > 0.25 * sum(sides)


def test_storage_offset_recognises_unsigned_hu_plus_1024(popi):
    ct, _ = popi
    assert storage_offset(ct) == 0.0
    assert storage_offset(shifted(ct, 24.0, sitk.sitkInt16)) == 0.0
    stored = shifted(ct, 1024.0, sitk.sitkUInt16)
    assert storage_offset(stored) == -1024.0
    restored = sitk.GetArrayFromImage(hu_image(stored))
    assert np.array_equal(restored, sitk.GetArrayFromImage(ct).astype(np.float32))
    tissue_only = sitk.GetImageFromArray(np.full((8, 16, 16), 40, dtype=np.uint16))
    assert storage_offset(tissue_only) == 0.0  # no air: taken as HU


def test_left_right_lungs_and_volume_helpers(popi):
    ct, labels = popi
    mask = lung_mask(ct)
    assert np.array_equal(sitk.GetArrayFromImage(mask) > 0, labels > 0)
    split = sitk.GetArrayFromImage(left_right_lungs(mask))
    assert (split == labels).mean() > 0.99
    ml = float(np.prod(ct.GetSpacing())) / 1000.0
    assert lung_volume_ml(mask) == pytest.approx((labels > 0).sum() * ml)
    empty = sitk.Image(ct.GetSize(), sitk.sitkInt16) - 1000
    empty.CopyInformation(ct)
    assert lung_volume_ml(lung_labels(empty)) == 0.0


@pytest.mark.parametrize("padding_hu", [-1024, -3024])
def test_padding_slices_past_the_scan_do_not_join_the_lungs_to_the_outside(popi, padding_hu):
    """A CT whose lungs reach its last slice, followed by slices of padding (no scan there,
    as a resampled grid reaching past the CT gives): the lungs are found as without them."""
    ct, _ = popi
    depth = ct.GetSize()[2]
    cut = ct[:, :, : depth - 12]  # the lungs now touch the last slice
    reference = sitk.GetArrayFromImage(lung_labels(cut)) > 0
    assert reference[-1].any(), "the test needs lungs on the last slice"
    padded = sitk.ConstantPad(cut, [0, 0, 0], [0, 0, 2], padding_hu)
    found = sitk.GetArrayFromImage(lung_labels(padded)) > 0
    assert not found[-2:].any()
    assert volume_error(found[:-2], reference) < 0.02
