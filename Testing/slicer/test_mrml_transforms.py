"""Engine displacement fields as Slicer grid transforms: the same fixed -> moving mapping.

The engine maps fixed LPS points with ``metrics.landmarks.map_points`` (p + u(p), trilinear);
the grid transform node's transform-from-parent must map the same points given in RAS, its
transform-to-parent must map them back, and Slicer's own transform reader must agree on the
files that the engine writes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LungDeepRegLib.data.fields import random_smooth_field
from LungDeepRegLib.io.transforms import write_field
from LungDeepRegLib.metrics.landmarks import map_points
from LungDeepRegLib.mrml import (
    field_to_transform_node,
    image_to_volume_node,
    load_field_file,
    set_reference_roles,
    transform_node_to_field,
)
from LungDeepRegLib.spatial import Grid

pytest.importorskip("slicer", reason="PyPI slicer-core (real MRML) is not installed")


RAS = np.array([-1.0, -1.0, 1.0])


@pytest.fixture
def case(direction):
    """A smooth invertible field (up to ~10 mm) on a small oriented grid, and test points."""
    grid = Grid((20, 24, 16), (2.0, 1.8, 2.5), (-31.5, 12.25, -140.0),
                tuple(direction.ravel()))
    field = random_smooth_field(grid, torch.Generator().manual_seed(5),
                                scales_mm=(60.0, 30.0), amplitudes_mm=(6.0, 2.0))
    index = np.random.default_rng(7).uniform(3.0, np.array(grid.size) - 4.0, (25, 3))
    return field, grid, grid.index_to_physical(index)


def _transform_points(transform, points_ras: np.ndarray) -> np.ndarray:
    return np.array([transform.TransformPoint(p.tolist()) for p in points_ras])


def test_grid_transform_maps_fixed_ras_to_the_engines_moving_point(scene, case):
    field, grid, fixed_lps = case
    node = field_to_transform_node(field, grid, scene, name="registration")
    assert node.IsA("vtkMRMLGridTransformNode")
    moving_lps = map_points(fixed_lps, field, grid)
    assert np.linalg.norm(moving_lps - fixed_lps, axis=1).max() > 1.0  # a real motion
    moving_ras = _transform_points(node.GetTransformFromParent(), fixed_lps * RAS)
    np.testing.assert_allclose(moving_ras * RAS, moving_lps, atol=1e-4)
    # transform-to-parent is Slicer's iterative inverse: it brings the moving point back
    back_ras = _transform_points(node.GetTransformToParent(), moving_ras)
    np.testing.assert_allclose(back_ras * RAS, fixed_lps, atol=1e-2)


def test_field_round_trip_through_the_node(scene, case):
    field, grid, _ = case
    node = field_to_transform_node(field, grid, scene)
    back, back_grid = transform_node_to_field(node)
    assert back_grid.size == grid.size
    np.testing.assert_allclose(back_grid.origin, grid.origin, atol=1e-12)
    np.testing.assert_allclose(back_grid.spacing, grid.spacing, atol=1e-12)
    np.testing.assert_allclose(back_grid.direction, grid.direction, atol=1e-12)
    torch.testing.assert_close(back, field, rtol=0, atol=1e-6)
    # sampled on a coarser reference grid: the mapping at those points is kept
    coarse = grid.with_size((10, 12, 8))
    sampled, _ = transform_node_to_field(node, reference_grid=coarse)
    points = coarse.points(dtype=torch.float64).numpy().reshape(-1, 3)
    expected = map_points(points, field, grid) - points
    np.testing.assert_allclose(sampled[0].numpy().reshape(3, -1).T, expected, atol=1e-4)


@pytest.mark.parametrize("suffix", [".h5", ".nrrd"])
def test_engine_field_file_read_by_slicer_gives_the_same_mapping(scene, case, tmp_path,
                                                                 suffix):
    field, grid, fixed_lps = case
    path = write_field(field, grid, tmp_path / f"field{suffix}")
    node = load_field_file(path, scene)
    assert node.IsA("vtkMRMLGridTransformNode")
    assert node.GetStorageNode().IsA("vtkMRMLTransformStorageNode")
    moving_ras = _transform_points(node.GetTransformFromParent(), fixed_lps * RAS)
    np.testing.assert_allclose(moving_ras * RAS, map_points(fixed_lps, field, grid),
                               atol=1e-4)
    _, read_grid = transform_node_to_field(node)
    np.testing.assert_allclose(read_grid.direction, grid.direction, atol=1e-9)


def test_reference_roles_name_fixed_and_moving(scene, image_factory):
    fixed = image_to_volume_node(image_factory(np.zeros((4, 5, 6), np.int16), np.eye(3)),
                                 scene, "inhale")
    moving = image_to_volume_node(image_factory(np.zeros((4, 5, 6), np.int16), np.eye(3)),
                                  scene, "exhale")
    grid = Grid((6, 5, 4))
    node = field_to_transform_node(torch.zeros((1, 3, 4, 5, 6)), grid, scene)
    set_reference_roles(node, fixed, moving)
    assert node.GetNodeReference(node.GetFixedNodeReferenceRole()) is fixed
    assert node.GetNodeReference(node.GetMovingNodeReferenceRole()) is moving
    # updating the node in place keeps it (and its roles) for the next result
    assert field_to_transform_node(torch.ones((1, 3, 4, 5, 6)), grid, node=node) is node
    assert node.GetNodeReference("spatialRegistrationFixed") is fixed
