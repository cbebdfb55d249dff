"""Landmark file reading and writing (LungDeepRegLib.io.landmarks).

Every reader must give LPS mm; voxel formats go through the image grid; the format is
the user's word, never the file header's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.geometry import case_grid
from LungDeepRegLib.io.landmarks import (
    LANDMARK_FORMATS,
    format_from_extension,
    read_landmark_pair,
    read_landmarks,
    write_csv,
    write_dirlab,
    write_elastix_points,
    write_markups_json,
)
from LungDeepRegLib.spatial.grid import Grid

# anisotropic, rotated (90 degrees about z) and shifted: catches index/physical mix-ups
GRID = Grid((40, 30, 20), (0.8, 1.2, 2.5), (-10.0, 5.0, 3.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))
INDEX_1BASED = np.array([[1.0, 1.0, 1.0], [10.0, 20.0, 5.0], [40.0, 30.0, 20.0]])
POINTS = GRID.index_to_physical(INDEX_1BASED - 1)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(array: np.ndarray, sep: str = "\t") -> str:
    return "".join(sep.join(f"{v:g}" for v in row) + "\n" for row in array)


# ----------------------------------------------------------------------------- dirlab
def test_dirlab_is_one_based_and_header_is_skipped(tmp_path: Path) -> None:
    bare = _write(tmp_path, "bare.txt", _rows(INDEX_1BASED).replace("\n", "\t\r\n"))
    headed = _write(tmp_path, "headed.txt", "index\n3\n" + _rows(INDEX_1BASED, " "))
    points = read_landmarks(bare, "dirlab", GRID)
    np.testing.assert_allclose(points, POINTS)
    np.testing.assert_allclose(points[0], GRID.origin)  # index 1 is the first voxel
    np.testing.assert_array_equal(read_landmarks(headed, "dirlab", GRID), points)
    np.testing.assert_array_equal(read_landmarks(headed, "copdgene", GRID), points)


def test_shared_copdgene_index_header_is_not_trusted(shared_data: Path) -> None:
    grid = case_grid("copdgene", 1)
    path = shared_data / "copdgene_landmarks" / "copd1_300_iBH_xyz_r1.txt"
    points = read_landmarks(path, "dirlab", grid)
    assert points.shape == (300, 3)
    np.testing.assert_allclose(points[0], [187 * 0.625, 259 * 0.625, 3 * 2.5])
    # the same file read as the header claims (0-based) is one voxel off
    as_elastix = read_landmarks(path, "elastix-index", grid)
    np.testing.assert_allclose(as_elastix - points, np.tile([0.625, 0.625, 2.5], (300, 1)))


def test_dirlab_header_count_must_match(tmp_path: Path) -> None:
    path = _write(tmp_path, "short.txt", "index\n4\n" + _rows(INDEX_1BASED))
    with pytest.raises(InputError, match="declares 4 landmarks, file holds 3"):
        read_landmarks(path, "dirlab", GRID)


# ---------------------------------------------------------------------------- elastix
def test_elastix_point_and_zero_based_index(tmp_path: Path) -> None:
    point_file = _write(tmp_path, "p.txt", "point\n3\n" + _rows(POINTS, " "))
    np.testing.assert_allclose(read_landmarks(point_file, "elastix-point"), POINTS, atol=1e-5)
    index_file = _write(tmp_path, "i.txt", "index\n3\n" + _rows(INDEX_1BASED - 1, " "))
    np.testing.assert_allclose(read_landmarks(index_file, "elastix-index", GRID), POINTS)


def test_elastix_header_must_match_named_format(tmp_path: Path) -> None:
    path = _write(tmp_path, "i.txt", "index\n3\n" + _rows(INDEX_1BASED))
    with pytest.raises(InputError, match="'point' header.*use 'dirlab'"):
        read_landmarks(path, "elastix-point")


# ---------------------------------------------------------------------- Slicer formats
def _markups(system: str | None, points: np.ndarray) -> str:
    markup = {"type": "Fiducial", "controlPoints": [
        {"id": str(k), "label": f"F-{k}", "position": list(p), "positionStatus": "defined"}
        for k, p in enumerate(points.tolist())]}
    if system:
        markup["coordinateSystem"] = system
    return json.dumps({"@schema": "x", "markups": [markup]})


@pytest.mark.parametrize("system", ["LPS", "RAS", None])
def test_markups_json_coordinate_systems(tmp_path: Path, system: str | None) -> None:
    stored = POINTS * [-1, -1, 1] if system == "RAS" else POINTS  # no system means LPS
    path = _write(tmp_path, "m.mrk.json", _markups(system, stored))
    np.testing.assert_allclose(read_landmarks(path, "mrk-json"), POINTS)
    np.testing.assert_allclose(read_landmarks(path), POINTS)  # extension default


def test_markups_json_undefined_point_is_an_error(tmp_path: Path) -> None:
    document = json.loads(_markups("LPS", POINTS))
    document["markups"][0]["controlPoints"][1]["positionStatus"] = "missing"
    path = _write(tmp_path, "m.mrk.json", json.dumps(document))
    with pytest.raises(InputError, match="control point 2"):
        read_landmarks(path)


@pytest.mark.parametrize(("header", "lps"), [
    ("# CoordinateSystem = LPS\n", True), ("# CoordinateSystem = 1\n", True),
    ("# CoordinateSystem = RAS\n", False), ("# CoordinateSystem = 0\n", False), ("", False)])
def test_fcsv_coordinate_systems(tmp_path: Path, header: str, lps: bool) -> None:
    stored = POINTS if lps else POINTS * [-1, -1, 1]
    rows = "".join(f"{k},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,F-{k},,\n"
                   for k, (x, y, z) in enumerate(stored.tolist()))
    columns = "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
    path = _write(tmp_path, "f.fcsv", "# Markups fiducial file version = 4.11\n" + header
                  + columns + rows)
    np.testing.assert_allclose(read_landmarks(path), POINTS)


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    bare = _write(tmp_path, "a.csv", _rows(POINTS, ","))
    np.testing.assert_allclose(read_landmarks(bare), POINTS, atol=1e-5)
    rows = enumerate(POINTS.tolist())
    lines = ["label,Z,y,X"] + [f"p{k},{z!r},{y!r},{x!r}" for k, (x, y, z) in rows]
    headed = _write(tmp_path, "b.csv", "\n".join(lines) + "\n")
    np.testing.assert_allclose(read_landmarks(headed, "csv"), POINTS)
    bad = _write(tmp_path, "c.csv", "label,a,b,c\np,1,2,3\n")
    with pytest.raises(InputError, match="header must name columns x, y, z"):
        read_landmarks(bad)


def test_format_names_and_extension_defaults(tmp_path: Path) -> None:
    assert {"dirlab", "copdgene", "elastix-point", "elastix-index", "mrk-json", "fcsv",
            "csv"} == set(LANDMARK_FORMATS)
    assert format_from_extension("a/b.MRK.JSON") == "mrk-json"
    assert format_from_extension("b.fcsv") == "fcsv" and format_from_extension("b.csv") == "csv"
    assert format_from_extension("b.txt") is None and format_from_extension("b.json") is None
    path = _write(tmp_path, "a.txt", _rows(INDEX_1BASED))
    with pytest.raises(InputError, match="name it"):
        read_landmarks(path, None, GRID)
    with pytest.raises(InputError, match="unknown landmark format"):
        read_landmarks(path, "pts", GRID)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="grid is needed"):
        read_landmarks(path, "dirlab")


# ------------------------------------------------------------------------- bad input
def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as error:
        read_landmarks(tmp_path / "nope.txt", "dirlab", GRID)
    assert "nope.txt" in str(error.value)
    for fmt in ("dirlab", "elastix-point", "csv", "fcsv", "mrk-json"):
        empty = _write(tmp_path, f"empty_{fmt}.txt", "\n")
        with pytest.raises(InputError, match="empty|no landmarks|not a markups") as error:
            read_landmarks(empty, fmt, GRID)  # type: ignore[arg-type]
        assert error.value.source == str(empty)


def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "cols.txt", "1 2 3\n4 5 6\n\n7 8\n")
    with pytest.raises(InputError, match="line 4: expected 3 columns, found 2") as error:
        read_landmarks(path, "dirlab", GRID)
    assert error.value.source == str(path) and str(path) in str(error.value)
    csv_path = _write(tmp_path, "cols.csv", "x,y,z\n1,2,3\n4,5,6,7\n")
    with pytest.raises(InputError, match="line 3: expected 3 columns, found 4"):
        read_landmarks(csv_path)


def test_non_numeric_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "nan.txt", "point\n2\n1 2 3\n4 five 6\n")
    with pytest.raises(InputError, match="line 4: non-numeric value 'five'"):
        read_landmarks(path, "elastix-point")


def test_pair_counts_must_match(tmp_path: Path) -> None:
    fixed = _write(tmp_path, "fixed.txt", _rows(INDEX_1BASED))
    moving = _write(tmp_path, "moving.txt", _rows(INDEX_1BASED[:2]))
    with pytest.raises(InputError) as error:
        read_landmark_pair(fixed, moving, "dirlab", None, GRID, GRID)
    message = str(error.value)
    assert "fixed.txt" in message and "moving.txt" in message
    assert "3 landmarks" in message and "holds 2" in message


# --------------------------------------------------------------------------- writers
def test_writers_round_trip(tmp_path: Path) -> None:
    np.testing.assert_array_equal(read_landmarks(write_csv(tmp_path / "a.csv", POINTS)), POINTS)
    labelled = write_csv(tmp_path / "b.csv", POINTS, labels=["a,1", "b", "c"])
    np.testing.assert_array_equal(read_landmarks(labelled), POINTS)
    elastix = write_elastix_points(tmp_path / "e.txt", POINTS)
    np.testing.assert_array_equal(read_landmarks(elastix, "elastix-point"), POINTS)
    assert elastix.read_text().startswith("point\n3\n")
    dirlab = write_dirlab(tmp_path / "d.txt", POINTS + 0.1, GRID)  # rounds to the voxel
    assert dirlab.read_text().splitlines()[0] == "1\t1\t1"
    np.testing.assert_allclose(read_landmarks(dirlab, "dirlab", GRID), POINTS, atol=1e-9)
    exact = write_dirlab(tmp_path / "d2.txt", POINTS + 0.1, GRID, integer=False)
    np.testing.assert_allclose(read_landmarks(exact, "dirlab", GRID), POINTS + 0.1, atol=1e-5)
    for system in ("LPS", "RAS"):
        path = write_markups_json(tmp_path / f"{system}.mrk.json", POINTS,
                                  coordinate_system=system)
        assert json.loads(path.read_text())["markups"][0]["coordinateSystem"] == system
        np.testing.assert_array_equal(read_landmarks(path), POINTS)
    assert not list(tmp_path.glob(".*partial"))  # atomic: no staging folders left


def test_markups_json_content(tmp_path: Path) -> None:
    path = write_markups_json(tmp_path / "v.mrk.json", POINTS, values={"TRE": [1, 2, 3]})
    document = json.loads(path.read_text())
    assert document["@schema"].endswith("markups-schema-v1.0.3.json#")
    markup = document["markups"][0]
    assert markup["type"] == "Fiducial"
    assert [p["label"] for p in markup["controlPoints"]] == ["1", "2", "3"]
    assert {p["positionStatus"] for p in markup["controlPoints"]} == {"defined"}
    assert markup["measurements"] == [{"name": "TRE", "enabled": True, "units": "mm",
                                       "printFormat": "%-#4.4g%s",
                                       "controlPointValues": [1.0, 2.0, 3.0]}]
    with pytest.raises(ValueError, match="needs 3 finite values"):
        write_markups_json(tmp_path / "bad.mrk.json", POINTS, values={"TRE": [1, 2]})
    assert not (tmp_path / "bad.mrk.json").exists()


# ------------------------------------------------------------- real Slicer (slicer-core)
def _mrml_markups(path: Path):  # noqa: ANN202 - slicer types exist only with slicer-core
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    scene.AddNode(slicer.vtkMRMLSelectionNode())  # markups look up units through it
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_markups_json_loads_in_slicer_mrml(tmp_path: Path, system: str) -> None:
    pytest.importorskip("slicer")
    tre = np.array([0.5, 1.25, 7.0])
    path = write_markups_json(tmp_path / "tre.mrk.json", POINTS, labels=["a", "b", "c"],
                              values={"TRE": tre, "dz": -tre}, coordinate_system=system)
    node = _mrml_markups(path)
    assert node.GetNumberOfControlPoints() == 3
    ras = np.array([node.GetNthControlPointPosition(k) for k in range(3)])
    np.testing.assert_allclose(ras, POINTS * [-1, -1, 1], atol=1e-9)  # MRML holds RAS
    assert [node.GetNthControlPointLabel(k) for k in range(3)] == ["a", "b", "c"]
    for name, expected in (("TRE", tre), ("dz", -tre)):
        measurement = node.GetMeasurement(name)
        assert measurement is not None and measurement.GetUnits() == "mm"
        array = measurement.GetControlPointValues()
        np.testing.assert_allclose([array.GetValue(k) for k in range(3)], expected)


def test_slicer_written_files_read_back(tmp_path: Path) -> None:
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    scene.AddNode(slicer.vtkMRMLSelectionNode())
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    for point in POINTS * [-1, -1, 1]:  # Slicer takes RAS
        node.AddControlPoint(point.tolist())
    json_storage, fcsv_storage = (slicer.vtkMRMLMarkupsJsonStorageNode(),
                                  slicer.vtkMRMLMarkupsFiducialStorageNode())
    for storage, name in ((json_storage, "s.mrk.json"), (fcsv_storage, "s.fcsv")):
        scene.AddNode(storage)
        storage.SetFileName(str(tmp_path / name))
        assert storage.WriteData(node) == 1
        np.testing.assert_allclose(read_landmarks(tmp_path / name), POINTS, atol=1e-6)
    fcsv_storage.SetCoordinateSystem(0)  # RAS, as older Slicer versions wrote
    fcsv_storage.SetFileName(str(tmp_path / "ras.fcsv"))
    assert fcsv_storage.WriteData(node) == 1
    assert "CoordinateSystem = RAS" in (tmp_path / "ras.fcsv").read_text()
    np.testing.assert_allclose(read_landmarks(tmp_path / "ras.fcsv"), POINTS, atol=1e-6)
