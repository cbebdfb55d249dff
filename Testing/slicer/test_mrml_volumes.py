"""Volume nodes <-> SimpleITK images on real MRML: geometry (RAS vs LPS) and voxels exact."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.io.images import read_image
from LungDeepRegLib.mrml import image_to_volume_node, volume_node_to_image

pytest.importorskip("slicer", reason="PyPI slicer-core (real MRML) is not installed")
vtk = pytest.importorskip("vtk")


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetPixelID() == b.GetPixelID()
    assert a.GetOrigin() == b.GetOrigin()  # exact: negating twice loses nothing
    assert a.GetSpacing() == b.GetSpacing()
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def test_round_trip_keeps_origin_spacing_direction(scene, direction, image_factory):
    values = np.random.default_rng(3).integers(-1024, 1500, (16, 24, 20)).astype(np.int16)
    image = image_factory(values, direction)
    node = image_to_volume_node(image, scene, name="ct")
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetImageData().GetDimensions() == (20, 24, 16)
    _assert_same_image(volume_node_to_image(node), image)


def test_ijk_to_ras_is_the_lps_geometry_with_x_y_negated(scene, direction, image_factory):
    image = image_factory(np.zeros((16, 24, 20), np.float32), direction)
    node = image_to_volume_node(image, scene)
    index = np.array([3.0, 17.0, 11.0])
    lps = np.asarray(image.TransformContinuousIndexToPhysicalPoint(index.tolist()))
    ras = _ijk_to_ras(node) @ np.append(index, 1.0)
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)


def test_labelmap_node_and_updating_a_given_node(scene, image_factory):
    labels = np.zeros((16, 24, 20), np.uint8)
    labels[4:9, 5:15, 6:12] = 3
    image = image_factory(labels, np.diag([-1.0, 1.0, -1.0]))
    node = image_to_volume_node(image, scene, name="lobes", labelmap=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetDisplayNode() is not None
    _assert_same_image(volume_node_to_image(node), image)
    # a later result replaces voxels and geometry of the same node, name kept
    moved = image_factory(labels * 0 + 1, np.eye(3), spacing=(2.0, 2.0, 2.0), origin=(0, 0, 0))
    assert image_to_volume_node(moved, scene, node=node, labelmap=True) is node
    assert node.GetName() == "lobes"
    _assert_same_image(volume_node_to_image(node), moved)


def test_real_ct_round_trip(scene, shared_data):
    image = read_image(shared_data / "cip" / "ct-64.nrrd")
    node = image_to_volume_node(image, name="ct-64")  # scene=None: the application scene
    assert node.GetScene() is scene
    _assert_same_image(volume_node_to_image(node), image)
