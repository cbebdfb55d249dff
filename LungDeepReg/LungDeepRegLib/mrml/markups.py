"""Landmark arrays <-> markups point lists, with per-point values (e.g. TRE) as measurements.

Points are ``(N, 3)`` LPS mm in the engine and RAS in the scene (x and y negated). A value
per landmark is a markups measurement with per-control-point values, which Slicer shows in
the Markups module and writes to ``.mrk.json`` as ``measurements[].controlPointValues``.
Markups points have no colour of their own, so error classes are shown as one node per class
(:func:`tre_markups_by_group`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_output
from .scene import FLIP_XY, ensure_display, remove_nodes, resolve_scene, reuse_or_add

FIDUCIAL = "vtkMRMLMarkupsFiducialNode"
# green, orange, red: good, borderline, poor (more classes interpolate along this ramp)
_GROUP_RAMP = ((0.20, 0.80, 0.20), (1.00, 0.60, 0.00), (0.90, 0.10, 0.10))


@dataclass(frozen=True)
class ErrorGroup:
    """Landmarks whose error lies in ``[low, high)`` mm, shown in ``color`` (RGB 0..1)."""

    name: str
    low: float
    high: float
    color: tuple[float, float, float]
    indices: np.ndarray  # 0-based landmark rows in this group


def points_to_markups(points_lps: np.ndarray, scene=None, name: str = "", node=None,
                      labels: list[str] | None = None,
                      values: dict[str, np.ndarray] | None = None, units: str = "mm"):
    """A point list (new or ``node``, whose points and measurements are replaced).

    Labels default to the landmark numbers 1..N; each ``values`` entry (N numbers per name,
    for example ``{"TRE": errors}``) becomes a measurement with per-point values in ``units``.
    """
    import vtk

    points = _as_points(points_lps)
    labels = [str(k + 1) for k in range(len(points))] if labels is None else list(labels)
    if len(labels) != len(points):
        raise ValueError(f"{len(labels)} labels for {len(points)} points")
    node = reuse_or_add(scene, FIDUCIAL, name, node)
    modifying = node.StartModify()
    try:
        node.RemoveAllControlPoints()
        node.RemoveAllMeasurements()
        for label, ras in zip(labels, points @ FLIP_XY, strict=True):
            node.AddControlPoint(vtk.vtkVector3d(*ras), str(label))
        for measurement_name, array in (values or {}).items():
            node.AddMeasurement(_measurement(measurement_name, array, units, len(points)))
    finally:
        node.EndModify(modifying)
    ensure_display(node)
    return node


def markups_to_points(node, world: bool = False) -> tuple[np.ndarray, list[str]]:
    """``(points, labels)``: the control points as ``(N, 3)`` LPS mm and their labels.

    ``world`` applies the node's parent transforms. A point without a defined position
    raises :class:`InputError`: dropping it would shift the pairing of later landmarks.
    """
    count = node.GetNumberOfControlPoints()
    points, labels = np.zeros((count, 3)), []
    for k in range(count):
        if node.GetNthControlPointPositionStatus(k) != node.PositionDefined:
            raise InputError(node.GetName(), f"control point {k + 1} "
                             f"({node.GetNthControlPointLabel(k)!r}) has no position")
        position = [0.0, 0.0, 0.0]
        if world:
            node.GetNthControlPointPositionWorld(k, position)
        else:
            node.GetNthControlPointPosition(k, position)
        points[k] = position
        labels.append(node.GetNthControlPointLabel(k))
    return points @ FLIP_XY, labels


def markups_values(node) -> dict[str, np.ndarray]:
    """Per-point measurement values of a markups node, by measurement name."""
    from vtk.util import numpy_support

    found = {}
    for index in range(node.GetNumberOfMeasurements()):
        measurement = node.GetNthMeasurement(index)
        array = measurement.GetControlPointValues() if measurement is not None else None
        if array is not None and array.GetNumberOfTuples() > 0:
            found[measurement.GetName()] = numpy_support.vtk_to_numpy(array).astype(np.float64)
    return found


def error_groups(tre: np.ndarray, thresholds: tuple[float, ...] = (2.0, 5.0)
                 ) -> list[ErrorGroup]:
    """Split errors at ascending ``thresholds`` (mm): every class, empty ones included.

    A value equal to a threshold belongs to the class above it (``2.0`` is in "2-5 mm").
    """
    errors = np.asarray(tre, dtype=np.float64).ravel()
    bounds = [float(t) for t in thresholds]
    if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
        raise ValueError(f"thresholds must be strictly ascending, got {thresholds}")
    classes = np.array([bisect.bisect_right(bounds, e) for e in errors], dtype=np.int64)
    edges = [-np.inf, *bounds, np.inf]
    groups = []
    for k in range(len(bounds) + 1):
        low, high = edges[k], edges[k + 1]
        name = (f"< {high:g} mm" if k == 0 else
                f">= {low:g} mm" if k == len(bounds) else f"{low:g}-{high:g} mm")
        groups.append(ErrorGroup(name, float(low), float(high), _group_color(k, len(bounds)),
                                 np.flatnonzero(classes == k)))
    return groups


def tre_markups_by_group(fixed_points: np.ndarray, tre: np.ndarray, scene=None,
                         prefix: str = "TRE", thresholds: tuple[float, ...] = (2.0, 5.0),
                         labels: list[str] | None = None) -> list:
    """One locked point list per error class (empty classes too, so the user sees "0").

    Points are the fixed landmarks (LPS), labelled by landmark number (or ``labels``), each
    carrying its TRE as a measurement; node names read like ``"TRE < 2 mm (12)"``.
    """
    points = _as_points(fixed_points)
    errors = np.asarray(tre, dtype=np.float64).ravel()
    if len(errors) != len(points):
        raise ValueError(f"{len(errors)} TRE values for {len(points)} points")
    labels = [str(k + 1) for k in range(len(points))] if labels is None else list(labels)
    nodes = []
    for group in error_groups(errors, thresholds):
        rows = group.indices
        node = points_to_markups(points[rows], scene, f"{prefix} {group.name} ({len(rows)})",
                                 labels=[labels[k] for k in rows], values={"TRE": errors[rows]})
        node.SetLocked(True)
        display = ensure_display(node)
        if display is not None:
            display.SetSelectedColor(*group.color)
            display.SetColor(*group.color)
        nodes.append(node)
    return nodes


def save_markups_json(node, path: str | Path) -> Path:
    """Write ``node`` as ``.mrk.json`` (LPS, with its measurements) through Slicer's
    markups JSON storage node; atomic, and the node's own storage settings are untouched."""
    import slicer

    path = Path(path)
    scene = node.GetScene()
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    storage.SetCoordinateSystem(slicer.vtkMRMLStorageNode.CoordinateSystemLPS)
    if scene is not None:
        scene.AddNode(storage)
    try:
        with atomic_output(path) as temporary:
            storage.SetFileName(str(temporary))
            if not storage.WriteData(node):
                raise OSError(f"cannot write markups to {path}")
    finally:
        if scene is not None:
            scene.RemoveNode(storage)
    return path


def load_markups_json(path: str | Path, scene=None, name: str = ""):
    """A new point list read from ``.mrk.json`` by Slicer's reader (values included)."""
    import slicer

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    scene = resolve_scene(scene)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()  # the class may be unregistered
    scene.AddNode(storage)
    node_name = name or path.name.removesuffix(".json").removesuffix(".mrk")
    node = storage.AddNewMarkupsNodeFromFile(str(path), node_name)
    if node is None:
        remove_nodes(scene, storage)
        raise InputError(path, "Slicer's markups reader cannot read this file")
    return node


# ------------------------------------------------------------------------------ helpers
def _measurement(name: str, values: np.ndarray, units: str, count: int):
    import slicer
    from vtk.util import numpy_support

    array = np.asarray(values, dtype=np.float64).ravel()
    if len(array) != count:
        raise ValueError(f"measurement {name!r} has {len(array)} values for {count} points")
    vtk_values = numpy_support.numpy_to_vtk(array, deep=True)
    vtk_values.SetName(name)
    measurement = slicer.vtkMRMLStaticMeasurement()
    measurement.SetName(name)
    measurement.SetUnits(units)
    measurement.SetPrintFormat("%-#4.4g%s")
    measurement.SetControlPointValues(vtk_values)
    if count and np.isfinite(array).all():
        measurement.SetValue(float(array.mean()))  # the summary Slicer shows for the node
        measurement.SetDescription("mean over the points")
    return measurement


def _group_color(k: int, thresholds: int) -> tuple[float, float, float]:
    if thresholds == 0:
        return _GROUP_RAMP[0]
    position = k / thresholds * (len(_GROUP_RAMP) - 1)
    low = min(int(position), len(_GROUP_RAMP) - 2)
    weight = position - low
    mixed = (1 - weight) * np.asarray(_GROUP_RAMP[low]) + weight * np.asarray(_GROUP_RAMP[low + 1])
    return tuple(float(v) for v in mixed)


def _as_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3) if np.size(points) == 0 \
        else np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise ValueError(f"points must be a finite (N, 3) array, got shape {points.shape}")
    return points
