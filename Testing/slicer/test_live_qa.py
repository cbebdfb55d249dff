"""Live landmark QA on real MRML: point lists observed through their own events, the QA
table, predicted partners, confirmation, export and reload, observers removed on stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDeepRegLib.io.landmarks import read_landmarks
from LungDeepRegLib.mrml import (
    field_to_transform_node,
    image_to_volume_node,
    load_markups_json,
    markups_values,
    points_to_markups,
)
from LungDeepRegLib.mrml.live_qa import LiveLandmarkQA
from LungDeepRegLib.mrml.live_qa_nodes import ATTRIBUTE_PREFIX, UNCONFIRMED
from LungDeepRegLib.qa import (
    OutlierRule,
    find_outliers,
    read_markups_values,
    tre_summary,
    update_pair,
)
from LungDeepRegLib.spatial import Grid

pytest.importorskip("slicer", reason="PyPI slicer-core (real MRML) is not installed")

FLIP = np.array([-1.0, -1.0, 1.0])  # LPS <-> RAS
PAIRS, CORRUPTED = 20, 7
GRID = Grid((24, 24, 24), (4.0, 4.0, 4.0), (-40.0, -60.0, -180.0))


def smooth_field(grid: Grid) -> torch.Tensor:
    """A smooth analytic displacement (a few mm) sampled on ``grid``, ``(1, 3, z, y, x)``."""
    p = grid.points(dtype=torch.float64)
    x, y, z = p[..., 0], p[..., 1] + 60.0, p[..., 2] + 180.0
    u = torch.stack([3.0 * torch.sin(z / 30.0), 2.0 * torch.cos(x / 25.0),
                     4.0 * torch.sin(y / 40.0) * torch.cos(z / 50.0)])
    return u[None].float()


@pytest.fixture
def setup(scene):
    """Scene with the transform and 20 pairs (moving = field + 0.3 mm noise, one pair
    shifted by 9 mm); yields ``(qa, fixed points, moving points, transform node)``."""
    field = smooth_field(GRID)
    transform = field_to_transform_node(field, GRID, scene, "registration")
    rng = np.random.default_rng(5)
    low, high = np.asarray(GRID.origin) + 12.0, np.asarray(GRID.origin) + 23 * 4.0 - 12.0
    fixed = rng.uniform(low, high, (PAIRS, 3))
    moving = np.array([_transform(transform, p) for p in fixed])
    moving += rng.normal(0.0, 0.3, moving.shape)
    moving[CORRUPTED] += [9.0, 0.0, 0.0]
    labels = [f"P{k}" for k in range(PAIRS)]
    fixed_node = points_to_markups(fixed, scene, "fixed", labels=labels)
    moving_node = points_to_markups(moving, scene, "moving", labels=labels)
    qa = LiveLandmarkQA(scene, fixed_node, moving_node, transform)
    yield qa, fixed, moving, transform
    qa.stop()


def _transform(transform_node, point_lps: np.ndarray) -> np.ndarray:
    """Where the scene's transform (VTK, not the engine) maps a fixed LPS point."""
    ras = transform_node.GetTransformFromParent().TransformPoint(*(point_lps * FLIP))
    return np.asarray(ras) * FLIP


def _column(qa: LiveLandmarkQA, name: str) -> list:
    table = qa.table_node.GetTable()
    array = table.GetColumnByName(name)
    return [array.GetValue(row) for row in range(table.GetNumberOfRows())]


def _tre_cell(qa: LiveLandmarkQA, pair: int) -> float:
    return _column(qa, "TRE (mm)")[_column(qa, "Pair").index(pair + 1)]


def _ras(node, index: int) -> np.ndarray:
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(index, position)
    return np.asarray(position)


def test_initial_table_lists_the_corrupted_pair_first(setup):
    qa, *_ = setup
    assert qa.table_node.GetTable().GetNumberOfRows() == PAIRS
    assert _column(qa, "Label")[0] == f"P{CORRUPTED}"
    assert _column(qa, "Flagged")[0] == 1 and "TRE" in _column(qa, "Reasons")[0]
    assert qa.pair_at_row(0) == CORRUPTED
    flagged, tre = _column(qa, "Flagged"), _column(qa, "TRE (mm)")
    keys = [(-f, -t) for f, t in zip(flagged, tre, strict=True)]
    assert keys == sorted(keys)  # flagged first, then largest TRE
    expected = tre_summary(qa.pairs.tre)
    for key in ("mean", "sd", "p75", "max"):
        assert qa.summary[key] == pytest.approx(expected[key])
        assert float(qa.table_node.GetAttribute(ATTRIBUTE_PREFIX + key)) == pytest.approx(
            expected[key], rel=1e-5)
    np.testing.assert_allclose(markups_values(qa.moving_node)["TRE"], qa.pairs.tre)
    assert "(> 5 mm)" in qa.moving_node.GetNthControlPointDescription(CORRUPTED)


@pytest.mark.parametrize("side", ["fixed", "moving"])
def test_moving_a_control_point_updates_its_row(setup, side):
    qa, fixed, moving, _ = setup
    k = 3
    node = qa.fixed_node if side == "fixed" else qa.moving_node
    new = (fixed if side == "fixed" else moving)[k] + [2.5, -1.0, 1.5]
    before_pairs, before_cell = qa.pairs, _tre_cell(qa, k)
    moved = {"fixed_point": new} if side == "fixed" else {"moving_point": new,
                                                          "confirmed": True}
    _, status = update_pair(before_pairs, k, qa.field, qa.grid, **moved)
    node.SetNthControlPointPositionWorld(k, *(new * FLIP))  # fires PointModifiedEvent
    assert _tre_cell(qa, k) == pytest.approx(status.tre, abs=1e-9)
    assert abs(status.tre - before_cell) > 0.5
    np.testing.assert_allclose(markups_values(node)["TRE"][k], status.tre, atol=1e-9)
    assert qa.moving_node.GetNthControlPointDescription(k).startswith(
        f"TRE {status.tre:.2f} mm ({status.group})")
    assert qa.summary["mean"] == pytest.approx(float(qa.pairs.tre.mean()))


def test_one_move_refreshes_the_table_once(setup):
    """Re-entrancy: the QA's own writes to the point lists start no further update."""
    qa, fixed, *_ = setup
    count = []
    tag = qa.table_node.AddObserver("ModifiedEvent", lambda *_: count.append(1))
    qa.fixed_node.SetNthControlPointPositionWorld(0, *((fixed[0] + 1.0) * FLIP))
    qa.table_node.RemoveObserver(tag)
    assert len(count) == 1


def test_placing_a_fixed_point_predicts_an_unconfirmed_partner(setup):
    qa, fixed, _, transform = setup
    import vtk

    point = fixed.mean(axis=0) + [5.0, -3.0, 2.0]
    index = qa.fixed_node.AddControlPoint(vtk.vtkVector3d(*(point * FLIP)), "new")
    assert index == PAIRS and qa.moving_node.GetNumberOfControlPoints() == PAIRS + 1
    assert qa.moving_node.GetNthControlPointLabel(index) == "new"
    np.testing.assert_allclose(_ras(qa.moving_node, index) * FLIP, _transform(transform, point),
                               atol=1e-3)
    assert not qa.moving_node.GetNthControlPointSelected(index)
    assert UNCONFIRMED in qa.moving_node.GetNthControlPointDescription(index)
    row = _column(qa, "Pair").index(index + 1)
    assert _column(qa, "Confirmed")[row] == 0 and qa.summary["n_unconfirmed"] == 1
    # an unconfirmed partner follows its fixed point to the new prediction
    qa.fixed_node.SetNthControlPointPositionWorld(index, *((point + 4.0) * FLIP))
    np.testing.assert_allclose(_ras(qa.moving_node, index) * FLIP,
                               _transform(transform, point + 4.0), atol=1e-3)
    qa.confirm(index)
    assert qa.moving_node.GetNthControlPointSelected(index)
    assert UNCONFIRMED not in qa.moving_node.GetNthControlPointDescription(index)
    assert _column(qa, "Confirmed")[_column(qa, "Pair").index(index + 1)] == 1


def test_moving_an_unconfirmed_partner_confirms_it(setup):
    qa, fixed, *_ = setup
    import vtk

    index = qa.fixed_node.AddControlPoint(vtk.vtkVector3d(*(fixed[0] * FLIP)), "again")
    assert not qa.pairs.confirmed[index]
    target = qa.pairs.moving[index] + [0.0, 1.2, 0.0]
    qa.moving_node.SetNthControlPointPositionWorld(index, *(target * FLIP))
    assert qa.pairs.confirmed[index] and qa.moving_node.GetNthControlPointSelected(index)
    assert qa.last_status.tre == pytest.approx(1.2, abs=1e-6)


def test_deleting_a_fixed_point_deletes_the_pair(setup):
    qa, *_ = setup
    qa.fixed_node.RemoveNthControlPoint(CORRUPTED)
    assert qa.moving_node.GetNumberOfControlPoints() == PAIRS - 1
    assert f"P{CORRUPTED}" not in _column(qa, "Label")
    assert qa.report.flagged == () or qa.report.flagged[0].label != f"P{CORRUPTED}"


def test_jump_slices_centres_each_view_on_its_image(setup, scene):
    qa, *_ = setup
    moving_volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moving CT")
    views = {}
    for name in ("Red", "Green"):
        views[name] = scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        views[name].SetLayoutName(name)
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
    composite.SetBackgroundVolumeID(moving_volume.GetID())  # Green shows the moving image
    qa.moving_volume = moving_volume
    assert qa.jump_slices(4) == 2
    fixed_ras, moving_ras = qa.centre_on(4)
    for name, expected in (("Red", fixed_ras), ("Green", moving_ras)):
        matrix = views[name].GetSliceToRAS()
        np.testing.assert_allclose([matrix.GetElement(i, 3) for i in range(3)], expected)


def test_export_carries_tre_and_flags_and_reloads(setup, scene, tmp_path):
    qa, _, moving, _ = setup
    # correct the corrupted pair: its moving point back where the noise-free one was
    corrected = moving[CORRUPTED] - [9.0, 0.0, 0.0]
    qa.moving_node.SetNthControlPointPositionWorld(CORRUPTED, *(corrected * FLIP))
    written = qa.export(tmp_path)
    loaded = load_markups_json(written["fixed_markups"], scene)
    values = markups_values(loaded)
    np.testing.assert_allclose(values["TRE"], qa.pairs.tre, atol=1e-9)
    report = find_outliers(qa.pairs, OutlierRule())
    flags = np.array([float(p.flagged) for p in report.by_index()])
    np.testing.assert_array_equal(values["flagged"], flags)
    file_values = read_markups_values(written["moving_markups"])
    np.testing.assert_allclose(file_values["TRE"], qa.pairs.tre, atol=1e-9)
    assert written["moving_csv"].is_file() and "fixed_text" not in written
    summary = json.loads(written["qa_json"].read_text())["summary"]
    assert summary["corrected_pairs"] == 1
    assert summary["after_correction"]["max"] < summary["before_correction"]["max"] - 5.0
    assert qa.summary_before_after()["corrected_pairs"] == 1


def test_export_in_dirlab_format_uses_the_fixed_volume_grid(setup, scene, tmp_path):
    qa, *_ = setup
    with pytest.raises(ValueError, match="grid"):
        qa.export(tmp_path / "no_volume", fmt="dirlab")  # the field's grid is not the image's
    image = sitk.Image(40, 36, 30, sitk.sitkInt16)
    image.SetSpacing((2.0, 2.5, 3.0))
    image.SetOrigin((-45.0, -70.0, -190.0))
    qa.fixed_volume = image_to_volume_node(image, scene, "inhale")
    written = qa.export(tmp_path, fmt="dirlab")
    grid = Grid.from_image(image)
    for side, points in (("fixed", qa.pairs.fixed), ("moving", qa.pairs.moving)):
        np.testing.assert_allclose(read_landmarks(written[f"{side}_text"], "dirlab", grid),
                                   points, atol=1e-5)


def test_reloaded_export_keeps_unconfirmed_pairs(setup, scene, tmp_path):
    qa, fixed, _, transform = setup
    import vtk

    qa.fixed_node.AddControlPoint(vtk.vtkVector3d(*(fixed[1] * FLIP)), "todo")
    written = qa.export(tmp_path)
    again = LiveLandmarkQA(scene, load_markups_json(written["fixed_markups"], scene),
                           load_markups_json(written["moving_markups"], scene), transform)
    try:
        assert again.pairs.confirmed.tolist() == [True] * PAIRS + [False]
        assert not again.moving_node.GetNthControlPointSelected(PAIRS)
    finally:
        again.stop()


def test_stop_removes_the_observers(setup):
    qa, fixed, *_ = setup
    table_before = _column(qa, "TRE (mm)")
    qa.stop()
    qa.fixed_node.SetNthControlPointPositionWorld(2, *((fixed[2] + 6.0) * FLIP))
    assert _column(qa, "TRE (mm)") == table_before
    assert not qa.fixed_node.HasObserver(qa.fixed_node.PointModifiedEvent)
