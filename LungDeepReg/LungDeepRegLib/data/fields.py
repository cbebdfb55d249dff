"""Synthetic displacement fields with known ground truth, and their numerical inverse.

Supervised and validation pairs are made by deforming one real CT with a known field
(Sokooti et al. 2017, MICCAI; Eppenhof et al. 2020, IEEE TMI). Two generators are given:

* :func:`random_smooth_field`: the multi-scale random field of Eppenhof et al. (2020,
  Table I style): on several control grids (coarse to fine) random displacements drawn at
  the control points are interpolated with cubic B-splines and summed over the scales.
* :func:`breathing_field`: an inhale-to-exhale motion model, mostly cranio-caudal and
  growing towards the diaphragm, with a smaller contraction in x and y, as the lung motion
  that Hering et al. (2021, MedIA) register.

All fields follow the engine convention: ``(1, 3, z, y, x)`` LPS mm on the fixed grid,
mapping fixed (inhale) points to moving (exhale) points, ``T(x) = x + u(x)``.
"""

from __future__ import annotations

import hashlib

import torch

from ..optional import optional_module
from ..spatial import Grid, compose, resample_field, sample, tensor_to_image

sitk = optional_module("SimpleITK")  # absent where training reads a crop cache

RANDOM_SCALES_MM = (100.0, 50.0, 25.0)
RANDOM_AMPLITUDES_MM = (10.0, 5.0, 2.5)  # 10 % of each control spacing: far below folding
PYRAMID_VOXELS = 200_000  # larger grids are inverted coarse-to-fine
# The inversion stops once this share of voxels or fewer still moves by more than the
# tolerance: a real-motion field (data.motion) can leave a few dozen voxels at the crop's
# edge cycling between two values (the continuation of u beyond the grid is not invertible
# there), which would otherwise hold every pair at the full iteration count.
UNSETTLED_SHARE = 1e-3


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw from U(low, high) (a plain float; deterministic given the generator)."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


# ------------------------------------------------------------------ random smooth field
def random_smooth_field(grid: Grid, generator: torch.Generator,
                        scales_mm: tuple[float, ...] = RANDOM_SCALES_MM,
                        amplitudes_mm: tuple[float, ...] = RANDOM_AMPLITUDES_MM
                        ) -> torch.Tensor:
    """Sum over scales of cubic B-spline fields with U(-a, a) control displacements.

    Each scale has control points every ``scales_mm[k]`` mm along the grid's index axes
    (with a random lattice offset, so pairs do not share knot positions) and displacement
    components drawn uniformly in ``[-amplitudes_mm[k], amplitudes_mm[k]]``. A cubic
    B-spline field stays injective while its control displacements stay below about 0.4
    control spacings (Choi & Lee 2000); the defaults use 0.1 per scale.

    Returns:
        ``(1, 3, z, y, x)`` float32 displacement in mm.
    """
    if len(scales_mm) != len(amplitudes_mm):
        raise ValueError("scales_mm and amplitudes_mm must have the same length")
    field = torch.zeros((3, *grid.shape), dtype=torch.float64)
    for spacing_mm, amplitude_mm in zip(scales_mm, amplitudes_mm, strict=True):
        field += _bspline_level(grid, generator, spacing_mm, amplitude_mm)
    return field[None].float()


def _bspline_level(grid: Grid, generator: torch.Generator, spacing_mm: float,
                   amplitude_mm: float) -> torch.Tensor:
    wx, wy, wz = (_bspline_weights(n, step, spacing_mm, uniform(generator, 0.0, 1.0))
                  for n, step in zip(grid.size, grid.spacing, strict=True))
    shape = (3, wz.shape[1], wy.shape[1], wx.shape[1])
    coefficients = (2.0 * torch.rand(shape, generator=generator, dtype=torch.float64) - 1.0)
    coefficients *= amplitude_mm
    # separable tensor-product evaluation, one axis at a time (small intermediates)
    values = torch.einsum("kcba,xa->kcbx", coefficients, wx)
    values = torch.einsum("kcbx,yb->kcyx", values, wy)
    return torch.einsum("kcyx,zc->kzyx", values, wz)


def _bspline_weights(count: int, voxel_mm: float, knot_mm: float, offset: float
                     ) -> torch.Tensor:
    """``(count, n_knots)`` cubic B-spline weights of each voxel on a 1-D knot lattice."""
    t = torch.arange(count, dtype=torch.float64) * (voxel_mm / knot_mm) + 1.0 + offset
    knot = torch.floor(t)
    f = t - knot
    weights = torch.stack(((1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4,
                           -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3), dim=-1) / 6.0
    columns = knot.long()[:, None] - 1 + torch.arange(4)
    matrix = torch.zeros(count, int(knot.max()) + 3, dtype=torch.float64)
    return matrix.scatter_add_(1, columns, weights)


# ---------------------------------------------------------------------- breathing field
def breathing_field(grid: Grid, lung_mask: torch.Tensor, generator: torch.Generator,
                    max_cc_mm: tuple[float, float] = (10.0, 30.0),
                    weaker_side: tuple[float, float] = (0.75, 1.0),
                    lateral_strain: tuple[float, float] = (0.0, 0.02),
                    ap_strain: tuple[float, float] = (0.01, 0.04),
                    decay_mm: float = 100.0,
                    dome_fall: tuple[float, float] = (0.4, 0.8),
                    exponent_range: tuple[float, float] = (1.5, 3.0)) -> torch.Tensor:
    """Inhale (fixed) to exhale (moving) breathing motion, ``(1, 3, z, y, x)`` mm.

    Model (each quantity drawn from the given U(low, high) ranges):

    * cranio-caudal: ``u_z = A(x) s(h)^q`` with ``h`` the normalised height below the lung
      apex (0 at the apex, 1 at the lowest lung point), ``s`` the C1 smoothstep and
      ``q ~ exponent_range`` (motion concentrated near the diaphragm): zero at the apex,
      largest at the base. ``u_z > 0``: the inhale
      diaphragm lies higher (superior is +z in LPS) in the exhale image. ``A ~ max_cc_mm``,
      reduced by a factor ``~ weaker_side`` on a random side (left/right asymmetry),
      blended smoothly across the midline. Each hemidiaphragm is a dome: ``u_z`` is
      largest under the middle of each lung and falls by ``dome_fall`` towards its
      lateral and anterior borders (the posterior costophrenic region moves most), a
      motion no affine map reproduces.
    * contraction: ``u_x`` towards the midline (``lateral_strain``) and ``u_y`` towards the
      posterior lung border (the anterior chest wall falls back; ``ap_strain``), both
      stronger inferiorly and scaled by ``A / 30 mm``.
    * outside the lung the whole motion fades with the distance to the mask over
      ``decay_mm`` (C1), so the field is smooth across the pleura (no sliding) and its
      gradient stays small: the map is diffeomorphic and invertible by fixed-point
      iteration. Callers should still check ``det(J) > 0``.
    """
    mask = lung_mask.reshape(grid.shape) > 0
    if not bool(mask.any()):
        mask = torch.ones_like(mask)  # no lung: the whole grid moves
    # float32 is ample for mm positions (< 1e-4 mm error) and twice as fast as float64
    points = grid.points(dtype=torch.float32, device=mask.device)
    x, y, z = points.unbind(-1)
    apex, base, midline, posterior = _lung_extent(points[mask])
    height = ((apex - z) / max(apex - base, 1.0)).clamp(0.0, 1.0)

    amplitude = uniform(generator, *max_cc_mm)
    weaker = uniform(generator, *weaker_side)
    left_weaker = uniform(generator, 0.0, 1.0) < 0.5
    exponent = uniform(generator, *exponent_range)
    strain = amplitude / 30.0
    lateral = uniform(generator, *lateral_strain) * strain
    ap = uniform(generator, *ap_strain) * strain

    left = 0.5 * (1.0 + torch.tanh((x - midline) / 30.0))  # +x is patient left
    side = weaker * left + (1.0 - left) if left_weaker else left + weaker * (1.0 - left)
    envelope = outside_fade(mask, grid, decay_mm)
    rib = 0.5 + 0.5 * _smoothstep(height)  # the lower ribs move more
    dome = _dome_profile(points[mask], x, y, midline, uniform(generator, *dome_fall))
    u_z = amplitude * side * dome * _smoothstep(height) ** exponent
    u_x = -lateral * (x - midline) * rib
    u_y = ap * (posterior - y) * rib
    return (torch.stack((u_x, u_y, u_z)) * envelope)[None]


def _dome_profile(lung: torch.Tensor, x: torch.Tensor, y: torch.Tensor, midline: float,
                  fall: float) -> torch.Tensor:
    """1 under the centre of each lung's base, ``1 - fall`` at its lateral/anterior rim."""
    profile = torch.ones_like(x)
    posterior, anterior = float(lung[:, 1].max()), float(lung[:, 1].min())
    depth = ((posterior - y) / max(posterior - anterior, 1.0)).clamp(0.0, 1.0)
    for is_left in (True, False):
        side = lung[lung[:, 0] > midline] if is_left else lung[lung[:, 0] <= midline]
        if len(side) == 0:
            continue
        centre = float(side[:, 0].mean())
        half_width = max(0.5 * float(side[:, 0].max() - side[:, 0].min()), 1.0)
        lateral = ((x - centre) / half_width).clamp(-1.0, 1.0) ** 2
        on_side = (x > midline) if is_left else (x <= midline)
        shape = 1.0 - fall * (0.5 * lateral + 0.5 * depth ** 2)
        profile = torch.where(on_side, shape, profile)
    return _smooth_across_midline(profile, x, midline)


def _smooth_across_midline(profile: torch.Tensor, x: torch.Tensor, midline: float
                           ) -> torch.Tensor:
    """Blend the two domes over the mediastinum so that the field stays smooth."""
    weight = torch.exp(-(((x - midline) / 25.0) ** 2))
    return (1.0 - weight) * profile + weight * (1.0 - 0.5 * (1.0 - profile.mean()))


def _lung_extent(lung: torch.Tensor) -> tuple[float, float, float, float]:
    """Apex and base z, midline x and posterior y (mm) of lung points ``(P, 3)`` LPS."""
    apex, base = float(lung[:, 2].max()), float(lung[:, 2].min())  # superior is +z
    midline = 0.5 * float(lung[:, 0].min() + lung[:, 0].max())
    return apex, base, midline, float(lung[:, 1].max())  # posterior is +y


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    """C1 ramp from 0 (t <= 0) to 1 (t >= 1) with zero slope at both ends."""
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def outside_fade(mask: torch.Tensor, grid: Grid, decay_mm: float) -> torch.Tensor:
    """1 inside the lung, falling smoothly to 0 at ``decay_mm`` from it (float32)."""
    outside = outside_distance(mask, grid).to(mask.device)
    return 1.0 - _smoothstep(outside.clamp(min=0.0) / decay_mm)


# Every pair of a CT fades its motion by the same distance map: computed once per lung mask
# (about 0.1 s per pair at 128x112x128 otherwise), and given by a crop cache where there is
# no SimpleITK to compute it (:func:`remember_outside_distance`). A few CTs' worth.
_DISTANCES: dict[tuple[Grid, str], torch.Tensor] = {}
MAX_REMEMBERED_DISTANCES = 16


def _mask_key(mask: torch.Tensor, grid: Grid) -> tuple[Grid, str]:
    content = (mask.reshape(grid.shape) > 0).to(torch.uint8).cpu().numpy().tobytes()
    return grid, hashlib.blake2b(content, digest_size=16).hexdigest()


def outside_distance(mask: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Smoothed distance in mm from the lung ``mask`` (0 inside), ``grid.shape`` float32 on
    the CPU; remembered per mask."""
    key = _mask_key(mask, grid)
    if key not in _DISTANCES:
        inside = (mask.reshape(1, *grid.shape) > 0).to(torch.uint8).cpu()
        image = tensor_to_image(inside, grid)
        distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False,
                                                squaredDistance=False, useImageSpacing=True)
        # the distance has kinks (medial axes between the lungs): a little blur makes it C1
        distance = sitk.SmoothingRecursiveGaussian(sitk.Clamp(distance, lowerBound=0.0), 5.0)
        remember_outside_distance(mask, grid, torch.from_numpy(sitk.GetArrayFromImage(distance)))
    return _DISTANCES[key]


def remember_outside_distance(mask: torch.Tensor, grid: Grid, distance: torch.Tensor) -> None:
    """Use ``distance`` (``grid.shape`` mm) as :func:`outside_distance` of ``mask``."""
    if len(_DISTANCES) >= MAX_REMEMBERED_DISTANCES:
        _DISTANCES.pop(next(iter(_DISTANCES)))  # the oldest
    _DISTANCES[_mask_key(mask, grid)] = distance.reshape(grid.shape).float().cpu()


def with_random_detail(field: torch.Tensor, grid: Grid, generator: torch.Generator
                       ) -> torch.Tensor:
    """``field`` followed by a random smooth field of half the default amplitudes: detail
    that no breathing model (analytic or carried from another patient) gets right."""
    halved = tuple(0.5 * a for a in RANDOM_AMPLITUDES_MM)
    extra = random_smooth_field(grid, generator, amplitudes_mm=halved).to(field.device)
    return compose(extra, field, grid)  # a fixed point moves with ``field`` first


def without_affine_part(field: torch.Tensor, grid: Grid, mask: torch.Tensor) -> torch.Tensor:
    """``field`` minus its least-squares affine part over the voxels where ``mask`` > 0.

    What remains is the motion an ideal affine pre-alignment leaves to the deformable
    step: the pipeline gives the network the moving image after its lung-aware affine
    pre-alignment, so pairs without an affine part are the pipeline's own inputs (up to the
    affine's own error). The least-squares fit is ``u(x) ~ W^T [x, 1]`` over the lung.
    """
    inside = mask.reshape(grid.shape) > 0
    points = grid.points(dtype=torch.float64, device=field.device)
    values = field[0].movedim(0, -1).double()
    chosen = inside if bool(inside.any()) else torch.ones_like(inside)
    design = torch.cat((points[chosen], torch.ones_like(points[chosen][:, :1])), dim=1)
    weights = torch.linalg.lstsq(design, values[chosen]).solution  # (4, 3)
    affine = torch.cat((points, torch.ones_like(points[..., :1])), dim=-1) @ weights
    return (values - affine).movedim(-1, 0)[None].to(field.dtype)


# ----------------------------------------------------------------------------- inverse
def invert_field(field: torch.Tensor, grid: Grid, iterations: int = 30,
                 tolerance_mm: float = 0.02) -> tuple[torch.Tensor, float]:
    """Inverse displacement ``v`` with ``y + v(y)`` undoing ``x + u(x)``.

    Fixed-point iteration ``v(y) = -u(y + v(y))`` (as in Chen et al. 2008, Med Phys); it
    converges when the gradient of ``u`` stays below 1, which the generators here ensure.
    Grids above ``PYRAMID_VOXELS`` start from the inverse computed on a coarser grid. It
    stops when the residual is below ``tolerance_mm`` on all but ``UNSETTLED_SHARE`` of
    the voxels (the returned residual is still the maximum over all of them).
    Outside the grid ``u`` is continued by its border values.

    Returns:
        ``(v, residual)``: ``v`` on ``grid`` like ``field``, and the largest remaining
        ``|v(y) + u(y + v(y))|`` in mm.
    """
    inverse = -field
    if grid.shape[0] * grid.shape[1] * grid.shape[2] > PYRAMID_VOXELS:
        # start from the inverse on a grid half as fine: the field is smooth, so a few
        # iterations at full resolution then suffice (about 5 times faster at 192^3)
        coarse = grid.with_size(tuple((n + 1) // 2 for n in grid.size))
        coarse_inverse, _ = invert_field(resample_field(field, grid, coarse), coarse,
                                         iterations, tolerance_mm)
        inverse = resample_field(coarse_inverse, coarse, grid)
    identity = grid.points(dtype=field.dtype, device=field.device)[None]
    for _ in range(iterations):
        update, residual, unsettled = _fixed_point_step(field, grid, identity, inverse,
                                                        tolerance_mm)
        if residual < tolerance_mm or unsettled <= UNSETTLED_SHARE:
            return inverse, residual
        inverse = update
    return inverse, _fixed_point_step(field, grid, identity, inverse, tolerance_mm)[1]


def _fixed_point_step(field: torch.Tensor, grid: Grid, identity: torch.Tensor,
                      inverse: torch.Tensor, tolerance_mm: float
                      ) -> tuple[torch.Tensor, float, float]:
    """``-u(y + v(y))``, the residual of ``v`` (max ``|v(y) + u(y + v(y))|``, mm) and the
    share of voxels where it exceeds ``tolerance_mm``."""
    update = -sample(field, grid, identity + inverse.movedim(1, -1), padding="border")
    change = update - inverse
    # squared sum over channels: torch's norm(dim=1) is several times slower on (1, 3, ...)
    squared = (change * change).sum(dim=1)
    unsettled = float((squared > tolerance_mm**2).float().mean())
    return update, float(squared.max().sqrt()), unsettled
