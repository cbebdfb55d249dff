"""Interpolation of images and vector fields at physical (LPS, mm) points.

All spatial tensors are ``(N, C, z, y, x)``; every ``grid_sample`` call in the engine goes
through :func:`sample` so that ``align_corners=True`` is used everywhere (voxel centres at
-1 and +1, as in :meth:`Grid.physical_to_normalized`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .grid import Grid

Interpolation = Literal["linear", "nearest"]
Padding = Literal["fill", "border"]

ALIGN_CORNERS = True


def sample(
    volume: torch.Tensor,
    grid: Grid,
    points: torch.Tensor,
    interpolation: Interpolation = "linear",
    padding: Padding = "fill",
    fill: float = 0.0,
) -> torch.Tensor:
    """Interpolate ``volume`` (on ``grid``) at physical ``points``.

    Args:
        volume: ``(N, C, z, y, x)`` values on ``grid``.
        grid: geometry of ``volume``.
        points: ``(N, *S, 3)`` LPS mm (x, y, z last); ``S`` is any spatial shape.
        interpolation: trilinear or nearest neighbour (label maps).
        padding: ``"fill"`` gives ``fill`` outside the image, ``"border"`` repeats the edge
            (the right choice for displacement fields).
        fill: value outside the image with ``padding="fill"``.

    Returns:
        ``(N, C, *S)`` interpolated values.
    """
    _check_volume(volume)
    batch, spatial = points.shape[0], points.shape[1:-1]
    flat = points.reshape(batch, 1, 1, -1, 3).to(volume.dtype)
    values = _grid_sample(volume, grid.physical_to_normalized(flat), interpolation, padding, fill)
    return values.reshape(batch, volume.shape[1], *spatial)


def resample(
    volume: torch.Tensor,
    grid: Grid,
    target: Grid,
    interpolation: Interpolation = "linear",
    padding: Padding = "border",
    fill: float = 0.0,
) -> torch.Tensor:
    """``volume`` (on ``grid``) interpolated at every voxel centre of ``target``:
    ``(N, C, *target.shape)``. What :func:`sample` gives at ``target.points()``, without
    a physical point per voxel (see :meth:`Grid.normalized_coordinates_of`)."""
    _check_volume(volume)
    coordinates = grid.normalized_coordinates_of(target, volume.dtype, volume.device)
    coordinates = coordinates.expand(volume.shape[0], *coordinates.shape)
    return _grid_sample(volume, coordinates, interpolation, padding, fill)


def _check_volume(volume: torch.Tensor) -> None:
    if volume.dim() != 5:
        raise ValueError(f"volume must be (N, C, z, y, x), got shape {tuple(volume.shape)}")


def _grid_sample(volume: torch.Tensor, normalized: torch.Tensor, interpolation: Interpolation,
                 padding: Padding, fill: float) -> torch.Tensor:
    mode = "bilinear" if interpolation == "linear" else "nearest"
    if padding == "border":
        return F.grid_sample(volume, normalized, mode=mode, padding_mode="border",
                             align_corners=ALIGN_CORNERS)
    # grid_sample pads with zeros: shift so that zero means ``fill``
    shifted = volume - fill if fill else volume
    values = F.grid_sample(shifted, normalized, mode=mode, padding_mode="zeros",
                           align_corners=ALIGN_CORNERS)
    return values + fill if fill else values


def sample_points(
    volume: torch.Tensor, grid: Grid, points: torch.Tensor, **kwargs
) -> torch.Tensor:
    """Sample a single volume ``(C, z, y, x)`` at a point list ``(P, 3)``; returns ``(P, C)``."""
    values = sample(volume[None], grid, points[None], **kwargs)
    return values[0].T
