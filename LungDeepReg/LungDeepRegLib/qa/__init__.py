"""Landmark QA: predicted correspondences, live per-pair TRE, outlier flags and export.

Pure functions on numpy landmark arrays (``(N, 3)`` LPS mm) and a registration field
(``(1, 3, z, y, x)`` LPS mm, fixed to moving, on a :class:`~LungDeepRegLib.spatial.Grid`),
for the ``lungdeepreg qa-landmarks`` command and for Slicer's live landmark table:
:func:`pair_landmarks` once, then :func:`update_pair` / :func:`add_pair` on every point
move (one field sample) and :func:`find_outliers` (numpy only) to refresh the flags.
"""

from .correspondence import (
    LandmarkPairs,
    PairStatus,
    add_pair,
    pair_landmarks,
    pair_status,
    predict_partners,
    remove_pair,
    update_pair,
)
from .export import (
    export_landmark_set,
    markups_values,
    qa_document,
    read_markups_values,
    write_qa_json,
    write_qa_table,
)
from .outliers import OutlierReport, OutlierRule, PointQA, find_outliers
from .summary import GROUP_NAMES, correction_summary, error_group, group_counts, tre_summary

__all__ = [
    "GROUP_NAMES", "LandmarkPairs", "OutlierReport", "OutlierRule", "PairStatus", "PointQA",
    "add_pair", "correction_summary", "error_group", "export_landmark_set", "find_outliers",
    "group_counts", "markups_values", "pair_landmarks", "pair_status", "predict_partners",
    "qa_document", "read_markups_values", "remove_pair", "tre_summary", "update_pair",
    "write_qa_json", "write_qa_table",
]
