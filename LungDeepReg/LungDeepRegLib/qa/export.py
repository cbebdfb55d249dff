"""Landmark QA outputs: the QA document (JSON), the per-pair table (CSV) and the corrected
landmark set (``.mrk.json`` with per-point values, CSV, the original text format).

Every file is written atomically by the :mod:`LungDeepRegLib.io` writers. In the
``.mrk.json`` files each control point carries the measurements ``TRE`` (mm), ``flagged``
(1 = possible annotation error), ``residual_z``, ``local_z`` and ``confirmed`` (1 = checked
by a person; 0 = an unconfirmed prediction) and the flag reasons as its description.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import write_json, write_text
from ..io.landmarks import (
    VOXEL_FORMATS,
    write_csv,
    write_dirlab,
    write_elastix_points,
    write_markups_json,
)
from ..spatial.grid import Grid
from .correspondence import LandmarkPairs
from .outliers import OutlierReport
from .summary import correction_summary, tre_summary

VALUE_UNITS = {"TRE": "mm", "flagged": "", "residual_z": "", "local_z": "", "confirmed": ""}
_TABLE_COLUMNS = ("pair", "label", "tre_mm", "group", "flagged", "flags", "residual_z",
                  "local_mismatch_mm", "local_z", "confirmed", "swap_with", "reasons")


def qa_document(pairs: LandmarkPairs, report: OutlierReport,
                original_tre: np.ndarray | None = None) -> dict:
    """The QA result as a JSON-ready dict (``landmark_qa.json``; the report's QA section).

    ``summary`` holds the TRE statistics and error groups of all pairs and of the pairs
    not flagged; with ``original_tre`` (the TRE of the set as loaded) also before and
    after correction. ``points`` lists every pair, flagged first, with its positions.
    """
    tre, flagged = pairs.tre, _row_values(report, "flagged")
    summary = {"all": tre_summary(tre), "without_flagged": tre_summary(tre[flagged == 0])}
    if original_tre is not None:
        summary.update(correction_summary(original_tre, tre))
    points = [{**point.to_dict(), "pair": point.index + 1,
               "fixed_lps": pairs.fixed[point.index].tolist(),
               "moving_lps": pairs.moving[point.index].tolist(),
               "predicted_lps": pairs.mapped[point.index].tolist()} for point in report.points]
    document = report.to_dict()
    document.update(n_confirmed=int(pairs.confirmed.sum()), summary=summary,
                    flagged=[point.label for point in report.flagged], points=points)
    return document


def write_qa_json(path: str | Path, document: dict) -> Path:
    """Write a :func:`qa_document` (NaN z-scores become null)."""
    return write_json(path, document)


def write_qa_table(path: str | Path, pairs: LandmarkPairs, report: OutlierReport) -> Path:
    """One CSV row per pair in the report's order (flagged first, most severe first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_TABLE_COLUMNS)
    for point in report.points:
        partner = "" if point.swap_partner is None else pairs.labels[point.swap_partner]
        writer.writerow([point.index + 1, point.label, f"{point.tre:.4f}", point.group,
                         int(point.flagged), ";".join(point.flags), f"{point.residual_z:.3f}",
                         f"{point.local_mismatch_mm:.4f}", f"{point.local_z:.3f}",
                         int(point.confirmed), partner, "; ".join(point.reasons)])
    return write_text(path, buffer.getvalue())


def markups_values(pairs: LandmarkPairs, report: OutlierReport) -> dict[str, np.ndarray]:
    """Per-point values in row order for ``.mrk.json`` (undefined z-scores written as 0)."""
    values = {"TRE": pairs.tre, "flagged": _row_values(report, "flagged"),
              "residual_z": _row_values(report, "residual_z"),
              "local_z": _row_values(report, "local_z"),
              "confirmed": pairs.confirmed.astype(np.float64)}
    return {name: np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
            for name, array in values.items()}


def export_landmark_set(folder: str | Path, pairs: LandmarkPairs, report: OutlierReport,
                        fmt: str | None = None, fixed_grid: Grid | None = None,
                        moving_grid: Grid | None = None, moving_fmt: str | None = None
                        ) -> dict[str, Path]:
    """Write the (corrected) fixed and moving landmarks with their QA values.

    Per side (``fixed``, ``moving``): ``<side>_landmarks_qa.mrk.json`` (values and reasons),
    ``<side>_landmarks_qa.csv`` (``label,x,y,z`` LPS mm) and, for a text ``fmt`` the set was
    read from (``dirlab``/``copdgene``, ``elastix-point``, ``elastix-index``),
    ``<side>_landmarks_qa.txt`` in that format (``moving_fmt`` defaults to ``fmt``); voxel
    formats need the side's grid. DIR-Lab rows stay integer while every point lies on a
    voxel centre, as in the published files.

    Returns:
        ``{"fixed_markups", "fixed_csv", "fixed_text"?, "moving_markups", ...}`` paths.
    """
    folder = Path(folder)
    values = markups_values(pairs, report)
    descriptions = ["; ".join(point.reasons) for point in report.by_index()]
    labels = list(pairs.labels)
    written: dict[str, Path] = {}
    for side, points, grid, form in (("fixed", pairs.fixed, fixed_grid, fmt),
                                     ("moving", pairs.moving, moving_grid, moving_fmt or fmt)):
        stem = folder / f"{side}_landmarks_qa"
        written[f"{side}_markups"] = write_markups_json(
            stem.with_name(stem.name + ".mrk.json"), points, labels, values, VALUE_UNITS,
            descriptions=descriptions)
        written[f"{side}_csv"] = write_csv(stem.with_suffix(".csv"), points, labels)
        text = _write_original(stem.with_suffix(".txt"), points, form, grid)
        if text is not None:
            written[f"{side}_text"] = text
    return written


def read_markups_values(path: str | Path) -> dict[str, np.ndarray]:
    """The per-point measurements of a ``.mrk.json`` file (name to values, row order)."""
    try:
        markup = json.loads(Path(path).read_text(encoding="utf-8"))["markups"][0]
        return {m["name"]: np.asarray(m.get("controlPointValues", []), dtype=np.float64)
                for m in markup.get("measurements", [])}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(path, f"cannot read markups measurements: {exc}") from None


def _write_original(path: Path, points: np.ndarray, fmt: str | None, grid: Grid | None
                    ) -> Path | None:
    if fmt not in (*VOXEL_FORMATS, "elastix-point"):
        return None  # mrk-json and csv are written anyway; fcsv is superseded by mrk-json
    if fmt in VOXEL_FORMATS and grid is None:
        raise ValueError(f"format {fmt!r} holds voxel indices: the grid is needed")
    if fmt == "elastix-point":
        return write_elastix_points(path, points)
    if fmt == "elastix-index":
        return write_elastix_points(path, points, grid)
    index = grid.physical_to_index(points)
    return write_dirlab(path, points, grid, integer=bool(np.allclose(index, np.rint(index),
                                                                    atol=1e-6)))


def _row_values(report: OutlierReport, name: str) -> np.ndarray:
    """One attribute of every pair in row order, as floats."""
    return np.asarray([float(getattr(point, name)) for point in report.by_index()])
