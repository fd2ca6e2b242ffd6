"""AttentionMambaSeg: 3D Slicer module segmenting volumes with Attention-Mamba (arXiv 2402.02286).

Module, parameter node, Widget (GUI only), Logic (usable from the Python console) and Test. The work is
done by ``AttentionMambaSegLib`` (its ``slicer`` and ``mrml`` packages for this module). At start-up this file
imports only Slicer, Qt, the standard library and the torch-free parts of ``AttentionMambaSegLib.slicer``;
PyTorch and any other third-party package are imported only when needed, and nothing is installed.

Prediction runs in a child process (the package's own ``segment`` command under Slicer's Python,
``AttentionMambaSegLib.slicer.child_process``), never in a thread of the Slicer process: PythonQt holds the
GIL while Slicer idles, so a Python thread would barely advance. MRML is read and written on the main thread.

Supported Slicer versions: 5.10 and newer (Python 3.12; ``vtkSegment.SetTerminology``).
"""

import logging
import os
from typing import TYPE_CHECKING

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _, translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from AttentionMambaSegLib.slicer import self_test
from AttentionMambaSegLib.slicer.logic import ModuleLogic
from AttentionMambaSegLib.slicer.panel import ModelsPanel
from AttentionMambaSegLib.slicer.startup import register_sample_data, register_terminology

if TYPE_CHECKING:
    from AttentionMambaSegLib.slicer.jobs import ChildProcessJob

PROJECT_URL = "https://github.com/attention-mamba-seg/SlicerAttentionMambaSeg"
#: Oldest supported Slicer (major, minor): Python 3.12, vtkSegment.SetTerminology.
MINIMUM_SLICER_VERSION = (5, 10)
DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Speed choices of the panel: "" is the model's own choice for the device (model.json ``inference``).
SPEED_CHOICES = ("", "fast", "accurate")
SETTINGS_PREFIX = "AttentionMambaSeg/"


#
# Module
#


class AttentionMambaSeg(ScriptedLoadableModule):
    """Module metadata: title, category, help and acknowledgement."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Attention-Mamba Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["AttentionMambaSeg developers (AttentionMambaSeg project)"]
        self.parent.helpText = _(
            "Segment a volume with an Attention-Mamba network (a 2D network applied slice by slice).<br>"
            "Choose the input volume and a model, then press <b>Segment</b>. The result is a new "
            "segmentation (or an update of the selected one: segments you edited by hand are never "
            "overwritten). Segments are marked 'in progress': review them before use. Segments the model is "
            "unsure of (low confidence, or not found) are marked 'flagged' and named '... (needs review)'; the "
            "status line says why. <b>Speed</b>: Fast needs fewer network passes per slice, Accurate averages "
            "flipped copies; Model default is the model's own choice for the device. "
            "Prediction runs in a separate process; Cancel stops it at once and leaves the scene unchanged.<br>"
            "Needs Slicer 5.10 or newer. PyTorch is installed through the PyTorch extension, and safetensors, "
            "numba and pooch into Slicer's Python, on the first run after one confirmation. A model is "
            "downloaded (about 28 MB, after a confirmation) the first time it is used; without internet, "
            "use Import model... with its file.<br>"
            'Not for clinical use. See the <a href="{url}">project page</a>.'
        ).format(url=PROJECT_URL)
        self.parent.acknowledgementText = _(
            'Network: Zhang et al., "Attention-Mamba: A Mamba-Enhanced Multi-Scale Parallel Inference '
            'Network for Medical Image Segmentation", arXiv:2402.02286. '
            "Code licence: Apache-2.0. Model licences: the cardiac models trained on ACDC (Bernard et "
            "al., IEEE TMI 2018) are licensed CC BY-NC-SA 4.0 (no commercial use); hippocampus models "
            "trained on the Medical Segmentation Decathlon Task04 (Antonelli et al., Nat. Commun. 2022) "
            "CC BY-SA 4.0; dermoscopy models trained on PH2 (Mendonca et al., EMBC 2013) research use "
            "with citation. The bundled test sample is a crop of MSD Task04 (CC BY-SA 4.0). Each model "
            "folder's model card states its licence."
        )
        app = getattr(slicer, "app", None)
        if app is not None:  # the extension's terminology and sample data (AttentionMambaSegLib.slicer.startup)
            resources = os.path.join(os.path.dirname(__file__), "Resources")
            app.connect("startupCompleted()", register_terminology)
            app.connect("startupCompleted()", lambda: register_sample_data(resources))


#
# Parameter node
#


@parameterNodeWrapper
class AttentionMambaSegParameterNode:
    """GUI state.

    inputVolume: the volume to segment (scalar or RGB vector volume).
    inputROI: optional markups ROI: only the voxels inside it are segmented.
    outputSegmentation: segmentation to update; None creates a new one.
    modelId: id of a bundled or imported model.
    device: "auto", "cpu" or "cuda".
    speedMode: "" (the model's default for the device), "fast" or "accurate" (``segment --mode``).
    functionTable: the ventricular function table of the last cine segmented (``mrml.cardiac``).
    edFrame, esFrame: ED and ES frame numbers (from 1) that "Update function" uses.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputROI: vtkMRMLMarkupsROINode
    outputSegmentation: vtkMRMLSegmentationNode
    modelId: str = ""
    device: str = "auto"
    speedMode: str = ""
    functionTable: vtkMRMLTableNode
    edFrame: int = 1
    esFrame: int = 1

    if TYPE_CHECKING:  # added by parameterNodeWrapper

        def connectGui(self, gui) -> object: ...
        def disconnectGui(self, tag) -> None: ...


def _settings():
    return qt.QSettings()


def _readSetting(name: str, default):
    value = _settings().value(SETTINGS_PREFIX + name)
    if value is None or value == "":
        return default
    if isinstance(default, bool):
        return str(value).lower() in ("true", "1")
    return str(value)


def _writeSetting(name: str, value) -> None:
    _settings().setValue(SETTINGS_PREFIX + name, value)


#
# Widget
#


class AttentionMambaSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, ModelsPanel):
    """GUI only: reads and writes the parameter node, calls the Logic, shows results and errors.

    Import model..., Remove imported models, downloads, licences and the first install are handled by
    ``ModelsPanel`` (``AttentionMambaSegLib.slicer.panel``).
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: AttentionMambaSegLogic | None = None  # made by setup()
        self._parameterNode: AttentionMambaSegParameterNode | None = None
        self._parameterNodeGuiTag: object | None = None
        self._job: ChildProcessJob | None = None
        self._destroyed = False
        self._lastDevice = ""  # "device chosen and why", as the last child process reported it

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AttentionMambaSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = AttentionMambaSegLogic()

        self.ui.deviceComboBox.clear()
        for device, label in zip(DEVICE_CHOICES, (_("Automatic"), _("CPU"), _("CUDA (NVIDIA GPU)"))):
            self.ui.deviceComboBox.addItem(label, device)
        self.ui.speedComboBox.clear()
        for mode, label in zip(SPEED_CHOICES, (_("Model default"), _("Fast"), _("Accurate"))):
            self.ui.speedComboBox.addItem(label, mode)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setEnabled(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.speedComboBox.connect("currentIndexChanged(int)", self.onSpeedChanged)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.removeImportedModelsButton.connect("clicked(bool)", self.onRemoveImportedModels)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showIn3DButton.connect("toggled(bool)", self.onShowIn3D)
        self.ui.updateFunctionButton.connect("clicked(bool)", self.onUpdateFunction)
        self.ui.showCurveButton.connect("clicked(bool)", self.onShowCurve)

        self.populateModels()
        self.initializeParameterNode()
        self.ui.modelsFolderLabel.text = self.logic.importedModelsFolder()
        tooOld = self.logic.slicerVersionProblem()
        if tooOld:
            self.ui.statusLabel.text = tooOld

    def cleanup(self) -> None:
        """Module closed (or Slicer quits): stop a running child and never call back into this widget."""
        self._destroyed = True
        self._cancelJob()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def _cancelJob(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            job.onFinished = None  # nothing is reported into a closing widget or scene
            job.onProgress = job.onLog = None
            job.cancel()

    def initializeParameterNode(self) -> None:
        assert self.logic is not None
        node = self.logic.getParameterNode()
        self.setParameterNode(node)
        if not node.inputVolume:
            node.inputVolume = self.logic.firstSegmentableVolume(slicer.mrmlScene)
        if not node.modelId:
            remembered = _readSetting("modelId", "")
            if self.ui.modelComboBox.findData(remembered) >= 0:
                node.modelId = remembered
            elif self.ui.modelComboBox.count > 0:
                node.modelId = self.ui.modelComboBox.itemData(0)
            node.device = _readSetting("device", "auto")
            speedMode = _readSetting("speedMode", "")
            node.speedMode = speedMode if speedMode in SPEED_CHOICES else ""

    def setParameterNode(self, inputParameterNode: AttentionMambaSegParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # inputVolume, inputROI and outputSegmentation are bound through SlicerParameterName in the .ui;
            # the model, device and speed combo boxes carry ids as item data and are synchronised below.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node is None or self._destroyed:
            return
        speedIndex = SPEED_CHOICES.index(node.speedMode) if node.speedMode in SPEED_CHOICES else 0
        combos = (
            (self.ui.modelComboBox, self.ui.modelComboBox.findData(node.modelId)),
            (self.ui.deviceComboBox, self.ui.deviceComboBox.findData(node.device)),
            (self.ui.speedComboBox, speedIndex),  # speed items are in SPEED_CHOICES order
        )
        for combo, index in combos:
            if index >= 0 and combo.currentIndex != index:
                wasBlocked = combo.blockSignals(True)
                combo.currentIndex = index
                combo.blockSignals(wasBlocked)
        running = self._job is not None or self._installing
        assert self.logic is not None
        ready = bool(node.inputVolume and node.modelId) and not self.logic.slicerVersionProblem()
        self.ui.segmentButton.enabled = ready and not running
        self.ui.segmentButton.toolTip = (
            _("Segment the input volume") if ready else _("Select an input volume and a model")
        )
        self.ui.deviceVerdictLabel.text = self._lastDevice or self.logic.deviceVerdict(node.device)
        self.ui.modelInfoLabel.text = self.logic.modelSummary(node.modelId)
        self.ui.modelInfoLabel.toolTip = self.logic.modelCard(node.modelId)
        self.ui.speedComboBox.setItemText(0, self.logic.defaultSpeedLabel(node.modelId, node.device))
        self.ui.speedComboBox.toolTip = self.logic.speedDescription(node.modelId)
        self.ui.showIn3DButton.enabled = bool(node.outputSegmentation) and not running
        frames = self.logic.cineFrameCount(node.functionTable)
        for spinBox in (self.ui.edFrameSpinBox, self.ui.esFrameSpinBox):
            spinBox.maximum = max(frames, 1)
        self.ui.functionTableView.setMRMLTableNode(node.functionTable)
        self.ui.updateFunctionButton.enabled = frames > 0 and not running
        self.ui.showCurveButton.enabled = frames > 0

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.modelId = self.ui.modelComboBox.itemData(index) or ""
            _writeSetting("modelId", self._parameterNode.modelId)

    def onDeviceChanged(self, index: int) -> None:
        self._lastDevice = ""
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"
            _writeSetting("device", self._parameterNode.device)

    def onSpeedChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.speedMode = SPEED_CHOICES[index] if index < len(SPEED_CHOICES) else ""
            _writeSetting("speedMode", self._parameterNode.speedMode)

    def populateModels(self) -> None:
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        try:
            assert self.logic is not None
            for modelId, title in self.logic.availableModels():
                combo.addItem(title, modelId)
        except Exception as e:  # noqa: BLE001 - shown in the status line; the panel stays usable
            logging.warning("Listing models failed: %s", e)
            self.ui.statusLabel.text = _("Listing models failed: {error}").format(error=e)
        combo.blockSignals(wasBlocked)
        if combo.count == 0:
            self.ui.statusLabel.text = _("No model available: import a model package.")
        if self._parameterNode is not None:
            if combo.findData(self._parameterNode.modelId) < 0:
                self._parameterNode.modelId = combo.itemData(0) if combo.count else ""
            self.updateGUIFromParameterNode()

    def onSegment(self) -> None:
        if self._installing:  # a second click while pip runs the event loop
            return
        node = self._parameterNode
        assert node is not None and self.logic is not None
        if not self._modelReachable(node.modelId) or not self._ensureDependencies():
            return
        if not self.logic.modelInstalled(node.modelId):
            self._startDownload(node.modelId)
            return
        if not self._acceptLicence(node.modelId):
            return
        self.ui.logTextEdit.clear()
        callbacks = dict(onProgress=self.onProgress, onFinished=self.onFinished, onLog=self.onLog)
        if self.logic.isCine(node.inputVolume):  # every frame is segmented and the ventricular function measured
            with slicer.util.tryWithErrorDisplay(_("Segmenting the cine failed to start.")):
                self._job = job = self.logic.startCardiacAnalysis(
                    node.inputVolume, node.modelId, device=node.device, mode=node.speedMode or None, **callbacks
                )
                self.setRunning(True)
                self.ui.statusLabel.text = _(
                    "Segmenting every frame of the cine '{name}' in a separate process..."
                ).format(name=job.cine.name)
            return
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed to start.")):
            self._job = self.logic.startSegmentation(
                node.inputVolume,
                node.modelId,
                node.outputSegmentation,
                device=node.device,
                mode=node.speedMode or None,
                roiNode=node.inputROI,
                **callbacks,
            )
            self.setRunning(True)
            self.ui.statusLabel.text = _("Segmenting '{name}' in a separate process...").format(
                name=node.inputVolume.GetName()
            )

    def onUpdateFunction(self) -> None:
        """Recompute the figures from the segmentations as they are now (no network), with the ED / ES chosen."""
        from AttentionMambaSegLib.mrml.cardiac import function_summary

        node = self._parameterNode
        if node is None or not node.functionTable:
            return
        assert self.logic is not None
        with slicer.util.tryWithErrorDisplay(_("Updating the ventricular function failed."), waitCursor=True):
            analysis = self.logic.updateFunction(node.functionTable, node.edFrame, node.esFrame)
            self.ui.statusLabel.text = _("Updated from the current segmentations. {message}").format(
                message=function_summary(analysis)
            )

    def onShowCurve(self) -> None:
        if self._parameterNode is not None:
            assert self.logic is not None
            self.logic.showVolumeCurve(self._parameterNode.functionTable)

    def setRunning(self, running: bool) -> None:
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = _("Starting...")
        self.ui.cancelButton.setEnabled(running)
        self.ui.inputsCollapsibleButton.setEnabled(not running)
        self.updateGUIFromParameterNode()

    def onProgress(self, done, total) -> None:
        """Progress of the running job (slices, frames, bytes or import steps, as the job counts them)."""
        if self._destroyed or self._job is None:
            return
        maximum, value, text, status = self._job.progressDisplay(done, total)
        self.ui.progressBar.maximum = maximum
        self.ui.progressBar.value = value
        self.ui.progressBar.format = text
        if status:
            self.ui.statusLabel.text = status

    def onLog(self, line: str) -> None:
        if not self._destroyed:
            self.ui.logTextEdit.appendPlainText(line)

    def onCancel(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            job.cancel()  # kills the process; onFinished reports "cancelled"
            self.setRunning(False)

    def onShowIn3D(self, show: bool) -> None:
        node = self._parameterNode.outputSegmentation if self._parameterNode else None
        if node is not None:
            assert self.logic is not None
            self.logic.showIn3D(node, bool(show))

    def onFinished(self, result, error, elapsed) -> None:
        if self._destroyed:
            return
        job, self._job = self._job, None
        if job is not None and job.deviceDescription:
            self._lastDevice = _("Last run: {device}").format(device=job.deviceDescription)
        self.setRunning(False)
        if error is not None:
            self.ui.statusLabel.text = _("Segmentation failed: {error}").format(error=error)
            slicer.util.errorDisplay(_("Segmentation failed: {error}").format(error=error))
            return
        if result is None:
            self.ui.statusLabel.text = _("Cancelled: the scene was left unchanged.")
            return
        done = _("Done in {seconds:.0f} s. {message}")
        self.ui.statusLabel.text = done.format(seconds=elapsed, message=result.message)
        node = self._parameterNode
        if hasattr(result, "table_node"):  # a cine: the function table, its ED / ES frames and the curve
            if node is not None:
                node.functionTable = result.table_node
                node.edFrame = result.analysis.function.ed_frame
                node.esFrame = result.analysis.function.es_frame
            self.ui.functionCollapsibleButton.collapsed = False
            assert self.logic is not None
            self.logic.showVolumeCurve(result.table_node)
            return
        if node is not None:
            node.outputSegmentation = result.segmentation_node
        self.ui.showIn3DButton.checked = False


#
# Logic
#


class AttentionMambaSegLogic(ScriptedLoadableModuleLogic, ModuleLogic):
    """Everything the module does, usable without the GUI::

        logic = AttentionMambaSegLogic()
        job = logic.startSegmentation(volumeNode, "cardiac-acdc", device="cpu")   # child process
        job.wait(); job.result.segmentation_node
        result = logic.process(volumeNode, "cardiac-acdc", device="cpu")           # in this process

    Models, packages and runs come from ``ModuleLogic`` (``AttentionMambaSegLib.slicer.logic``); the parameter
    node, the models folder and accepted licences (Slicer's settings) and the supported Slicer versions are here.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ModuleLogic.__init__(self)
        # Inside Slicer, downloaded and imported models live in the per-user data folder of modelsFolder()
        # (never under Slicer's cache, which Clear cache empties; no platformdirs needed).
        if getattr(slicer, "app", None) is not None and not os.environ.get("ATTENTION_MAMBA_SEG_MODELS_DIR"):
            os.environ["ATTENTION_MAMBA_SEG_MODELS_DIR"] = AttentionMambaSegLogic.modelsFolder()
        register_terminology()

    def getParameterNode(self):
        return AttentionMambaSegParameterNode(super().getParameterNode())

    @staticmethod
    def modelsFolder() -> str:
        """The models folder: the one remembered in the settings, else ``<per-user app data>/AttentionMambaSeg/models``
        (remembered from then on)."""
        folder = _readSetting("modelsFolder", "")
        if not folder:
            from AttentionMambaSegLib.slicer.models import default_models_folder

            dataLocation = qt.QStandardPaths.writableLocation(qt.QStandardPaths.AppDataLocation)
            folder = str(default_models_folder(dataLocation))
            _writeSetting("modelsFolder", folder)
        return folder

    @staticmethod
    def setModelsFolder(folder: str) -> None:
        """Use (and remember) another models folder; models already in the old one stay there."""
        _writeSetting("modelsFolder", str(folder))
        os.environ["ATTENTION_MAMBA_SEG_MODELS_DIR"] = str(folder)

    @staticmethod
    def dataFolder() -> str:
        """The extension's per-user data folder (the models folder's parent)."""
        models = os.environ.get("ATTENTION_MAMBA_SEG_MODELS_DIR") or AttentionMambaSegLogic.modelsFolder()
        return os.path.dirname(os.path.normpath(models))

    @staticmethod
    def slicerVersionProblem() -> str:
        """A message when this Slicer is older than the supported range, else ""."""
        app = getattr(slicer, "app", None)
        if app is None or not hasattr(app, "majorVersion"):
            return ""  # headless (slicer-core): MRML only
        version = (int(app.majorVersion), int(app.minorVersion))
        if version < MINIMUM_SLICER_VERSION:
            return _(
                "Attention-Mamba Segmentation needs Slicer {need} or newer; this is Slicer {have}. "
                "Install a current Slicer from download.slicer.org."
            ).format(need="{}.{}".format(*MINIMUM_SLICER_VERSION), have="{}.{}".format(*version))
        return ""

    @staticmethod
    def _licenceKey(package) -> str:
        import hashlib

        digest = hashlib.sha256(package.licence.encode("utf-8")).hexdigest()[:16]
        return f"acceptedLicences/{package.id}-{digest}"

    def licenceAccepted(self, package) -> bool:
        return _readSetting(self._licenceKey(package), False)

    def acceptLicence(self, package) -> None:
        """Remember (QSettings) that the user accepted this model's licence text."""
        _writeSetting(self._licenceKey(package), True)


#
# Test
#


class AttentionMambaSegTest(ScriptedLoadableModuleTest):
    """Runs the Logic on the bundled sample on CPU; where torch is missing (the extension build machines),
    torch-free tests of the segmentation writer and of a cine run instead and say that the full test was
    skipped (set ATTENTION_MAMBA_SEG_FULL_TEST=1 to require the full run). The bodies are in
    ``AttentionMambaSegLib.slicer.self_test``."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for name in ("writer", "cine", "sample"):
            self.setUp()
            getattr(self, f"test_AttentionMambaSeg_{name}")()

    def test_AttentionMambaSeg_writer(self):
        self_test.writer_test(self, os.path.dirname(__file__))

    def test_AttentionMambaSeg_cine(self):
        self_test.cine_test(self, AttentionMambaSegLogic, os.path.dirname(__file__))

    def test_AttentionMambaSeg_sample(self):
        self_test.sample_test(self, AttentionMambaSegLogic, os.path.dirname(__file__))
