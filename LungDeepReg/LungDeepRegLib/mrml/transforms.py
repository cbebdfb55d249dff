"""Engine displacement fields <-> Slicer grid transform nodes.

The engine's field ``u`` lives on the FIXED grid, LPS mm, fixed to moving: ``T(p) = p + u(p)``.
That is ITK's resampling direction, which Slicer calls "transform from parent": a
``vtkMRMLGridTransformNode`` holding it maps a fixed RAS point to the moving RAS point, and
placing the moving volume under it shows the moving image aligned with the fixed one.

In RAS the same mapping has the grid origin and direction rows 1-2 negated and displacement
components ``(-ux, -uy, uz)``. The grid is a ``vtkOrientedGridTransform`` interpolated
linearly, as the engine samples its fields (Slicer's file reader defaults to cubic, which
moves points by up to a few hundredths of a mm on rough fields; :func:`load_field_file`
switches it to linear for the same reason).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.transforms import field_suffix
from ..spatial import Grid
from .scene import FLIP_XY, numpy_matrix, resolve_scene, reuse_or_add, vtk_matrix

GRID_TRANSFORM = "vtkMRMLGridTransformNode"
_RAS_COMPONENTS = np.array([-1.0, -1.0, 1.0])


def field_to_transform_node(field: torch.Tensor, grid: Grid, scene=None, name: str = "",
                            node=None):
    """A grid transform node whose transform-from-parent is ``p -> p + u(p)`` (RAS).

    Args:
        field: ``(1, 3, z, y, x)`` LPS mm displacement on ``grid`` (fixed to moving).
        grid: the fixed grid.
        node: an existing ``vtkMRMLGridTransformNode`` to update in place.
    """
    import slicer

    if tuple(field.shape) != (1, 3, *grid.shape):
        raise ValueError(f"field must be (1, 3, {', '.join(map(str, grid.shape))}) for this "
                         f"grid, got {tuple(field.shape)}")
    vectors = field[0].detach().cpu().numpy()
    if vectors.dtype not in (np.float32, np.float64):
        vectors = vectors.astype(np.float32)
    vectors = np.moveaxis(vectors, 0, -1) * _RAS_COMPONENTS.astype(vectors.dtype)
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(_grid_data(vectors, grid))
    transform.SetGridDirectionMatrix(vtk_matrix(FLIP_XY @ grid.direction_matrix))
    transform.SetInterpolationModeToLinear()
    node = reuse_or_add(scene, GRID_TRANSFORM, name, node)
    node.SetAndObserveTransformFromParent(transform)
    return node


def transform_node_to_field(node, reference_grid: Grid | None = None
                            ) -> tuple[torch.Tensor, Grid]:
    """The node's transform-from-parent as an engine field ``(1, 3, z, y, x)`` (float32).

    Without ``reference_grid`` a grid transform is read on its own grid (exactly, when it is
    stored from parent); with one, or for any other transform (linear, B-spline, composite),
    the mapping is sampled at the reference grid's voxel centres.
    """
    from_parent = _oriented_grid(node.GetTransformFromParent())
    if reference_grid is None:
        if from_parent is not None:
            return _stored_field(from_parent), _grid_of(from_parent)
        to_parent = _oriented_grid(node.GetTransformToParent())
        if to_parent is None:
            raise ValueError(f"transform {node.GetName()!r} is not a grid transform; "
                             "give reference_grid to sample it")
        reference_grid = _grid_of(to_parent)  # stored inverted: sample on its own grid
    return _sampled_field(node.GetTransformFromParent(), reference_grid), reference_grid


def set_reference_roles(transform_node, fixed_node=None, moving_node=None) -> None:
    """Record which volumes a registration transform belongs to.

    Uses Slicer's own registration roles (``vtkMRMLTransformNode``'s fixed and moving node
    reference roles, "spatialRegistrationFixed"/"spatialRegistrationMoving"), which the
    Transforms module and registration extensions read. ``None`` clears a role.
    """
    import slicer

    node_class = slicer.vtkMRMLTransformNode
    for role, other in ((node_class.GetFixedNodeReferenceRole(), fixed_node),
                        (node_class.GetMovingNodeReferenceRole(), moving_node)):
        transform_node.SetNodeReferenceID(role, other.GetID() if other is not None else None)


def load_field_file(path: str | Path, scene=None, name: str = ""):
    """Read a field file (``.h5``, ``.nrrd``, ... as written by ``io.transforms.write_field``)
    through Slicer's ``vtkMRMLTransformStorageNode`` into a new grid transform node.

    The storage node stays attached, so saving the scene writes the transform again.
    """
    import slicer

    path = Path(path)
    field_suffix(path)  # InputError on formats the engine does not write
    if not path.is_file():
        raise InputError(path, "file not found")
    scene = resolve_scene(scene)
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(path))
    node = slicer.vtkMRMLGridTransformNode()
    node.SetName(name or scene.GenerateUniqueName(path.name.split(".")[0]))
    scene.AddNode(node)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InputError(path, "Slicer's transform reader cannot read this file")
    node.SetAndObserveStorageNodeID(storage.GetID())
    for transform in (node.GetTransformFromParent(), node.GetTransformToParent()):
        oriented = _oriented_grid(transform)
        if oriented is not None:
            oriented.SetInterpolationModeToLinear()
    return node


# ------------------------------------------------------------------------------ helpers
def _grid_data(vectors: np.ndarray, grid: Grid):
    """``vtkImageData`` of RAS displacement vectors ``(z, y, x, 3)`` at the RAS origin."""
    import vtk
    from vtk.util import numpy_support

    data = vtk.vtkImageData()
    data.SetDimensions(*grid.size)
    data.SetOrigin(*(FLIP_XY @ np.asarray(grid.origin)))
    data.SetSpacing(*grid.spacing)
    flat = np.ascontiguousarray(vectors).reshape(-1, 3)
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    return data


def _oriented_grid(transform):
    """The forward ``vtkOrientedGridTransform`` that ``transform`` is or solely wraps, else None."""
    import slicer

    while transform is not None and transform.IsA("vtkGeneralTransform"):
        if transform.GetNumberOfConcatenatedTransforms() != 1:
            return None
        transform = transform.GetConcatenatedTransform(0)
    if transform is None or not transform.IsA("vtkOrientedGridTransform"):
        return None
    oriented = slicer.vtkOrientedGridTransform.SafeDownCast(transform)
    return None if oriented.GetInverseFlag() else oriented  # an inverse is not its grid


def _grid_of(oriented) -> Grid:
    data = oriented.GetDisplacementGrid()
    direction = FLIP_XY @ numpy_matrix(oriented.GetGridDirectionMatrix())[:3, :3]
    spacing = np.asarray(data.GetSpacing(), dtype=np.float64)
    start = np.asarray(data.GetExtent()[0::2], dtype=np.float64)
    origin = FLIP_XY @ np.asarray(data.GetOrigin()) + direction @ (spacing * start)
    return Grid(data.GetDimensions(), tuple(spacing), tuple(origin), tuple(direction.ravel()))


def _stored_field(oriented) -> torch.Tensor:
    from vtk.util import numpy_support

    data = oriented.GetDisplacementGrid()
    size_x, size_y, size_z = data.GetDimensions()
    raw = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).astype(np.float64)
    raw = raw * oriented.GetDisplacementScale() + oriented.GetDisplacementShift()
    vectors = raw.reshape(size_z, size_y, size_x, 3) * _RAS_COMPONENTS
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(vectors, -1, 0)))[None].float()


def _sampled_field(transform, grid: Grid) -> torch.Tensor:
    """``T(p) - p`` at every voxel centre of ``grid`` for a RAS transform, as LPS."""
    import vtk
    from vtk.util import numpy_support

    fixed_ras = grid.points(dtype=torch.float64).numpy().reshape(-1, 3) * _RAS_COMPONENTS
    source = vtk.vtkPoints()
    source.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(fixed_ras), deep=True))
    target = vtk.vtkPoints()
    target.SetDataTypeToDouble()
    transform.TransformPoints(source, target)
    moved = numpy_support.vtk_to_numpy(target.GetData()).reshape(-1, 3)
    shift = ((moved - fixed_ras) * _RAS_COMPONENTS).reshape(*grid.shape, 3)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(shift, -1, 0)))[None].float()
