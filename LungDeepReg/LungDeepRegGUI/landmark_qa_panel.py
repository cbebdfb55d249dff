"""The "Landmark QA" section of the LungDeepReg module: the engine's live landmark QA
(:class:`LungDeepRegLib.mrml.live_qa.LiveLandmarkQA`) behind Qt controls.

All QA work (pairing, TRE, outlier flags, predicted partners, export) is the engine's; this
file only reads the controls, starts and stops the QA object and shows its results. The
engine is imported when QA starts: torch may not be installed when the module loads."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import qt
import slicer
import vtk

# (combo box text, ``LiveLandmarkQA.export`` format; "" = .mrk.json and .csv only)
EXPORT_FORMATS = (
    ("Slicer and CSV only", ""),
    ("DIR-Lab (voxel indices)", "dirlab"),
    ("COPDgene (voxel indices)", "copdgene"),
    ("elastix points (mm)", "elastix-point"),
    ("elastix indices", "elastix-index"),
)
PAIR_COLUMN = "Pair"  # the QA table's 1-based pair number (live_qa_nodes.fill_qa_table)
OFF_TEXT = "Live QA is off."


class LandmarkQAPanel:
    """Owns the live QA object of the section and the handlers of its controls.

    Args:
        ui: the module's widget variables (``slicer.util.childWidgetVariables``).
        parameter_node_getter: returns the module's current parameter node, or None.
        ensure_dependencies: returns True once the engine's packages (torch) import;
            it may ask to install them.
    """

    def __init__(self, ui, parameter_node_getter: Callable,
                 ensure_dependencies: Callable[[], bool]) -> None:
        self.ui = ui
        self._parameters = parameter_node_getter
        self._ensure_dependencies = ensure_dependencies
        self.qa = None  # the running LiveLandmarkQA
        self._table = None  # kept across restarts, so a restart refills the same table
        self._table_tag = None
        self._pair = None  # 0-based pair of the last clicked row
        ui.qaExportFormatComboBox.clear()
        for label, value in EXPORT_FORMATS:
            ui.qaExportFormatComboBox.addItem(label, value)
        ui.qaPlaceWidget.placeMultipleMarkups = (
            slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups)
        ui.qaStartButton.toggled.connect(self.onStartToggled)
        ui.qaOutlierKSpinBox.valueChanged.connect(self.onOutlierKChanged)
        ui.qaTableView.clicked.connect(self.onRowClicked)
        ui.qaConfirmButton.clicked.connect(self.onConfirm)
        ui.qaExportButton.clicked.connect(self.onExport)
        self.updateControls()

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        """Start following the parameter node's landmark lists under its output transform.
        Missing lists are created empty, so points can be placed from scratch."""
        p = self._parameters()
        if p is None or not p.outputTransform:
            raise ValueError("No registration transform: register first, or choose the "
                             "transform in Outputs.")
        if not self._ensure_dependencies():
            return
        from LungDeepRegLib.mrml.live_qa import LiveLandmarkQA
        from LungDeepRegLib.qa import OutlierRule

        fixed = p.fixedLandmarks or _new_point_list("Fixed landmarks")
        moving = p.movingLandmarks or _new_point_list(f"{fixed.GetName()} partners",
                                                      p.movingVolume)
        if fixed == moving:
            raise ValueError("Choose two different landmark lists in Inputs.")
        p.fixedLandmarks, p.movingLandmarks = fixed, moving
        if self._table is not None and self._table.GetScene() != slicer.mrmlScene:
            self._table = None  # deleted by the user: a new table
        self.qa = LiveLandmarkQA(
            slicer.mrmlScene, fixed, moving, p.outputTransform, self._table,
            OutlierRule(k=float(self.ui.qaOutlierKSpinBox.value)),
            fixed_volume=p.fixedVolume, moving_volume=p.movingVolume)
        self._table = self.qa.table_node
        self._table_tag = self._table.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                  self.updateSummary)
        self.ui.qaTableView.setMRMLTableNode(self._table)
        self.ui.qaPlaceWidget.setCurrentNode(fixed)

    def stop(self) -> None:
        """Stop following the lists; points and table stay in the scene as they are."""
        if self.qa is not None:
            self.qa.stop()
            self.qa = None
            self.ui.qaPlaceWidget.placeModeEnabled = False  # placing now would pair nothing
        if self._table_tag is not None:
            self._table.RemoveObserver(self._table_tag)
            self._table_tag = None
        self._pair = None
        self.updateControls()

    def onSceneClose(self) -> None:
        """The scene's nodes go away: nothing of the old scene may be reused."""
        self.stop()
        self._table = None
        self.ui.qaPlaceWidget.setCurrentNode(None)
        self.ui.qaTableView.setMRMLTableNode(None)

    def onNewResult(self) -> None:
        """A registration replaced the transform's field, which the QA read once: restart."""
        if self.qa is not None:
            self.stop()
            self._startShowingErrors("Live landmark QA could not restart.")

    # ------------------------------------------------------------------ handlers
    def onStartToggled(self, checked: bool) -> None:
        if not checked:
            self.stop()
        elif self.qa is None:
            self._startShowingErrors("Live landmark QA could not start.")

    def onOutlierKChanged(self, value: float) -> None:
        if self.qa is None:
            return
        with slicer.util.tryWithErrorDisplay("Could not apply the outlier k."):
            self.qa.rule = dataclasses.replace(self.qa.rule, k=float(value))
            self.qa.refresh()  # re-runs the outlier rules, refills table and points

    def onRowClicked(self, index) -> None:
        pair = self._pairOfRow(index.row())
        if pair is None:
            return
        self._pair = pair
        self.updateControls()
        with slicer.util.tryWithErrorDisplay("Could not show the pair."):
            self.qa.jump_slices(pair)

    def onConfirm(self) -> None:
        if self.qa is None or self._pair is None or self._pair >= len(self.qa.pairs):
            return
        with slicer.util.tryWithErrorDisplay("Could not confirm the pair."):
            self.qa.confirm(self._pair)

    def onExport(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), "Export corrected landmarks")
        if not folder or self.qa is None:
            return
        combo = self.ui.qaExportFormatComboBox
        with slicer.util.tryWithErrorDisplay("Could not export the landmarks.", waitCursor=True):
            self.qa.export(folder, combo.itemData(combo.currentIndex) or None)
            text = before_after_text(self.qa.summary_before_after())
        slicer.util.infoDisplay(f"Written to {folder}\n\n{text}",
                                windowTitle="Landmark QA export")

    # ------------------------------------------------------------------ display
    def updateControls(self) -> None:
        running = self.qa is not None
        button = self.ui.qaStartButton
        blocked = button.blockSignals(True)  # showing the state is not a request
        button.checked = running
        button.blockSignals(blocked)
        button.text = "Stop live QA" if running else "Start live QA"
        for widget in (self.ui.qaPlaceWidget, self.ui.qaExportButton):
            widget.enabled = running
        self.ui.qaConfirmButton.enabled = running and self._pair is not None
        self.updateSummary()

    def updateSummary(self, caller=None, event=None) -> None:
        self.ui.qaSummaryLabel.text = summary_text(self.qa.summary) if self.qa else OFF_TEXT

    def _startShowingErrors(self, message: str) -> None:
        try:
            with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
                self.start()
        except Exception:  # shown in a message box: log it, keep the caller going
            logging.exception(message)
        self.updateControls()  # unchecks the button when QA did not start

    def _pairOfRow(self, row: int) -> int | None:
        """The 0-based pair shown in view row ``row``, read from the "Pair" column (the
        view may be sorted differently from the table node)."""
        model = self.ui.qaTableView.model()
        if self.qa is None or model is None:
            return None
        column = next((c for c in range(model.columnCount())
                       if model.headerData(c, qt.Qt.Horizontal) == PAIR_COLUMN), 0)
        try:
            pair = int(float(model.data(model.index(row, column)))) - 1
        except (TypeError, ValueError):
            return None
        return pair if 0 <= pair < len(self.qa.pairs) else None


def _new_point_list(name: str, moving_volume=None):
    """An empty point list; the moving one follows the moving volume's parent transform,
    so partners show where the moving image is shown."""
    from LungDeepRegLib.mrml import points_to_markups

    node = points_to_markups([], slicer.mrmlScene, name)
    if moving_volume is not None:
        node.SetAndObserveTransformNodeID(moving_volume.GetTransformNodeID())
    return node


def _stats_text(stats: dict) -> str:
    if not stats["n"]:
        return "no confirmed pair"
    return (f"{stats['n']} pairs, mean {stats['mean']:.2f} \u00b1 {stats['sd']:.2f} mm, "
            f"75th percentile {stats['p75']:.2f} mm, max {stats['max']:.2f} mm")


def summary_text(summary: dict) -> str:
    """The summary label: TRE of the confirmed pairs, flagged and unconfirmed counts."""
    return (f"Confirmed: {_stats_text(summary)}. Flagged: {summary['n_flagged']}; "
            f"unconfirmed: {summary['n_unconfirmed']}.")


def before_after_text(summary: dict) -> str:
    """``LiveLandmarkQA.summary_before_after()`` as lines for a message box."""
    return (f"TRE of the confirmed pairs\nbefore correction: "
            f"{_stats_text(summary['before_correction'])}\nafter correction: "
            f"{_stats_text(summary['after_correction'])}\n"
            f"corrected pairs: {summary.get('corrected_pairs', 0)}")
