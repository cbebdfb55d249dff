"""Landmark error groups and summaries, before and after the user corrects landmarks.

The groups follow the usual reading of lung registration TRE: below 2 mm is within about
two voxels and the inter-observer spread of expert landmarks (DIR-Lab reports about 1 mm),
2 to 5 mm deserves a look, above 5 mm is a failure of the registration or of the landmark.
"""

from __future__ import annotations

import numpy as np

from ..metrics.landmarks import summarize

GROUP_EDGES_MM = (2.0, 5.0)
GROUP_NAMES = ("< 2 mm", "2-5 mm", "> 5 mm")


def error_group(tre_mm: float, edges: tuple[float, float] = GROUP_EDGES_MM) -> str:
    """Group name of one TRE: ``< 2 mm``, ``2-5 mm`` (both edges included) or ``> 5 mm``."""
    if tre_mm < edges[0]:
        return GROUP_NAMES[0]
    return GROUP_NAMES[1] if tre_mm <= edges[1] else GROUP_NAMES[2]


def group_counts(tre_mm: np.ndarray, edges: tuple[float, float] = GROUP_EDGES_MM
                 ) -> dict[str, int]:
    """How many pairs fall in each error group (every group listed, zeros included)."""
    counts = dict.fromkeys(GROUP_NAMES, 0)
    for value in np.asarray(tre_mm, dtype=np.float64).ravel():
        counts[error_group(float(value), edges)] += 1
    return counts


def tre_summary(tre_mm: np.ndarray) -> dict:
    """:func:`~LungDeepRegLib.metrics.landmarks.summarize` (mean, SD, p75, max, ...) plus
    the error-group counts."""
    return {**summarize(tre_mm), "groups": group_counts(tre_mm)}


def correction_summary(tre_before_mm: np.ndarray, tre_after_mm: np.ndarray,
                       changed: np.ndarray | None = None) -> dict:
    """TRE statistics of the landmark set as loaded and as corrected.

    Args:
        tre_before_mm: per-pair TRE of the original landmarks.
        tre_after_mm: per-pair TRE after the corrections (pairs may have been added or
            removed, so the lengths may differ).
        changed: optional boolean mask of the corrected pairs (recorded as a count).
    """
    summary = {"before_correction": tre_summary(tre_before_mm),
               "after_correction": tre_summary(tre_after_mm)}
    if changed is not None:
        summary["corrected_pairs"] = int(np.count_nonzero(changed))
    return summary
