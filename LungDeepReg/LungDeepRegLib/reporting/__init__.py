"""QA report of one registration: figures (PNG) and a self-contained ``report.html``.

Public API: :class:`ReportInputs` and :func:`write_report`. The report shows the images in
three planes before and after, colour overlays and checkerboards, difference images, the
Jacobian determinant with folds marked, the landmark TRE and the per-lobe overlap, with a
summary box of key numbers at the top. Sections without data are replaced by a note.
"""

from .report import FIGURES, REPORT_NAME, ReportInputs, write_report
from .text import LOBE_NAMES, label_name

__all__ = ["FIGURES", "LOBE_NAMES", "REPORT_NAME", "ReportInputs", "label_name", "write_report"]
