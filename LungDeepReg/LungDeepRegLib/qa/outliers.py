"""Outlier flags for landmark pairs: possible annotation errors, most severe first.

Two robust rules, each with a modified z-score ``z = (v - median) / (1.4826 MAD)``
(Iglewicz & Hoaglin 1993) over the confirmed pairs, flagging ``z > k``:

* **residual**: the pair's TRE after registration, ``|| moving - T(fixed) ||``, is far above
  the rest. Such a pair is a registration failure or a landmark error.
* **local**: the pair's residual vector ``moving - T(fixed)`` differs from the (component-
  wise median) residual vector of its nearest fixed-landmark neighbours. Since
  ``moving - fixed = u(fixed) + residual``, this compares the pair's displacement with the
  registration field at the point corrected by what the field misses around it: a local
  registration error is shared by the neighbours and not flagged, a pair that moves unlike
  its neighbours is (the typical slip or mix-up of an annotator). With the identity field
  it compares the pair's displacement with its neighbours' displacements.

Why ``k = 3.5``: it is Iglewicz & Hoaglin's recommended cut for modified z-scores. The
TRE of clean pairs with isotropic Gaussian annotation noise follows a Maxwell law, for
which median + 3.5 scaled MADs is about 2.5 times the mean error and flags 0.15 % of the
clean pairs (k = 3: 0.5 %; k = 4: 0.04 %), while a 5 mm slip stands out from 1 mm noise.
The median and MAD tolerate up to half the pairs being wrong. ``min_excess_mm`` keeps
sub-millimetre differences, within any observer's precision, from being flagged when all
errors are nearly equal (MAD near 0): the scale is at least ``min_excess_mm / k``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .correspondence import LandmarkPairs
from .summary import error_group

MIN_PAIRS = 5  # fewer confirmed pairs give no meaningful median and MAD: nothing flagged
MAD_TO_SD = 1.4826  # the scaled MAD estimates the SD of a normal distribution
_CHUNK = 2048  # rows of the neighbour search done at once (bounded memory)


@dataclass(frozen=True)
class OutlierRule:
    """Settings of the outlier rules (see the module docstring for the choices)."""

    k: float = 3.5
    neighbours: int = 6
    min_excess_mm: float = 1.0

    def __post_init__(self) -> None:
        if not self.k > 0 or self.neighbours < 1 or self.min_excess_mm < 0:
            raise ValueError(f"invalid outlier rule {self}: need k > 0, neighbours >= 1, "
                             "min_excess_mm >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PointQA:
    """QA of one pair. ``index`` is the 0-based row; z-scores are NaN when fewer than
    ``MIN_PAIRS`` pairs are confirmed; ``swap_partner`` is the row whose moving point
    this pair's prediction fits, when the two look swapped."""

    index: int
    label: str
    tre: float
    group: str
    confirmed: bool
    residual_z: float
    local_mismatch_mm: float
    local_z: float
    flags: tuple[str, ...]
    reasons: tuple[str, ...]
    swap_partner: int | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def severity(self) -> float:
        """The larger z-score of the two rules (-inf when undefined)."""
        scores = [z for z in (self.residual_z, self.local_z) if math.isfinite(z)]
        return max(scores, default=-math.inf)

    def to_dict(self) -> dict:
        return {**asdict(self), "flags": list(self.flags), "reasons": list(self.reasons),
                "flagged": self.flagged, "severity": self.severity}


@dataclass(frozen=True)
class OutlierReport:
    """Every pair's QA, flagged pairs first, each part sorted by decreasing severity."""

    points: tuple[PointQA, ...]
    rule: OutlierRule
    residual_threshold_mm: float
    local_threshold_mm: float

    @property
    def flagged(self) -> tuple[PointQA, ...]:
        return tuple(point for point in self.points if point.flagged)

    def by_index(self) -> list[PointQA]:
        """The pairs in row order (``by_index()[k].index == k``)."""
        return sorted(self.points, key=lambda point: point.index)

    def to_dict(self) -> dict:
        return {"rule": self.rule.to_dict(), "residual_threshold_mm": self.residual_threshold_mm,
                "local_threshold_mm": self.local_threshold_mm,
                "n_pairs": len(self.points), "n_flagged": len(self.flagged),
                "points": [point.to_dict() for point in self.points]}


def find_outliers(pairs: LandmarkPairs, rule: OutlierRule | None = None) -> OutlierReport:
    """Flag the pairs of ``pairs`` by both rules (numpy only: fast enough for every drag)."""
    rule = rule or OutlierRule()
    reference = pairs.confirmed
    tre = pairs.tre
    residual_limit, residual_z = _robust_threshold(tre, reference, rule)
    mismatch = local_mismatch(pairs.fixed, pairs.residuals, reference, rule.neighbours)
    local_limit, local_z = _robust_threshold(mismatch, reference, rule)
    count = min(rule.neighbours, int(reference.sum()) - 1)
    points = []
    for k in range(len(pairs)):
        flags, reasons, partner = [], [], None
        if tre[k] > residual_limit:
            flags.append("residual")
            reasons.append(f"TRE {tre[k]:.1f} mm above the median + {rule.k:g} MAD limit "
                           f"{residual_limit:.1f} mm")
        if mismatch[k] > local_limit:
            flags.append("local")
            reasons.append(f"moves {mismatch[k]:.1f} mm unlike its {count} nearest "
                           f"neighbours (limit {local_limit:.1f} mm)")
        if flags:
            partner = swap_partner(pairs, k, residual_limit)
            if partner is not None:
                reasons.append(f"its moving point fits pair {pairs.labels[partner]} and vice "
                               "versa: swapped?")
        points.append(PointQA(k, pairs.labels[k], float(tre[k]), error_group(float(tre[k])),
                              bool(reference[k]), float(residual_z[k]), float(mismatch[k]),
                              float(local_z[k]), tuple(flags), tuple(reasons), partner))
    points.sort(key=lambda point: (not point.flagged, -point.severity, point.index))
    return OutlierReport(tuple(points), rule, residual_limit, local_limit)


def robust_location_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and scaled MAD (``1.4826 * median |v - median|``) of ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    median = float(np.median(values))
    return median, MAD_TO_SD * float(np.median(np.abs(values - median)))


def local_mismatch(fixed: np.ndarray, residuals: np.ndarray, reference: np.ndarray,
                   neighbours: int) -> np.ndarray:
    """``|| r_k - median_j r_j ||`` over the ``neighbours`` nearest reference pairs ``j``
    (by fixed position, ``k`` itself left out); zeros when there are too few pairs."""
    candidates = np.flatnonzero(reference)
    count = min(neighbours, len(candidates) - 1)
    if count < 1:
        return np.zeros(len(fixed))
    nearest = nearest_neighbours(fixed, candidates, count)
    local = np.median(residuals[nearest], axis=1)
    return np.linalg.norm(residuals - local, axis=1)


def nearest_neighbours(points: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """``(N, count)`` rows of ``points`` among ``candidates`` nearest to each point, the
    point itself excluded (unordered within a row)."""
    result = np.empty((len(points), count), dtype=np.int64)
    pool = points[candidates]
    for start in range(0, len(points), _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, len(points)))
        distance = ((points[rows, None, :] - pool[None]) ** 2).sum(axis=-1)
        distance[rows[:, None] == candidates[None, :]] = np.inf
        result[rows] = candidates[np.argpartition(distance, count - 1, axis=1)[:, :count]]
    return result


def swap_partner(pairs: LandmarkPairs, k: int, limit_mm: float) -> int | None:
    """The pair ``j`` whose moving point lies nearest ``T(fixed_k)``, if swapping the two
    moving points brings both TREs within ``limit_mm`` and at least halves their sum
    (a loose limit, as without registration, would otherwise pair any neighbours)."""
    if len(pairs) < 2 or not math.isfinite(limit_mm):
        return None
    distance = np.linalg.norm(pairs.moving - pairs.mapped[k], axis=1)
    distance[k] = np.inf
    j = int(np.argmin(distance))
    back = float(np.linalg.norm(pairs.moving[k] - pairs.mapped[j]))
    now = float(np.linalg.norm(pairs.residuals[[k, j]], axis=1).sum())
    fits = max(distance[j], back) <= limit_mm and distance[j] + back <= 0.5 * now
    return j if fits else None


def _robust_threshold(values: np.ndarray, reference: np.ndarray, rule: OutlierRule
                      ) -> tuple[float, np.ndarray]:
    """Limit ``median + k * scale`` over the reference values and every value's z-score;
    the scale is at least ``min_excess_mm / k`` (so that ``z > k`` means flagged)."""
    if int(np.count_nonzero(reference)) < MIN_PAIRS:
        return math.inf, np.full(len(values), math.nan)
    median, scale = robust_location_scale(values[reference])
    scale = max(scale, rule.min_excess_mm / rule.k, 1e-12)
    return median + rule.k * scale, (values - median) / scale
