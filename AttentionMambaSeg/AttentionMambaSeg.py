"""AttentionMambaSeg: 3D Slicer module segmenting volumes with Attention-Mamba (arXiv 2402.02286).

Module, parameter node, Widget (GUI only), Logic (usable from the Python console) and Test. All work is
done by ``AttentionMambaSegLib``; this file imports it, PyTorch and any other third-party package only
when a segmentation starts, and installs nothing at start-up.
"""

import importlib.util
import logging
import os
import queue
import sys
import threading
from typing import Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

PROJECT_URL = "https://github.com/attention-mamba-seg/SlicerAttentionMambaSeg"

# Packages installed into Slicer's Python on the first "Segment" (torch comes from the PyTorch extension).
# SimpleITK, VTK, numpy and requests are Slicer's own and never reinstalled (a constraints file pins them).
PIP_REQUIREMENTS = ("safetensors>=0.4", "platformdirs>=3")
# numba gives the fused CPU scan (several times faster Segment without a GPU). It is installed under the
# same constraints, so pip picks a numba that fits Slicer's numpy; if none fits, the pure-PyTorch scan runs.
OPTIONAL_PIP_REQUIREMENTS = ("numba>=0.59",)
TORCH_REQUIREMENT = ">=2.1"
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk", "requests")

DEVICE_CHOICES = ("auto", "cpu", "cuda")


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
        self.parent.contributors = ["AttentionMambaSeg contributors"]
        self.parent.helpText = _(
            "Segment a volume with an Attention-Mamba network (a 2D network applied slice by slice).<br>"
            "Choose the input volume and a model, then press <b>Segment</b>. The result is a new "
            "segmentation (or an update of the selected one: segments you edited by hand are never "
            "overwritten). Segments are marked 'in progress': review them before use. "
            "Cancel stops within one batch of slices and leaves the scene unchanged.<br>"
            "PyTorch is installed through the PyTorch extension on the first run, after a confirmation.<br>"
            "Not for clinical use. See the <a href=\"{url}\">project page</a>."
        ).format(url=PROJECT_URL)
        self.parent.acknowledgementText = _(
            "Network: Zhang et al., \"Attention-Mamba: A Mamba-Enhanced Multi-Scale Parallel Inference "
            "Network for Medical Image Segmentation\", arXiv:2402.02286. "
            "Code licence: Apache-2.0. Model licences: the cardiac models trained on ACDC (Bernard et "
            "al., IEEE TMI 2018) are licensed CC BY-NC-SA 4.0 (no commercial use); hippocampus models "
            "trained on the Medical Segmentation Decathlon Task04 (Antonelli et al., Nat. Commun. 2022) "
            "CC BY-SA 4.0; dermoscopy models trained on PH2 (Mendonca et al., EMBC 2013) research use "
            "with citation. The bundled test sample is a crop of MSD Task04 (CC BY-SA 4.0). Each model "
            "folder's model card states its licence."
        )


#
# Parameter node
#


@parameterNodeWrapper
class AttentionMambaSegParameterNode:
    """GUI state.

    inputVolume: the volume to segment (scalar or RGB vector volume).
    outputSegmentation: segmentation to update; None creates a new one.
    modelId: id of a bundled or imported model.
    device: "auto", "cpu" or "cuda".
    useTTA: average the prediction over flips (slower, usually a little more accurate).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelId: str = ""
    device: str = "auto"
    useTTA: bool = True


#
# Widget
#


class AttentionMambaSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI only: reads and writes the parameter node, calls the Logic, shows results and errors."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None

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
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setEnabled(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.removeImportedModelsButton.connect("clicked(bool)", self.onRemoveImportedModels)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)

        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
        self.removeObservers()
        self.setParameterNode(None)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode
        if not self._parameterNode.modelId and self.ui.modelComboBox.count > 0:
            self._parameterNode.modelId = self.ui.modelComboBox.itemData(0)

    def setParameterNode(self, inputParameterNode: Optional[AttentionMambaSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # inputVolume, outputSegmentation and useTTA are bound through SlicerParameterName in the .ui;
            # model and device combo boxes carry ids as item data and are synchronised below.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node is None:
            return
        for combo, value in ((self.ui.modelComboBox, node.modelId), (self.ui.deviceComboBox, node.device)):
            index = combo.findData(value)
            if index >= 0 and combo.currentIndex != index:
                wasBlocked = combo.blockSignals(True)
                combo.currentIndex = index
                combo.blockSignals(wasBlocked)
        running = self._job is not None
        ready = bool(node.inputVolume and node.modelId)
        self.ui.segmentButton.enabled = ready and not running
        self.ui.segmentButton.toolTip = (
            _("Segment the input volume") if ready else _("Select an input volume and a model")
        )
        self.ui.deviceVerdictLabel.text = self.logic.deviceVerdict(node.device)

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.modelId = self.ui.modelComboBox.itemData(index) or ""

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def populateModels(self) -> None:
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        try:
            for modelId, title in self.logic.availableModels():
                combo.addItem(title, modelId)
        except Exception as e:
            logging.warning("Listing models failed: %s", e)
        combo.blockSignals(wasBlocked)
        if combo.count == 0:
            self.ui.statusLabel.text = _("No model available: import a model package.")
        if self._parameterNode is not None:
            if combo.findData(self._parameterNode.modelId) < 0:
                self._parameterNode.modelId = combo.itemData(0) if combo.count else ""
            self.updateGUIFromParameterNode()

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Select a model package folder (model.json + model.safetensors)")
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Importing the model failed."), waitCursor=True):
            modelId = self.logic.importModel(path)
            self.populateModels()
            self._parameterNode.modelId = modelId
            self.ui.statusLabel.text = _("Imported model '{id}'.").format(id=modelId)

    def onRemoveImportedModels(self) -> None:
        if not slicer.util.confirmOkCancelDisplay(
            _("Delete every imported model from the model cache? Bundled models are kept.")
        ):
            return
        with slicer.util.tryWithErrorDisplay(_("Removing imported models failed."), waitCursor=True):
            removed = self.logic.removeImportedModels()
            self.populateModels()
            self.ui.statusLabel.text = _("Removed {n} imported model(s).").format(n=len(removed))

    def onSegment(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed to start."), waitCursor=True):
            missing = self.logic.missingDependencies()
            if missing:
                if not slicer.util.confirmOkCancelDisplay(
                    _("AttentionMambaSeg needs these Python packages: {packages}. Install them now? "
                      "(PyTorch is installed by the PyTorch extension; this can take several minutes.)")
                    .format(packages=", ".join(missing))
                ):
                    self.ui.statusLabel.text = _("Installation declined: nothing was done.")
                    return
                self.ui.statusLabel.text = _("Installing {packages}...").format(packages=", ".join(missing))
                slicer.app.processEvents()
                self.logic.installDependencies()
            self._job = self.logic.startSegmentation(
                node.inputVolume,
                node.modelId,
                node.outputSegmentation,
                device=node.device,
                useTTA=node.useTTA,
                onProgress=self.onProgress,
                onFinished=self.onFinished,
            )
            self.setRunning(True)
            self.ui.statusLabel.text = _("Segmenting '{name}'...").format(name=node.inputVolume.GetName())

    def setRunning(self, running: bool) -> None:
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = _("Preparing...")
        self.ui.cancelButton.setEnabled(running)
        self.ui.inputsCollapsibleButton.setEnabled(not running)
        self.updateGUIFromParameterNode()

    def onProgress(self, done: int, total: int) -> None:
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        self.ui.progressBar.format = _("{done} / {total} slices").format(done=done, total=total)

    def onCancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.cancelButton.setEnabled(False)
            self.ui.statusLabel.text = _("Cancelling (finishing the current batch)...")

    def onFinished(self, result, error) -> None:
        job, self._job = self._job, None
        self.setRunning(False)
        if job is not None and job.deviceDescription:
            self.ui.deviceVerdictLabel.text = job.deviceDescription
        if error is not None:
            self.ui.statusLabel.text = _("Segmentation failed: {error}").format(error=error)
            slicer.util.errorDisplay(_("Segmentation failed."), detailedText=str(error))
            return
        if result is None:
            self.ui.statusLabel.text = _("Cancelled: the scene was left unchanged.")
            return
        self.ui.statusLabel.text = result.message
        if self._parameterNode is not None:
            self._parameterNode.outputSegmentation = result.segmentation_node


#
# Logic
#


class DependencyError(RuntimeError):
    """A required package could not be installed (the message says what to do, e.g. restart)."""


class SegmentationJob:
    """One segmentation running ``predict_volume`` in a worker thread.

    The worker thread never touches MRML: it only puts ``("progress", done, total)``, ``("done", labelmap)``
    or ``("error", exception)`` into a queue. ``poll()`` runs on the main thread (from a QTimer in Slicer),
    forwards progress and, at the end, writes the segmentation into the scene.
    """

    POLL_INTERVAL_MS = 100

    def __init__(self, volumeNode, package, segmentationNode, device, useTTA, onProgress=None, onFinished=None):
        from AttentionMambaSegLib import mrml

        self._mrml = mrml
        mrml.check_input_volume(volumeNode, package)
        self.volumeNode = volumeNode
        self.package = package
        self.segmentationNode = segmentationNode
        self.device = device
        self.useTTA = useTTA
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.image = mrml.image_from_volume_node(volumeNode)  # main thread: reads MRML
        self.cancelEvent = threading.Event()
        self.messages = queue.Queue()
        self.finished = False
        self.result = None
        self.error = None
        self.deviceDescription = ""
        self._thread = threading.Thread(target=self._work, name="AttentionMambaSeg", daemon=True)
        self._timer = None

    def start(self) -> None:
        self._thread.start()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.poll)
        self._timer.start()

    def cancel(self) -> None:
        """Ask the worker to stop; it stops within one batch of slices and nothing is written."""
        self.cancelEvent.set()

    def _work(self) -> None:
        try:
            from AttentionMambaSegLib.inference import select_device

            # The probe runs a real convolution (cached); its reason is shown in the device verdict label.
            _device, self.deviceDescription = select_device(self.device)
            labelmap = self._mrml._predict(
                self.image,
                self.package,
                self.device,
                self.useTTA,
                4,
                lambda done, total: self.messages.put(("progress", done, total)),
                self.cancelEvent,
            )
            self.messages.put(("done", labelmap))
        except BaseException as e:  # reported on the main thread
            self.messages.put(("error", e))

    def poll(self) -> bool:
        """Process queued messages on the main thread; return True once the job has finished."""
        if self.finished:
            return True
        lastProgress = None
        outcome = None
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                break
            if message[0] == "progress":
                lastProgress = message[1:]
            else:
                outcome = message
                break
        if lastProgress is not None and self.onProgress is not None:
            self.onProgress(*lastProgress)
        if outcome is None:
            return False
        if outcome[0] == "error":
            self.error = outcome[1]
        elif outcome[1] is not None and not self.cancelEvent.is_set():
            try:
                self.result = self._mrml.write_segmentation(
                    self.volumeNode, self.package, outcome[1], self.segmentationNode
                )
            except Exception as e:
                self.error = e
        self._finish()
        return True

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until finished, polling on the calling thread (console scripts and tests)."""
        self._thread.join(timeout)
        return self.poll()

    def _finish(self) -> None:
        self.finished = True
        if self._timer is not None:
            self._timer.stop()
        if self.error is not None:
            logging.error("AttentionMambaSeg segmentation failed: %s", self.error)
        if self.onFinished is not None:
            self.onFinished(self.result, self.error)


class AttentionMambaSegLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the GUI::

        logic = slicer.modules.attentionmambaseg.widgetRepresentation().self().logic  # or a new Logic()
        result = logic.process(volumeNode, "cardiac-acdc", device="cpu")
        result.segmentation_node
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return AttentionMambaSegParameterNode(super().getParameterNode())

    # Models -------------------------------------------------------------------------------------

    def availableModels(self) -> list:
        """[(model id, display title)] of bundled and imported models."""
        from AttentionMambaSegLib.package import list_models

        models = []
        for package in list_models():
            name = package.config.get("name") or package.id
            models.append((package.id, f"{name} ({package.version})"))
        return models

    def importModel(self, path: str) -> str:
        """Verify and copy a model package (folder or .zip) into the user's model cache; return its id."""
        from AttentionMambaSegLib.package import import_model_package

        return import_model_package(path).id

    def removeImportedModels(self) -> list:
        """Delete all imported models; return their ids."""
        from AttentionMambaSegLib.package import remove_imported_models

        return remove_imported_models()

    # Dependencies ---------------------------------------------------------------------------------

    @staticmethod
    def missingDependencies() -> list:
        """Names of required packages that are not importable (checked without importing them)."""
        names = ["torch"] + [r.split(">")[0].split("=")[0].split("<")[0] for r in PIP_REQUIREMENTS]
        return [name for name in names if importlib.util.find_spec(name) is None]

    def installDependencies(self) -> None:
        """Install what ``missingDependencies`` lists (torch through the PyTorch extension).

        Raises:
            DependencyError: the PyTorch extension is missing or an installation failed.
        """
        missing = self.missingDependencies()
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ImportError as e:
                raise DependencyError(
                    _("The PyTorch extension is needed to install PyTorch: install 'PyTorch' from the "
                      "Extensions Manager, restart Slicer and try again.")
                ) from e
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
                if torch is None:
                    raise DependencyError(_("PyTorch was not installed. Use the PyTorch Utils module to install it."))
        requirements = [r for r in PIP_REQUIREMENTS if r.split(">")[0].split("=")[0] in missing]
        if requirements:
            self._pipInstall(requirements)
        optional = [r for r in OPTIONAL_PIP_REQUIREMENTS if importlib.util.find_spec(r.split(">")[0]) is None]
        if optional:
            try:
                self._pipInstall(optional)
            except DependencyError as e:
                logging.warning("Optional %s not installed (%s): the pure-PyTorch scan is used instead.",
                                ", ".join(optional), e)

    @staticmethod
    def _constraints() -> str:
        """Write a pip constraints file pinning Slicer's own packages to their installed versions."""
        import importlib.metadata
        import tempfile

        lines = []
        for name in PROTECTED_PACKAGES:
            try:
                lines.append(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                continue
        handle, path = tempfile.mkstemp(prefix="AttentionMambaSeg-constraints-", suffix=".txt")
        with os.fdopen(handle, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _pipInstall(self, requirements: list) -> None:
        constraints = self._constraints()
        try:
            ensure = None
            for moduleName in ("slicer.pydeps", "slicer.packaging"):  # 5.11+ (pydeps); some builds: packaging
                try:
                    ensure = getattr(importlib.import_module(moduleName), "pip_ensure", None)
                except ImportError:
                    continue
                if ensure is not None:
                    break
            if ensure is not None:
                from packaging.requirements import Requirement

                ensure([Requirement(r) for r in requirements], constraints=constraints, requester="AttentionMambaSeg")
            else:
                slicer.util.pip_install(list(requirements) + ["-c", constraints])
        except Exception as e:
            raise DependencyError(
                _("Installing {packages} failed: {error}").format(packages=", ".join(requirements), error=e)
            ) from e
        finally:
            os.remove(constraints)

    def fusedKernelsOffered(self) -> bool:
        """True when mamba-ssm (fused CUDA scan) could help: CUDA works here and it is not installed."""
        torch = sys.modules.get("torch")
        if torch is None or not sys.platform.startswith("linux"):
            return False
        return bool(torch.cuda.is_available()) and importlib.util.find_spec("mamba_ssm") is None

    def installFusedKernels(self) -> None:
        """Install mamba-ssm (needs nvcc matching torch's CUDA); the pure-PyTorch scan works without it."""
        if not self.fusedKernelsOffered():
            raise DependencyError(_("mamba-ssm is only offered on Linux with a working CUDA GPU."))
        self._pipInstall(["mamba-ssm>=2.2"])

    # Devices ---------------------------------------------------------------------------------------

    def deviceVerdict(self, device: str) -> str:
        """One line for the GUI. Torch is not imported here: before the first run the probe is pending."""
        if "torch" not in sys.modules:
            return _("The device ({device}) is tested with a real convolution when you press Segment.").format(
                device=device
            )
        from AttentionMambaSegLib.inference import select_device

        try:
            return select_device(device)[1]  # the probe result is cached by the inference module
        except (RuntimeError, ValueError) as e:
            return str(e)

    # Segmentation ------------------------------------------------------------------------------------

    def startSegmentation(self, volumeNode, modelId, segmentationNode=None, device="auto", useTTA=True,
                          onProgress=None, onFinished=None) -> SegmentationJob:
        """Start segmenting in a worker thread; MRML is read now and written on the main thread at the end.

        Args:
            volumeNode: scalar or RGB volume node.
            modelId: model id or model folder path.
            segmentationNode: segmentation to update (edited segments are kept) or None for a new one.
            device: "auto", "cpu" or "cuda".
            useTTA: flip test-time augmentation.
            onProgress: ``onProgress(doneSlices, totalSlices)`` on the main thread.
            onFinished: ``onFinished(result, error)`` on the main thread; result is a
                ``mrml.SegmentationResult`` or None when cancelled or failed.

        Returns:
            The running SegmentationJob (``cancel()`` to stop it).

        Raises:
            InputVolumeError: the volume cannot be segmented by this model.
            FileNotFoundError: unknown model id.
        """
        from AttentionMambaSegLib.mrml import resolve_model

        job = SegmentationJob(volumeNode, resolve_model(modelId), segmentationNode, device, useTTA,
                              onProgress, onFinished)
        job.start()
        return job

    def process(self, volumeNode, modelId, segmentationNode=None, device="auto", useTTA=True,
                progress=None, cancel=None):
        """Segment synchronously (Python console, tests); returns SegmentationResult or None if cancelled."""
        from AttentionMambaSegLib.mrml import segment_volume_node

        return segment_volume_node(
            volumeNode, modelId, segmentationNode, device=device, progress=progress, cancel=cancel, tta=useTTA
        )


#
# Test
#


class AttentionMambaSegTest(ScriptedLoadableModuleTest):
    """Runs the whole pipeline on the bundled sample on CPU (never switched off)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AttentionMambaSeg_sample()

    def _model(self, tempDir):
        """The first bundled single-channel model, or a small randomly initialised one."""
        from AttentionMambaSegLib.package import list_models, load_model_package, save_model_package

        for package in list_models():
            if package.in_channels == 1:
                return package
        import torch
        from AttentionMambaSegLib.model import AttentionMamba

        torch.manual_seed(0)
        config = {
            "id": "random-test-model", "version": "0", "in_channels": 1, "num_classes": 3,
            "activation": "softmax", "normalization": {"type": "zscore"}, "patch_size": [64, 64],
            "classes": [
                {"label_value": 1, "name": "anterior", "color": [230, 120, 40]},
                {"label_value": 2, "name": "posterior", "color": [60, 160, 230]},
            ],
        }
        folder = save_model_package(AttentionMamba(1, 3), config, os.path.join(tempDir, "random-test-model"))
        return load_model_package(folder)

    def test_AttentionMambaSeg_sample(self):
        import tempfile

        import SimpleITK as sitk
        from AttentionMambaSegLib import mrml

        self.delayDisplay("Loading the bundled sample")
        samplePath = os.path.join(os.path.dirname(__file__), "Resources", "Samples", "hippocampus_sample.nrrd")
        volumeNode = mrml.add_volume_node_from_image(slicer.mrmlScene, sitk.ReadImage(samplePath), "sample")
        with tempfile.TemporaryDirectory() as tempDir:
            package = self._model(tempDir)
            logic = AttentionMambaSegLogic()
            progressCalls = []
            result = logic.process(volumeNode, package, device="cpu", useTTA=False,
                                   progress=lambda done, total: progressCalls.append((done, total)))
        self.assertIsNotNone(result)
        segmentation = result.segmentation_node.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), len(package.classes))
        names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        self.assertEqual(names, {c["name"] for c in package.classes})
        self.assertTrue(progressCalls and progressCalls[-1][0] == progressCalls[-1][1])
        referenceId = result.segmentation_node.GetNodeReferenceID(
            result.segmentation_node.GetReferenceImageGeometryReferenceRole()
        )
        self.assertEqual(referenceId, volumeNode.GetID())
        self.delayDisplay("Test passed")
