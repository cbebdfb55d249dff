"""Image figures of the QA report: planes, overlays, checkerboards, differences, det J.

Each function draws one PNG from :class:`~.views.DisplayVolumes` and returns what its
caption needs to state. Grey images use the lung window (W1500/L-600).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.lines import Line2D

from .canvas import message_axes, new_figure, save, show_slice, to_mm
from .views import DisplayVolumes, Plane, checkerboard, fold_plane, lung_window, overlay

DIFFERENCE_MAX_HU = 1000.0  # one fixed scale, so that reports of different cases compare
JACOBIAN_NORM = {"vmin": 0.0, "vcenter": 1.0, "vmax": 2.0}
JACOBIAN_CMAP = "RdBu_r"  # blue = shrink, white = volume kept, red = growth
FOLD_STYLE = {"marker": "X", "s": 36, "c": "yellow", "edgecolors": "black", "linewidths": 0.6}
MAX_FOLD_MARKERS = 5000  # per panel; beyond that the panel is solid yellow anyway
GREY = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}


def plot_images(volumes: DisplayVolumes, planes: list[Plane], path: Path) -> Path:
    """Fixed, moving before registration and warped moving, in three planes."""
    columns = (("fixed", volumes.fixed), ("moving (before)", volumes.moving),
               ("warped moving (after)", volumes.warped))
    figure = new_figure(3.4 * len(columns), 3.3 * len(planes))
    axes = figure.subplots(len(planes), len(columns), squeeze=False)
    for row, plane in enumerate(planes):
        for col, (title, volume) in enumerate(columns):
            ax = axes[row, col]
            show_slice(ax, lung_window(plane.cut(volume)), plane, volumes.spacing, **GREY)
            _label(ax, volumes, plane, row, col, title)
    return save(figure, path)


def plot_overlays(volumes: DisplayVolumes, planes: list[Plane], path: Path,
                  tile_mm: float = 20.0) -> Path:
    """Colour overlays (fixed magenta, other green) and checkerboards, before and after."""
    titles = ("overlay before", "overlay after", "checkerboard before", "checkerboard after")
    figure = new_figure(3.2 * len(titles), 3.2 * len(planes))
    axes = figure.subplots(len(planes), len(titles), squeeze=False)
    for row, plane in enumerate(planes):
        fixed = plane.cut(volumes.fixed)
        others = (plane.cut(volumes.moving), plane.cut(volumes.warped))
        pixel = plane.pixel_mm(volumes.spacing)
        images = [overlay(fixed, other) for other in others]
        images += [checkerboard(lung_window(fixed), lung_window(other), pixel, tile_mm)
                   for other in others]
        for col, image in enumerate(images):
            ax = axes[row, col]
            style = {} if image.ndim == 3 else GREY
            show_slice(ax, image, plane, volumes.spacing, **style)
            _label(ax, volumes, plane, row, col, titles[col])
    return save(figure, path)


def plot_differences(volumes: DisplayVolumes, planes: list[Plane], path: Path,
                     vmax: float = DIFFERENCE_MAX_HU) -> Path:
    """|fixed - moving| before and |fixed - warped| after on one colour scale (HU)."""
    columns = (("|fixed - moving| before", volumes.moving),
               ("|fixed - warped| after", volumes.warped))
    figure = new_figure(3.6 * len(columns) + 1.0, 3.3 * len(planes))
    axes = figure.subplots(len(planes), len(columns), squeeze=False)
    image = None
    for row, plane in enumerate(planes):
        fixed = plane.cut(volumes.fixed)
        for col, (title, volume) in enumerate(columns):
            ax = axes[row, col]
            difference = np.abs(fixed - plane.cut(volume))
            show_slice(ax, difference, plane, volumes.spacing, cmap="inferno", vmin=0.0,
                       vmax=vmax)
            image = ax.images[-1]
            _label(ax, volumes, plane, row, col, title)
    colorbar = figure.colorbar(image, ax=axes, shrink=0.6, extend="max")
    colorbar.set_label("absolute difference (HU)")
    return save(figure, path)


def plot_jacobian(volumes: DisplayVolumes, planes: list[Plane], path: Path,
                  title: str) -> dict[str, int]:
    """det J over the fixed image with folds marked; returns fold markers per panel.

    Colour is limited to the lung mask when there is one. Fold markers come from the
    native Jacobian grid (every det <= 0 voxel within half a voxel of the plane), so no
    fold disappears in the resampling to the display grid. A fourth panel shows the axial
    slice holding the most folds, because the centre planes may miss them all.
    """
    panels = list(planes)
    extra = fold_plane(volumes)
    if extra is not None:
        panels.append(extra)
    figure = new_figure(3.6 * len(panels) + 1.0, 4.2)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    marked: dict[str, int] = {}
    image = None
    for ax, plane in zip(axes, panels, strict=True):
        if volumes.jacobian_image is None:
            message_axes(ax, "no Jacobian determinant given")
            continue
        image = _jacobian_panel(ax, volumes, plane)
        marked[volumes.describe(plane)] = _mark_folds(ax, volumes, plane)
    if image is not None:
        colorbar = figure.colorbar(image, ax=list(axes), shrink=0.8, extend="both")
        colorbar.set_label("det J  (blue < 1: shrinks, red > 1: grows)")
    if sum(marked.values()):
        axes[0].legend(handles=[_fold_handle()], loc="lower left", fontsize=7,
                       framealpha=0.8)
    figure.suptitle(title)
    save(figure, path)
    return marked


def _jacobian_panel(ax: Axes, volumes: DisplayVolumes, plane: Plane):
    """Grey fixed slice under the det J colour map; returns the colour image."""
    show_slice(ax, lung_window(plane.cut(volumes.fixed)), plane, volumes.spacing, **GREY)
    det = volumes.jacobian_slice(plane)
    hidden = ~np.isfinite(det)
    if volumes.mask is not None:
        hidden |= plane.cut(volumes.mask) <= 0
    shown = np.ma.masked_array(np.nan_to_num(det, nan=1.0), mask=hidden)
    show_slice(ax, shown, plane, volumes.spacing, cmap=JACOBIAN_CMAP,
               norm=TwoSlopeNorm(**JACOBIAN_NORM), alpha=0.75)
    ax.set_title(volumes.describe(plane), fontsize=9)
    return ax.images[-1]


def _mark_folds(ax: Axes, volumes: DisplayVolumes, plane: Plane) -> int:
    """Scatter the folded voxels near ``plane``; returns how many were marked."""
    tolerance = volumes.fold_tolerance[plane.axis]
    rows, cols = plane.project(volumes.folds_index, volumes.depth, tolerance)
    total = len(rows)
    if not total:
        return 0
    if total > MAX_FOLD_MARKERS:
        pick = np.random.default_rng(0).choice(len(rows), MAX_FOLD_MARKERS, replace=False)
        rows, cols = rows[pick], cols[pick]
    x, y = to_mm(rows, cols, plane, volumes.spacing)
    limits = ax.get_xlim(), ax.get_ylim()
    ax.scatter(x, y, **FOLD_STYLE)
    ax.set_xlim(*limits[0])  # a marker on the edge must not widen the panel
    ax.set_ylim(*limits[1])
    return total


def _fold_handle() -> Line2D:
    return Line2D([], [], linestyle="none", marker=FOLD_STYLE["marker"],
                  markerfacecolor=FOLD_STYLE["c"], markeredgecolor="black",
                  markersize=8, label="fold (det J <= 0)")


def _label(ax: Axes, volumes: DisplayVolumes, plane: Plane, row: int, col: int,
           title: str) -> None:
    if row == 0:
        ax.set_title(title, fontsize=10)
    if col == 0:
        ax.set_ylabel(volumes.describe(plane), fontsize=9)
