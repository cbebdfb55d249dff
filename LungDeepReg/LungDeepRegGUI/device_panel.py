"""The device line of the Model section: is there a CUDA GPU with enough free memory?

The answer comes from ``LungDeepRegLib.mrml.gpu.GpuProbe``, a short child process, so no
CUDA context is ever created in Slicer's own process and a broken torch cannot break the
panel. The engine is imported on use."""

from __future__ import annotations

from collections.abc import Callable


class DevicePanel:
    """Args:
        ui: the module's widget variables.
        interpreter: returns the background interpreter (PythonSlicer).
    """

    def __init__(self, ui, interpreter: Callable[[], str]) -> None:
        self.ui, self._interpreter = ui, interpreter
        self.probe = None
        ui.deviceComboBox.currentIndexChanged.connect(self.update)

    @property
    def waiting(self) -> bool:
        return self.probe is not None and self.probe.result is None

    def start(self) -> None:
        """Ask once (again after :meth:`reset`); :meth:`update` shows the answer."""
        if self.probe is not None:
            return
        from LungDeepRegLib.mrml.gpu import GpuProbe

        try:
            self.probe = GpuProbe(self._interpreter()).start()
        except (OSError, RuntimeError) as error:  # no PythonSlicer, cannot start a process
            self.ui.deviceWarningLabel.text = f"The GPU check could not start: {error}"

    def reset(self) -> None:
        """torch was just installed: ask again."""
        self.probe = None
        self.start()

    def update(self, *unused) -> None:
        """The combo box's own text, not the parameter node's: this slot is connected
        before the parameter node's, so it runs before the parameter has the new choice."""
        status = self.probe.poll() if self.probe is not None else None
        if status is not None:
            self.ui.deviceWarningLabel.text = status.warning(self.ui.deviceComboBox.currentText)
