"""The lung mask rows of the Inputs section: the mask selector's segment list and the
"Show lung mask" toggle (the chosen mask, or the automatic one computed in the background by
``LungDeepRegLib.mrml.mask_preview``). The engine is imported on use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import slicer


class LungMaskPanel:
    """Args:
        ui: the module's widget variables.
        parameters: returns the module's current parameter node, or None.
        ensure_dependencies: returns True once the engine's packages import.
        interpreter: returns the background interpreter (PythonSlicer).
        folder: returns the folder for short-lived working files.
        on_change: called when a computation starts (the widget's timer polls it).
    """

    def __init__(self, ui, parameters: Callable, ensure_dependencies: Callable[[], bool],
                 interpreter: Callable[[], str], folder: Callable[[], Path],
                 on_change: Callable[[], None]) -> None:
        self.ui, self._parameters, self._ensure = ui, parameters, ensure_dependencies
        self._interpreter, self._folder, self._changed = interpreter, folder, on_change
        self.preview = None  # LungMaskPreview, made on first use
        self._shown = None  # the chosen mask node shown by the toggle
        # the node comes with the signal: the parameter node may not have it yet
        ui.lungMaskSelector.currentNodeChanged.connect(self.onMaskChanged)
        ui.lungSegmentComboBox.currentIndexChanged.connect(self.onSegmentChanged)
        ui.showLungMaskCheckBox.toggled.connect(self.onShowToggled)

    @property
    def running(self) -> bool:
        return self.preview is not None and self.preview.running

    def onMaskChanged(self, node) -> None:
        from LungDeepRegLib.mrml import masks

        combo = self.ui.lungSegmentComboBox
        blocked = combo.blockSignals(True)  # refilling is not a choice
        combo.clear()
        for label, value in masks.segment_choices(node):
            combo.addItem(label, value)
        p = self._parameters()
        combo.setCurrentIndex(max(combo.findData(p.lungMaskSegment if p else ""), 0))
        combo.blockSignals(blocked)
        combo.enabled = node is not None and node.IsA("vtkMRMLSegmentationNode")
        if self.ui.showLungMaskCheckBox.checked:
            self.onShowToggled(True)

    def onSegmentChanged(self, index: int) -> None:
        p = self._parameters()
        if p is not None:
            p.lungMaskSegment = self.ui.lungSegmentComboBox.itemData(index) or ""

    def onShowToggled(self, checked: bool) -> None:
        from LungDeepRegLib.mrml import masks

        masks.show_mask(self._shown, False)
        self._shown = None
        if self.preview is not None:
            self.preview.hide()
        p = self._parameters()
        if not checked or p is None:
            return
        if not p.fixedVolume:
            self.ui.statusLabel.text = "Select the fixed volume to see its lung mask."
            return
        slicer.util.setSliceViewerLayers(background=p.fixedVolume)
        if p.lungMask:
            self._shown = p.lungMask
            masks.show_mask(p.lungMask, True)
            return
        with slicer.util.tryWithErrorDisplay("Could not compute the lung mask.",
                                             waitCursor=True):
            if not self._ensure():
                return
            self._showAutomatic(p.fixedVolume)

    def _showAutomatic(self, fixed) -> None:
        from LungDeepRegLib.mrml.mask_preview import LungMaskPreview

        if self.preview is None:
            self.preview = LungMaskPreview(self._interpreter, self._folder())
        if self.preview.show(fixed):
            self.ui.statusLabel.text = "Computing the automatic lung mask..."
            self._changed()

    def poll(self) -> None:
        if self.preview is None:
            return
        message = self.preview.poll()
        if message:
            self.ui.statusLabel.text = message

    def onSceneClose(self) -> None:
        if self.preview is not None:
            self.preview.cancel()
        self.preview = self._shown = None  # their nodes are gone
        blocked = self.ui.showLungMaskCheckBox.blockSignals(True)
        self.ui.showLungMaskCheckBox.checked = False
        self.ui.showLungMaskCheckBox.blockSignals(blocked)
