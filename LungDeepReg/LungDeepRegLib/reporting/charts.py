"""Charts of the QA report: TRE histogram and worst landmarks, per-lobe Dice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

from .canvas import new_figure, save
from .text import fmt, label_sort_key, label_title, number

BEFORE_COLOUR, AFTER_COLOUR = "#9e9e9e", "#1f77b4"


def tre_values(landmarks: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmark numbers (1-based) and TRE before / after, as arrays (NaN when missing)."""
    rows = landmarks.get("per_landmark") or []
    index = np.array([int(r.get("index", k + 1)) for k, r in enumerate(rows)], dtype=int)
    before = np.array([_nan(r.get("tre_before_mm")) for r in rows], dtype=float)
    after = np.array([_nan(r.get("tre_mm")) for r in rows], dtype=float)
    return index, before, after


def worst_order(after: np.ndarray) -> np.ndarray:
    """Positions sorted by TRE after registration, largest first (missing values last)."""
    return np.argsort(-np.nan_to_num(after, nan=-np.inf), kind="stable")


def plot_tre(landmarks: dict, path: Path, top: int = 30) -> Path:
    """Histogram of TRE before and after, and the ``top`` worst landmarks as bars."""
    index, before, after = tre_values(landmarks)
    figure = new_figure(12.0, max(4.5, 0.18 * min(top, len(index)) + 1.5))
    hist_ax, bar_ax = figure.subplots(1, 2, width_ratios=(1.2, 1.0))
    _histogram(hist_ax, before, after, landmarks)
    _worst_bars(bar_ax, index, before, after, top)
    return save(figure, path)


def plot_dice(labels: dict, path: Path) -> Path:
    """Grouped bars of Dice before and after for every label, with the values printed."""
    before, after = labels.get("before") or {}, labels.get("after") or {}
    keys = sorted(set(before) | set(after), key=label_sort_key)
    names = [label_title(k) for k in keys]
    values = [[_nan((side.get(k) or {}).get("dice")) for k in keys] for side in (before, after)]
    figure = new_figure(max(5.0, 1.3 * len(keys) + 2.0), 4.0)
    ax = figure.subplots()
    positions = np.arange(len(keys))
    width = 0.38
    for offset, series, colour, name in ((-width / 2, values[0], BEFORE_COLOUR, "before"),
                                         (width / 2, values[1], AFTER_COLOUR, "after")):
        bars = ax.bar(positions + offset, np.nan_to_num(series), width, color=colour,
                      label=name)
        ax.bar_label(bars, labels=[fmt(v, 3) for v in series], fontsize=7, padding=2)
    ax.set_xticks(positions, names, rotation=20 if len(keys) > 5 else 0)
    ax.set_ylim(0.0, 1.22)  # room above the bars for the values and the legend
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("Dice (1 = perfect overlap)")
    ax.set_title("Label overlap before and after registration")
    ax.legend(loc="upper center", ncols=2)
    ax.grid(axis="y", alpha=0.3)
    return save(figure, path)


def _histogram(ax: Axes, before: np.ndarray, after: np.ndarray, landmarks: dict) -> None:
    finite = np.concatenate((before[np.isfinite(before)], after[np.isfinite(after)]))
    top = float(finite.max()) if finite.size else 1.0
    bins = np.linspace(0.0, max(top, 1e-3) * 1.02, 31)
    for values, colour, name in ((before, BEFORE_COLOUR, "before"),
                                 (after, AFTER_COLOUR, "after")):
        values = values[np.isfinite(values)]
        ax.hist(values, bins=bins, color=colour, alpha=0.65, label=f"{name} (n={values.size})")
        if values.size:
            ax.axvline(values.mean(), color=colour, linestyle="--", linewidth=1.2)
    ax.set_xlabel("TRE (mm)")
    ax.set_ylabel("landmarks")
    ax.set_title("TRE distribution (dashed: means)")
    ax.legend(loc="upper right")
    text = "\n".join(_stats_line(name, landmarks.get(name)) for name in ("before", "after"))
    ax.text(0.98, 0.72, text, transform=ax.transAxes, ha="right", va="top", fontsize=8,
            family="monospace", bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"})


def _worst_bars(ax: Axes, index: np.ndarray, before: np.ndarray, after: np.ndarray,
                top: int) -> None:
    order = worst_order(after)[:top]
    positions = np.arange(len(order))
    ax.barh(positions, np.nan_to_num(after[order]), color=AFTER_COLOUR, label="after")
    ax.scatter(before[order], positions, color="black", marker="|", s=60, zorder=3,
               label="before")
    ax.set_yticks(positions, [f"#{i}" for i in index[order]], fontsize=7)
    ax.invert_yaxis()  # the largest error at the top
    finite = after[np.isfinite(after)]
    if finite.size:
        ax.axvline(finite.mean(), color="0.3", linestyle="--", linewidth=1, label="mean after")
        ax.axvline(np.percentile(finite, 75), color="0.3", linestyle=":", linewidth=1,
                   label="p75 after")
    ax.set_xlabel("TRE (mm)")
    ax.set_title(f"{len(order)} largest TRE after registration (of {len(index)})")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def _stats_line(name: str, summary: dict | None) -> str:
    summary = summary or {}
    return (f"{name:<6} mean {fmt(summary.get('mean'))}  SD {fmt(summary.get('sd'))}\n"
            f"       p75 {fmt(summary.get('p75'))}  max {fmt(summary.get('max'))} mm")


def _nan(value: object) -> float:
    result = number(value)
    return float("nan") if result is None else result
