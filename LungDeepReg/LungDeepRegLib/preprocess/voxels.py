"""Small conversions between SimpleITK images and NumPy arrays used by the mask code.

NumPy views of ITK images are ordered (z, y, x) = (k, j, i); these helpers keep that order
and give physical (LPS, mm) positions so that left and right never depend on the direction
matrix being the identity.
"""

from __future__ import annotations

import numpy as np

from ..optional import optional_module

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache


def like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """``array`` (NumPy order) as an image with ``reference``'s geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def voxel_ml(image: sitk.Image) -> float:
    """Volume of one voxel in millilitres."""
    return float(np.prod(image.GetSpacing())) / 1000.0


def lung_volume_ml(mask: sitk.Image) -> float:
    """Volume of the non-zero voxels of ``mask`` in millilitres (any label counts).

    The pipeline uses it to judge whether an automatic mask is plausible (an adult lung
    pair holds litres, a mask of a few millilitres means the mask failed).
    """
    count = np.count_nonzero(sitk.GetArrayViewFromImage(mask))
    return count * voxel_ml(mask)


def physical_coordinate(image: sitk.Image, component: int = 0) -> np.ndarray:
    """LPS coordinate ``component`` (0 = x) of every voxel centre, shape (z, y, x)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in size[::-1]],
                          indexing="ij", sparse=True)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    row = matrix[component]
    return (image.GetOrigin()[component] + row[0] * i + row[1] * j + row[2] * k).astype(
        np.float32)


def slice_axis(image: sitk.Image) -> int:
    """NumPy axis (0 = k) of the index axis closest to the patient's head-foot axis.

    Axial slices are where a lung is enclosed by the chest wall; with a direction matrix
    that makes i or j the head-foot axis the in-plane tests must follow.
    """
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(direction[2])))  # column with the largest z part
    return 2 - index_axis


def bounding_box(mask: np.ndarray, image: sitk.Image, margin_mm: float) -> tuple[slice, ...]:
    """NumPy slices of the box around ``mask`` widened by ``margin_mm`` (within the image).

    ``image[box[::-1]]`` (SimpleITK slicing is x, y, z) is the matching sub-image with
    correct geometry.
    """
    margin = np.ceil(margin_mm / np.asarray(image.GetSpacing()[::-1])).astype(int)
    nonzero = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
               for axis in range(3)]
    if any(n.size == 0 for n in nonzero):
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(slice(max(0, int(n[0]) - m), min(size, int(n[-1]) + 1 + m))
                 for n, m, size in zip(nonzero, margin, mask.shape, strict=True))
