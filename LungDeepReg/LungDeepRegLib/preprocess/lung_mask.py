"""Automatic lung masks from CT with SimpleITK filters (no model, no user input).

Recipe (CONVENTIONS.md): HU threshold around -400, air outside the body removed, the
largest components kept, holes (vessels, airway walls) filled, a small dilation. The left
and right lungs are then told apart so that the mask term of the loss can use them.
Labels: 1 = left lung, 2 = right lung (patient left is +x in LPS).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .coarsen import coarsen

AIR_THRESHOLD_HU = -400.0
MIN_LUNG_ML = 50.0


def lung_labels(ct: sitk.Image, threshold: float = AIR_THRESHOLD_HU,
                dilation_mm: float = 2.0, working_spacing_mm: float = 2.5) -> sitk.Image:
    """Lung label map (UInt8: 0 background, 1 left, 2 right) on the CT's grid.

    The morphology runs on a grid of at least ``working_spacing_mm`` (a 512x512 CT has ten
    times more voxels than the mask needs); the labels are resampled back at the end.
    """
    working = coarsen(ct, working_spacing_mm)
    labels = left_right_lungs(_lung_mask_on_grid(working, threshold, dilation_mm))
    if working.GetSize() == ct.GetSize():
        return sitk.Cast(labels, sitk.sitkUInt8)
    return sitk.Resample(labels, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)


def lung_mask(ct: sitk.Image, **kwargs: float) -> sitk.Image:
    """Binary lung mask (UInt8, 0/1) on the CT's grid; see :func:`lung_labels`."""
    return sitk.Cast(lung_labels(ct, **kwargs) > 0, sitk.sitkUInt8)


def _lung_mask_on_grid(ct: sitk.Image, threshold: float, dilation_mm: float) -> sitk.Image:
    air = sitk.BinaryThreshold(ct, -10000.0, threshold, 1, 0)
    inner = _remove_outside_air(air)
    lungs = _keep_large_components(inner, ct)
    lungs = _fill_holes(lungs, ct)
    radius = [max(1, round(dilation_mm / s)) for s in ct.GetSpacing()]
    return sitk.Cast(sitk.BinaryDilate(lungs, radius), sitk.sitkUInt8)


def left_right_lungs(mask: sitk.Image) -> sitk.Image:
    """Split a binary lung mask into 1 = left, 2 = right.

    When the lungs touch (through the airways or a thin mediastinum) the mask is eroded
    until two large parts appear; every lung voxel then takes the label of the nearer part.
    Falls back to the midline of the mask when no two parts separate.
    """
    seeds = _two_largest_after_erosion(mask)
    if seeds is None:
        return _split_at_midline(mask)
    first, second = seeds
    distance = [sitk.SignedMaurerDistanceMap(s, insideIsPositive=False, squaredDistance=False,
                                             useImageSpacing=True) for s in (first, second)]
    nearer_first = sitk.GetArrayFromImage(distance[0]) <= sitk.GetArrayFromImage(distance[1])
    inside = sitk.GetArrayFromImage(mask) > 0
    labels = np.where(nearer_first, 1, 2).astype(np.uint8) * inside
    if _centroid_x(labels == 1, mask) < _centroid_x(labels == 2, mask):
        labels = np.where(inside, 3 - labels, 0).astype(np.uint8)  # +x is patient left
    return _like(labels, mask)


# --------------------------------------------------------------------------- helpers
def _remove_outside_air(air: sitk.Image) -> sitk.Image:
    """Drop air components that touch the in-plane border (outside the body).

    The z faces are not used: the trachea and the lung apices often touch the first or last
    slice, and they must stay.
    """
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(air))
    border = np.unique(np.concatenate([
        components[:, 0, :].ravel(), components[:, -1, :].ravel(),
        components[:, :, 0].ravel(), components[:, :, -1].ravel()]))
    inside = (components > 0) & ~np.isin(components, border[border > 0])
    return _like(inside.astype(np.uint8), air)


def _keep_large_components(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Keep the two largest components, and only those above a lung-sized volume."""
    relabeled = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    array = sitk.GetArrayFromImage(relabeled)
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    keep = [label for label in (1, 2) if np.count_nonzero(array == label) * voxel_ml
            >= MIN_LUNG_ML]
    if not keep:  # a tiny or unusual image: keep the largest air region anyway
        keep = [1]
    return _like(np.isin(array, keep).astype(np.uint8), mask)


def _fill_holes(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Close vessels and airway walls: a small closing, then hole filling slice by slice."""
    radius = [max(1, round(3.0 / s)) for s in reference.GetSpacing()]
    closed = sitk.BinaryMorphologicalClosing(mask, radius)
    array = sitk.GetArrayFromImage(closed)
    filled = np.stack([sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(s)))
                       for s in array])
    return _like(filled.astype(np.uint8), mask)


def _two_largest_after_erosion(mask: sitk.Image, steps: int = 8
                               ) -> tuple[sitk.Image, sitk.Image] | None:
    eroded = mask
    for _ in range(steps + 1):
        ranked = sitk.RelabelComponent(sitk.ConnectedComponent(eroded), sortByObjectSize=True)
        array = sitk.GetArrayFromImage(ranked)
        sizes = [np.count_nonzero(array == k) for k in (1, 2)]
        if sizes[1] > 0.1 * sizes[0]:  # the second part is lung-sized, not a speck
            return tuple(_like((array == k).astype(np.uint8), mask) for k in (1, 2))
        if sizes[0] == 0:
            return None
        eroded = sitk.BinaryErode(eroded, [1, 1, 1])
    return None


def _split_at_midline(mask: sitk.Image) -> sitk.Image:
    inside = sitk.GetArrayFromImage(mask) > 0
    zz, yy, xx = np.nonzero(inside)
    if xx.size == 0:
        return _like(inside.astype(np.uint8), mask)
    physical_x = _physical_x(mask)
    middle = float(np.median(physical_x[zz, yy, xx]))
    labels = np.where(physical_x > middle, 1, 2).astype(np.uint8) * inside
    return _like(labels, mask)


def _physical_x(image: sitk.Image) -> np.ndarray:
    """LPS x coordinate of every voxel, shape (z, y, x)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    return image.GetOrigin()[0] + matrix[0, 0] * i + matrix[0, 1] * j + matrix[0, 2] * k


def _centroid_x(region: np.ndarray, image: sitk.Image) -> float:
    values = _physical_x(image)[region]
    return float(values.mean()) if values.size else 0.0


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
