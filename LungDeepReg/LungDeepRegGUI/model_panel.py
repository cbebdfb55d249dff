"""The model list and model card of the Model section, and the dependency check that
Apply, the lung mask preview, the sample and the QA run first.

Both work before torch is installed, or while it is broken: the list then offers ``auto``
and ``none``, and the card area says what is wrong (``LungDeepRegLib.mrml.choices``). The
engine is imported on use."""

from __future__ import annotations

from collections.abc import Callable

import slicer


class ModelPanel:
    """Args:
        ui: the module's widget variables.
        parameters: returns the module's current parameter node, or None.
        on_torch_installed: called once torch was just installed (ask the GPU again).
    """

    def __init__(self, ui, parameters: Callable, on_torch_installed: Callable[[], None]
                 ) -> None:
        self.ui, self._parameters, self._installed = ui, parameters, on_torch_installed
        ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.fillModels()

    def fillModels(self) -> None:
        from LungDeepRegLib.mrml import choices

        self.ui.modelComboBox.clear()
        for label, value in choices.model_choices():
            self.ui.modelComboBox.addItem(label, value)

    def select(self, value: str) -> None:
        """Show the parameter node's model (the combo box is not bound to it)."""
        self.ui.modelComboBox.setCurrentIndex(max(self.ui.modelComboBox.findData(value), 0))

    def onModelChanged(self, index: int) -> None:
        from LungDeepRegLib.mrml import choices

        value = self.ui.modelComboBox.itemData(index)
        p = self._parameters()
        if p is not None and value:
            p.model = value
        if value:
            self.ui.modelCardBrowser.setMarkdown(choices.model_card_text(value))

    def ensureDependencies(self) -> bool:
        """True once the engine's packages import; asks before installing anything."""
        from LungDeepRegLib.mrml import dependencies

        try:
            ready = dependencies.ensure_dependencies(slicer.util.confirmOkCancelDisplay)
        except dependencies.DependencyError as error:  # a failed install, a broken torch
            slicer.util.errorDisplay(str(error))
            return False
        if ready and self.ui.modelComboBox.count <= 2:
            self.fillModels()  # torch was just installed: the model list can be read now
            self._installed()
        return ready
