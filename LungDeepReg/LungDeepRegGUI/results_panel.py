"""The Results section of the LungDeepReg module: a finished run's nodes in the views.

The run's nodes come from ``LungDeepRegLib.mrml.runs.Registrations``, which loads them
whether or not the module panel is shown; this file only shows them. The engine is
imported on use."""

from __future__ import annotations

from collections.abc import Callable

import qt
import slicer

from .progress import lastLines


class ResultsPanel:
    """Args:
        ui: the module's widget variables.
        registrations: the module's ``Registrations``.
        scene_parameters: returns the scene's parameter node (shown or not).
        on_new_result: called with the results once they are in the scene.
    """

    def __init__(self, ui, registrations, scene_parameters: Callable,
                 on_new_result: Callable[[object], None]) -> None:
        self.ui, self.runs = ui, registrations
        self._parameters, self._on_new_result = scene_parameters, on_new_result
        ui.placeMovingCheckBox.toggled.connect(self.updateMovingPlacement)
        ui.showWarpedButton.clicked.connect(lambda: self.showOverlay(self.runs.results.warped))
        ui.showJacobianButton.clicked.connect(
            lambda: self.showOverlay(self.runs.results.jacobian))
        ui.openReportButton.clicked.connect(self.onOpenReport)

    def updateButtons(self) -> None:
        results = self.runs.results
        for button in (self.ui.showWarpedButton, self.ui.showJacobianButton):
            button.enabled = results is not None
        self.ui.openReportButton.enabled = bool(results and results.report)

    def onFinished(self) -> None:
        """Load the finished run (its own nodes: the panel may be closed) and show it."""
        outcome = None
        with slicer.util.tryWithErrorDisplay("Could not load the results.", waitCursor=True):
            outcome = self.runs.finish(lastLines(self.ui.logTextEdit))
        if outcome is None:
            return
        self.ui.statusLabel.text = outcome.status()
        self.ui.resultWarningLabel.text = outcome.warning_text()
        if outcome.results is None:
            slicer.util.errorDisplay("Registration failed:\n" + "\n".join(outcome.log_tail))
            return
        self.show(outcome.results)

    def show(self, results) -> None:
        p = self._parameters()
        p.outputTransform, p.outputWarped, p.outputJacobian = (
            results.transform, results.warped, results.jacobian)
        self.ui.foldingLabel.text = results.summary()
        tables = results.tables()
        if tables:
            self.ui.tableSelector.setCurrentNode(tables[-1])
        self.updateMovingPlacement()
        self.showOverlay(results.warped)
        self._on_new_result(results)

    def showOverlay(self, foreground) -> None:
        """``foreground`` (warped or Jacobian) over the run's fixed volume."""
        slicer.util.setSliceViewerLayers(
            background=self.runs.last_run.request.fixed, foreground=foreground,
            foregroundOpacity=0.5, fit=True)

    def updateMovingPlacement(self, *unused) -> None:
        """Moving under the result transform (non-destructive), or back in its own space."""
        if self.runs.results is None or self.runs.last_run is None:
            return
        moving, ours = self.runs.last_run.request.moving, self.runs.results.transform.GetID()
        if self.ui.placeMovingCheckBox.checked:
            moving.SetAndObserveTransformNodeID(ours)
        elif moving.GetTransformNodeID() == ours:
            moving.SetAndObserveTransformNodeID(None)

    def onOpenReport(self) -> None:
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.runs.results.report)))
