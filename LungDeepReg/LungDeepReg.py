"""LungDeepReg: inhale/exhale lung CT registration in 3D Slicer (the Qt side only).

All else is the engine's: ``mrml.runs`` (registrations that finish whether or not the panel
is shown), ``mrml.job`` (the background command), ``mrml.session`` (scene work),
``mrml.gpu`` and ``mrml.dependencies``; the Qt panels are in ``LungDeepRegGUI``. The engine
(and torch) is imported on first use, so the module loads, and can offer to install torch,
before torch is present (or while it is broken)."""

import tempfile
from pathlib import Path
from typing import Annotated, Union

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

from LungDeepRegLib.mrml import dependencies, job, runs

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
# the refinement's similarity choices (the engine's refine_config.SIMILARITY_WEIGHTS; the
# module lists them without loading the engine, torch included)
SIMILARITIES = ["ngf", "ncc", "mind"]
# the discrete search's uses (the engine's discrete.SEARCH_MODES, the default first)
SEARCHES = ["off", "replace", "add"]
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
    # typing.Union, not "|": the wrapper's node connectors look for a typing.Union of nodes
    lungMask: Union[slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode]  # noqa: UP007
    lungMaskSegment: str = ""  # a segment ID; "": the segments named lung or lobe
    model: str = "auto"
    device: Annotated[str, Choice(DEVICES)] = "Auto"
    refineIterations: Annotated[int, WithinRange(-1, 5000)] = -1  # -1: the tuned schedule
    fixedIsExhale: bool = False
    outputSpacing: Annotated[float, WithinRange(0.0, 10.0)] = 2.0  # 0: the fixed grid
    similarity: Annotated[str, Choice(SIMILARITIES)] = "ngf"
    search: Annotated[str, Choice(SEARCHES)] = "off"
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


def workFolder() -> Path:
    return Path(slicer.app.temporaryPath) / "LungDeepReg"


class LungDeepRegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None
        self.runs = None  # mrml.runs.Registrations: runs outlive the panel (and its exit)
        # LungDeepRegGUI panels, made in setup()
        self.results = self.device = self.models = None
        self.landmarkQA = self.lungMask = self.training = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungDeepReg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LungDeepRegLogic()
        self.runs = runs.Registrations(pythonSlicer, workFolder())
        self.runs.folders.watch()  # a run's folder goes when its nodes go
        scene = slicer.mrmlScene
        self.addObserver(scene, scene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(scene, scene.EndCloseEvent, self.onSceneEndClose)
        ui.applyButton.clicked.connect(self.onApply)
        ui.cancelButton.clicked.connect(self.onCancel)
        ui.loadSampleButton.clicked.connect(self.onLoadSample)
        self.makePanels()
        self.initializeParameterNode()

    def makePanels(self):
        from LungDeepRegGUI.device_panel import DevicePanel  # Qt side, not modules
        from LungDeepRegGUI.landmark_qa_panel import LandmarkQAPanel
        from LungDeepRegGUI.lung_mask_panel import LungMaskPanel
        from LungDeepRegGUI.model_panel import ModelPanel
        from LungDeepRegGUI.results_panel import ResultsPanel
        from LungDeepRegGUI.train_panel import TrainPanel

        ui, parameters = self.ui, lambda: self._parameterNode
        self.device = DevicePanel(ui, pythonSlicer)
        self.models = ModelPanel(ui, parameters, self.device.reset)
        self.ensureDependencies = self.models.ensureDependencies
        self.landmarkQA = LandmarkQAPanel(ui, parameters, self.ensureDependencies)
        self.lungMask = LungMaskPanel(ui, parameters, self.ensureDependencies, pythonSlicer,
                                      workFolder, self.onJobsChanged)
        self.training = TrainPanel(ui, lambda: ui.deviceComboBox.currentText.lower(),
                                   self.ensureDependencies, pythonSlicer, self.onJobsChanged)
        self.results = ResultsPanel(ui, self.runs, self.logic.getParameterNode,
                                    lambda results: self.landmarkQA.onNewResult())

    def cleanup(self):
        self.runs.cancel()
        self.runs.folders.unwatch()
        self.runs.folders.clear()  # Slicer exits: its temporary run folders go too
        self.training.onCancel()
        self.timer.stop()
        self.landmarkQA.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.device.start()  # once, in a child process: no CUDA context in Slicer's
        self.onJobsChanged()

    def exit(self):
        self.setParameterNode(None)  # running jobs go on: self.runs holds their nodes

    def onSceneStartClose(self, caller, event):
        self.runs.close_scene()  # cancels a run, deletes temporary run folders
        self.lungMask.onSceneClose()
        self.landmarkQA.onSceneClose()
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
            self.models.select(self._parameterNode.model)
            self.updateButtons()

    def updateButtons(self, caller=None, event=None):
        running = self.runs.current is not None
        problem = "No parameters."
        if self._parameterNode:
            problem = runs.RunRequest.from_parameters(self._parameterNode).problem()
        self.ui.applyButton.enabled = not problem and not running
        self.ui.applyButton.toolTip = problem or "Register in a background process."
        self.ui.cancelButton.enabled = running
        self.training.updateButtons()
        self.results.updateButtons()

    def onApply(self):
        with slicer.util.tryWithErrorDisplay("Registration could not start.", waitCursor=True):
            if not self.ensureDependencies():
                return
            folder = self.ui.outputFolderPathLineEdit.currentPath
            run = self.runs.start(runs.RunRequest.from_parameters(self._parameterNode, folder))
            self.ui.logTextEdit.setPlainText(" ".join(run.job.argv))
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Starting..."
            self.ui.resultWarningLabel.text = ""
        self.onJobsChanged()

    def onCancel(self):
        if self.runs.cancel():  # returns at once; the kill finishes in the background
            self.ui.statusLabel.text = "Cancelled: nothing was added to the scene."
        self.onJobsChanged()

    def onJobsChanged(self):
        self.updateButtons()
        self.timer.start()  # onPoll stops it when nothing is left to follow

    def onPoll(self):
        """Also while the module is not shown: a run ends in the scene either way."""
        from LungDeepRegGUI.progress import pump

        if self.runs.current is not None:
            pump(self.runs.current.job, self.ui.progressBar, self.ui.logTextEdit,
                 self.ui.statusLabel)
            if self.runs.finished:
                self.results.onFinished()
                self.updateButtons()
        self.training.poll()
        self.lungMask.poll()
        self.device.update()
        busy = self.runs.current or self.training.job or self.lungMask.running
        if not busy and not self.device.waiting:
            self.timer.stop()

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Could not load the sample pair.", waitCursor=True):
            if not self.ensureDependencies():
                return
            from LungDeepRegLib.mrml import session

            nodes = session.pair_to_nodes(self.logic.demo_pair(workFolder() / "sample"))
            p = self._parameterNode
            p.fixedVolume, p.movingVolume = nodes["fixed"], nodes["moving"]
            p.fixedLandmarks = nodes["fixed_landmarks"]
            p.movingLandmarks = nodes["moving_landmarks"]
            slicer.util.setSliceViewerLayers(background=nodes["fixed"], fit=True)


class LungDeepRegTest(ScriptedLoadableModuleTest):
    """Registers the sample pair as the widget does: nodes written out, the engine's command
    line in a background PythonSlicer process, its outputs loaded back as nodes. Skipped
    (not failed) where torch does not import, as on extension build machines."""

    def setUp(self):
        problem = dependencies.torch_problem()
        if problem is not None:
            self.skipTest(f"needs PyTorch: {problem}")
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_register_sample_pair()

    def test_register_sample_pair(self):
        from LungDeepRegLib.mrml import session

        self.delayDisplay("Building the sample pair")
        folder = Path(tempfile.mkdtemp(prefix="LungDeepRegTest-", dir=slicer.app.temporaryPath))
        nodes = session.pair_to_nodes(LungDeepRegLogic().demo_pair(folder / "sample"))
        registrations = runs.Registrations(pythonSlicer, folder)
        request = runs.RunRequest(nodes["fixed"], nodes["moving"],
                                  fixed_landmarks=nodes["fixed_landmarks"],
                                  moving_landmarks=nodes["moving_landmarks"],
                                  refine_iterations=20)
        self.delayDisplay("Registering in the background")
        run = registrations.start(request)
        log = run.job.follow(slicer.app.processEvents, timeout_s=1800)
        self.assertEqual(run.job.returncode, 0, "\n".join(log))
        self.assertEqual(run.job.progress, (1.0, "done"))

        results = registrations.finish().results
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
