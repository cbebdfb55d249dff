"""Target registration error (TRE) on corresponding landmarks, in mm.

Conventions: landmarks are ``(N, 3)`` LPS mm (see :mod:`LungDeepRegLib.io.landmarks`); a
registration result is a displacement field ``u`` ``(1, 3, z, y, x)`` in LPS mm on the FIXED
grid mapping fixed to moving, ``T(p) = p + u(p)``. The TRE of pair k is
``|| T(fixed_k) - moving_k ||`` in mm; with no field, T is the identity (initial distance).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import InputError
from ..spatial.grid import Grid
from ..spatial.sampling import sample_points

_LISTED = 10  # offending landmarks named in a message before "... and N more"


@dataclass(frozen=True)
class TREProtocol:
    """How a TRE was measured; report it next to every number.

    Attributes:
        round_to_voxel: snap each mapped fixed landmark to the nearest voxel centre of the
            moving image grid before measuring (the DIR-Lab protocol as some published
            numbers apply it). Off by default: continuous positions.
        fixed: which breathing phase is the fixed image ("inhale", e.g. DIR-Lab T00 or
            COPDgene iBH, or "exhale"); recorded only, it does not change the computation.
    """

    round_to_voxel: bool = False
    fixed: Literal["inhale", "exhale"] = "inhale"

    def __post_init__(self) -> None:
        if self.fixed not in ("inhale", "exhale"):
            raise ValueError(f"fixed must be 'inhale' or 'exhale', got {self.fixed!r}")

    @classmethod
    def dirlab(cls, round_to_voxel: bool = True) -> TREProtocol:
        """DIR-Lab 4DCT / COPDgene protocol: T00 (iBH, inhale) fixed, T50 (eBH) moving,
        1-based indices at ``(i - 1) * spacing``, mapped points rounded to the voxel grid."""
        return cls(round_to_voxel=round_to_voxel, fixed="inhale")

    def to_dict(self) -> dict:
        return asdict(self)


def map_points(points_lps: np.ndarray, field: torch.Tensor, grid: Grid) -> np.ndarray:
    """``p + u(p)`` for ``(N, 3)`` LPS mm points; ``u`` trilinear, border-extended outside.

    Args:
        points_lps: fixed-image points, LPS mm.
        field: ``(1, 3, z, y, x)`` displacement in LPS mm on ``grid`` (fixed to moving).
        grid: the fixed grid the field lives on.
    """
    points = _as_points(points_lps)
    if field.dim() != 5 or field.shape[:2] != (1, 3) or tuple(field.shape[2:]) != grid.shape:
        raise ValueError(f"field must be (1, 3, {', '.join(map(str, grid.shape))}), "
                         f"got {tuple(field.shape)}")
    query = torch.as_tensor(points, dtype=field.dtype, device=field.device)
    with torch.no_grad():
        shift = sample_points(field[0], grid, query, padding="border")
    # add in float64 so a zero field returns the points exactly
    return points + shift.detach().cpu().double().numpy()


def snap_to_voxel(points_lps: np.ndarray, grid: Grid) -> np.ndarray:
    """Nearest voxel centre of ``grid`` (halves round up) for each LPS mm point."""
    index = np.floor(grid.physical_to_index(_as_points(points_lps)) + 0.5)
    return grid.index_to_physical(index)


def target_registration_error(
    fixed_points: np.ndarray,
    moving_points: np.ndarray,
    field: torch.Tensor | None = None,
    grid: Grid | None = None,
    protocol: TREProtocol = TREProtocol(),  # noqa: B008 - frozen, hence a safe default
    moving_grid: Grid | None = None,
) -> np.ndarray:
    """Per-pair TRE ``|| T(fixed_k) - moving_k ||`` in mm, shape ``(N,)``.

    Args:
        fixed_points, moving_points: ``(N, 3)`` LPS mm, row k pairs with row k.
        field: displacement on ``grid`` (fixed to moving); None measures the identity.
        grid: the fixed grid (required with ``field``).
        protocol: see :class:`TREProtocol`.
        moving_grid: grid whose voxel centres ``round_to_voxel`` snaps to (default:
            ``grid``, which is the moving grid too for DIR-Lab and COPDgene).
    """
    fixed, moving = _as_points(fixed_points), _as_points(moving_points)
    if fixed.shape != moving.shape:
        raise ValueError(f"{len(fixed)} fixed but {len(moving)} moving landmarks")
    if field is not None and grid is None:
        raise ValueError("a displacement field needs the fixed grid it lives on")
    mapped = fixed if field is None else map_points(fixed, field, grid)
    if protocol.round_to_voxel:
        snap_grid = moving_grid or grid
        if snap_grid is None:
            raise ValueError("round_to_voxel needs a grid to round to")
        mapped = snap_to_voxel(mapped, snap_grid)
    return np.linalg.norm(mapped - moving, axis=1)


def summarize(
    errors: np.ndarray, excluded: int = 0, protocol: TREProtocol | None = None
) -> dict:
    """Summary statistics of per-landmark errors (mm).

    ``sd`` is the population SD (ddof 0), as in the DIR-Lab tables; ``excluded`` counts
    pairs left out (e.g. outside the image); NaN statistics when no pair is left.
    """
    errors = np.asarray(errors, dtype=np.float64).ravel()
    keys = ("mean", "sd", "median", "p75", "p95", "max")
    if errors.size == 0:
        stats = dict.fromkeys(keys, float("nan"))
    else:
        values = (errors.mean(), errors.std(ddof=0), np.median(errors),
                  np.percentile(errors, 75), np.percentile(errors, 95), errors.max())
        stats = {key: float(value) for key, value in zip(keys, values, strict=True)}
    summary = {**stats, "n": int(errors.size), "excluded": int(excluded)}
    if protocol is not None:
        summary["protocol"] = protocol.to_dict()
    return summary


def check_inside(
    points: np.ndarray, grid: Grid, path: str | Path | None = None, exclude: bool = False,
    margin: float = 0.5,
) -> np.ndarray:
    """Boolean keep-mask of landmarks inside ``grid`` (``margin`` voxels beyond the
    outer voxel centres; 0.5 = the image's edge).

    Outside landmarks raise :class:`InputError` on ``path`` listing their 1-based numbers
    and LPS positions; with ``exclude=True`` a warning names them instead and the mask
    marks them False, so that callers measure only the kept pairs and report
    ``(~mask).sum()`` as excluded.
    """
    points = _as_points(points)
    keep = np.asarray(grid.contains(points, margin=margin), dtype=bool)
    if keep.all():
        return keep
    outside = np.flatnonzero(~keep)
    listed = "; ".join(f"#{k + 1} ({', '.join(f'{v:.2f}' for v in points[k])})"
                       for k in outside[:_LISTED])
    more = f"; ... and {len(outside) - _LISTED} more" if len(outside) > _LISTED else ""
    problem = (f"{len(outside)} of {len(points)} landmarks lie outside the image "
               f"(LPS mm): {listed}{more}")
    if not exclude:
        raise InputError(path, problem)
    warnings.warn(f"{path}: {problem}; excluded from the metrics", stacklevel=2)
    return keep


def _as_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    return points
