"""Registration metrics (``metrics.json`` or :func:`pipeline.evaluation.evaluate`) as tables.

Both functions accept the whole metrics dictionary or just its ``labels`` / ``landmarks``
part. ``metrics.json`` writes label keys as strings and NaN as null; both are accepted.
"""

from __future__ import annotations

import math

import numpy as np

from ..io.lobes import LOBE_NAMES
from .markups import error_groups
from .scene import reuse_or_add

TABLE = "vtkMRMLTableNode"
# (column, metric key, unit): each metric appears before and after registration
_LOBE_METRICS = (("Dice", "dice", ""), ("ASD", "asd_mm", "mm"), ("HD95", "hd95_mm", "mm"))


def lobe_table(metrics: dict, scene=None, node=None, name: str = "Lobe overlap"):
    """Per-lobe Dice, average surface distance and HD95, before and after registration."""
    labels = metrics.get("labels", metrics)
    if "before" not in labels or "after" not in labels:
        raise ValueError("metrics hold no per-label overlap ('labels' with before/after)")
    before, after = _by_code(labels["before"]), _by_code(labels["after"])
    codes = sorted(set(before) | set(after))
    columns: list[tuple[str, list, str, str]] = [
        ("Lobe", [LOBE_NAMES.get(c, f"label {c}") for c in codes], "", "lobe name"),
        ("Label", codes, "", "engine lobe label"),
    ]
    for title, key, unit in _LOBE_METRICS:
        for when, source in (("before", before), ("after", after)):
            values = [_number(source.get(code, {}).get(key)) for code in codes]
            suffix = f" ({unit})" if unit else ""
            columns.append((f"{title} {when}{suffix}", values, unit,
                            f"{title} {when} registration"))
    return _fill(reuse_or_add(scene, TABLE, name, node), columns)


def landmark_table(metrics: dict, scene=None, node=None, name: str = "Landmark TRE",
                   thresholds: tuple[float, ...] = (2.0, 5.0)):
    """Per-landmark TRE before and after registration, largest error after first."""
    landmarks = metrics.get("landmarks", metrics)
    rows = landmarks.get("per_landmark") if isinstance(landmarks, dict) else None
    if rows is None:
        raise ValueError("metrics hold no per-landmark TRE ('landmarks' / 'per_landmark')")
    after = np.array([_number(row.get("tre_mm")) for row in rows], dtype=np.float64)
    # NaN last, then descending
    order = sorted(range(len(rows)), key=lambda k: (math.isnan(after[k]), -after[k]))
    group_of = {}
    for group in error_groups(np.nan_to_num(after, nan=np.inf), thresholds):
        group_of.update({int(k): group.name for k in group.indices})
    columns = [
        ("Landmark", [int(rows[k]["index"]) for k in order], "", "1-based landmark number"),
        ("TRE before (mm)", [_number(rows[k].get("tre_before_mm")) for k in order], "mm",
         "distance before registration"),
        ("TRE after (mm)", [float(after[k]) for k in order], "mm",
         "target registration error after registration"),
        ("Group", [group_of[k] for k in order], "", "error class after registration"),
    ]
    return _fill(reuse_or_add(scene, TABLE, name, node), columns)


# ------------------------------------------------------------------------------ helpers
def _by_code(part: dict) -> dict[int, dict]:
    return {int(code): values for code, values in part.items()}


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _fill(node, columns: list[tuple[str, list, str, str]]):
    """Replace the table's columns; strings, integers and floats keep their types."""
    import vtk

    modifying = node.StartModify()
    try:
        node.RemoveAllColumns()
        table = node.GetTable()
        for title, values, unit, description in columns:
            if all(isinstance(v, str) for v in values) and values:
                array = vtk.vtkStringArray()
            elif all(isinstance(v, int) for v in values) and values:
                array = vtk.vtkIntArray()
            else:
                array = vtk.vtkDoubleArray()
            array.SetName(title)
            array.SetNumberOfValues(len(values))
            for row, value in enumerate(values):
                array.SetValue(row, value)
            table.AddColumn(array)
            node.SetColumnUnitLabel(title, unit)
            node.SetColumnDescription(title, description)
        node.SetLocked(True)  # results: not to be edited by hand
        table.Modified()
    finally:
        node.EndModify(modifying)
    return node
