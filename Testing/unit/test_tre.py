"""Target registration error (LungDeepRegLib.metrics.landmarks).

Anchored on the published DIR-Lab initial distances (identity transform), run through the
engine's own path: case grid -> landmark reader -> zero displacement field -> TRE.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.geometry import case_grid, geometry_table
from LungDeepRegLib.io.landmarks import read_landmark_pair, read_landmarks
from LungDeepRegLib.metrics import (
    TREProtocol,
    check_inside,
    map_points,
    snap_to_voxel,
    summarize,
    target_registration_error,
)
from LungDeepRegLib.spatial.grid import Grid

GRID = Grid((12, 10, 8), (0.8, 1.2, 2.5), (-10.0, 5.0, 3.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))
PUBLISHED_COPDGENE = {1: (26.33, 11.42), 2: (21.79, 6.46), 3: (12.64, 6.38), 4: (29.58, 12.92)}


def _zero_field(grid: Grid) -> torch.Tensor:
    # a true zero field on the full grid, without allocating 512x512x136x3 floats
    return torch.zeros(1, 3, 1, 1, 1).expand(1, 3, *grid.shape)


def _field_from(function, grid: Grid) -> torch.Tensor:  # noqa: ANN001 - points -> displacement
    points = grid.points(dtype=torch.float64)
    return function(points).permute(3, 0, 1, 2)[None].contiguous()


def _dirlab_errors(shared_data: Path, case: int) -> np.ndarray:
    grid = case_grid("dirlab", case)
    folder = shared_data / "dirlab_landmarks"
    fixed, moving = read_landmark_pair(folder / f"Case{case}_300_T00_xyz.txt",
                                       folder / f"Case{case}_300_T50_xyz.txt",
                                       "dirlab", "dirlab", grid, grid)
    return target_registration_error(fixed, moving, _zero_field(grid), grid)


def _assert_published(summary: dict, published: tuple[float, float]) -> None:
    # published to 0.01 mm: equal after rounding to two decimals
    assert abs(summary["mean"] - published[0]) <= 0.005 + 1e-9
    assert abs(summary["sd"] - published[1]) <= 0.005 + 1e-9


# ------------------------------------------------------------- published references
@pytest.mark.parametrize("case", range(1, 11))
def test_dirlab_initial_tre_matches_published(shared_data: Path, case: int) -> None:
    published = geometry_table("dirlab")["published_initial_tre_mm"][str(case)]
    summary = summarize(_dirlab_errors(shared_data, case))
    assert summary["n"] == 300
    _assert_published(summary, tuple(published))


def test_dirlab_pooled_initial_tre(shared_data: Path) -> None:
    errors = np.concatenate([_dirlab_errors(shared_data, case) for case in range(1, 11)])
    summary = summarize(errors)
    assert summary["n"] == 3000
    _assert_published(summary, (8.46, 6.58))
    _assert_published(summary, tuple(geometry_table("dirlab")["published_initial_tre_mm"]
                                     ["mean"]))


@pytest.mark.parametrize("case", sorted(PUBLISHED_COPDGENE))
def test_copdgene_initial_tre(shared_data: Path, case: int) -> None:
    grid = case_grid("copdgene", case)
    folder = shared_data / "copdgene_landmarks"
    # iBH files carry an elastix 'index' header; they are still 1-based DIR-Lab indices
    fixed, moving = read_landmark_pair(folder / f"copd{case}_300_iBH_xyz_r1.txt",
                                       folder / f"copd{case}_300_eBH_xyz_r1.txt",
                                       "dirlab", "dirlab", grid, grid)
    keep = check_inside(fixed, grid) & check_inside(moving, grid)
    assert keep.all()
    errors = target_registration_error(fixed, moving, _zero_field(grid), grid,
                                       TREProtocol.dirlab())
    _assert_published(summarize(errors), PUBLISHED_COPDGENE[case])


def test_popi_elastix_points_initial_tre(shared_data: Path) -> None:
    folder = shared_data / "popi"
    phase00 = read_landmarks(folder / "landmarks_lps" / "popi_00_points.txt", "elastix-point")
    cropped = np.loadtxt(folder / "00-Landmarks.pts", comments="#")
    assert phase00.shape == (41, 3)
    np.testing.assert_allclose(phase00, cropped + [-247.070, -145.445, -164.5], atol=1e-3)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(folder / "popi_phase00.nii.gz"))
    reader.ReadImageInformation()
    grid = Grid(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    assert check_inside(phase00, grid).all()
    for phase, mean in (("50", 5.75), ("60", 6.15)):
        other = read_landmarks(folder / "landmarks_lps" / f"popi_{phase}_points.txt",
                               "elastix-point")
        assert summarize(target_registration_error(phase00, other))["mean"] == pytest.approx(
            mean, abs=0.005)


# ---------------------------------------------------------------- known fields
def test_constant_shift_maps_points_inside_and_outside() -> None:
    shift = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)
    field = shift.view(1, 3, 1, 1, 1).expand(1, 3, *GRID.shape)
    points = np.array([GRID.origin, [100.0, -50.0, 70.0]])  # second one far outside
    np.testing.assert_allclose(map_points(points, field, GRID), points + shift.numpy())
    errors = target_registration_error(points, points + shift.numpy(), field, GRID)
    np.testing.assert_allclose(errors, 0.0, atol=1e-12)
    np.testing.assert_allclose(target_registration_error(points, points + shift.numpy()),
                               np.linalg.norm(shift.numpy()))


def test_affine_field_is_interpolated_exactly() -> None:
    matrix = torch.tensor([[0.02, -0.01, 0.03], [0.01, 0.05, 0.0], [-0.02, 0.0, 0.04]],
                          dtype=torch.float64)
    offset = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    field = _field_from(lambda p: p @ matrix.T + offset, GRID)
    rng = np.random.default_rng(0)
    index = rng.uniform(0, np.array(GRID.size) - 1, size=(50, 3))  # inside: no border effect
    points = GRID.index_to_physical(index)
    expected = points + points @ matrix.numpy().T + offset.numpy()
    np.testing.assert_allclose(map_points(points, field, GRID), expected, atol=1e-9)
    float32 = map_points(points, field.float(), GRID)
    np.testing.assert_allclose(float32, expected, atol=1e-4)


def test_round_to_voxel_snaps_mapped_points() -> None:
    grid = Grid((10, 10, 10), (1.0, 1.0, 2.0))
    fixed = np.array([[2.0, 4.0, 4.0]])
    field = torch.tensor([0.3, 0.6, 1.1]).view(1, 3, 1, 1, 1).expand(1, 3, *grid.shape)
    moving = np.array([[2.0, 5.0, 6.0]])  # voxel centre nearest to (2.3, 4.6, 5.1)
    continuous = target_registration_error(fixed, moving, field, grid)
    np.testing.assert_allclose(continuous, np.linalg.norm([0.3, -0.4, -0.9]), atol=1e-6)
    rounded = target_registration_error(fixed, moving, field, grid, TREProtocol.dirlab())
    np.testing.assert_allclose(rounded, 0.0, atol=1e-12)
    other = Grid((10, 10, 10), (1.0, 1.0, 1.0))  # snap on another (moving) grid
    snapped = target_registration_error(fixed, moving, field, grid, TREProtocol(True), other)
    np.testing.assert_allclose(snapped, 1.0, atol=1e-12)  # (2, 5, 5) vs (2, 5, 6)
    np.testing.assert_allclose(snap_to_voxel(GRID.index_to_physical([[0.5, 1.49, 2.51]]),
                                             GRID), GRID.index_to_physical([[1, 1, 3]]))


def test_field_and_protocol_validation() -> None:
    points = np.zeros((2, 3))
    with pytest.raises(ValueError, match="field must be"):
        map_points(points, torch.zeros(1, 3, 2, 2, 2), GRID)
    with pytest.raises(ValueError, match="needs the fixed grid"):
        target_registration_error(points, points, torch.zeros(1, 3, *GRID.shape))
    with pytest.raises(ValueError, match="2 fixed but 1 moving"):
        target_registration_error(points, points[:1])
    with pytest.raises(ValueError, match="grid to round to"):
        target_registration_error(points, points, protocol=TREProtocol(round_to_voxel=True))
    with pytest.raises(ValueError, match="inhale"):
        TREProtocol(fixed="end-inhale")  # type: ignore[arg-type]
    preset = TREProtocol.dirlab()
    assert preset.round_to_voxel and preset.fixed == "inhale"
    assert not TREProtocol.dirlab(round_to_voxel=False).round_to_voxel
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.fixed = "exhale"  # type: ignore[misc]


# ------------------------------------------------------------------ summary, outside
def test_summarize_statistics() -> None:
    errors = np.arange(1.0, 21.0)
    summary = summarize(errors, protocol=TREProtocol.dirlab())
    assert summary["mean"] == 10.5 and summary["median"] == 10.5 and summary["max"] == 20.0
    assert summary["sd"] == pytest.approx(np.sqrt((20**2 - 1) / 12))  # population, ddof 0
    assert summary["p75"] == pytest.approx(15.25) and summary["p95"] == pytest.approx(19.05)
    assert summary["n"] == 20 and summary["excluded"] == 0
    assert summary["protocol"] == {"round_to_voxel": True, "fixed": "inhale"}
    empty = summarize(np.array([]), excluded=3)
    assert empty["n"] == 0 and empty["excluded"] == 3 and np.isnan(empty["mean"])


def test_outside_landmarks_raise_listing_them() -> None:
    points = GRID.index_to_physical([[0, 0, 0], [-2, 0, 0], [5, 5, 5], [0, 0, 7.6]])
    with pytest.raises(InputError, match="2 of 4 landmarks lie outside") as error:
        check_inside(points, GRID, "fixed.txt")
    message = str(error.value)
    assert message.startswith("fixed.txt:")
    assert "#2 (" in message and "#4 (" in message and "#1 (" not in message
    assert f"{points[1, 0]:.2f}" in message
    assert check_inside(points[[0, 2]], GRID, "fixed.txt").all()


def test_outside_landmarks_excluded_with_warning() -> None:
    fixed = GRID.index_to_physical([[0, 0, 0], [-2, 0, 0], [5, 5, 5]])
    moving = fixed + [1.0, 0.0, 0.0]
    with pytest.warns(UserWarning, match=r"fixed.txt: 1 of 3 .*#2 \(.*excluded"):
        keep = check_inside(fixed, GRID, "fixed.txt", exclude=True)
    np.testing.assert_array_equal(keep, [True, False, True])
    errors = target_registration_error(fixed[keep], moving[keep])
    summary = summarize(errors, excluded=int((~keep).sum()))
    assert summary["n"] == 2 and summary["excluded"] == 1 and summary["mean"] == 1.0
