"""Showing a background job (``LungDeepRegLib.mrml.job.BackgroundJob``) in Qt widgets."""

from __future__ import annotations


def pump(job, progressBar, log, status=None) -> None:
    """Move the job's new output lines into ``log`` and its progress into ``progressBar``
    (and the step into ``status``, a label, when given)."""
    for line in job.poll():
        log.appendPlainText(line)
    if job.progress is not None:
        fraction, step = job.progress
        progressBar.value = int(round(100 * fraction))
        if status is not None:
            status.text = step


def lastLines(log, count: int = 5) -> list[str]:
    """The last ``count`` lines of a QPlainTextEdit log (for error messages)."""
    return log.toPlainText().strip().splitlines()[-count:]
