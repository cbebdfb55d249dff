"""Landmark files: read to, and write from, physical LPS millimetres.

Every reader returns an ``(N, 3)`` float64 array of LPS mm, one row per landmark, in file
order (row k of a fixed file pairs with row k of its moving file). The file format is always
named by the user, never guessed from a header: the COPDgene iBH files carry an elastix
``index`` header over 1-based DIR-Lab indices. Only the unambiguous extensions ``.mrk.json``,
``.fcsv`` and ``.csv`` give a default when no format is named.

Formats:
    ``dirlab`` (alias ``copdgene``): rows ``x y z`` of 1-based voxel indices, whitespace
        separated; an optional 2-line header (a word such as ``index``, then the count) is
        skipped. Index ``i`` lies at ``grid.index_to_physical(i - 1)``.
    ``elastix-point``: header ``point``, the count, then LPS mm rows.
    ``elastix-index``: header ``index``, the count, then 0-based voxel rows.
    ``mrk-json``: Slicer markups JSON (first and only markup); ``coordinateSystem`` LPS
        (the default) or RAS, where RAS means x and y negated.
    ``fcsv``: Slicer legacy CSV; ``# CoordinateSystem = LPS|RAS|0|1`` (0 = RAS, 1 = LPS,
        RAS when absent); x, y, z columns from ``# columns =`` or else columns 2-4.
    ``csv``: comma separated LPS mm. If the first row holds any non-numeric cell it is a
        header and must name columns ``x``, ``y``, ``z`` (any case; other columns, e.g. a
        label, are ignored); without a header every row must be exactly ``x,y,z``.
Blank lines and lines starting with ``#`` are ignored in the text formats.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ..errors import InputError
from ..spatial.grid import Grid
from .atomic import atomic_output

LandmarkFormat = Literal[
    "dirlab", "copdgene", "elastix-point", "elastix-index", "mrk-json", "fcsv", "csv"
]
LANDMARK_FORMATS: tuple[str, ...] = get_args(LandmarkFormat)
VOXEL_FORMATS = ("dirlab", "copdgene", "elastix-index")
MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                  "Markups/Resources/Schema/markups-schema-v1.0.3.json#")
_EXTENSIONS = {".mrk.json": "mrk-json", ".fcsv": "fcsv", ".csv": "csv"}
_LPS_FROM_RAS = np.array([-1.0, -1.0, 1.0])  # its own inverse


# --------------------------------------------------------------------------- formats
def format_from_extension(path: str | Path) -> LandmarkFormat | None:
    """Default format for an unambiguous extension (.mrk.json, .fcsv, .csv), else None."""
    name = Path(path).name.lower()
    return next((fmt for ext, fmt in _EXTENSIONS.items() if name.endswith(ext)), None)


def resolve_format(path: str | Path, fmt: str | None) -> LandmarkFormat:
    """The format the user named (validated), or the extension default when none was named."""
    if fmt is None:
        found = format_from_extension(path)
        if found is None:
            raise InputError(path, "cannot tell the landmark format from the extension; "
                             f"name it (one of {', '.join(LANDMARK_FORMATS)})")
        return found
    if fmt not in LANDMARK_FORMATS:
        raise InputError(path, f"unknown landmark format {fmt!r}; "
                         f"choose one of {', '.join(LANDMARK_FORMATS)}")
    return fmt  # type: ignore[return-value]


# --------------------------------------------------------------------------- reading
def read_landmarks(
    path: str | Path, fmt: LandmarkFormat | None = None, grid: Grid | None = None
) -> np.ndarray:
    """Read a landmark file as ``(N, 3)`` float64 LPS mm.

    Args:
        path: the file.
        fmt: its format (see the module docstring); None uses the extension default.
        grid: the image grid the indices refer to; required by the voxel formats
            (``dirlab``/``copdgene``, ``elastix-index``), ignored by the others.
    """
    fmt = resolve_format(path, fmt)
    if fmt in VOXEL_FORMATS and grid is None:
        raise InputError(path, f"format {fmt!r} holds voxel indices: the image grid is needed")
    text = _read_text(path)
    if fmt in ("dirlab", "copdgene"):
        return grid.index_to_physical(_read_dirlab_rows(path, text) - 1.0)
    if fmt == "elastix-index":
        return grid.index_to_physical(_read_elastix_rows(path, text, "index"))
    if fmt == "elastix-point":
        return _read_elastix_rows(path, text, "point")
    if fmt == "mrk-json":
        return _read_markups_json(path, text)
    if fmt == "fcsv":
        return _read_fcsv(path, text)
    return _read_csv(path, text)


def read_landmark_pair(
    fixed_path: str | Path,
    moving_path: str | Path,
    fmt_fixed: LandmarkFormat | None = None,
    fmt_moving: LandmarkFormat | None = None,
    fixed_grid: Grid | None = None,
    moving_grid: Grid | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read corresponding fixed and moving landmarks (row k pairs with row k).

    ``fmt_moving`` defaults to ``fmt_fixed``; with neither named, each file's extension
    decides. Raises :class:`InputError` naming both files when the counts differ.
    """
    fixed = read_landmarks(fixed_path, fmt_fixed, fixed_grid)
    moving = read_landmarks(moving_path, fmt_moving or fmt_fixed, moving_grid)
    if len(fixed) != len(moving):
        raise InputError(fixed_path, f"holds {len(fixed)} landmarks but {moving_path} holds "
                         f"{len(moving)}; fixed and moving landmarks must pair row by row")
    return fixed, moving


def _read_text(path: str | Path) -> str:
    file = Path(path)
    if not file.is_file():
        raise InputError(path, "landmark file not found" if not file.exists() else "not a file")
    try:
        return file.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read as text: {exc}") from exc


def _content_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) of the lines that carry content."""
    lines = ((n, line.strip()) for n, line in enumerate(text.splitlines(), start=1))
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def _numbers(path: str | Path, line_no: int, cells: list[str], expected: int = 3
             ) -> list[float]:
    if len(cells) != expected:
        raise InputError(path, f"line {line_no}: expected {expected} columns, found {len(cells)}")
    for cell in cells:
        if not _is_number(cell) or not math.isfinite(float(cell)):
            kind = "non-finite" if _is_number(cell) else "non-numeric"
            raise InputError(path, f"line {line_no}: {kind} value {cell!r}")
    return [float(cell) for cell in cells]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _rows(path: str | Path, lines: list[tuple[int, str]]) -> np.ndarray:
    if not lines:
        raise InputError(path, "no landmarks in file (empty)")
    return np.asarray([_numbers(path, n, line.split()) for n, line in lines], dtype=np.float64)


def _headed_rows(path: str | Path, lines: list[tuple[int, str]]) -> np.ndarray:
    """Rows after a 2-line elastix-style header (a word, then the count), count checked."""
    line_no, count = lines[1] if len(lines) > 1 else (lines[0][0] + 1, "")
    if not count.isdigit():
        raise InputError(path, f"line {line_no}: expected the landmark count after the "
                         f"{lines[0][1]!r} header, found {count!r}")
    points = _rows(path, lines[2:])
    if int(count) != len(points):
        raise InputError(path, f"header declares {count} landmarks, file holds {len(points)}")
    return points


def _read_dirlab_rows(path: str | Path, text: str) -> np.ndarray:
    lines = _content_lines(text)
    # a single non-numeric word on line 1 is the (untrusted, skipped) elastix-style header
    if lines and len(lines[0][1].split()) == 1 and not _is_number(lines[0][1]):
        return _headed_rows(path, lines)
    return _rows(path, lines)


def _read_elastix_rows(path: str | Path, text: str, kind: str) -> np.ndarray:
    lines = _content_lines(text)
    if not lines:
        raise InputError(path, "no landmarks in file (empty)")
    header = lines[0][1].lower()
    if header != kind:
        hint = " (COPDgene/DIR-Lab files with 1-based indices: use 'dirlab')" * (
            header == "index")
        raise InputError(path, f"line {lines[0][0]}: format 'elastix-{kind}' needs a "
                         f"{kind!r} header, found {lines[0][1]!r}{hint}")
    return _headed_rows(path, lines)


def _read_markups_json(path: str | Path, text: str) -> np.ndarray:
    try:
        markups = json.loads(text).get("markups")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InputError(path, f"not a markups JSON file: {exc}") from None
    if not isinstance(markups, list) or len(markups) != 1 or not isinstance(markups[0], dict):
        raise InputError(path, "expected exactly one markup in 'markups'")
    markup = markups[0]
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(path, f"unknown coordinateSystem {system!r} (LPS or RAS)")
    if markup.get("coordinateUnits", "mm") != "mm":
        raise InputError(path, f"coordinateUnits {markup['coordinateUnits']!r}: only mm")
    points = [_control_point(path, k, cp) for k, cp in enumerate(markup.get("controlPoints", []))]
    if not points:
        raise InputError(path, "no landmarks in file (no control points)")
    points = np.asarray(points, dtype=np.float64)
    return points * _LPS_FROM_RAS if system == "RAS" else points


def _control_point(path: str | Path, k: int, point: dict) -> list[float]:
    # a point without a position would silently break the row-by-row pairing
    point = point if isinstance(point, dict) else {}
    position, status = point.get("position"), point.get("positionStatus", "defined")
    try:
        values = [float(v) for v in position]
    except (TypeError, ValueError):
        values = []
    if status != "defined" or len(values) != 3 or not all(map(math.isfinite, values)):
        raise InputError(path, f"control point {k + 1} ({point.get('label', '')!r}) has no "
                         f"defined 3-D position (positionStatus {status!r})")
    return values


def _read_fcsv(path: str | Path, text: str) -> np.ndarray:
    system, columns, rows = "RAS", (1, 2, 3), []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            key, _, value = (part.strip() for part in line[1:].partition("="))
            if key.lower() == "coordinatesystem":
                system = {"0": "RAS", "1": "LPS"}.get(value, value.upper())
            elif key.lower() == "columns":
                names = [name.strip().lower() for name in value.split(",")]
                if {"x", "y", "z"} <= set(names):
                    columns = tuple(names.index(axis) for axis in "xyz")
        elif line.strip():
            cells = next(csv.reader([line]))
            if len(cells) <= max(columns):
                raise InputError(path, f"line {line_no}: expected at least {max(columns) + 1} "
                                 f"columns, found {len(cells)}")
            rows.append(_numbers(path, line_no, [cells[c] for c in columns]))
    if system not in ("RAS", "LPS"):
        raise InputError(path, f"unknown CoordinateSystem {system!r} (LPS, RAS, 0 or 1)")
    if not rows:
        raise InputError(path, "no landmarks in file (empty)")
    points = np.asarray(rows, dtype=np.float64)
    return points * _LPS_FROM_RAS if system == "RAS" else points


def _read_csv(path: str | Path, text: str) -> np.ndarray:
    table = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1)
             if any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    if not table:
        raise InputError(path, "no landmarks in file (empty)")
    columns, width = (0, 1, 2), 3
    if not all(_is_number(cell) for cell in table[0][1]):
        names = [cell.strip().lower() for cell in table[0][1]]
        if not {"x", "y", "z"} <= set(names):
            raise InputError(path, f"line {table[0][0]}: header must name columns x, y, z, "
                             f"found {table[0][1]}")
        columns, width = tuple(names.index(a) for a in "xyz"), len(names)
        table = table[1:]
        if not table:
            raise InputError(path, "no landmarks in file (header only)")
    rows = []
    for n, row in table:
        if len(row) != width:
            raise InputError(path, f"line {n}: expected {width} columns, found {len(row)}")
        rows.append(_numbers(path, n, [row[c].strip() for c in columns]))
    return np.asarray(rows, dtype=np.float64)


# --------------------------------------------------------------------------- writing
def write_markups_json(
    path: str | Path,
    points_lps: np.ndarray,
    labels: list[str] | None = None,
    values: dict[str, np.ndarray] | None = None,
    units: str | dict[str, str] = "mm",
    coordinate_system: Literal["LPS", "RAS"] = "LPS",
    descriptions: list[str] | None = None,
) -> Path:
    """Write a Slicer ``.mrk.json`` point list (loads in Slicer as a Fiducial node).

    ``points_lps`` are LPS mm; they are stored in ``coordinate_system`` (RAS negates x, y).
    Labels default to the landmark numbers 1..N. Each ``values`` entry (N values per name,
    e.g. ``{"TRE": errors}``) becomes a per-point measurement in ``units`` (one unit for
    all, or a unit per name, "" where a dict leaves a name out: flags are unitless).
    ``descriptions`` (one per point) fill the control points' description column.
    """
    points = _as_points(points_lps)
    if coordinate_system not in ("LPS", "RAS"):
        raise ValueError(f"coordinate_system must be LPS or RAS, got {coordinate_system!r}")
    labels = _labels(labels, len(points)) or [str(k + 1) for k in range(len(points))]
    stored = points * _LPS_FROM_RAS if coordinate_system == "RAS" else points
    # Slicer's default orientation is the RAS identity; written in the file's own system
    axes = _LPS_FROM_RAS if coordinate_system == "LPS" else np.ones(3)
    orientation = np.diag(axes).ravel().tolist()
    control_points = [
        {"id": str(k + 1), "label": str(label), "position": position.tolist(),
         "orientation": orientation, "positionStatus": "defined"}
        for k, (label, position) in enumerate(zip(labels, stored, strict=True))
    ]
    if descriptions is not None:
        for point, text in zip(control_points, _labels(descriptions, len(points)), strict=True):
            point["description"] = text
    unit_of = units if isinstance(units, dict) else dict.fromkeys(values or {}, units)
    measurements = [_measurement(name, array, unit_of.get(name, ""), len(points))
                    for name, array in (values or {}).items()]
    markup = {"type": "Fiducial", "coordinateSystem": coordinate_system,
              "coordinateUnits": "mm", "controlPoints": control_points,
              "measurements": measurements}
    document = {"@schema": MARKUPS_SCHEMA, "markups": [markup]}
    return _write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_csv(path: str | Path, points_lps: np.ndarray, labels: list[str] | None = None
              ) -> Path:
    """Write ``x,y,z`` LPS mm with a header row (``label,x,y,z`` when labels are given)."""
    points = _as_points(points_lps)
    labels = _labels(labels, len(points))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((["label"] if labels else []) + ["x", "y", "z"])
    for k, point in enumerate(points):
        writer.writerow(([labels[k]] if labels else []) + _cells(point))
    return _write_text(path, buffer.getvalue())


def write_elastix_points(path: str | Path, points_lps: np.ndarray, grid: Grid | None = None
                         ) -> Path:
    """Write an elastix/transformix ``point`` file (LPS mm), or with ``grid`` an ``index``
    file of 0-based continuous voxel indices on that grid."""
    points = _as_points(points_lps)
    kind, rows = ("point", points) if grid is None else ("index", grid.physical_to_index(points))
    lines = [" ".join(_cells(row)) for row in rows]
    return _write_text(path, "\n".join([kind, str(len(points)), *lines]) + "\n")


def write_dirlab(path: str | Path, points_lps: np.ndarray, grid: Grid, integer: bool = True
                 ) -> Path:
    """Write DIR-Lab rows ``x<TAB>y<TAB>z`` of 1-based voxel indices on ``grid`` (no header).

    ``integer`` rounds to the nearest voxel, as the published DIR-Lab files are; otherwise
    continuous indices are written with 6 decimals.
    """
    index = grid.physical_to_index(_as_points(points_lps)) + 1.0
    index, form = (np.rint(index) + 0.0, "{:.0f}") if integer else (index, "{:.6f}")
    rows = ["\t".join(form.format(v) for v in row) for row in index]
    return _write_text(path, "\n".join(rows) + "\n")


def _as_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
        raise ValueError(f"points must be a finite (N, 3) array, got shape {points.shape}")
    return points


def _labels(labels: list[str] | None, count: int) -> list[str] | None:
    if labels is not None and len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} points")
    return None if labels is None else [str(label) for label in labels]


def _cells(point: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in point]  # shortest text that reads back exactly


def _measurement(name: str, array: np.ndarray, units: str, count: int) -> dict:
    array = np.asarray(array, dtype=np.float64).ravel()
    if len(array) != count or not np.all(np.isfinite(array)):
        raise ValueError(f"measurement {name!r} needs {count} finite values, got {array}")
    return {"name": name, "enabled": True, "units": units, "printFormat": "%-#4.4g%s",
            "controlPointValues": array.tolist()}


def _write_text(path: str | Path, text: str) -> Path:
    with atomic_output(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return Path(path)
