"""The Jacobian volume on the diverging colour node: white at det J = 1, blue below, red
above, folds (det J <= 0) distinct; checked on the display node's real colour pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LungDeepRegLib.data.fields import random_smooth_field
from LungDeepRegLib.mrml import image_to_volume_node, jacobian_color_node, show_jacobian
from LungDeepRegLib.spatial import Grid, jacobian_determinant, tensor_to_image

pytest.importorskip("slicer", reason="PyPI slicer-core (real MRML) is not installed")
numpy_support = pytest.importorskip("vtk.util.numpy_support")


def _displayed_rgb(display) -> np.ndarray:
    """RGB per voxel as the slice views get it from the display node."""
    connection = display.GetOutputImageDataConnection()
    producer = connection.GetProducer()
    producer.Update()
    output = producer.GetOutputDataObject(connection.GetIndex())
    return numpy_support.vtk_to_numpy(output.GetPointData().GetScalars())[:, :3].astype(int)


def test_engine_jacobian_volume_gets_the_diverging_colour_node(scene):
    grid = Grid((20, 24, 16), (2.0, 1.8, 2.5))
    field = random_smooth_field(grid, torch.Generator().manual_seed(2))
    det = jacobian_determinant(field.double(), grid)
    node = image_to_volume_node(tensor_to_image(det.float()[0], grid), scene, "Jacobian")
    display = show_jacobian(node, scene)
    color = jacobian_color_node(scene)
    assert display.GetColorNodeID() == color.GetID()
    assert color.IsA("vtkMRMLProceduralColorNode")
    assert jacobian_color_node(scene) is color  # made once per scene
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == (2.0, 1.0)  # 1 is the centre
    legend = scene.GetNodesByClass("vtkMRMLColorLegendDisplayNode")
    assert legend.GetNumberOfItems() == 1
    assert legend.GetItemAsObject(0).GetTitleText() == "det J"


def test_colours_white_at_one_blue_below_red_above_and_folds_distinct(scene, image_factory):
    values = np.array([-0.3, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0], np.float32).reshape(1, 1, 7)
    node = image_to_volume_node(image_factory(values, np.eye(3)), scene)
    rgb = _displayed_rgb(show_jacobian(node))  # scene=None: the application scene
    fold, zero, half, one, one_half, two, three = rgb
    assert (one >= 250).all()  # white
    assert half[2] > half[0] + 50 and one_half[0] > one_half[2] + 50  # blue / red
    assert two[0] > 150 and two[1] < 20 and (three == two).all()  # saturates at 2
    assert (fold == zero).all() and zero[1] > 150 and zero[0] < 20 and zero[2] < 20  # green
