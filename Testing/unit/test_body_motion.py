"""Outside the lung crop the field goes over into the body's rigid motion, not the lungs'."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.pipeline.affine import affine_prealign, body_prealign
from LungDeepRegLib.pipeline.fields import BODY_TAPER_MM, LUNG_MARGIN_MM, toward_body
from LungDeepRegLib.preprocess import lung_labels
from LungDeepRegLib.spatial import Grid


def test_inside_the_crop_the_field_stays_and_far_outside_it_is_the_body():
    crop = Grid((8, 8, 8), (4.0, 4.0, 4.0), (20.0, 20.0, 20.0))
    target = Grid((40, 40, 40), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    lungs = torch.tensor([1.0, -2.0, 8.0]).view(1, 3, 1, 1, 1).expand(1, 3, 40, 40, 40)
    body = torch.tensor([0.5, 0.0, -0.5]).view(1, 3, 1, 1, 1).expand(1, 3, 40, 40, 40)
    blended = toward_body(lungs, body, crop, target)
    np.testing.assert_allclose(blended[0, :, 20, 20, 20].numpy(), [1.0, -2.0, 8.0], atol=1e-6)
    # (0, 0, 0) lies 20 mm outside the crop along each axis: sqrt(3) * 20 mm away
    weight = np.exp(-0.5 * 3 * 20.0 ** 2 / BODY_TAPER_MM ** 2)
    expected = np.array([0.5, 0.0, -0.5]) + weight * np.array([0.5, -2.0, 8.5])
    np.testing.assert_allclose(blended[0, :, 0, 0, 0].numpy(), expected, atol=1e-6)


def test_inside_the_crop_box_but_far_from_the_lungs_the_body_moves():
    """The crop box's corners (shoulders, abdomen) lie far from the lungs: with the lung
    mask the lungs' motion holds within LUNG_MARGIN_MM of them and fades beyond."""
    target = Grid((40, 40, 40), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    crop = target  # the box holds everything
    lungs = sitk.Image([40, 40, 40], sitk.sitkUInt8)
    lungs.SetSpacing((2.0, 2.0, 2.0))
    lungs[15:25, 15:25, 15:25] = 1
    moving = torch.tensor([0.0, 0.0, 10.0]).view(1, 3, 1, 1, 1).expand(1, 3, 40, 40, 40)
    body = torch.zeros_like(moving)
    blended = toward_body(moving, body, crop, target, lungs=lungs)
    assert float(blended[0, 2, 20, 20, 20]) == 10.0  # in the lungs
    near = 1 + int(LUNG_MARGIN_MM // 4)  # voxel 24 + this: within the margin
    assert float(blended[0, 2, 20, 20, 24 + near]) > 9.0
    assert float(blended[0, 2, 2, 2, 2]) < 0.1  # a corner, 45 mm away: under 1 % of it
    np.testing.assert_array_equal(toward_body(moving, body, crop, target).numpy(),
                                  moving.numpy())  # the crop box alone: all lung motion


def _shifted(image: sitk.Image, shift_mm: tuple[float, float, float]) -> sitk.Image:
    """``image`` with its content moved by ``-shift_mm``: what was at p is at p - shift."""
    return sitk.Resample(image, image, sitk.TranslationTransform(3, shift_mm),
                         sitk.sitkLinear, -1024.0)


def test_body_stays_still_while_the_lungs_breathe_and_follows_a_patient_shift(shared_data):
    """POPI light 00 -> 50 (real breathing, the body at rest): the lungs' affine moves
    about 4 mm cranio-caudally, the body's rigid match under a millimetre; the same pair
    with the whole patient shifted by (-6, 4, -3) mm moves the body with it."""
    folder = shared_data / "popi_light"
    fixed = read_image(folder / "popi_light_00.nii.gz")
    moving = read_image(folder / "popi_light_50.nii.gz")
    lungs = lung_labels(fixed)
    lung_affine = affine_prealign(fixed, moving, lungs)
    body = body_prealign(fixed, moving, lungs, lung_affine)
    assert abs(lung_affine.GetTranslation()[2]) > 2.5
    assert np.linalg.norm(body.TransformPoint((0.0, 0.0, 0.0))) < 1.5
    shift = (6.0, -4.0, 3.0)
    moved = _shifted(moving, shift)
    body = body_prealign(fixed, moved, lungs, affine_prealign(fixed, moved, lungs))
    centre = fixed.TransformContinuousIndexToPhysicalPoint([n / 2 for n in fixed.GetSize()])
    found = np.subtract(body.TransformPoint(centre), centre)
    np.testing.assert_allclose(found, -np.asarray(shift), atol=1.5)
