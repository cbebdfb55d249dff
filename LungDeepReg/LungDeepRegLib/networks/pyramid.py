"""Gaussian image pyramids on physical grids for the multilevel network.

Hering et al. (2019, 2021) register images pyramids ``F_l, M_l``, ``l = 1..L``, where level
``l`` is smoothed and downsampled by ``2^(l-1)``. Here levels are numbered from 0 (finest,
the network grid itself) to ``L - 1`` (coarsest), i.e. our ``level`` is the paper's ``l - 1``.

Every level grid comes from :meth:`Grid.with_size`, so all levels span the same physical
extent (first to last voxel centre); a field in mm on one level therefore means the same
mapping on every other level after :func:`~LungDeepRegLib.spatial.resample_field`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..spatial import Grid, resample

# Anti-aliasing before downsampling by a factor f: sigma = SIGMA_PER_FACTOR * f input voxels.
# 0.5 f is the choice of ITK's MultiResolutionPyramidImageFilter (variance (f/2)^2): it
# removes most content above the new Nyquist frequency without blurring the coarse level
# more than needed.
SIGMA_PER_FACTOR = 0.5


def level_size(size: tuple[int, int, int], level: int) -> tuple[int, int, int]:
    """Voxel counts (x, y, z) of pyramid ``level``: ``ceil(size / 2^level)``, at least 1."""
    factor = 2**level
    return tuple(max(1, math.ceil(n / factor)) for n in size)  # type: ignore[return-value]


def level_grid(grid: Grid, level: int) -> Grid:
    """Grid of pyramid ``level`` (0 = ``grid`` itself), covering the same physical extent."""
    if level < 0:
        raise ValueError(f"pyramid level must be >= 0, got {level}")
    if level == 0:
        return grid  # exactly the same object: no round-off in the spacing
    return grid.with_size(level_size(grid.size, level))


def gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised sampled Gaussian, radius ``ceil(3 sigma)``."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_smooth(image: torch.Tensor, sigma: tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(N, C, z, y, x)``; ``sigma`` in voxels, (x, y, z).

    Borders are replicated so that the image edge does not darken (zero padding would add
    a spurious intensity edge that the network and NGF would react to).
    """
    if image.dim() != 5:
        raise ValueError(f"image must be (N, C, z, y, x), got shape {tuple(image.shape)}")
    out = image
    # tensor dims 2, 3, 4 are z, y, x; sigma is given in (x, y, z) order
    for dim, s in zip((4, 3, 2), sigma, strict=True):
        if s <= 0 or out.shape[dim] == 1:
            continue
        kernel = gaussian_kernel1d(s, torch.float64, torch.device("cpu")).tolist()
        radius = len(kernel) // 2
        pad = [0, 0, 0, 0, 0, 0]  # F.pad order: x-left, x-right, y..., z...
        pad[2 * (4 - dim)] = pad[2 * (4 - dim) + 1] = radius
        padded = F.pad(out, pad, mode="replicate")
        # a weighted sum of shifted views: on the CPU several times faster than conv3d with
        # a one-dimensional kernel, and the same on every device
        length = out.shape[dim]
        out = sum(weight * padded.narrow(dim, k, length) for k, weight in enumerate(kernel))
    return out


def downsample(image: torch.Tensor, grid: Grid, target: Grid) -> torch.Tensor:
    """Smooth ``image`` (on ``grid``) for ``target``'s spacing and sample it there.

    Sigma per axis is ``SIGMA_PER_FACTOR`` times the actual spacing ratio, which is close
    to but not exactly ``2^level`` because :meth:`Grid.with_size` keeps the extent.
    """
    if target is grid:
        return image
    ratio = np.asarray(target.spacing) / np.asarray(grid.spacing)
    sigma = tuple(float(SIGMA_PER_FACTOR * r) if r > 1.0 else 0.0 for r in ratio)
    smoothed = gaussian_smooth(image, sigma)  # type: ignore[arg-type]
    return resample(smoothed, grid, target, padding="border")


def image_pyramid(image: torch.Tensor, grid: Grid, levels: int) -> list[torch.Tensor]:
    """Images for pyramid levels ``0..levels-1`` (finest first), each straight from ``image``.

    Building every level from the full-resolution image (rather than level from level)
    avoids compounding interpolation blur; the cost is negligible next to the networks.
    """
    return [downsample(image, grid, level_grid(grid, level)) for level in range(levels)]
