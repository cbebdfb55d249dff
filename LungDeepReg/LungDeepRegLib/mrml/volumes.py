"""Volume nodes <-> SimpleITK images, geometry kept exactly.

MRML stores a volume's geometry in RAS (origin, spacing and the IJK-to-RAS directions);
SimpleITK in LPS. The two differ by negating the first two physical axes, so the RAS
origin is ``diag(-1, -1, 1) @ origin`` and the RAS direction ``diag(-1, -1, 1) @ D``
(the first two ROWS of the direction matrix change sign, the voxel axes stay as they are).
Voxel data are shared in the same memory order: NumPy ``[z, y, x]`` is VTK's x-fastest order.
Parent transforms of a node are not applied: the image is the node's own voxels and geometry.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .scene import FLIP_XY, ensure_display, reuse_or_add

SCALAR_VOLUME = "vtkMRMLScalarVolumeNode"
LABELMAP_VOLUME = "vtkMRMLLabelMapVolumeNode"


def image_to_volume_node(image: sitk.Image, scene=None, name: str = "", node=None,
                         labelmap: bool = False):
    """Put a 3-D scalar image into a (new or given) scalar or labelmap volume node.

    ``labelmap`` picks ``vtkMRMLLabelMapVolumeNode`` (shown as coloured labels) instead of
    ``vtkMRMLScalarVolumeNode``; a given ``node`` must be of that class. Returns the node.
    """
    _check_scalar_3d(image)
    node = reuse_or_add(scene, LABELMAP_VOLUME if labelmap else SCALAR_VOLUME, name, node)
    set_volume_geometry(node, image)
    node.SetAndObserveImageData(vtk_image_data(sitk.GetArrayFromImage(image)))
    ensure_display(node)
    return node


def volume_node_to_image(node) -> sitk.Image:
    """The voxels and geometry (LPS) of a scalar or labelmap volume node as an image."""
    from vtk.util import numpy_support

    data = node.GetImageData() if node is not None else None
    if data is None or data.GetPointData().GetScalars() is None:
        label = node.GetName() if node is not None else "None"
        raise ValueError(f"volume node {label!r} holds no image data")
    scalars = data.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"volume node {node.GetName()!r} has "
                         f"{scalars.GetNumberOfComponents()} components; a scalar is needed")
    size_x, size_y, size_z = data.GetDimensions()
    array = numpy_support.vtk_to_numpy(scalars).reshape(size_z, size_y, size_x)
    image = sitk.GetImageFromArray(np.array(array))  # a copy: the node keeps its memory
    origin, spacing, direction = volume_geometry(node)
    # a non-zero extent start shifts the first voxel along the voxel axes
    start = np.asarray(data.GetExtent()[0::2], dtype=np.float64)
    origin = origin + direction @ (np.asarray(spacing) * start)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def volume_geometry(node) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``(origin, spacing, direction)`` of a volume node in LPS, as SimpleITK has them."""
    directions = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(directions)
    direction = FLIP_XY @ np.asarray(directions, dtype=np.float64)
    origin = FLIP_XY @ np.asarray(node.GetOrigin(), dtype=np.float64)
    return origin, tuple(float(v) for v in node.GetSpacing()), direction


def set_volume_geometry(node, image: sitk.Image) -> None:
    """Give ``node`` the geometry of ``image`` (LPS -> RAS)."""
    direction = FLIP_XY @ np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    node.SetIJKToRASDirections(direction.tolist())
    node.SetOrigin(*(float(v) for v in FLIP_XY @ np.asarray(image.GetOrigin())))
    node.SetSpacing(*(float(v) for v in image.GetSpacing()))


def vtk_image_data(array: np.ndarray):
    """A ``vtkImageData`` owning a copy of a ``[z, y, x]`` array (x fastest, as VTK)."""
    import vtk
    from vtk.util import numpy_support

    data = vtk.vtkImageData()
    data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    flat = np.ascontiguousarray(array).ravel()
    if flat.dtype == np.bool_:
        flat = flat.astype(np.uint8)
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    scalars.SetName("ImageScalars")
    data.GetPointData().SetScalars(scalars)
    return data


def _check_scalar_3d(image: sitk.Image) -> None:
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("expected a scalar image; vector images need a vector volume node")
