"""Landmarks as markups with per-point TRE: scene round trip, .mrk.json through Slicer's own
storage node, error classes as coloured point lists, and the per-landmark table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from LungDeepRegLib.io.landmarks import read_landmarks, write_markups_json
from LungDeepRegLib.mrml import (
    error_groups,
    landmark_table,
    load_markups_json,
    markups_to_points,
    markups_values,
    points_to_markups,
    save_markups_json,
    tre_markups_by_group,
)

pytest.importorskip("slicer", reason="PyPI slicer-core (real MRML) is not installed")


TRE = np.array([0.4, 2.0, 4.99, 5.0, 7.25, 1.5, 3.3])


@pytest.fixture
def points() -> np.ndarray:
    return np.random.default_rng(11).normal(0.0, 40.0, (len(TRE), 3))


def test_points_in_the_scene_are_ras(scene, points):
    node = points_to_markups(points, scene, "fixed", labels=[f"P{k}" for k in range(7)])
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(2, position)
    np.testing.assert_allclose(position, points[2] * [-1, -1, 1])
    back, labels = markups_to_points(node)
    np.testing.assert_array_equal(back, points)
    assert labels == [f"P{k}" for k in range(7)]


def test_tre_measurement_saves_to_mrk_json_and_loads_back(scene, points, tmp_path):
    node = points_to_markups(points, scene, "fixed landmarks", values={"TRE": TRE})
    path = save_markups_json(node, tmp_path / "fixed.mrk.json")
    assert [p.name for p in tmp_path.iterdir()] == ["fixed.mrk.json"]  # no leftovers
    markup = json.loads(path.read_text())["markups"][0]
    assert markup["coordinateSystem"] == "LPS"
    assert markup["measurements"][0]["name"] == "TRE"
    assert markup["measurements"][0]["controlPointValues"] == TRE.tolist()
    loaded = load_markups_json(path, scene)
    assert loaded is not node and loaded.GetName() == "fixed"
    back, labels = markups_to_points(loaded)
    np.testing.assert_allclose(back, points, atol=1e-12)
    assert labels == [str(k + 1) for k in range(7)]
    np.testing.assert_array_equal(markups_values(loaded)["TRE"], TRE)
    assert loaded.GetMeasurement("TRE").GetUnits() == "mm"
    # the engine reads what Slicer wrote, and Slicer reads what the engine writes
    np.testing.assert_allclose(read_landmarks(path), points, atol=1e-12)
    engine_file = write_markups_json(tmp_path / "engine.mrk.json", points, values={"TRE": TRE})
    from_engine = load_markups_json(engine_file, scene)
    np.testing.assert_allclose(markups_to_points(from_engine)[0], points, atol=1e-12)
    np.testing.assert_array_equal(markups_values(from_engine)["TRE"], TRE)


def test_error_groups_split_at_2_and_5_mm():
    groups = error_groups(TRE)
    assert [g.name for g in groups] == ["< 2 mm", "2-5 mm", ">= 5 mm"]
    assert [g.indices.tolist() for g in groups] == [[0, 5], [1, 2, 6], [3, 4]]
    green, orange, red = (g.color for g in groups)
    assert green[1] > green[0] and red[0] > red[1] and orange[0] > orange[2]


def test_tre_markups_one_coloured_node_per_group(scene, points):
    nodes = tre_markups_by_group(points, TRE, scene)
    assert [n.GetName() for n in nodes] == ["TRE < 2 mm (2)", "TRE 2-5 mm (3)",
                                            "TRE >= 5 mm (2)"]
    for node, group in zip(nodes, error_groups(TRE), strict=True):
        assert node.IsA("vtkMRMLMarkupsFiducialNode") and node.GetLocked()
        np.testing.assert_allclose(markups_to_points(node)[0], points[group.indices])
        assert markups_to_points(node)[1] == [str(k + 1) for k in group.indices]
        np.testing.assert_array_equal(markups_values(node)["TRE"], TRE[group.indices])
        assert node.GetDisplayNode().GetSelectedColor() == pytest.approx(group.color)
    empty = tre_markups_by_group(points[:1], TRE[:1], scene, prefix="Case 2")
    assert [n.GetNumberOfControlPoints() for n in empty] == [1, 0, 0]


def test_landmark_table_sorted_by_error(scene):
    per_landmark = [{"index": k + 1, "tre_before_mm": 10.0 + k, "tre_mm": float(t)}
                    for k, t in enumerate(TRE)]
    node = landmark_table({"landmarks": {"per_landmark": per_landmark}}, scene)
    table = node.GetTable()
    assert node.GetNumberOfRows() == len(TRE)
    after = [table.GetValueByName(r, "TRE after (mm)").ToDouble() for r in range(len(TRE))]
    assert after == sorted(TRE.tolist(), reverse=True)
    first = table.GetValueByName(0, "Landmark").ToInt()
    assert first == 5 and table.GetValueByName(0, "TRE before (mm)").ToDouble() == 14.0
    assert table.GetValueByName(0, "Group").ToString() == ">= 5 mm"
    assert node.GetColumnUnitLabel("TRE after (mm)") == "mm"
