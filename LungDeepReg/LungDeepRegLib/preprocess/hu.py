"""Bring a CT to Hounsfield units before thresholds are applied.

Thresholds such as -400 HU only mean something when air sits near -1000. Two storage
conventions reach the engine: plain HU (air at -1000, padding at -1024 or below) and
unsigned storage of HU + 1024 whose rescale intercept was lost on the way (a UInt16 volume
in which air sits near 0 and soft tissue near 1064). The rule that tells them apart: a CT
in HU always has negative values (air, lung, fat), so an image whose minimum is >= 0 is a
candidate for the shifted convention; it is shifted only when its histogram also shows
air near 0 and its fat/soft-tissue peak (-100 to +60 HU) between 850 and 1200, as
shifted storage does (no CT in HU has its tissue mode there). Anything else is
taken as HU. Small offsets (air stored at -1000 rather than -1024) need no correction:
the thresholds used downstream sit hundreds of HU away from both air and tissue.
"""

from __future__ import annotations

import numpy as np

from ..optional import optional_module
from ..spatial.convert import as_float32
from .coarsen import shrink_factors

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache

HU_MIN, HU_MAX = -1024.0, 3071.0
UNSIGNED_SHIFT = -1024.0  # added to HU + 1024 storage to get HU back


def storage_offset(ct: sitk.Image) -> float:
    """Value to add to ``ct`` to obtain HU: 0, or -1024 for unsigned HU + 1024 storage."""
    sample = sitk.GetArrayViewFromImage(ct)[::2, ::4, ::4]
    if sample.size == 0 or float(sample.min()) < 0.0:
        return 0.0
    values = sample.astype(np.float32).ravel()
    air_fraction = float(np.mean(values < 300.0))  # air and lung when shifted
    counts, edges = np.histogram(values[(values > 800.0) & (values < 1400.0)],
                                 bins=30, range=(800.0, 1400.0))
    if air_fraction < 0.01 or counts.sum() < 0.05 * values.size:
        return 0.0
    tissue_peak = float(edges[int(np.argmax(counts))]) + 10.0
    return UNSIGNED_SHIFT if 850.0 <= tissue_peak <= 1200.0 else 0.0


def hu_image(ct: sitk.Image) -> sitk.Image:
    """``ct`` as float32 HU, storage offset removed, clipped to [-1024, 3071].

    Clipping maps scanner padding (-2048, -3024) onto air, so that block averages on a
    coarse grid do not see an air value far below any real tissue.
    """
    image = as_float32(ct)
    offset = storage_offset(ct)
    if offset:
        image = image + offset
    return sitk.Clamp(image, sitk.sitkFloat32, HU_MIN, HU_MAX)


def working_hu(ct: sitk.Image, working_spacing_mm: float) -> sitk.Image:
    """Float32 HU block-averaged to voxels of about ``working_spacing_mm``.

    The same result as ``coarsen(hu_image(ct), ...)`` but cheaper on a 512x512 CT: the
    clipping runs on the stored pixel type only when values lie outside the HU range, and
    the cast and the offset run on the small image.
    """
    offset = storage_offset(ct)
    extremes = sitk.MinimumMaximumImageFilter()
    extremes.Execute(ct)
    if extremes.GetMinimum() + offset < HU_MIN or extremes.GetMaximum() + offset > HU_MAX:
        ct = sitk.Clamp(ct, ct.GetPixelID(), HU_MIN - offset, HU_MAX - offset)
    factors = shrink_factors(ct.GetSpacing(), working_spacing_mm)
    if factors != [1, 1, 1]:
        ct = sitk.BinShrink(ct, factors)
    image = as_float32(ct)
    return image + offset if offset else image
