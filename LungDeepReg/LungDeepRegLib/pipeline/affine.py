"""Lung-aware affine pre-alignment with SimpleITK's registration framework.

Mattes mutual information (robust to the density change between inhale and exhale),
evaluated inside the dilated fixed lung mask when one is given, three-level pyramid,
regular-step gradient descent with physical-shift scaling. The result is an ITK transform
mapping fixed to moving points, like every field in the engine.

Both images are first block-averaged to about ``WORKING_SPACING_MM`` voxels: an affine
transform has 12 parameters and is found as well on 3 mm voxels as on the 0.7-1 mm voxels
of a clinical CT, at a tenth of the cost or less (the full-resolution finest level spent
about 2 minutes on a 512x512x141 CT with two cores).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..preprocess.body import BODY_THRESHOLD_HU
from ..preprocess.coarsen import coarsen
from ..spatial import Grid, image_to_tensor

SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_MM = (4.0, 2.0, 1.0)
WORKING_SPACING_MM = 3.0
# any value but 0: SimpleITK reads a seed of 0 as sitkWallClock, which made every run's
# pre-alignment (and so the whole registration) differ slightly
SAMPLING_SEED = 1
#: The body's rigid match (:func:`body_prealign`) leaves out tissue this close to the lungs,
#: which moves with them.
BODY_LUNG_CLEARANCE_MM = 10.0
#: A rigid match of the whole body needs no 3 mm voxels: on the 512x512x141 benchmark pair
#: 6 mm took 0.8 s instead of 3.9 s and moved the result by 0.3 mm.
BODY_WORKING_SPACING_MM = 6.0


def affine_prealign(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image | None = None,
                    iterations: int = 100, sampling: float = 0.1, seed: int = SAMPLING_SEED
                    ) -> sitk.AffineTransform:
    """Affine transform (fixed to moving) from CT images in HU (float).

    Two starts, the better final match kept (Mattes MI in the fixed lung): the scanner's own
    frame (identity), right for the two phases of one session and for most follow-ups when
    the fixed lung lies inside the moving field of view, and the image centres aligned,
    right when the frames differ. Centring alone failed on cropped fields of view: a CT cut
    at the sides moves its centre by centimetres, and a POPI pair cut so started 65 mm off.
    ``seed`` fixes the random metric sampling, so repeated runs give the same transform.
    """
    if seed == sitk.sitkWallClock:
        raise ValueError("affine_prealign needs a fixed seed (0 would mean the wall clock)")
    fixed = coarsen(fixed, WORKING_SPACING_MM)
    moving = coarsen(moving, WORKING_SPACING_MM)
    mask = None if fixed_mask is None else _dilated_mask(fixed_mask, fixed)
    starts = [sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3),
        sitk.CenteredTransformInitializerFilter.GEOMETRY)]
    if _inside_moving_view(fixed, moving, mask):
        starts.insert(0, sitk.AffineTransform(3))
    results = [_register(fixed, moving, mask, start, iterations, sampling, seed)
               for start in starts]
    return min(results, key=lambda result: result[1])[0]  # ties: the scanner frame


def body_prealign(fixed: sitk.Image, moving: sitk.Image, fixed_lungs: sitk.Image,
                  lungs_affine: sitk.AffineTransform, iterations: int = 100,
                  sampling: float = 0.1, seed: int = SAMPLING_SEED) -> sitk.AffineTransform:
    """Rigid transform (fixed to moving) of the body around the lungs: the tissue above
    -500 HU at least ``BODY_LUNG_CLEARANCE_MM`` from the fixed lungs (chest wall, spine,
    abdomen), on 6 mm voxels, from the translation of the lungs' affine transform (one
    start: that one has settled the frame). Breathing moves the lungs far more than the body, a
    repositioned patient moves both: the field outside the lung crop goes over into this
    motion (:func:`.fields.toward_body`), not into the lungs' affine one. Identity when
    the fixed image holds no such tissue."""
    fixed = coarsen(fixed, BODY_WORKING_SPACING_MM)
    moving = coarsen(moving, BODY_WORKING_SPACING_MM)
    near_lungs = _dilated_mask(fixed_lungs, fixed, BODY_LUNG_CLEARANCE_MM)
    body = sitk.And(sitk.BinaryThreshold(fixed, BODY_THRESHOLD_HU, 1e9, 1, 0),
                    sitk.Not(near_lungs))
    if not bool(sitk.GetArrayViewFromImage(body).any()):
        return sitk.AffineTransform(3)
    start = sitk.Euler3DTransform()
    start.SetCenter(lungs_affine.GetCenter())
    start.SetTranslation(lungs_affine.GetTranslation())
    return _register(fixed, moving, body, start, iterations, sampling, seed)[0]


def _register(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image | None,
              initial: sitk.Transform, iterations: int, sampling: float, seed: int
              ) -> tuple[sitk.AffineTransform, float]:
    """One multi-resolution affine registration; the transform and its final metric."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=48)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_SIGMAS_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = _as_affine(method.Execute(fixed, moving))
    # the final value on the full working grid, the same for every start
    method.SetShrinkFactorsPerLevel([1])
    method.SetSmoothingSigmasPerLevel([0.0])
    method.SetMovingInitialTransform(result)
    method.SetInitialTransform(sitk.AffineTransform(3), inPlace=False)
    return result, method.MetricEvaluate(fixed, moving)


def _dilated_mask(fixed_mask: sitk.Image, fixed: sitk.Image, by_mm: float = 5.0
                  ) -> sitk.Image:
    mask = sitk.Resample(sitk.Cast(fixed_mask > 0, sitk.sitkUInt8), fixed,
                         sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    radius = [max(1, round(by_mm / s)) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius)


def _inside_moving_view(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image | None,
                        min_share: float = 0.1) -> bool:
    """Whether at least ``min_share`` of the fixed lung (else of the fixed image) lies in
    the moving image's field of view, in the scanner frame. Not its centre: a moving CT cut
    to one lung holds only half the fixed lungs, and centring the images then starts the
    search with one lung on top of the other."""
    region = mask if mask is not None else field_of_view(fixed)
    return coverage(region, moving, sitk.Transform()) >= min_share


def field_of_view(image: sitk.Image) -> sitk.Image:
    """1 on every voxel of ``image``: resampled (nearest, 0 outside) it marks where the
    image has data."""
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    return ones


def coverage(mask: sitk.Image, image: sitk.Image, transform: sitk.Transform) -> float:
    """Fraction of ``mask`` voxels that ``transform`` maps inside ``image``'s voxel extent."""
    inside = sitk.GetArrayViewFromImage(mask) > 0
    if not inside.any():
        return 0.0
    seen = sitk.Resample(field_of_view(image), mask, transform, sitk.sitkNearestNeighbor, 0)
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(seen)[inside]) / inside.sum())


def _as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """Unwrap the composite that ``Execute`` returns into one affine transform."""
    if isinstance(transform, sitk.CompositeTransform) or transform.GetName() == \
            "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        transform = composite.GetNthTransform(composite.GetNumberOfTransforms() - 1)
    if transform.GetName() == "Euler3DTransform":
        rigid = sitk.Euler3DTransform(transform)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        return affine
    return sitk.AffineTransform(transform)


def transform_to_field(transform: sitk.Transform, grid: Grid,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Any ITK transform as a displacement field ``(1, 3, z, y, x)`` (mm, LPS) on ``grid``."""
    converter = sitk.TransformToDisplacementFieldFilter()
    converter.SetReferenceImage(grid.apply_to(sitk.Image(grid.size, sitk.sitkUInt8)))
    converter.SetOutputPixelType(sitk.sitkVectorFloat64)
    field, _ = image_to_tensor(converter.Execute(transform), dtype=dtype)
    return field
