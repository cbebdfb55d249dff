"""Scene writes of the live landmark QA (:mod:`.live_qa`): control points, their QA state,
the QA table and slice-view jumps.

How a pair's state shows on its control points (MRML has no per-point colour):

* **error group, TRE and flags**: the control point *description* of both points of the
  pair, e.g. ``"TRE 3.21 mm (2-5 mm); flagged: TRE 8.0 mm above ..."``; the Markups
  module lists it in the control point table. The values themselves are per-point
  measurements (``TRE``, ``flagged``, ``residual_z``, ``local_z``, ``confirmed``, as in
  the exported ``.mrk.json``).
* **unconfirmed prediction**: the moving control point is *unselected*, so Slicer draws
  it in the point list's unselected colour; checking its "selected" box in the Markups
  module (or :meth:`LiveLandmarkQA.confirm`) confirms it.
"""

from __future__ import annotations

import numpy as np

from ..qa import OutlierReport, PointQA
from ..spatial import Grid
from .markups import _measurement, markups_values
from .scene import FLIP_XY
from .tables import _fill
from .volumes import volume_geometry

ATTRIBUTE_PREFIX = "LungDeepReg.LandmarkQA."
SUMMARY_KEYS = ("n", "mean", "sd", "p75", "max", "n_flagged", "n_unconfirmed")
UNCONFIRMED = "unconfirmed prediction"


def read_point(node, index: int) -> tuple[np.ndarray, str, bool, bool]:
    """``(position LPS mm, label, defined, selected)`` of one control point, in the node's
    own coordinates (parent transforms not applied: the image's own space)."""
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(index, position)
    defined = node.GetNthControlPointPositionStatus(index) == node.PositionDefined
    return (np.asarray(position) @ FLIP_XY, node.GetNthControlPointLabel(index), defined,
            bool(node.GetNthControlPointSelected(index)))


def read_points(node) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Every control point: ``(points (N, 3) LPS, labels, defined (N,), selected (N,))``."""
    rows = [read_point(node, k) for k in range(node.GetNumberOfControlPoints())]
    points = np.array([row[0] for row in rows]).reshape(-1, 3)
    return (points, [row[1] for row in rows], np.array([row[2] for row in rows], bool),
            np.array([row[3] for row in rows], bool))


def read_partners(node, count: int, initial: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The moving points of the first ``count`` rows: ``(points (count, 3) LPS, usable,
    confirmed)``. A missing or undefined point is not usable (zeros in its place); a
    usable point is confirmed when selected and, on ``initial`` reading of an exported QA
    set, when its ``confirmed`` measurement is not 0."""
    points, _, defined, selected = read_points(node)
    have = min(count, len(points))
    moving, usable, confirmed = np.zeros((count, 3)), np.zeros(count, bool), np.zeros(count, bool)
    moving[:have], usable[:have] = points[:have], defined[:have]
    confirmed[:have] = defined[:have] & selected[:have]
    stored = markups_values(node).get("confirmed") if initial else None
    if stored is not None and len(stored) == len(points):
        confirmed[:have] &= stored[:have] != 0
    return moving, usable, confirmed


def world_position(node, index: int) -> np.ndarray:
    """World RAS position of a control point (parent transforms applied): where the
    slice views must go to show it."""
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(int(index), position)
    return np.asarray(position)


def paired_count(defined: np.ndarray) -> int:
    """Fixed points that form pairs: all up to the last defined one. A point being placed
    (Slicer's preview point, not yet defined) is always last and waits until it is placed."""
    found = np.flatnonzero(defined)
    return int(found[-1]) + 1 if len(found) else 0


def set_point(node, index: int, point_lps: np.ndarray, label: str) -> None:
    """Put control point ``index`` at ``point_lps`` (appended when ``index`` is the count)."""
    import vtk

    ras = np.asarray(point_lps, dtype=np.float64) @ FLIP_XY
    if index >= node.GetNumberOfControlPoints():
        node.AddControlPoint(vtk.vtkVector3d(*ras), label)
        return
    node.SetNthControlPointPosition(index, *ras)
    if node.GetNthControlPointLabel(index) != label:
        node.SetNthControlPointLabel(index, label)


def describe(point: PointQA) -> str:
    """The description of both control points of a pair: TRE, group, flags, state."""
    parts = [f"TRE {point.tre:.2f} mm ({point.group})"]
    if point.flagged:
        parts.append("flagged: " + "; ".join(point.reasons))
    if not point.confirmed:
        parts.append(UNCONFIRMED)
    return "; ".join(parts)


def write_point_states(node, report: OutlierReport, selected: np.ndarray | None) -> None:
    """Descriptions (and, for the moving list, selection = confirmation) of the paired
    points; only what changed is written, so a drag touches one or two points."""
    for point in report.by_index():
        text = describe(point)
        if node.GetNthControlPointDescription(point.index) != text:
            node.SetNthControlPointDescription(point.index, text)
        if selected is not None and node.GetNthControlPointSelected(point.index) != bool(
                selected[point.index]):
            node.SetNthControlPointSelected(point.index, bool(selected[point.index]))


def set_point_values(node, values: dict[str, np.ndarray], units: dict[str, str]) -> None:
    """Replace (or add) the per-point measurements ``values`` of ``node``, by name."""
    existing = {node.GetNthMeasurement(i).GetName(): i
                for i in range(node.GetNumberOfMeasurements())
                if node.GetNthMeasurement(i) is not None}
    for name, array in values.items():
        measurement = _measurement(name, array, units.get(name, ""), len(array))
        if name in existing:
            node.SetNthMeasurement(existing[name], measurement)
        else:
            node.AddMeasurement(measurement)


def fill_qa_table(node, report: OutlierReport, summary: dict) -> list[int]:
    """One row per pair, flagged first then largest TRE; the summary as node attributes
    (``LungDeepReg.LandmarkQA.mean`` ...). Returns the pair index of every row."""
    order = sorted(report.points, key=lambda p: (not p.flagged, -p.tre, p.index))
    columns = [
        ("Pair", [p.index + 1 for p in order], "", "1-based row of the pair in both lists"),
        ("Label", [p.label for p in order], "", "control point label"),
        ("TRE (mm)", [p.tre for p in order], "mm", "|| T(fixed) - moving ||"),
        ("Group", [p.group for p in order], "", "error group"),
        ("Flagged", [int(p.flagged) for p in order], "", "1 = possible annotation error"),
        ("Confirmed", [int(p.confirmed) for p in order], "", "0 = unconfirmed prediction"),
        ("Reasons", ["; ".join(p.reasons) for p in order], "", "why the pair is flagged"),
    ]
    modifying = node.StartModify()
    try:
        _fill(node, columns)
        for key in SUMMARY_KEYS:
            node.SetAttribute(ATTRIBUTE_PREFIX + key, f"{float(summary[key]):.6g}")
    finally:
        node.EndModify(modifying)
    return [p.index for p in order]


def jump_views(scene, fixed_ras: np.ndarray, moving_ras: np.ndarray,
               moving_volume_id: str | None = None) -> int:
    """Centre every slice view on the pair: views showing the moving volume (as their
    background) on the moving point, all others on the fixed point. Plain MRML (slice
    nodes), so it works in Slicer and in slicer-core alike. Returns the views moved."""
    import slicer

    moved = 0
    for k in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slice_node = scene.GetNthNodeByClass(k, "vtkMRMLSliceNode")
        composite = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(slice_node)
        shows_moving = (moving_volume_id is not None and composite is not None
                        and composite.GetBackgroundVolumeID() == moving_volume_id)
        slice_node.JumpSliceByCentering(*(moving_ras if shows_moving else fixed_ras))
        moved += 1
    return moved


def volume_grid(node) -> Grid:
    """The LPS grid of a volume node (geometry only: the voxels are not copied)."""
    origin, spacing, direction = volume_geometry(node)
    data = node.GetImageData()
    if data is None:
        raise ValueError(f"volume node {node.GetName()!r} holds no image data")
    start = np.asarray(data.GetExtent()[0::2], dtype=np.float64)
    origin = origin + direction @ (np.asarray(spacing) * start)
    return Grid(data.GetDimensions(), spacing, tuple(origin), tuple(direction.ravel()))
