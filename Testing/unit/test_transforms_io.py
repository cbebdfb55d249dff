"""Displacement field files: every format is read by SimpleITK/ITK as the engine's mapping.

The mapping checked is the engine's ``T(p) = p + u(p)`` (LPS mm, fixed to moving), with ``u``
interpolated trilinearly by the engine, against ITK's ``TransformPoint`` on what it reads
from the file. The grid has anisotropic spacing, a non-zero origin and a rotated and
flipped (improper) direction, so any axis, sign or frame mix-up shows.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.transforms import (
    NIFTI_INTENT_DISPVECT,
    SUPPORTED_SUFFIXES,
    field_transform,
    read_field,
    write_field,
)
from LungDeepRegLib.spatial.grid import Grid
from LungDeepRegLib.spatial.sampling import sample_points

SUFFIXES = [".nrrd", ".mha", ".h5", ".hdf5", ".nii", ".nii.gz"]
# NIfTI-1 stores the affine in float32: allow for it
TOLERANCE_MM = {".nii": 1e-3, ".nii.gz": 1e-3}


def _rotated_flipped_direction() -> np.ndarray:
    angle = math.radians(30.0)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0.0],
                         [math.sin(angle), math.cos(angle), 0.0],
                         [0.0, 0.0, 1.0]])
    tilt = math.radians(10.0)
    about_x = np.array([[1.0, 0.0, 0.0],
                        [0.0, math.cos(tilt), -math.sin(tilt)],
                        [0.0, math.sin(tilt), math.cos(tilt)]])
    return about_x @ rotation @ np.diag([1.0, 1.0, -1.0])  # det -1: a flipped axis


@pytest.fixture(scope="module")
def grid() -> Grid:
    return Grid((12, 10, 8), (0.9, 1.3, 2.5), (-120.5, 35.2, -300.0),
                tuple(_rotated_flipped_direction().ravel()))


@pytest.fixture(scope="module")
def field(grid: Grid) -> torch.Tensor:
    """A smooth field of several mm, different in every component."""
    p = grid.points(dtype=torch.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    u = torch.stack((3.0 * torch.sin(y / 9.0) + 1.0,
                     -2.0 * torch.cos(z / 7.0 + x / 11.0),
                     4.0 * torch.sin(x / 8.0) * torch.cos(y / 13.0) - 1.5), dim=0)
    return u[None].to(torch.float32)


@pytest.fixture(scope="module")
def points(grid: Grid) -> np.ndarray:
    """Physical points strictly inside the grid, off the voxel centres."""
    rng = np.random.default_rng(7)
    index = rng.uniform(0.3, 1.0, size=(12, 3)) * (np.asarray(grid.size) - 1.6) + 0.3
    return grid.index_to_physical(index)


def _engine_mapping(field: torch.Tensor, grid: Grid, points: np.ndarray) -> np.ndarray:
    values = sample_points(field[0].double(), grid, torch.as_tensor(points))
    return points + values.numpy()


def _assert_same(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    # numpy rather than torch.testing: its first call costs over a second of imports
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=atol, rtol=0)


def _sitk_transform(path) -> sitk.Transform:
    """What an ITK user gets from the file, with SimpleITK only."""
    name = path.name
    if name.endswith((".h5", ".hdf5")):
        return sitk.ReadTransform(str(path))
    image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(image)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_file_is_the_same_mapping_for_simpleitk(tmp_path, grid, field, points, suffix):
    path = write_field(field, grid, tmp_path / f"field{suffix}")
    transform = _sitk_transform(path)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    expected = _engine_mapping(field, grid, points)
    assert np.abs(expected - points).max() > 1.0  # the field really moves the points
    np.testing.assert_allclose(mapped, expected, atol=TOLERANCE_MM.get(suffix, 1e-4))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_read_field_round_trip(tmp_path, grid, field, suffix):
    path = write_field(field, grid, tmp_path / f"field{suffix}")
    back, back_grid = read_field(path)
    assert back.dtype == torch.float32 and back.shape == field.shape
    _assert_same(back, field, 1e-6)
    np.testing.assert_allclose(back_grid.affine, grid.affine, atol=TOLERANCE_MM.get(suffix, 1e-6))
    assert back_grid.size == grid.size
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing left over


def test_float64_field_keeps_its_precision(tmp_path, grid, field):
    precise = field.double() + 1e-9
    for suffix in (".nrrd", ".nii.gz", ".h5"):
        back, _ = read_field(write_field(precise, grid, tmp_path / f"f{suffix}"), torch.float64)
        _assert_same(back, precise, 1e-12)


def test_nifti_on_disk_is_intent_1006_with_ras_vectors(tmp_path, grid, field):
    image = nib.load(write_field(field, grid, tmp_path / "f.nii.gz"))
    header = image.header
    assert int(header["intent_code"]) == NIFTI_INTENT_DISPVECT
    assert image.shape == (*grid.size, 1, 3)
    assert int(header["sform_code"]) > 0 and int(header["qform_code"]) > 0
    ras_from_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(image.affine, ras_from_lps @ grid.affine, atol=1e-4)
    np.testing.assert_allclose(image.get_qform(), ras_from_lps @ grid.affine, atol=1e-4)
    data = np.asarray(image.dataobj)
    lps = field[0].numpy()
    for i, j, k in [(0, 0, 0), (3, 7, 5), (11, 9, 7)]:
        expected_ras = lps[:, k, j, i] * np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(data[i, j, k, 0], expected_ras, atol=1e-6)


def test_simpleitk_converts_nifti_dispvect_to_lps(tmp_path, grid, field):
    """ITK >= 5.4 negates x and y of intent-1006 vectors on read (RAS -> LPS)."""
    image = sitk.ReadImage(str(write_field(field, grid, tmp_path / "f.nii.gz")))
    np.testing.assert_allclose(sitk.GetArrayFromImage(image),
                               np.moveaxis(field[0].numpy(), 0, -1), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), grid.direction, atol=1e-5)


def test_simpleitk_written_vector_nifti_reads_as_stored(tmp_path, grid, field):
    """SimpleITK writes intent 1007 with LPS components; read_field takes them as ITK does."""
    path = tmp_path / "sitk.nii.gz"
    sitk.WriteImage(field_transform(field, grid).GetDisplacementField(), str(path))
    assert int(nib.load(str(path)).header["intent_code"]) != NIFTI_INTENT_DISPVECT
    back, _ = read_field(path)
    _assert_same(back, field, 1e-6)


def test_field_transform_matches_engine(grid, field, points):
    transform = field_transform(field, grid)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    np.testing.assert_allclose(mapped, _engine_mapping(field, grid, points), atol=1e-4)


def test_composite_h5_is_unwrapped(tmp_path, grid, field, points):
    lone = sitk.CompositeTransform([field_transform(field, grid)])
    sitk.WriteTransform(lone, str(tmp_path / "lone.h5"))
    back, _ = read_field(tmp_path / "lone.h5")
    _assert_same(back, field, 1e-6)

    shift = sitk.TranslationTransform(3, (2.0, -1.0, 0.5))
    combined = sitk.CompositeTransform([shift, field_transform(field, grid)])
    sitk.WriteTransform(combined, str(tmp_path / "combined.h5"))
    back, back_grid = read_field(tmp_path / "combined.h5", torch.float64)
    # the read field reproduces the whole composite mapping at the grid's voxel centres
    centres = grid.index_to_physical(np.array([[0, 0, 0], [5, 4, 3], [11, 9, 7]]))
    mapped = np.array([combined.TransformPoint(tuple(p)) for p in centres])
    values = sample_points(back[0], back_grid, torch.as_tensor(centres)).numpy()
    np.testing.assert_allclose(centres + values, mapped, atol=1e-6)


def test_unknown_suffix_names_file_and_formats(tmp_path, grid, field):
    with pytest.raises(InputError) as caught:
        write_field(field, grid, tmp_path / "field.vtk")
    message = str(caught.value)
    assert "field.vtk" in message
    assert all(suffix in message for suffix in SUPPORTED_SUFFIXES)
    with pytest.raises(InputError, match="tfm"):
        read_field(tmp_path / "field.tfm")
    assert not list(tmp_path.iterdir())


def test_read_errors_are_input_errors(tmp_path, grid):
    with pytest.raises(InputError, match="not found"):
        read_field(tmp_path / "missing.nrrd")
    scalar = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    sitk.WriteImage(scalar, str(tmp_path / "scalar.nrrd"))
    with pytest.raises(InputError, match="component"):
        read_field(tmp_path / "scalar.nrrd")
    sitk.WriteTransform(sitk.TranslationTransform(3), str(tmp_path / "affine.h5"))
    with pytest.raises(InputError, match="no displacement field"):
        read_field(tmp_path / "affine.h5")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(InputError, match="broken.nii.gz"):
        read_field(tmp_path / "broken.nii.gz")


def test_write_rejects_wrong_shape(tmp_path, grid, field):
    with pytest.raises(ValueError, match="shape"):
        write_field(field[:, :, :-1], grid, tmp_path / "f.nrrd")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".h5", ".nii.gz"])
def test_slicer_reads_the_same_mapping(tmp_path, grid, field, suffix):
    """Real MRML (slicer-core) reads every format as the same transform-from-parent.

    Slicer's grid transforms interpolate cubically, so compare at voxel centres, where
    every interpolation gives the stored value.
    """
    slicer = pytest.importorskip("slicer")
    path = write_field(field, grid, tmp_path / f"field{suffix}")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNode(slicer.vtkMRMLTransformNode())
    storage = scene.AddNode(slicer.vtkMRMLTransformStorageNode())
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    to_moving = node.GetTransformFromParent()
    centres = grid.index_to_physical(np.array([[0, 0, 0], [3, 4, 2], [7, 2, 5], [11, 9, 7]]))
    flip = np.array([-1.0, -1.0, 1.0])  # LPS <-> RAS
    mapped = np.array([to_moving.TransformPoint(list(p * flip)) for p in centres]) * flip
    np.testing.assert_allclose(mapped, _engine_mapping(field, grid, centres), atol=1e-4)
