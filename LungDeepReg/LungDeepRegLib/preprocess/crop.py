"""Lung crop grids, resampling onto them, and the network's intensity scaling.

Hering et al. (2021, MedIA) feed their networks a lung crop resized to 192x160x192 voxels.
:func:`lung_crop_grid` builds that crop as a :class:`Grid`: a box around the lung mask in the
CT's own index orientation (the direction matrix is kept, so no rotation is introduced),
widened by a margin and sampled with a fixed number of voxels per axis. The spacing is then
generally anisotropic (extent / (size - 1) per axis); every length downstream is in mm, so
that is harmless.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..optional import optional_module
from ..spatial.convert import as_float32
from ..spatial.grid import Grid
from .body import BODY_THRESHOLD_HU
from .lung_mask import lung_mask as automatic_lung_mask

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache

NETWORK_SIZE = (192, 160, 192)  # (x, y, z) voxels, Hering et al. 2021
# the CT range io.images.read_image clips to (repeated here: preprocess may not import io)
HU_MIN, HU_MAX = -1024.0, 3071.0


def lung_crop_grid(ct: sitk.Image, mask: sitk.Image | None = None,
                   size: tuple[int, int, int] = NETWORK_SIZE,
                   margin_mm: float = 10.0) -> Grid:
    """Grid of exactly ``size`` (x, y, z) voxels covering the lungs plus ``margin_mm``.

    The box is axis-aligned in the CT's index space (the CT's direction is kept). It spans
    the mask's voxel edges plus the margin, but the margin never reaches past the CT's own
    voxel edges: that would only add invented air around the image. The first and last
    voxel centres of the grid sit on the box faces, so every mask voxel centre is inside.

    Args:
        ct: the CT (HU); its geometry defines the orientation of the box.
        mask: lung mask (any non-zero voxel counts) on any grid; computed from the CT with
            :func:`~LungDeepRegLib.preprocess.lung_mask` when None. When no lung is found the
            body (HU above -500) is used, and the whole image when even that is empty.
        size: voxel counts (x, y, z) of the result.
        margin_mm: margin added on every side, in mm.
    """
    if mask is None:
        mask = automatic_lung_mask(ct)
    lower, upper = _box_in_ct_index(ct, mask)
    if lower is None:
        lower, upper = _box_in_ct_index(ct, _body(ct))
    extent = np.asarray(ct.GetSize(), dtype=np.float64)
    if lower is None:  # nothing at all: the whole image, voxel edge to voxel edge
        lower, upper = np.full(3, -0.5), extent - 0.5
    margin = margin_mm / np.asarray(ct.GetSpacing())
    lower = np.maximum(lower - margin, -0.5)
    upper = np.minimum(upper + margin, extent - 0.5)
    ct_grid = Grid.from_image(ct)
    size_array = np.asarray(size, dtype=np.float64)
    spacing = (upper - lower) * np.asarray(ct_grid.spacing) / np.maximum(size_array - 1, 1)
    origin = ct_grid.index_to_physical(lower[None])[0]
    return Grid(tuple(int(s) for s in size), tuple(spacing), tuple(origin), ct_grid.direction)


def resample_to_grid(image: sitk.Image, grid: Grid,
                     interpolation: Literal["linear", "nearest"] = "linear",
                     default: float = HU_MIN, antialias: bool = True,
                     transform: sitk.Transform | None = None) -> sitk.Image:
    """``image`` resampled onto ``grid`` (physical space, through ``transform`` from grid to
    image points, default identity), same pixel type.

    With linear interpolation onto a coarser grid the image is first blurred with a
    Gaussian of sigma ``0.5 * sqrt(t^2 - s^2)`` mm per axis (target spacing t, source s), so
    that thin vessels do not alias into speckle when a 0.6 mm CT becomes a 2 mm crop.
    Label maps use ``interpolation="nearest"`` (never blurred) and usually ``default=0``.
    """
    if interpolation not in ("linear", "nearest"):
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    source = image
    if interpolation == "linear" and antialias:
        source = _block_average(image, grid)
        sigma = _antialias_sigma(source, grid)
        if max(sigma) > 0:
            # a discrete Gaussian accepts a zero width on axes that are not coarsened (the
            # recursive one does not) and stays accurate below one voxel
            source = sitk.DiscreteGaussian(as_float32(source),
                                           [s * s for s in sigma], 64, 0.01, True)
    method = sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor
    return sitk.Resample(source, grid.size, transform or sitk.Transform(), method, grid.origin,
                         grid.spacing, grid.direction, float(default), image.GetPixelID())


def normalize_ct(hu: torch.Tensor) -> torch.Tensor:
    """Network input intensity: ``(HU + 1024) / 4095`` clipped to [0, 1].

    This is the scaling stated in the model card: the full CT range [-1024, 3071] HU maps
    linearly onto [0, 1] (air 0, water about 0.25, lung parenchyma 0.02-0.1). A lung
    window would stretch parenchyma contrast but clips the vessel walls and bones the
    NGF loss aligns; a global linear map keeps every edge and needs no per-image statistics.
    """
    return ((hu - HU_MIN) / (HU_MAX - HU_MIN)).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- helpers
def _box_in_ct_index(ct: sitk.Image, mask: sitk.Image
                     ) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Bounding box (voxel edges) of the mask, as continuous CT indices (x, y, z)."""
    array = sitk.GetArrayViewFromImage(mask) != 0
    # per-axis projections, not np.nonzero: 20x cheaper on a 512x512x141 mask, and the
    # crop of every start asks for this box again
    occupied = [np.flatnonzero(array.any(axis=other)) for other in ((0, 1), (0, 2), (1, 2))]
    if occupied[0].size == 0:
        return None, None
    low = np.array([o[0] for o in occupied], dtype=np.float64) - 0.5
    high = np.array([o[-1] for o in occupied], dtype=np.float64) + 0.5
    # the 8 corners of the box, through physical space into the CT's index space: this
    # holds for a mask on another grid (other spacing, origin or direction) too
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1])
                        for z in (low[2], high[2])])
    mask_grid, ct_grid = Grid.from_image(mask), Grid.from_image(ct)
    in_ct = ct_grid.physical_to_index(mask_grid.index_to_physical(corners))
    return in_ct.min(axis=0), in_ct.max(axis=0)


def _body(ct: sitk.Image) -> sitk.Image:
    """The largest connected region above -500 HU (the body, without the table if apart)."""
    dense = sitk.BinaryThreshold(ct, BODY_THRESHOLD_HU, 1e9, 1, 0)
    ranked = sitk.RelabelComponent(sitk.ConnectedComponent(dense), sortByObjectSize=True)
    return sitk.Cast(ranked == 1, sitk.sitkUInt8)


def _block_average(image: sitk.Image, grid: Grid) -> sitk.Image:
    """Average whole blocks of voxels first where the target is at least twice as coarse:
    one cheap pass (BinShrink) that leaves the Gaussian only the remaining, small width
    (the Gaussian on a full 512x512x141 CT cost about 8 s on two cores)."""
    same_axes = np.allclose(np.asarray(image.GetDirection()), np.asarray(grid.direction),
                            atol=1e-6)
    if not same_axes:
        return image
    ratio = np.asarray(grid.spacing) / np.asarray(image.GetSpacing())
    factors = [max(1, int(np.floor(r))) for r in ratio]
    if factors == [1, 1, 1]:
        return image
    return sitk.BinShrink(as_float32(image), factors)


def _antialias_sigma(image: sitk.Image, grid: Grid) -> list[float]:
    source = np.asarray(image.GetSpacing())
    same_axes = np.allclose(np.asarray(image.GetDirection()), np.asarray(grid.direction),
                            atol=1e-6)
    target = np.asarray(grid.spacing) if same_axes else np.full(3, max(grid.spacing))
    return [float(s) for s in 0.5 * np.sqrt(np.maximum(target**2 - source**2, 0.0))]
