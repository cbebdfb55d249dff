"""Spatial primitives in physical LPS millimetres: grids, sampling, displacement fields.

This is the bottom layer of the engine: it imports nothing else from the package but
:mod:`LungDeepRegLib.optional` (SimpleITK, for images only).
"""

from .convert import field_to_image, image_to_tensor, tensor_to_image
from .flow import (
    compose,
    jacobian_determinant,
    jacobian_matrix,
    mapped_points,
    resample_field,
    spatial_gradient,
    warp,
)
from .grid import Grid
from .sampling import resample, sample, sample_points

__all__ = [
    "Grid", "compose", "field_to_image", "image_to_tensor", "jacobian_determinant",
    "jacobian_matrix", "mapped_points", "resample", "resample_field", "sample", "sample_points",
    "spatial_gradient", "tensor_to_image", "warp",
]
