"""Left and right lung labels: 1 = patient left (+x in LPS), 2 = patient right.

Two lungs that touch (through the airways or a thin mediastinum) are eroded apart; every
voxel then takes the label of the nearer part, and the part further towards +x is the
left lung. Erosion can also split a single lung (a thin apex, a cut through the lung), so
two parts count as two lungs only when they lie side by side: far apart in x and further
apart in x than in the other two axes. A single lung is labelled by its side of the body:
its lateral wall is thin and outside air lies just beyond it, while the mediastinum
separates its medial side from any outside air by far more than ``LATERAL_REACH_MM``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..optional import optional_module
from .voxels import bounding_box, like, physical_coordinate

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache

LATERAL_REACH_MM = 40.0
MIN_SEPARATION_MM = 40.0
EROSION_STEPS = 8
SEED_SPACING_MM = 3.0


def left_right_lungs(mask: sitk.Image, outside: sitk.Image | None = None) -> sitk.Image:
    """Split a binary lung mask into 1 = left, 2 = right (UInt8, on the mask's grid).

    ``outside`` (outside air on the same grid) lets a single lung be labelled by the side
    on which the body ends; without it a single lung is labelled by its side of the image
    centre.
    """
    inside = sitk.GetArrayFromImage(mask) > 0
    outside_array = None if outside is None else sitk.GetArrayFromImage(outside) > 0
    return like(_split(inside, mask, outside_array), mask)


def lung_sides(lungs: np.ndarray, image: sitk.Image, outside: np.ndarray) -> np.ndarray:
    """Labels (NumPy, UInt8) for boolean lung and outside-air arrays on ``image``'s grid."""
    return _split(lungs, image, outside)


def _split(inside: np.ndarray, image: sitk.Image, outside: np.ndarray | None) -> np.ndarray:
    if not inside.any():
        return np.zeros(inside.shape, dtype=np.uint8)
    x = physical_coordinate(image, 0)
    # the seeds only need to tell two lungs apart: find them on every other voxel when the
    # grid is fine (8 times fewer voxels for the erosions and the distance map)
    step = tuple(2 if s < SEED_SPACING_MM else 1 for s in _spacing(image))
    coarse = inside[::step[0], ::step[1], ::step[2]]
    seeds = _two_lungs_after_erosion(coarse, image, step)
    if seeds is None:
        side = _single_lung_side(inside, image, x, outside)
        return inside.astype(np.uint8) * np.uint8(side)
    sampling = np.asarray(_spacing(image)) * step
    _, nearest = ndimage.distance_transform_edt(seeds == 0, sampling=sampling,
                                                return_indices=True)
    labels = seeds[tuple(nearest)]
    for axis, factor in enumerate(step):
        labels = np.repeat(labels, factor, axis=axis)
    labels = labels[tuple(slice(0, n) for n in inside.shape)] * inside
    if x[labels == 1].mean() < x[labels == 2].mean():
        labels = np.where(inside, 3 - labels, 0)  # +x is patient left
    return labels.astype(np.uint8)


def _two_lungs_after_erosion(inside: np.ndarray, image: sitk.Image,
                             step: tuple[int, ...]) -> np.ndarray | None:
    """Seeds (1, 2) of two side-by-side lungs, or None when only one lung is there.

    ``inside`` is the mask taken every ``step`` voxels (NumPy order) of ``image``'s grid.
    """
    eroded = inside
    for _ in range(EROSION_STEPS + 1):
        labels, count = ndimage.label(eroded)
        if count == 0:
            return None
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        order = np.argsort(sizes)[::-1]
        if count >= 2 and sizes[order[1]] > 0.1 * sizes[order[0]]:
            seeds = np.where(labels == order[0], 1, 0) + np.where(labels == order[1], 2, 0)
            return seeds.astype(np.uint8) if _side_by_side(seeds, image, step) else None
        eroded = ndimage.binary_erosion(eroded)
    return None


def _side_by_side(seeds: np.ndarray, image: sitk.Image, step: tuple[int, ...]) -> bool:
    centres = np.asarray(ndimage.center_of_mass(seeds > 0, seeds, [1, 2])) * step  # k, j, i
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    offset = matrix @ (centres[0] - centres[1])[::-1]  # LPS mm
    return abs(offset[0]) >= MIN_SEPARATION_MM and abs(offset[0]) >= np.hypot(*offset[1:])


def _single_lung_side(inside: np.ndarray, image: sitk.Image, x: np.ndarray,
                      outside: np.ndarray | None) -> int:
    """1 when the lung's lateral wall (outside air close by) is at +x, else 2."""
    lung_x = x[inside]
    if outside is not None:
        low, high = np.percentile(lung_x, [5, 95])
        box = bounding_box(inside, image, LATERAL_REACH_MM)
        near = ndimage.distance_transform_edt(~inside[box], sampling=_spacing(image))
        air_x = x[box][(near <= LATERAL_REACH_MM) & outside[box]]
        plus, minus = np.count_nonzero(air_x > high), np.count_nonzero(air_x < low)
        if plus != minus:
            return 1 if plus > minus else 2
    centre = image.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2.0 for n in image.GetSize()])[0]
    return 1 if float(lung_x.mean()) > centre else 2


def _spacing(image: sitk.Image) -> tuple[float, ...]:
    return tuple(image.GetSpacing()[::-1])
