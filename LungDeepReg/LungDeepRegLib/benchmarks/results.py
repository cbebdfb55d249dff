"""Benchmark rows -> ``results.json``, ``results.csv``, ``results.md`` and TRE plots."""

from __future__ import annotations

from pathlib import Path

from ..io.atomic import write_json, write_text
from .markdown import to_markdown
from .plots import cumulative_tre_plot
from .summary import done_rows, flat, groups

CSV_COLUMNS = ("case", "group", "method", "status", "tre_mean", "tre_sd", "tre_p75", "tre_max",
               "tre_initial_mean", "epe_mean", "folding_percent", "sd_log_jacobian", "time_s",
               "peak_memory_gb", "error")


def write_results(rows: list[dict], out: Path, meta: dict) -> dict[str, Path]:
    """Write every result file into ``out``; returns them by kind."""
    out = Path(out)
    files = {"json": write_json(out / "results.json", {"meta": meta, "rows": rows}),
             "csv": write_text(out / "results.csv", to_csv(rows))}
    plots = {}
    for group in groups(rows):
        name = "cumulative_tre" + (f"_{slug(group)}" if group else "") + ".png"
        plot = cumulative_tre_plot(done_rows(rows, group), out / name,
                                   meta.get("benchmark", ""), title=group)
        if plot is not None:
            plots[group] = plot
            files[f"plot {group}".strip()] = plot
    files["md"] = write_text(out / "results.md", to_markdown(rows, meta, plots))
    return files


def to_csv(rows: list[dict]) -> str:
    """One line per case and method (one per failed case)."""
    lines = [",".join(CSV_COLUMNS)]
    for row in rows:
        values = flat(row)
        lines.append(",".join(_cell(values.get(column)) for column in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    text = text.replace("\n", " ")
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:40]
