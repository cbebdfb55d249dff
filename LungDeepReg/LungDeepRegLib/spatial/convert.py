"""SimpleITK image <-> torch tensor, keeping the geometry as a :class:`Grid`."""

from __future__ import annotations

import numpy as np
import torch

from ..optional import optional_module
from .grid import Grid

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache


def image_to_tensor(image: sitk.Image, dtype: torch.dtype = torch.float32
                    ) -> tuple[torch.Tensor, Grid]:
    """A scalar or vector image as ``(1, C, z, y, x)`` plus its grid.

    Vector images (displacement fields) keep their components in (x, y, z) order as channels.
    """
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() == 1:
        array = array[None]
    else:
        array = np.moveaxis(array, -1, 0)
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
    return tensor[None], Grid.from_image(image)


def tensor_to_image(tensor: torch.Tensor, grid: Grid, vector: bool | None = None,
                    pixel_type: np.dtype | type | None = None) -> sitk.Image:
    """``(C, z, y, x)`` or ``(1, C, z, y, x)`` to a SimpleITK image on ``grid``.

    One channel gives a scalar image; three channels give a vector image unless
    ``vector=False``.
    """
    if tensor.dim() == 5:
        if tensor.shape[0] != 1:
            raise ValueError("only a batch of one can become an image")
        tensor = tensor[0]
    array = tensor.detach().cpu().numpy()
    if pixel_type is not None:
        array = array.astype(pixel_type)
    is_vector = array.shape[0] > 1 if vector is None else vector
    if is_vector:
        image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)
    else:
        image = sitk.GetImageFromArray(array[0])
    return grid.apply_to(image)


def field_to_image(field: torch.Tensor, grid: Grid) -> sitk.Image:
    """A displacement field ``(1, 3, z, y, x)`` (mm, LPS) as a float64 vector image,
    the pixel type ``sitk.DisplacementFieldTransform`` requires."""
    return tensor_to_image(field, grid, vector=True, pixel_type=np.float64)


def as_float32(image: sitk.Image) -> sitk.Image:
    """``image`` as float32: the image itself when it already is (``sitk.Cast`` copies every
    voxel even then: about 0.07 s on a 512x512x141 CT, and the pipeline casts its float32
    CTs a dozen times)."""
    if image.GetPixelID() == sitk.sitkFloat32:
        return image
    return sitk.Cast(image, sitk.sitkFloat32)
