"""Discrete displacement search with coupled convex regularisation (a large-motion start).

ConvexAdam (Siebert, Hansen & Heinrich 2021, "Fast 3D registration with accurate
optimisation and little learning for Learn2Reg 2021", MICCAI workshops; after Heinrich,
Papiez, Schnabel & Handels 2014, "Non-parametric discrete registration with convex
optimisation", WBIR) starts its Adam refinement from a discrete search:

1. MIND-SSC descriptors of both images (:func:`~LungDeepRegLib.losses.mind_ssc`).
2. A cost volume ``C(c, l)``: for every control point ``c`` of a coarse grid and every
   displacement ``l`` of a dense set of integer offsets (``|l_i| <= radius`` voxels of the
   feature grid), the squared descriptor difference over a small patch.
3. Coupled convex optimisation: alternately smooth the displacement field ``u`` and choose,
   per control point, ``argmin_l C(c, l) + theta (l - smooth(u)(c))^2`` with a rising
   coupling ``theta``; each half step is convex or point-wise, so no local minimum holds
   the search, which is what a gradient descent from the affine start cannot promise.

Here the search works on the affine start's crop, on a feature grid with exactly twice the
control grid's resolution (control point ``c`` is feature voxel ``2c``), and returns a
field in mm on the crop grid that continues the affine pre-alignment, for the refinement to
start from (:mod:`.multistart`).

An option, off by default (``register --search replace``). Measured with the whole
``register`` on the declared tuning data (``Testing/benchmark/ablate_discrete_search.py``;
``Testing/benchmark/results/refinement_ablation.md``, section 7, with every figure):

- In the default pipeline its mean effect over eight tuning cases was nil (0.659 -> 0.661 mm
  mean TRE). These were the two POPI pairs, two 0.98x0.98x2 mm synthetic pairs and four
  5 mm synthetic pairs. It was a little worse on three of the four 5 mm pairs. Its one clear
  gain was on one 2 mm pair with 25 mm breathing: the worst landmark went 5.46 -> 2.46 mm
  and folding 0.0034 -> 0.0006 %. That is the caudal slices where the exhale brings in
  tissue from outside the moving field of view.
- By optimisation alone it helped a little: 0.656 -> 0.647 mm, mostly POPI 00->50.
- Cost: 0.5-0.9 s on two CPU cores with the 32x26x32 control grid. A 48x40x48 grid took
  2 s and was no better. As one more start (``add``) it was no better, and the second
  start's coarse levels cost 1-3 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses.features import mind_ssc
from ..networks.pyramid import downsample
from ..spatial import Grid, resample, resample_field


@dataclass(frozen=True)
class SearchConfig:
    """Settings of :func:`discrete_search`.

    Attributes:
        control_size: control grid (x, y, z) over the crop's extent; the feature grid has
            ``2 n - 1`` voxels per axis (half the control spacing).
        radius: largest offset per axis, in feature voxels (``(2 radius + 1)^3`` labels).
        coupling: the rising coupling weights ``theta`` of the convex steps, per squared
            feature voxel, against the cost normalised to mean 1.
        smoothing: box radius (control points) of the smoothing step, applied twice.
    """

    control_size: tuple[int, int, int] = (32, 26, 32)
    radius: int = 4
    coupling: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    smoothing: int = 1


#: How ``register`` uses the search (``--search``): not at all (the default), in place of
#: the affine start (which is still compared at the end), or as one more start.
SEARCH_MODES = ("off", "replace", "add")
DEFAULT_SEARCH_MODE = SEARCH_MODES[0]
#: Appended to a start's name when the search continues it.
SEARCHED = " + discrete search"
#: The settings :func:`discrete_search` uses when given none.
DEFAULT_SEARCH = SearchConfig()


def search_grids(grid: Grid, config: SearchConfig) -> tuple[Grid, Grid]:
    """Control grid (``config.control_size``) and feature grid over ``grid``'s extent. The
    feature grid has ``2 n - 1`` voxels for ``n`` control points (control point ``c`` is
    feature voxel ``2 c``); it may be finer than a coarse CT's crop, so the labels step
    by less than the CT's voxels."""
    control = config.control_size
    return grid.with_size(control), grid.with_size(tuple(2 * n - 1 for n in control))


def labels(radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(L, 3)`` integer offsets (z, y, x) with every component in ``[-radius, radius]``."""
    steps = torch.arange(-radius, radius + 1, device=device)
    return torch.cartesian_prod(steps, steps, steps).float()


def _patch_mean(image: torch.Tensor) -> torch.Tensor:
    """Mean over the 3x3x3 box around each voxel (the patch), the border repeated."""
    return F.avg_pool3d(F.pad(image, (1,) * 6, mode="replicate"), 3, stride=1)


def cost_volume(fixed: torch.Tensor, moving: torch.Tensor, radius: int) -> torch.Tensor:
    """``(L, z, y, x)`` patch SSD of ``(1, C, 2z-1, 2y-1, 2x-1)`` descriptors: at control
    point ``c`` and label ``l`` (order of :func:`labels`), ``sum_ch (F(2c) - M(2c + l))^2``
    of 3-voxel box means (the patch), the moving image repeating its border."""
    fixed = _patch_mean(fixed)
    moving = F.pad(_patch_mean(moving), (radius,) * 6, mode="replicate")
    at_control = fixed[..., ::2, ::2, ::2].contiguous()
    shape = at_control.shape[2:]
    # the moving voxels of one parity per axis, contiguous: every label's shift is then a
    # slice with unit steps (strided slices of the whole volume were four times slower)
    parity = {(a, b, c): moving[..., a::2, b::2, c::2].contiguous()
              for a in (0, 1) for b in (0, 1) for c in (0, 1)}
    offsets = labels(radius).long().tolist()
    cost = torch.empty((len(offsets), *shape), dtype=fixed.dtype, device=fixed.device)
    difference = torch.empty_like(at_control)  # reused: a new tensor per label cost 3x
    for index, (dz, dy, dx) in enumerate(offsets):
        z, y, x = radius + dz, radius + dy, radius + dx
        part = parity[(z % 2, y % 2, x % 2)]
        shifted = part[..., z // 2:z // 2 + shape[0], y // 2:y // 2 + shape[1],
                       x // 2:x // 2 + shape[2]]
        torch.sub(at_control, shifted, out=difference)
        torch.sum(difference.square_(), 1, out=cost[index:index + 1])
    return cost


def _smooth(field: torch.Tensor, radius: int) -> torch.Tensor:
    """Two box filters of ``radius`` (about a Gaussian) over ``(1, 3, z, y, x)``."""
    width = 2 * radius + 1
    for _ in range(2):
        field = F.avg_pool3d(F.pad(field, (radius,) * 6, mode="replicate"), width, stride=1)
    return field


def coupled_convex(cost: torch.Tensor, offsets: torch.Tensor, config: SearchConfig
                   ) -> torch.Tensor:
    """``(1, 3, z, y, x)`` displacement (feature voxels, z, y, x) minimising ``cost``
    ``(L, z, y, x)`` plus the coupling to its own smoothed self (module docstring, step 3)."""
    shape = cost.shape[1:]
    # points by labels: the argmin over each point's labels then reads contiguous memory
    flat = cost.flatten(1).T.contiguous()
    flat /= flat.mean().clamp_min(torch.finfo(flat.dtype).tiny)
    # theta |l - s|^2 = theta (|l|^2 - 2 l.s) + theta |s|^2, and the last term is the same
    # for every label: one matrix product [-2 s, 1] [l, |l|^2]^T per step
    labels_and_norms = torch.cat([offsets, offsets.square().sum(1, keepdim=True)], 1).T
    field = offsets[flat.argmin(1)].T.reshape(1, 3, *shape)
    total = torch.empty_like(flat)  # reused: (N, L) is hundreds of MB
    ones = torch.ones((flat.shape[0], 1), dtype=flat.dtype, device=flat.device)
    for theta in config.coupling:
        smooth = _smooth(field, config.smoothing).flatten(2)[0].T  # (N, 3)
        torch.addmm(flat, torch.cat([-2.0 * smooth, ones], 1), labels_and_norms, alpha=theta,
                    out=total)
        field = offsets[total.argmin(1)].T.reshape(1, 3, *shape)
    return _smooth(field, config.smoothing)


def to_millimetres(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``(1, 3, ...)`` offsets in voxels of ``grid`` (z, y, x) as LPS mm (x, y, z)."""
    index_xyz = field.flip(1)  # channels z, y, x -> x, y, z
    matrix = torch.as_tensor(grid.index_to_physical_matrix,
                             dtype=field.dtype, device=field.device)
    return torch.einsum("ij,njzyx->nizyx", matrix, index_xyz)


def discrete_search(fixed: torch.Tensor, moving: torch.Tensor, grid: Grid,
                    coverage: torch.Tensor | None = None,
                    config: SearchConfig | None = None) -> torch.Tensor:
    """The displacement ``(1, 3, z, y, x)`` mm on ``grid`` that the discrete search finds
    between ``fixed`` and ``moving`` (``(1, 1, z, y, x)`` on ``grid``, the moving one pre-
    aligned). Control points where the moving image has no data (``coverage`` False, e.g.
    past its field of view) cost the same for every label: their neighbours decide."""
    config = config or DEFAULT_SEARCH
    control, features = search_grids(grid, config)
    with torch.no_grad():
        cost = cost_volume(mind_ssc(downsample(fixed, grid, features)),
                           mind_ssc(downsample(moving, grid, features)), config.radius)
        if coverage is not None and not bool(coverage.all()):
            covered = resample(coverage.float(), grid, control, interpolation="nearest")
            cost = cost * covered[0]
        offsets = labels(config.radius, cost.device)
        field = to_millimetres(coupled_convex(cost, offsets, config), features)
        return resample_field(field, control, grid)

