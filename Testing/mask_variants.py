"""CT variants for the lung-mask tests and benchmark (imported as a plain module).

Each variant of a thorax CT is the same patient as it may reach the engine: a field of view
cut through a lung or down to one lung, a rotated or flipped direction matrix, another HU
storage convention, low-dose noise. ``Variant.box`` is the part of the uncut image that the
variant holds (NumPy order), so the reference for a variant is the uncut image's mask cut
the same way. Test-only code: it does not ship with the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from geometry_helpers import rotation

CUT_FRACTION = 0.25  # share of a lung's extent removed by a side cut
ROTATED_FLIPPED = np.diag([-1.0, 1.0, 1.0]) @ rotation(2, 90.0)
POPI_VARIANTS = (
    "one lung: right (image x < midline)", "one lung: left (image x >= midline)",
    "cut at the left side", "cut at the right side", "cut at the front", "cut at the back",
    "apex cut", "base cut", "direction rotated 90 deg about z, x flipped",
    "direction with x flipped",
    "HU +24 (air at -1000 scale)", "unsigned storage HU+1024 (UInt16)",
    "low dose: noise sigma 100 HU",
)  # the order popi_variants returns them in


@dataclass(frozen=True)
class Variant:
    """A CT as it may come, and the part of the uncut CT it shows."""

    name: str
    image: sitk.Image
    box: tuple[slice, slice, slice]  # NumPy (z, y, x) slices of the uncut image
    note: str
    side: int | None = None  # expected label of a one-lung image (1 left, 2 right)
    identical: bool = False  # the mask must be the same voxels as the uncut image's
    swapped: bool = False  # ... with left and right exchanged (x axis flipped)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def crop(image: sitk.Image, box: tuple[slice, slice, slice]) -> sitk.Image:
    """Sub-image for NumPy-order slices, with its geometry (origin moves, direction stays)."""
    return image[box[::-1]]


def with_direction(image: sitk.Image, direction: np.ndarray) -> sitk.Image:
    """A copy of ``image`` (same voxels) with another direction matrix."""
    turned = sitk.Image(image)
    turned.SetDirection(tuple(float(v) for v in np.asarray(direction).ravel()))
    return turned


def shifted(image: sitk.Image, offset: float, pixel: int) -> sitk.Image:
    """The voxels plus ``offset``, stored as ``pixel`` (e.g. HU + 1024 as UInt16)."""
    return sitk.Cast(sitk.Cast(image, sitk.sitkFloat32) + offset, pixel)


def noisy(image: sitk.Image, sigma: float, seed: int = 0) -> sitk.Image:
    """Low-dose look: Gaussian noise of ``sigma`` HU added, stored as int16."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array += np.random.default_rng(seed).normal(0.0, sigma, array.shape).astype(np.float32)
    result = sitk.GetImageFromArray(np.round(array).astype(np.int16))
    result.CopyInformation(image)
    return result


def extents(region: np.ndarray) -> list[tuple[int, int]]:
    """Index extents [first, last] of a non-empty boolean region along each NumPy axis."""
    result = []
    for axis in range(3):
        present = np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
        result.append((int(present[0]), int(present[-1])))
    return result


def popi_variants(ct: sitk.Image, labels: np.ndarray) -> list[Variant]:
    """The POPI variants, planned from the uncut image's lung labels (identity direction).

    With POPI's identity direction, index x grows towards patient left (+x in LPS),
    index y towards the back, index z towards the head.
    """
    full = tuple(slice(0, n) for n in labels.shape)
    (z0, z1), (y0, y1), _ = extents(labels > 0)
    right_x, left_x = extents(labels == 2)[2], extents(labels == 1)[2]
    midline = _midline(labels > 0, right_x, left_x)

    def box(axis: int, start: int | None = None, stop: int | None = None) -> tuple:
        parts = list(full)
        parts[axis] = slice(start, stop)
        return tuple(parts)

    def cut(low: int, high: int) -> int:
        return round(CUT_FRACTION * (high - low))

    specs = [
        ("one lung: right (image x < midline)", box(2, None, midline), "patient right half", 2),
        ("one lung: left (image x >= midline)", box(2, midline, None), "patient left half", 1),
        ("cut at the left side", box(2, None, left_x[1] - cut(*left_x)),
         "left lung touches the +x border", None),
        ("cut at the right side", box(2, right_x[0] + cut(*right_x), None),
         "right lung touches the -x border", None),
        ("cut at the front", box(1, y0 + cut(y0, y1), None), "lungs touch the front", None),
        ("cut at the back", box(1, None, y1 - cut(y0, y1)), "lungs touch the back", None),
        ("apex cut", box(0, None, z1 - cut(z0, z1)), "top quarter of the lungs removed", None),
        ("base cut", box(0, z0 + cut(z0, z1), None), "bottom quarter removed", None),
    ]
    variants = [Variant(name, crop(ct, b), b, note, side) for name, b, note, side in specs]
    variants += [
        Variant("direction rotated 90 deg about z, x flipped",
                with_direction(ct, ROTATED_FLIPPED), full,
                "same voxels; the header puts the lungs one behind the other, so the "
                "left/right labels are arbitrary", identical=True),
        Variant("direction with x flipped", with_direction(ct, np.diag([-1.0, 1.0, 1.0])),
                full, "same voxels, left and right exchanged", identical=True, swapped=True),
        Variant("HU +24 (air at -1000 scale)", shifted(ct, 24.0, sitk.sitkInt16), full,
                "every value +24"),
        Variant("unsigned storage HU+1024 (UInt16)", shifted(ct, 1024.0, sitk.sitkUInt16), full,
                "header intercept lost", identical=True),
        Variant("low dose: noise sigma 100 HU", noisy(ct, 100.0), full, "Gaussian noise"),
    ]
    assert tuple(v.name for v in variants) == POPI_VARIANTS
    return variants


def _midline(lungs: np.ndarray, right_x: tuple[int, int], left_x: tuple[int, int]) -> int:
    """Image column between the lungs with the least lung in it (their anterior junction
    can make the x ranges overlap)."""
    profile = lungs.sum(axis=(0, 1))
    centre_right, centre_left = sum(right_x) // 2, sum(left_x) // 2
    low, high = sorted((centre_right, centre_left))
    return low + int(np.argmin(profile[low:high + 1]))
