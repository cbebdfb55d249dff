"""LungDeepReg: inhale/exhale lung CT registration in 3D Slicer (the Qt side only).

All else is the engine's: ``mrml.job`` (the background command), ``mrml.session`` (scene
work), ``mrml.dependencies``. The engine (and torch) is imported on first use, so the module
loads, and can offer to install torch, before torch is present."""

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LungDeepRegLib.mrml import choices, dependencies, job

HELP = """Registers an inhale (fixed) and an exhale (moving) lung CT: affine pre-alignment, a
multilevel deep network, instance optimisation. Shows the field as a grid transform (fixed to
moving), the warped moving image, the Jacobian map (blue compression, red expansion, green
folding), per-lobe Dice and per-landmark TRE, and writes a QA report. It runs in a background
process, as <code>PythonSlicer -m LungDeepRegLib register</code> does from a shell.
<a href="https://github.com/lungdeepreg/SlicerLungDeepReg">Documentation</a>."""

ACKNOWLEDGEMENT = """Method: Hering, van Ginneken, Heldmann, "mlVIRNET: multilevel variational
image registration network", MICCAI 2019; Hering, Häger, Moltz, Lessmann, Heldmann,
van Ginneken, "CNN-based lung CT registration with multiple anatomical constraints", Medical
Image Analysis 2021. Data: DIR-Lab (Castillo et al., Phys Med Biol 2009 and 2013); the POPI
model (Vandemeulebroucke, Sarrut, Clarysse, ICCR 2007; CREATIS / Léon Bérard Cancer Center),
source of the bundled sample; COPDGene (NHLBI U01 HL089897, U01 HL089856)."""

DEVICES = ["Auto", "CPU", "CUDA"]
ENGINE_METHODS = ("register", "batch", "demo_pair", "train")


class LungDeepReg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LungDeepReg"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["LungDeepReg developers"]
        self.parent.helpText = HELP
        self.parent.acknowledgementText = ACKNOWLEDGEMENT


@parameterNodeWrapper
class LungDeepRegParameterNode:
    fixedVolume: slicer.vtkMRMLScalarVolumeNode
    movingVolume: slicer.vtkMRMLScalarVolumeNode
    fixedLobes: slicer.vtkMRMLSegmentationNode
    movingLobes: slicer.vtkMRMLSegmentationNode
    fixedLandmarks: slicer.vtkMRMLMarkupsFiducialNode
    movingLandmarks: slicer.vtkMRMLMarkupsFiducialNode
    model: str = "auto"
    device: Annotated[str, Choice(DEVICES)] = "Auto"
    refineIterations: Annotated[int, WithinRange(-1, 5000)] = -1  # -1: the tuned schedule
    outputTransform: slicer.vtkMRMLGridTransformNode
    outputWarped: slicer.vtkMRMLScalarVolumeNode
    outputJacobian: slicer.vtkMRMLScalarVolumeNode
    placeMovingUnderTransform: bool = False
    writeReport: bool = True


class LungDeepRegLogic(ScriptedLoadableModuleLogic):
    """The engine's ``LungDeepRegLogic`` (register, batch, demo_pair, train) behind Slicer's
    logic base class. The engine is imported on first use, so the module loads without torch."""

    def getParameterNode(self):
        return LungDeepRegParameterNode(super().getParameterNode())

    def __getattr__(self, name):
        if name not in ENGINE_METHODS:
            raise AttributeError(name)
        from LungDeepRegLib.logic import LungDeepRegLogic as EngineLogic

        return getattr(EngineLogic(), name)


def pythonSlicer() -> str:
    found = job.find_python_slicer(slicer.app.applicationDirPath)
    if found is None:
        raise RuntimeError("PythonSlicer was not found next to the Slicer executable")
    return found


class LungDeepRegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None
        self.job = None  # the running registration
        self.trainJob = None
        self.runFolder = None
        self.results = None  # mrml.session.SceneResults of the last registration
        self.landmarkQA = None  # LungDeepRegGUI.landmark_qa_panel.LandmarkQAPanel
        self._gpu = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungDeepReg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LungDeepRegLogic()
        scene = slicer.mrmlScene
        self.addObserver(scene, scene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(scene, scene.EndCloseEvent, self.onSceneEndClose)
        ui = self.ui
        ui.applyButton.clicked.connect(self.onApply)
        ui.cancelButton.clicked.connect(self.onCancel)
        ui.loadSampleButton.clicked.connect(self.onLoadSample)
        ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        ui.deviceComboBox.currentIndexChanged.connect(self.updateDeviceWarning)
        ui.placeMovingCheckBox.toggled.connect(self.updateMovingPlacement)
        ui.showWarpedButton.clicked.connect(lambda: self.showOverlay(self.results.warped))
        ui.showJacobianButton.clicked.connect(lambda: self.showOverlay(self.results.jacobian))
        ui.openReportButton.clicked.connect(self.onOpenReport)
        ui.trainButton.clicked.connect(self.onTrain)
        ui.trainCancelButton.clicked.connect(self.onTrainCancel)
        from LungDeepRegGUI.landmark_qa_panel import LandmarkQAPanel  # Qt side, not a module

        self.landmarkQA = LandmarkQAPanel(ui, lambda: self._parameterNode, self.ensureDependencies)
        self.fillModels()
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.onTrainCancel()
        self.timer.stop()
        if self.landmarkQA is not None:
            self.landmarkQA.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.updateDeviceWarning()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        if self.job is not None:
            self.onCancel()
        self.landmarkQA.onSceneClose()
        self.results = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.fixedVolume = first

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._guiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            index = self.ui.modelComboBox.findData(self._parameterNode.model)
            self.ui.modelComboBox.setCurrentIndex(max(index, 0))
            self.updateButtons()

    def updateButtons(self, caller=None, event=None):
        problem = self.inputProblem()
        self.ui.applyButton.enabled = not problem and self.job is None
        self.ui.applyButton.toolTip = problem or "Register in a background process."
        self.ui.cancelButton.enabled = self.job is not None
        self.ui.trainButton.enabled = self.trainJob is None
        self.ui.trainCancelButton.enabled = self.trainJob is not None
        for button in (self.ui.showWarpedButton, self.ui.showJacobianButton):
            button.enabled = self.results is not None
        self.ui.openReportButton.enabled = bool(self.results and self.results.report)

    def inputProblem(self):
        p = self._parameterNode
        if not (p and p.fixedVolume and p.movingVolume) or p.fixedVolume == p.movingVolume:
            return "Select two different volumes."
        inputs = (p.fixedVolume, p.movingVolume)
        if any(node is not None and node in inputs for node in (p.outputWarped, p.outputJacobian)):
            return "An output volume would overwrite an input volume."
        return ""

    def fillModels(self):
        self.ui.modelComboBox.clear()
        for label, value in choices.model_choices():
            self.ui.modelComboBox.addItem(label, value)

    def onModelChanged(self, index):
        value = self.ui.modelComboBox.itemData(index)
        if self._parameterNode and value:
            self._parameterNode.model = value
        if value:
            self.ui.modelCardBrowser.setMarkdown(choices.model_card_text(value))

    def updateDeviceWarning(self, *unused):
        if self._gpu is None:
            self._gpu = dependencies.probe_gpu()
        choice = self._parameterNode.device if self._parameterNode else "Auto"
        self.ui.deviceWarningLabel.text = dependencies.device_warning(choice, *self._gpu)

    def ensureDependencies(self):
        try:
            ready = dependencies.ensure_dependencies(slicer.util.confirmOkCancelDisplay)
        except dependencies.DependencyError as error:
            slicer.util.errorDisplay(str(error))
            return False
        if ready and self.ui.modelComboBox.count <= 2:
            self.fillModels()  # torch was just installed: the model list can be read now
            self._gpu = None
        return ready

    def onApply(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Registration could not start.", waitCursor=True):
            if not self.ensureDependencies():
                return
            from LungDeepRegLib.mrml import session

            base = self.ui.outputFolderPathLineEdit.currentPath or Path(
                slicer.app.temporaryPath, "LungDeepReg")
            self.runFolder = job.make_run_folder(base, p.fixedVolume.GetName())
            try:
                inputs = session.export_inputs(
                    self.runFolder / "inputs", p.fixedVolume, p.movingVolume, p.fixedLobes,
                    p.movingLobes, p.fixedLandmarks, p.movingLandmarks)
            except Exception:
                shutil.rmtree(self.runFolder, ignore_errors=True)
                raise
            arguments = job.register_arguments(
                out=self.runFolder / "registration", model=p.model, device=p.device.lower(),
                refine_iterations=None if p.refineIterations < 0 else p.refineIterations,
                report=p.writeReport, **inputs)
            argv, env = job.build_command(pythonSlicer(), arguments)
            self.ui.logTextEdit.setPlainText(" ".join(argv))
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Starting..."
            self.job = job.BackgroundJob(argv, env, cleanup=self.runFolder).start()
            self.timer.start()
        self.updateButtons()

    def onCancel(self):
        if self.job is not None:
            self.job.cancel()  # kills the process tree and deletes the run folder
            self.job = None
            self.ui.statusLabel.text = "Cancelled: nothing was added to the scene."
        self.updateButtons()

    def onPoll(self):
        if self.job is not None:
            self.pump(self.job, self.ui.progressBar, self.ui.logTextEdit, self.ui.statusLabel)
            if self.job.finished:
                self.onRegistrationFinished()
        if self.trainJob is not None:
            self.pump(self.trainJob, self.ui.trainProgressBar, self.ui.trainLogTextEdit, None)
            if self.trainJob.finished:
                self.onTrainingFinished()
        if self.job is None and self.trainJob is None:
            self.timer.stop()

    @staticmethod
    def pump(backgroundJob, progressBar, log, status):
        for line in backgroundJob.poll():
            log.appendPlainText(line)
        if backgroundJob.progress is not None:
            fraction, step = backgroundJob.progress
            progressBar.value = int(round(100 * fraction))
            if status is not None:
                status.text = step

    def onRegistrationFinished(self):
        finished, self.job = self.job, None
        self.updateButtons()
        if finished.returncode != 0:
            finished.discard()
            self.ui.statusLabel.text = "Registration failed; see the log."
            lines = self.ui.logTextEdit.toPlainText().strip().splitlines()
            slicer.util.errorDisplay("Registration failed:\n" + "\n".join(lines[-5:]))
            return
        with slicer.util.tryWithErrorDisplay("Could not load the results.", waitCursor=True):
            self.showResults()

    def showResults(self):
        from LungDeepRegLib.mrml import session

        p = self._parameterNode
        self.results = session.load_results(
            self.runFolder / "registration", p.fixedVolume, p.movingVolume,
            transform=p.outputTransform, warped=p.outputWarped, jacobian=p.outputJacobian,
            previous=self.results)
        p.outputTransform, p.outputWarped, p.outputJacobian = (
            self.results.transform, self.results.warped, self.results.jacobian)
        self.ui.foldingLabel.text = self.results.summary()
        self.ui.statusLabel.text = f"Done. Files in {self.runFolder / 'registration'}"
        tables = self.results.tables()
        if tables:
            self.ui.tableSelector.setCurrentNode(tables[-1])
        self.updateMovingPlacement()
        self.showOverlay(self.results.warped)
        self.landmarkQA.onNewResult()  # a running QA reads the new field
        self.updateButtons()

    def showOverlay(self, foreground):
        """``foreground`` (warped or Jacobian) over the fixed volume in the slice views."""
        slicer.util.setSliceViewerLayers(
            background=self._parameterNode.fixedVolume, foreground=foreground,
            foregroundOpacity=0.5, fit=True)

    def updateMovingPlacement(self, *unused):
        """Moving under the result transform (non-destructive), or back in its own space."""
        moving = self._parameterNode.movingVolume if self._parameterNode else None
        if moving is None or self.results is None:
            return
        ours = self.results.transform.GetID()
        if self.ui.placeMovingCheckBox.checked:
            moving.SetAndObserveTransformNodeID(ours)
        elif moving.GetTransformNodeID() == ours:
            moving.SetAndObserveTransformNodeID(None)

    def onOpenReport(self):
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.results.report)))

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Could not load the sample pair.", waitCursor=True):
            if not self.ensureDependencies():
                return
            from LungDeepRegLib.mrml import session

            folder = Path(slicer.app.temporaryPath) / "LungDeepReg" / "sample"
            nodes = session.pair_to_nodes(self.logic.demo_pair(folder))
            p = self._parameterNode
            p.fixedVolume, p.movingVolume = nodes["fixed"], nodes["moving"]
            p.fixedLandmarks = nodes["fixed_landmarks"]
            p.movingLandmarks = nodes["moving_landmarks"]
            slicer.util.setSliceViewerLayers(background=nodes["fixed"], fit=True)

    def onTrain(self):
        output = self.ui.trainOutputPathLineEdit.currentPath
        if not output:
            slicer.util.errorDisplay("Choose an output folder for the training run.")
            return
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            if not self.ensureDependencies():
                return
            arguments = job.train_arguments(
                output, config=self.ui.trainConfigPathLineEdit.currentPath or None,
                manifest=self.ui.trainManifestPathLineEdit.currentPath or None,
                device=self._parameterNode.device.lower(),
                resume=self.ui.trainResumeCheckBox.checked)
            argv, env = job.build_command(pythonSlicer(), arguments)
            self.ui.trainLogTextEdit.setPlainText(" ".join(argv))
            self.ui.trainProgressBar.value = 0
            self.trainJob = job.BackgroundJob(argv, env).start()
            self.timer.start()
        self.updateButtons()

    def onTrainCancel(self):
        if self.trainJob is not None:
            self.trainJob.cancel()  # no cleanup folder: checkpoints stay for --resume
            self.trainJob = None
            self.ui.trainLogTextEdit.appendPlainText("Stopped; tick 'Resume' to continue later.")
        self.updateButtons()

    def onTrainingFinished(self):
        finished, self.trainJob = self.trainJob, None
        message = "Training finished." if finished.returncode == 0 else "Training failed."
        self.ui.trainLogTextEdit.appendPlainText(message)
        for line in self.ui.trainLogTextEdit.toPlainText().splitlines():
            if line.startswith("model written to "):  # offer the new model in the selector
                path = line.removeprefix("model written to ").strip()
                self.ui.modelComboBox.addItem(f"{Path(path).stem} (trained)", path)
        self.updateButtons()


class LungDeepRegTest(ScriptedLoadableModuleTest):
    """Registers the sample pair as the widget does: nodes written out, the engine's command
    line in a background PythonSlicer process, its outputs loaded back as nodes."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_register_sample_pair()

    def test_register_sample_pair(self):
        from LungDeepRegLib.mrml import session

        self.delayDisplay("Building the sample pair")
        folder = Path(tempfile.mkdtemp(prefix="LungDeepRegTest-", dir=slicer.app.temporaryPath))
        nodes = session.pair_to_nodes(LungDeepRegLogic().demo_pair(folder / "sample"))
        inputs = session.export_inputs(
            folder / "inputs", nodes["fixed"], nodes["moving"],
            fixed_landmarks=nodes["fixed_landmarks"], moving_landmarks=nodes["moving_landmarks"])
        self.delayDisplay("Registering in the background")
        arguments = job.register_arguments(out=folder / "out", refine_iterations=20, **inputs)
        backgroundJob = job.BackgroundJob(*job.build_command(pythonSlicer(), arguments)).start()
        log = backgroundJob.follow(slicer.app.processEvents, timeout_s=1800)
        self.assertEqual(backgroundJob.returncode, 0, "\n".join(log))
        self.assertEqual(backgroundJob.progress, (1.0, "done"))

        results = session.load_results(folder / "out", nodes["fixed"], nodes["moving"])
        landmarks = results.metrics["landmarks"]
        self.assertLess(landmarks["after"]["mean"], landmarks["before"]["mean"])
        self.assertLess(results.folding_fraction, 0.001)
        self.assertTrue(results.report.is_file())
        role = slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole()
        self.assertEqual(results.transform.GetNodeReferenceID(role), nodes["fixed"].GetID())
        dimensions = [n.GetImageData().GetDimensions() for n in (results.warped, nodes["fixed"])]
        self.assertEqual(dimensions[0], dimensions[1])
        self.assertEqual(len(results.tre_markups), 3)  # < 2 mm, 2-5 mm, >= 5 mm
        self.assertEqual(results.landmark_table.GetNumberOfRows(), landmarks["after"]["n"])
        self.delayDisplay("Test passed")
