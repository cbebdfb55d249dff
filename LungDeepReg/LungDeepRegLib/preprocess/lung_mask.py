"""Automatic lung masks from CT with SimpleITK/SciPy filters (no model, no user input).

Recipe (CONVENTIONS.md): HU threshold around -400, air outside the body removed, the
largest components kept, holes (vessels, airway walls) filled, a small dilation. The steps
are made to hold on CTs as they come:

- intensities are brought to HU first (:mod:`.hu`: unsigned HU + 1024 storage is shifted);
- outside air is the air not enclosed by the body in its axial slices (:mod:`.body`), not
  "air touching the border", so a lung cut by the field of view stays;
- gas in the bowel, the stomach or the oesophagus (and a trachea that is not joined to
  the lungs) is enclosed too, but it is pure air while lung parenchyma is denser (vessels,
  tissue): a component whose interior median lies within ``GAS_MARGIN_HU`` of the outside
  air level is not lung. Measured on the shared CTs: lungs 67 HU above that level (the
  emphysematous COPDGene CT at 4 mm) to 200 HU, stomach and bowel gas 2-18 HU above it
  (with and without 100 HU noise);
- a single lung gets its label from the side where the body ends (:mod:`.sides`), not
  from "the two largest parts";
- the morphology runs on a grid of about 2.5 mm and the result is resampled back.

Labels: 1 = left lung, 2 = right lung (patient left is +x in LPS), see :mod:`.sides`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..optional import optional_module
from .body import AirComponents, fill_holes, find_air, to_ct_grid
from .hu import working_hu
from .sides import LATERAL_REACH_MM, left_right_lungs, lung_sides
from .voxels import bounding_box, like, voxel_ml

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache

AIR_THRESHOLD_HU = -400.0
GAS_MARGIN_HU = 35.0
MIN_PART_FRACTION = 0.1  # a second lung part must hold this share of the largest one
MIN_PART_ML = 1.0
BOX_MARGIN_MM = LATERAL_REACH_MM + 5.0  # room for the closing and the side test

__all__ = ["left_right_lungs", "lung_labels", "lung_mask"]


def lung_labels(ct: sitk.Image, threshold: float = AIR_THRESHOLD_HU,
                dilation_mm: float = 2.0, working_spacing_mm: float = 2.5) -> sitk.Image:
    """Lung label map (UInt8: 0 background, 1 left, 2 right) on the CT's grid.

    The morphology runs on a grid of at least ``working_spacing_mm`` (a 512x512 CT has ten
    times more voxels than the mask needs); the labels are resampled back at the end.
    Empty when no lung-like air is found.
    """
    air = find_air(working_hu(ct, working_spacing_mm), threshold)
    lungs = _select_lungs(air)
    labels = np.zeros(lungs.shape, dtype=np.uint8)
    if lungs.any():  # the rest only needs the lungs and what lies beside them
        box = bounding_box(lungs, air.working, BOX_MARGIN_MM)
        crop = air.working[box[::-1]]
        lungs = _dilate(fill_holes(lungs[box], crop, air.axis), crop, dilation_mm)
        labels[box] = lung_sides(lungs, crop, air.outside()[box])
    return to_ct_grid(labels, air.working, ct)


def lung_mask(ct: sitk.Image, **kwargs: float) -> sitk.Image:
    """Binary lung mask (UInt8, 0/1) on the CT's grid; see :func:`lung_labels`."""
    return sitk.Cast(lung_labels(ct, **kwargs) > 0, sitk.sitkUInt8)


def _select_lungs(air: AirComponents) -> np.ndarray:
    """Inside-body air components that are lung: not gas, and lung-sized.

    The largest lung-like component is kept with every other one holding at least
    ``MIN_PART_FRACTION`` of its volume (the second lung, or a lung split by a cut).
    When every candidate looks like gas they are all kept (an unusual image, or lungs
    darker than expected): the pipeline judges the mask's volume and can fall back to the
    body's air region.
    """
    ml = voxel_ml(air.working)
    candidates = [k for k in air.inside_labels if air.sizes[k] * ml >= MIN_PART_ML]
    if not candidates:
        return np.zeros(air.labels.shape, dtype=bool)
    gas_level = air.air_level() + GAS_MARGIN_HU
    boxes = ndimage.find_objects(air.labels)
    lung_like = [k for k in candidates if _interior_median(air, k, boxes[k - 1]) > gas_level]
    pool = lung_like or candidates
    largest = max(air.sizes[k] for k in pool)
    keep = [k for k in pool if air.sizes[k] >= MIN_PART_FRACTION * largest]
    return np.isin(air.labels, keep)


def _dilate(lungs: np.ndarray, working: sitk.Image, dilation_mm: float) -> np.ndarray:
    """Add the voxels whose centres lie within ``dilation_mm`` of the mask.

    Along axes whose voxels are coarser than ``dilation_mm`` nothing is added: rounding a
    2 mm dilation up to one 3-4 mm voxel added a fifth to the lung volume of the CIP CT
    and doubled the lung bases of the TotalSegmentator CT (a lung's surface is large).
    """
    radius = [int(dilation_mm / s + 1e-6) for s in working.GetSpacing()]
    if not any(radius):
        return lungs
    return sitk.GetArrayFromImage(sitk.BinaryDilate(like(lungs.astype(np.uint8), working),
                                                    radius)) > 0


def _interior_median(air: AirComponents, label: int, box: tuple[slice, ...]) -> float:
    """Median HU of a component's voxels away from its surface (partial volumes excluded)."""
    part = air.labels[box] == label
    core = ndimage.binary_erosion(part)
    values = air.hu[box][core if core.any() else part]
    return float(np.median(values))
