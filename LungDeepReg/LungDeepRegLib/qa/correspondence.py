"""Landmark pairs under a registration: predicted partners, confirmation, one-pair updates.

The predicted partner of a fixed landmark ``p`` is where the registration maps it,
``T(p) = p + u(p)`` (:func:`~LungDeepRegLib.metrics.landmarks.map_points`), shown in the
moving image's own space. A pair whose moving point is such a prediction, not yet checked
by a person, is *unconfirmed*; the user adjusts and confirms it, which turns the
registration into an annotation aid. Pairs read from landmark files are the annotator's
work and count as confirmed.

:class:`LandmarkPairs` caches the mapped fixed points, so that moving one point (a Slicer
control point drag) samples the field at that one point only: :func:`update_pair`. The
functions never modify their input; they return a new :class:`LandmarkPairs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..metrics.landmarks import map_points, target_registration_error
from ..spatial.grid import Grid
from .summary import error_group


@dataclass(frozen=True, eq=False)
class LandmarkPairs:
    """Corresponding landmarks (row k pairs with row k) and their mapped fixed points.

    Attributes:
        fixed: ``(N, 3)`` fixed-image landmarks, LPS mm.
        moving: ``(N, 3)`` moving-image landmarks, LPS mm.
        mapped: ``(N, 3)`` ``T(fixed)``: the predicted partners, LPS mm.
        confirmed: ``(N,)`` bool; False for predictions not yet checked by a person.
        labels: one label per pair (``"1"``..``"N"`` by default).
    """

    fixed: np.ndarray
    moving: np.ndarray
    mapped: np.ndarray
    confirmed: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.fixed)

    @property
    def tre(self) -> np.ndarray:
        """Per-pair TRE ``|| T(fixed_k) - moving_k ||`` (mm)."""
        return target_registration_error(self.mapped, self.moving)

    @property
    def residuals(self) -> np.ndarray:
        """``moving - T(fixed)``: what the registration leaves of each pair's motion (mm)."""
        return self.moving - self.mapped


@dataclass(frozen=True)
class PairStatus:
    """One pair's live values, for a table row after a point moved."""

    index: int
    label: str
    tre: float
    group: str
    confirmed: bool
    predicted: tuple[float, float, float]  # T(fixed), LPS mm


def predict_partners(fixed_points: np.ndarray, field: torch.Tensor, grid: Grid) -> np.ndarray:
    """Predicted moving partners ``T(p)`` of fixed points ``(N, 3)`` LPS mm."""
    return map_points(fixed_points, field, grid)


def pair_landmarks(fixed_points: np.ndarray, moving_points: np.ndarray, field: torch.Tensor,
                   grid: Grid, labels: list[str] | None = None,
                   confirmed: np.ndarray | None = None) -> LandmarkPairs:
    """Pair fixed and moving landmarks under the field (all confirmed unless told)."""
    fixed, moving = _points(fixed_points), _points(moving_points)
    if fixed.shape != moving.shape:
        raise ValueError(f"{len(fixed)} fixed but {len(moving)} moving landmarks")
    labels = [str(k + 1) for k in range(len(fixed))] if labels is None else labels
    if len(labels) != len(fixed):
        raise ValueError(f"{len(labels)} labels for {len(fixed)} pairs")
    state = np.ones(len(fixed), bool) if confirmed is None else np.asarray(confirmed, bool)
    if state.shape != (len(fixed),):
        raise ValueError(f"confirmed must hold {len(fixed)} values, got {state.shape}")
    return LandmarkPairs(fixed, moving, predict_partners(fixed, field, grid), state.copy(),
                         tuple(str(label) for label in labels))


def update_pair(pairs: LandmarkPairs, index: int, field: torch.Tensor, grid: Grid,
                fixed_point: np.ndarray | None = None, moving_point: np.ndarray | None = None,
                confirmed: bool | None = None) -> tuple[LandmarkPairs, PairStatus]:
    """One pair after a move: only this pair's fixed point is mapped again.

    Args:
        pairs: the current pairs.
        index: 0-based row of the pair.
        field, grid: the registration (fixed to moving, on the fixed grid).
        fixed_point: the fixed landmark's new position (LPS mm), if it moved. An
            unconfirmed pair's moving point follows the new prediction unless
            ``moving_point`` is given too.
        moving_point: the moving landmark's new position, if it moved.
        confirmed: the new confirmation state; unchanged when None.

    Returns:
        The new pairs and the pair's :class:`PairStatus`.
    """
    index = _row(pairs, index)
    fixed, moving, mapped = pairs.fixed.copy(), pairs.moving.copy(), pairs.mapped.copy()
    state = pairs.confirmed.copy()
    if fixed_point is not None:
        fixed[index] = _points(fixed_point)[0]
        mapped[index] = predict_partners(fixed[index:index + 1], field, grid)[0]
        if moving_point is None and not state[index]:
            moving[index] = mapped[index]
    if moving_point is not None:
        moving[index] = _points(moving_point)[0]
    if confirmed is not None:
        state[index] = bool(confirmed)
    updated = LandmarkPairs(fixed, moving, mapped, state, pairs.labels)
    return updated, pair_status(updated, index)


def add_pair(pairs: LandmarkPairs, fixed_point: np.ndarray, field: torch.Tensor, grid: Grid,
             moving_point: np.ndarray | None = None, label: str | None = None
             ) -> tuple[LandmarkPairs, PairStatus]:
    """Append a pair for a newly placed fixed point.

    Without ``moving_point`` its partner is the prediction ``T(fixed_point)``, unconfirmed;
    a given moving point is the user's own placement and counts as confirmed.
    """
    fixed = _points(fixed_point)
    mapped = predict_partners(fixed, field, grid)
    moving = mapped if moving_point is None else _points(moving_point)
    label = _next_label(pairs.labels) if label is None else str(label)
    updated = LandmarkPairs(
        np.vstack([pairs.fixed, fixed]), np.vstack([pairs.moving, moving]),
        np.vstack([pairs.mapped, mapped]), np.append(pairs.confirmed, moving_point is not None),
        (*pairs.labels, label))
    return updated, pair_status(updated, len(updated) - 1)


def remove_pair(pairs: LandmarkPairs, index: int) -> LandmarkPairs:
    """The pairs without row ``index`` (the rows after it move up by one)."""
    index = _row(pairs, index)
    keep = np.arange(len(pairs)) != index
    return LandmarkPairs(pairs.fixed[keep], pairs.moving[keep], pairs.mapped[keep],
                         pairs.confirmed[keep], pairs.labels[:index] + pairs.labels[index + 1:])


def pair_status(pairs: LandmarkPairs, index: int) -> PairStatus:
    """TRE, error group, confirmation and prediction of one pair (no field sampling)."""
    index = _row(pairs, index)
    row = slice(index, index + 1)
    tre = float(target_registration_error(pairs.mapped[row], pairs.moving[row])[0])
    return PairStatus(index, pairs.labels[index], tre, error_group(tre),
                      bool(pairs.confirmed[index]),
                      tuple(float(v) for v in pairs.mapped[index]))


def _points(points: np.ndarray) -> np.ndarray:
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
        raise ValueError(f"points must be finite (N, 3) LPS mm, got shape {points.shape}")
    return points


def _row(pairs: LandmarkPairs, index: int) -> int:
    if not -len(pairs) <= int(index) < len(pairs):
        raise IndexError(f"pair {index} out of range for {len(pairs)} pairs")
    return int(index) % len(pairs)


def _next_label(labels: tuple[str, ...]) -> str:
    """One more than the largest numeric label, so that a new pair never repeats one."""
    numbers = [int(label) for label in labels if label.isdigit()]
    return str(max(numbers, default=0) + 1)
