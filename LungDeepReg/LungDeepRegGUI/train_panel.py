"""The Train tab of the LungDeepReg module: ``lungdeepreg train`` in a background process.

*Stop* keeps the checkpoints, so *Resume* continues later; a finished training offers its
model in the model list of the Register tab. The engine is imported on use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import slicer

from .progress import pump

MODEL_WRITTEN = "model written to "  # the train command's last line names the model


class TrainPanel:
    """Args:
        ui: the module's widget variables.
        device: returns the device choice ("auto", "cpu", "cuda").
        ensure_dependencies: returns True once the engine's packages import.
        interpreter: returns the background interpreter (PythonSlicer).
        on_change: called when a job starts or ends (buttons, timer).
    """

    def __init__(self, ui, device: Callable[[], str], ensure_dependencies: Callable[[], bool],
                 interpreter: Callable[[], str], on_change: Callable[[], None]) -> None:
        self.ui, self._device, self._ensure = ui, device, ensure_dependencies
        self._interpreter, self._changed = interpreter, on_change
        self.job = None
        ui.trainButton.clicked.connect(self.onTrain)
        ui.trainCancelButton.clicked.connect(self.onCancel)

    def updateButtons(self) -> None:
        self.ui.trainButton.enabled = self.job is None
        self.ui.trainCancelButton.enabled = self.job is not None

    def onTrain(self) -> None:
        output = self.ui.trainOutputPathLineEdit.currentPath
        if not output:
            slicer.util.errorDisplay("Choose an output folder for the training run.")
            return
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            if not self._ensure():
                return
            from LungDeepRegLib.mrml import job

            arguments = job.train_arguments(
                output, config=self.ui.trainConfigPathLineEdit.currentPath or None,
                manifest=self.ui.trainManifestPathLineEdit.currentPath or None,
                device=self._device(), resume=self.ui.trainResumeCheckBox.checked)
            argv, env = job.build_command(self._interpreter(), arguments)
            self.ui.trainLogTextEdit.setPlainText(" ".join(argv))
            self.ui.trainProgressBar.value = 0
            self.job = job.BackgroundJob(argv, env).start()
        self._changed()

    def onCancel(self) -> None:
        if self.job is not None:
            self.job.cancel(wait=False)  # no cleanup folder: checkpoints stay for --resume
            self.job = None
            self.ui.trainLogTextEdit.appendPlainText("Stopped; tick 'Resume' to continue later.")
        self._changed()

    def poll(self) -> None:
        if self.job is None:
            return
        pump(self.job, self.ui.trainProgressBar, self.ui.trainLogTextEdit)
        if self.job.finished:
            self.onFinished()

    def onFinished(self) -> None:
        finished, self.job = self.job, None
        message = "Training finished." if finished.returncode == 0 else "Training failed."
        self.ui.trainLogTextEdit.appendPlainText(message)
        for line in self.ui.trainLogTextEdit.toPlainText().splitlines():
            if line.startswith(MODEL_WRITTEN):  # offer the new model in the selector
                path = line.removeprefix(MODEL_WRITTEN).strip()
                self.ui.modelComboBox.addItem(f"{Path(path).stem} (trained)", path)
        self._changed()
