"""Cumulative TRE plot: the fraction of landmarks below each error, one line per method.

For the DIR-Lab benchmark the seed papers' published mean TREs are drawn as labelled
vertical lines (references from their tables, not results of this harness).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..reporting.canvas import new_figure, save
from .methods import IDENTITY
from .published import PUBLISHED
from .summary import methods_of


def cumulative_tre_plot(rows: list[dict], path: Path, benchmark: str = "",
                        title: str = "") -> Path | None:
    """Write the plot of the finished ``rows``; None when no row has landmarks."""
    curves = {}
    for method in methods_of(rows):
        errors = [value for row in rows if row["method"] == method
                  for value in row.get("tre_per_landmark") or []]
        if errors:
            curves[method] = np.sort(np.asarray(errors, dtype=float))
    if not curves:
        return None
    figure = new_figure(7.5, 4.8)
    ax = figure.subplots()
    for method, errors in curves.items():
        label = "initial (identity)" if method == IDENTITY else method
        fraction = np.arange(1, errors.size + 1) / errors.size
        ax.step(errors, fraction, where="post", linestyle=":" if method == IDENTITY else "-",
                label=f"{label}: mean {errors.mean():.2f} mm")
    for number, (name, value) in enumerate(PUBLISHED.get(benchmark, {}).items()):
        ax.axvline(value, color=f"C{(number + len(curves)) % 10}", linestyle="--",
                   linewidth=1.0, label=f"{name}: mean {value:.2f} mm")
    ax.set_xlabel("TRE (mm)")
    ax.set_ylabel("fraction of landmarks with TRE <= x")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(left=0.0)
    ax.grid(alpha=0.3)
    ax.set_title(f"Cumulative TRE{': ' + title if title else ''}")
    ax.legend(fontsize=7, loc="lower right")
    return save(figure, path)
