"""Body, outside air and air inside the body, on a coarse working grid.

The old rule "air touching the in-plane border is outside the body" throws a lung away as
soon as the field of view cuts through it. Here an air component is outside air when most
of its voxels are *not enclosed by the body* in their axial slice: from a lung voxel, a ray
along at least three of the four in-plane index directions meets body tissue (chest wall,
mediastinum) before leaving the image, even when the fourth ray leaves through a cut. The
body is close to convex in an axial slice, so from a voxel of outside air at most two of
the four rays can meet it. On the shared CTs (POPI, CIP, TotalSegmentator, Lung-PET-CT-Dx)
the enclosed fraction is 0.01-0.17 for outside air and 1.00 for the lungs, so the 0.5
cut-off has a wide margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..optional import optional_module
from .hu import working_hu
from .voxels import like, slice_axis

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache

BODY_THRESHOLD_HU = -500.0
AIR_REGION_THRESHOLD_HU = -300.0
DEFAULT_AIR_HU = -1000.0
ENCLOSED_FRACTION = 0.5
# An axial slice at either end of the image with less than this share of body tissue holds
# no scan (padding, or a resampled grid reaching past the CT). Left as air, such a slice
# joins every lung that touches it to the outside air, and the lung mask came back empty
# (the 2.5 mm POPI sample resampled to 5 mm slices with its last slice on the edge).
BLANK_SLICE_BODY_SHARE = 0.005


@dataclass
class AirComponents:
    """Connected air regions of a CT on the working grid (arrays in NumPy order)."""

    working: sitk.Image  # the coarse HU image the arrays belong to
    hu: np.ndarray  # the working image's HU values
    body: np.ndarray  # the largest connected tissue region
    labels: np.ndarray  # air components, 0 = not air
    sizes: np.ndarray  # voxels per label (index 0 unused)
    enclosed: np.ndarray  # fraction of each component enclosed by the body
    axis: int  # NumPy axis across the axial slices

    @property
    def inside_labels(self) -> np.ndarray:
        """Labels of the air components that lie inside the body."""
        keep = self.enclosed >= ENCLOSED_FRACTION
        keep[0] = False
        return np.flatnonzero(keep)

    def outside(self) -> np.ndarray:
        """Voxels of outside air (components mostly not enclosed by the body)."""
        flags = self.enclosed < ENCLOSED_FRACTION
        flags[0] = False
        return flags[self.labels]

    def air_level(self) -> float:
        """Most common HU of outside air away from the skin (-1000 when there is too little).

        Gas and lung are told apart relative to this level, so an image whose air reads
        -976 instead of -1000 is judged the same way. The mode, not the median: cushions
        and blankets around the patient are "outside air" too but denser (-900 on the CIP
        CT), and scanner padding (the image minimum, exactly) is left out.
        """
        core = self.outside() & ~ndimage.binary_dilation(self.labels == 0)
        values = self.hu[core]
        values = values[values > self.hu.min() + 0.5]
        if values.size < 100:
            return DEFAULT_AIR_HU
        counts, edges = np.histogram(values, bins=36, range=(-1030.0, -850.0))
        return float(edges[int(np.argmax(counts))]) + 2.5


def find_air(working: sitk.Image, threshold: float) -> AirComponents:
    """Label the air (HU below ``threshold``) of a working image and judge each part."""
    hu = sitk.GetArrayFromImage(working)
    axis = slice_axis(working)
    body = _largest_component(hu > BODY_THRESHOLD_HU)
    labels, count = ndimage.label((hu < threshold) & ~_blank_end_slices(hu, axis))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    inside = np.bincount(labels.ravel(), weights=_enclosed(body, axis).ravel(),
                         minlength=count + 1)
    enclosed = inside / np.maximum(sizes, 1)
    return AirComponents(working, hu, body, labels, sizes, enclosed, axis)


def body_air_region(ct: sitk.Image, threshold: float = AIR_REGION_THRESHOLD_HU,
                    working_spacing_mm: float = 2.5) -> sitk.Image:
    """Low-density region inside the body (UInt8 0/1 on the CT's grid).

    Everything below ``threshold`` that is not outside air: lungs, airways, gas in the
    bowel and stomach. The pipeline registers on this region when the lung mask is
    implausible (an abdomen CT with lung bases only, a lung the mask missed), so it is
    deliberately generous; vessels and airway walls are filled as in the lung mask.
    """
    air = find_air(working_hu(ct, working_spacing_mm), threshold)
    region = fill_holes(np.isin(air.labels, air.inside_labels), air.working, air.axis)
    return to_ct_grid(region.astype(np.uint8), air.working, ct)


def to_ct_grid(array: np.ndarray, working: sitk.Image, ct: sitk.Image) -> sitk.Image:
    """A label array on the working grid as a UInt8 image on the CT's grid (nearest).

    The working grid comes from block averaging, so repeating each label over its block
    (and 0 for the few voxels past the last whole block) is exactly nearest-neighbour
    resampling, at a fraction of its cost on a 512x512 CT.
    """
    array = array.astype(np.uint8)
    factors = [max(1, round(w / c)) for w, c in zip(working.GetSpacing(), ct.GetSpacing(),
                                                       strict=True)]
    expected = tuple(n // f for n, f in zip(ct.GetSize(), factors, strict=True))
    if expected != working.GetSize() or not np.allclose(
            np.asarray(ct.GetSpacing()) * factors, working.GetSpacing()):
        image = like(array, working)
        return sitk.Resample(image, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                             sitk.sitkUInt8)
    for axis, factor in enumerate(factors[::-1]):
        array = np.repeat(array, factor, axis=axis)
    full = np.zeros(ct.GetSize()[::-1], dtype=np.uint8)
    full[tuple(slice(0, n) for n in array.shape)] = array
    return like(full, ct)


def fill_holes(lungs: np.ndarray, working: sitk.Image, axis: int) -> np.ndarray:
    """Close vessels and airway walls: a small closing, then hole filling slice by slice."""
    radius = [max(1, round(3.0 / s)) for s in working.GetSpacing()]
    # dilate then erode (a closing; the erosion counts the image border as foreground, so a
    # lung cut by the field of view is not eaten from the cut); cheaper than ITK's closing
    grown = sitk.BinaryDilate(like(lungs.astype(np.uint8), working), radius)
    closed = sitk.BinaryErode(grown, radius)
    planar = np.zeros((3, 3, 3), dtype=bool)
    index = [slice(None)] * 3
    index[axis] = 1
    planar[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(sitk.GetArrayFromImage(closed) > 0, structure=planar)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _blank_end_slices(hu: np.ndarray, axis: int) -> np.ndarray:
    """Voxels of the axial slices at either end that hold (almost) no body tissue
    (:data:`BLANK_SLICE_BODY_SHARE`), up to the first slice that does."""
    tissue = np.moveaxis(hu > BODY_THRESHOLD_HU, axis, 0).reshape(hu.shape[axis], -1)
    blank = tissue.mean(axis=1) < BLANK_SLICE_BODY_SHARE
    ends = np.zeros_like(blank)
    for order in (range(blank.size), reversed(range(blank.size))):
        for index in order:
            if not blank[index]:
                break
            ends[index] = True
    shape = [1, 1, 1]
    shape[axis] = blank.size
    return np.broadcast_to(ends.reshape(shape), hu.shape)


def _enclosed(body: np.ndarray, axis: int) -> np.ndarray:
    """Voxels from which at least three of the four in-plane rays meet the body."""
    hits = np.zeros(body.shape, dtype=np.uint8)
    for along in (a for a in range(3) if a != axis):
        hits += np.maximum.accumulate(body, axis=along)
        flipped = np.flip(body, along)
        hits += np.flip(np.maximum.accumulate(flipped, axis=along), along)
    return hits >= 3
