"""The Slicer module's Logic, less what needs its parameter node or Slicer's settings.

``AttentionMambaSegLogic`` (in the module file) derives from :class:`ModuleLogic` and adds the parameter
node, the models folder and the accepted licences (remembered in Slicer's settings) and the supported Slicer
versions. The method names follow Slicer's Logic style. Usable from the Python console::

    logic = AttentionMambaSegLogic()                                          # the module's Logic
    job = logic.startSegmentation(volumeNode, "cardiac-acdc", device="cpu")   # child process
    job.wait(); job.result.segmentation_node
    result = logic.process(volumeNode, "cardiac-acdc", device="cpu")           # in this process

Module-level imports are the standard library only: the module file imports this when Slicer starts; each
method imports what it needs (never torch: that runs in the child process).
"""

from __future__ import annotations

import os

from . import tr

__all__ = ["ModuleLogic"]


class ModuleLogic:
    """Models, packages, runs in a child process or in this one, and cine tables, as the module's Logic offers them.

    Attributes:
        pythonExecutable: the Python that runs the child process; None: Slicer's PythonSlicer
            (``sys.executable`` outside Slicer).
    """

    def __init__(self) -> None:
        self.pythonExecutable = None

    # Models -------------------------------------------------------------------------------------

    @staticmethod
    def registry() -> dict:
        """Model id -> :class:`~AttentionMambaSegLib.registry.RegistryEntry` of the models that can be downloaded."""
        from ..registry import load_registry

        return load_registry()

    def modelPackage(self, modelId: str):
        from ..package import load_model_package

        return load_model_package(modelId)

    def modelInstalled(self, modelId: str) -> bool:
        try:
            self.modelPackage(modelId)
        except FileNotFoundError:
            return False
        return True

    def availableModels(self) -> list:
        """[(model id, display title)]: installed models, then registry models to download (no optional package)."""
        from .models import available_models

        return available_models(self.registry())

    def modelCard(self, modelId: str) -> str:
        """The full model card (data, limits, figures, training) of an installed model, else ""."""
        if not modelId:
            return ""
        try:
            return self.modelPackage(modelId).describe()
        except (FileNotFoundError, ValueError):
            return ""

    def modelSummary(self, modelId: str) -> str:
        """Licence and validation Dice of a model, for the panel ("" when none is selected)."""
        from .models import model_summary

        return model_summary(modelId)

    def speedModes(self, modelId: str):
        """The model's speed modes (``card.speed_modes``, torch-free), or None when it is not installed."""
        if not modelId:
            return None
        try:
            return self.modelPackage(modelId).card.speed_modes
        except (FileNotFoundError, OSError, ValueError):
            return None

    def defaultSpeedLabel(self, modelId: str, device: str) -> str:
        """What "Model default" resolves to for this model and device, e.g. "Model default (fast on a CPU)"."""
        from .models import default_speed_label

        return default_speed_label(self.speedModes(modelId), device)

    def speedDescription(self, modelId: str) -> str:
        """The speed choices and the network passes each gives a slice with this model (a tooltip)."""
        from .models import speed_description

        return speed_description(self.speedModes(modelId))

    def modelDownloadProblem(self, modelId: str) -> str:
        """ "" when the registry model ``modelId`` can be downloaded from here (one URL answers within a few
        seconds; Slicer's ``requests``), else what failed and the offline route (Import model...)."""
        entry = self.registry().get(modelId)
        if entry is None:
            return ""
        from .models import model_download_problem

        return model_download_problem(entry) or ""

    def importedModelsFolder(self) -> str:
        from ..model_store import imported_models_dir

        return str(imported_models_dir())

    def importedModelsSize(self) -> int:
        """Bytes the model cache holds (what removing the imported models frees)."""
        from ..model_store import imported_models_size

        return imported_models_size()

    def removeImportedModels(self) -> list:
        """Delete all imported models; return their ids."""
        from ..model_store import remove_imported_models

        return remove_imported_models()

    def startDownload(self, modelId: str, onProgress=None, onFinished=None, onLog=None):
        """Download a registry model into the model cache in a child process (SHA-256 checked there).

        ``onProgress(doneBytes, totalBytes)``; ``onFinished(result, error, seconds)`` with result True on success.
        Returns the running :class:`~.jobs.DownloadJob`.
        """
        from .child_process import CliProcess
        from .jobs import DownloadJob

        process = CliProcess(
            ["models", "download", str(modelId), "--progress-format", "jsonl"],
            python=self.childPython(),
            env=self.childEnvironment(),
        )
        return DownloadJob(process, onProgress, onFinished, onLog)

    def startImport(self, path: str, onProgress=None, onFinished=None, onLog=None):
        """Import a model package (folder, its model.json, or a .zip) into the models folder in a child process.

        The package's own ``models import`` runs under Slicer's Python (PythonSlicer): the weights are checked
        against the network there, so torch is never loaded into Slicer's process. ``onProgress(doneSteps,
        totalSteps)``; ``onFinished(result, error, seconds)`` with result the model id, or error in the child's
        own words. Returns the running :class:`~.jobs.ImportJob`.
        """
        from .child_process import CliProcess
        from .jobs import ImportJob

        if os.path.basename(path) == "model.json":
            path = os.path.dirname(path)
        process = CliProcess(
            ["models", "import", str(path), "--progress-format", "jsonl"],
            python=self.childPython(),
            env=self.childEnvironment(),
        )
        return ImportJob(process, onProgress, onFinished, onLog)

    def importModel(self, path: str, timeout: float | None = None) -> str:
        """:meth:`startImport` and wait (Python console); returns the model id.

        Raises:
            SegmentProcessError: the child failed (its message), or it did not finish within ``timeout`` seconds.
        """
        job = self.startImport(path)
        if not job.wait(timeout):
            job.cancel()
            from .child_process import SegmentProcessError

            raise SegmentProcessError(tr("The import did not finish within {seconds:.0f} s.").format(seconds=timeout))
        if job.error is not None:
            raise job.error
        return job.result

    # Packages and the child process ----------------------------------------------------------------

    def dataFolder(self) -> str:
        """The extension's per-user data folder (the models folder's parent)."""
        from ..model_store import imported_models_dir

        return os.path.dirname(os.path.normpath(str(imported_models_dir())))

    def dependencyPlan(self) -> list:
        """What must be installed before the first run: [{name, requirement, why}], checked without importing
        (:func:`~.install.dependency_plan`)."""
        from .install import dependency_plan

        return dependency_plan(self.dataFolder)

    @staticmethod
    def sitePackagesFolder() -> str:
        from .install import site_packages_folder

        return site_packages_folder()

    def installDependencies(self, plan: list | None = None) -> None:
        """Install what :meth:`dependencyPlan` lists, without asking again (the caller has asked once).

        Raises:
            DependencyError: the PyTorch extension is missing, or an installation failed.
        """
        from .install import install_dependencies

        install_dependencies(self.dependencyPlan() if plan is None else plan)

    def deviceVerdict(self, device: str) -> str:
        """One line for the GUI (torch is never imported in the Slicer process for this)."""
        return tr(
            "The device ({device}) is tested with a real convolution when the segmentation starts; "
            "the log says which one ran."
        ).format(device=device)

    def childPython(self) -> str:
        """The Python that runs the child process: :attr:`pythonExecutable`, else Slicer's PythonSlicer, else
        this interpreter."""
        from .child_process import child_python

        return child_python(self.pythonExecutable)

    @staticmethod
    def childEnvironment() -> dict:
        """Environment of the child: Slicer's start-up environment inside Slicer, plus the model cache."""
        from .child_process import child_environment

        return child_environment()

    @staticmethod
    def inferenceSettings(device: str = "auto", useTTA: bool = True, mode: str | None = None):
        """The :class:`~AttentionMambaSegLib.inference.settings.InferenceSettings` of the panel's choices (useTTA
        False: no flips whatever the mode; True: the mode's own).

        Raises:
            ValueError: ``mode`` is not "fast", "accurate" or None.
        """
        from ..inference.settings import InferenceSettings

        if mode not in (None, "fast", "accurate"):
            raise ValueError(tr("Unknown speed mode '{mode}': use 'fast', 'accurate' or None.").format(mode=mode))
        return InferenceSettings(device=device, mode=mode, tta=None if useTTA else False)

    # Runs -----------------------------------------------------------------------------------------

    def startSegmentation(
        self,
        volumeNode,
        modelId,
        segmentationNode=None,
        device="auto",
        useTTA=True,
        onProgress=None,
        onFinished=None,
        onLog=None,
        roiNode=None,
        mode=None,
    ):
        """Start segmenting in a child process; MRML is read now and written on the main thread at the end.

        Args:
            volumeNode: scalar or RGB volume node.
            modelId: model id, model folder path or ModelPackage.
            segmentationNode: segmentation to update (edited segments are kept) or None for a new one.
            device: "auto", "cpu" or "cuda".
            useTTA: False: no flip test-time augmentation whatever the mode (``--no-tta``); True: the
                flips of the speed mode.
            onProgress: ``onProgress(doneSlices, totalSlices)`` on the main thread.
            onFinished: ``onFinished(result, error, elapsedSeconds)`` on the main thread; result is a
                ``mrml.SegmentationResult`` (its ``needs_review`` names the flagged segments), or None when
                cancelled or failed (then error says why, in the child's own words).
            onLog: ``onLog(line)`` for every message of the child.
            roiNode: optional ``vtkMRMLMarkupsROINode``: segment only inside it (mapped into the volume's frame
                with both parent transforms, as Crop Volume does); the labels are empty outside.
            mode: speed mode "fast" or "accurate" (``--mode``); None: the model's default for the device.

        Returns:
            The running :class:`~.jobs.SegmentationJob` (``cancel()`` to stop it, ``wait()`` to block).

        Raises:
            InputVolumeError: the volume cannot be segmented by this model.
            FileNotFoundError: unknown model id.
        """
        from ..package import load_model_package
        from .jobs import SegmentationJob

        settings = self.inferenceSettings(device, useTTA, mode)
        return SegmentationJob(
            volumeNode,
            load_model_package(modelId),
            segmentationNode,
            settings,
            onProgress,
            onFinished,
            onLog,
            python=self.childPython(),
            env=self.childEnvironment(),
            roiNode=roiNode,
        )

    def process(
        self,
        volumeNode,
        modelId,
        segmentationNode=None,
        device="auto",
        useTTA=True,
        progress=None,
        cancel=None,
        mode=None,
    ):
        """Segment in this process (Python console, tests); returns SegmentationResult or None if cancelled.

        ``useTTA`` and ``mode`` as in :meth:`startSegmentation`; no confidence report is made here, so no
        segment is flagged for review.
        """
        from ..inference.settings import InferenceSettings
        from ..mrml import segment_volume_node

        settings = InferenceSettings(device=device, mode=mode, tta=None if useTTA else False)
        return segment_volume_node(volumeNode, modelId, segmentationNode, settings, progress=progress, cancel=cancel)

    def startCardiacAnalysis(
        self,
        inputNode,
        modelId="cardiac-acdc",
        device="auto",
        useTTA=True,
        mode=None,
        onProgress=None,
        onFinished=None,
        onLog=None,
    ):
        """Segment every frame of a cine in a child process and measure the ventricular function.

        Args:
            inputNode: a frame of the cine (the browser's proxy volume), its volume sequence or browser, or a
                multi-volume.
            modelId: a cardiac model (RV and LV cavities, LV myocardium), id, folder or ModelPackage.
            device, useTTA, mode: as :meth:`startSegmentation`.
            onProgress: ``onProgress(doneFrames, totalFrames)`` on the main thread (``doneFrames`` fractional).
            onFinished: ``onFinished(result, error, elapsedSeconds)``; result is a ``mrml.cardiac.CardiacResult``
                (segmentation sequence in the cine's browser, function table, volume table, chart), or None when
                cancelled or failed.
            onLog: ``onLog(line)`` for every message of the child.

        Returns:
            The running :class:`~.jobs.CardiacJob` (``cancel()``, ``wait()``).

        Raises:
            InputVolumeError: not a cine, fewer than two frames, frames of different sizes, or not a cardiac model.
            FileNotFoundError: unknown model id.
        """
        from ..mrml import InputVolumeError
        from ..mrml.cardiac import find_cine
        from ..package import load_model_package
        from .jobs import CardiacJob

        settings = self.inferenceSettings(device, useTTA, mode)
        cine = find_cine(inputNode)
        if cine is None:
            raise InputVolumeError(
                tr(
                    "'{name}' is not a cine: select a frame of a volume sequence (a cine loaded as "
                    "a sequence) or a multi-volume."
                ).format(name=inputNode.GetName() if inputNode is not None else "")
            )
        return CardiacJob(
            cine,
            load_model_package(modelId),
            settings,
            onProgress,
            onFinished,
            onLog,
            python=self.childPython(),
            env=self.childEnvironment(),
            sequencesLogic=self.sequencesLogic(),
        )

    @staticmethod
    def sequencesLogic():
        """The Sequences module's logic (it updates proxy nodes when a browser changes frame), or None headless."""
        import slicer

        modules = getattr(slicer, "modules", None)
        sequences = getattr(modules, "sequences", None) if modules is not None else None
        return sequences.logic() if sequences is not None else None

    # Volumes, segmentations and cines ---------------------------------------------------------------

    @staticmethod
    def showIn3D(segmentationNode, show: bool = True) -> None:
        """Show (making closed surfaces) or hide the segmentation in 3D views."""
        if show:
            segmentationNode.CreateClosedSurfaceRepresentation()
        displayNode = segmentationNode.GetDisplayNode()
        if displayNode is not None:
            displayNode.SetVisibility3D(bool(show))

    @staticmethod
    def showVolumeCurve(tableNode) -> None:
        """Show the volume-time curve of a function table in a plot view of the layout."""
        import slicer

        from ..mrml.cardiac import ROLE_CHART

        chart = tableNode.GetNodeReference(ROLE_CHART) if tableNode is not None else None
        plots = getattr(getattr(slicer, "modules", None), "plots", None)
        if chart is not None and plots is not None:
            plots.logic().ShowChartInLayout(chart)

    @staticmethod
    def firstSegmentableVolume(scene):
        """The first scalar or RGB volume of the scene that the module can segment, or None."""
        from ..mrml import first_segmentable_volume

        return first_segmentable_volume(scene)

    @staticmethod
    def isCine(node) -> bool:
        """True for one frame of a cine (a sequence browser's proxy volume), a volume sequence or a multi-volume."""
        from ..mrml.cardiac import find_cine

        return find_cine(node) is not None

    @staticmethod
    def updateFunction(tableNode, edFrame=None, esFrame=None):
        """Recompute the function table from the current (possibly hand-edited) segmentations; no network runs.

        ``edFrame`` / ``esFrame`` are frame numbers counted from 1, as in the table (None: keep the table's).
        Returns the ``clinical.CardiacAnalysis``.
        """
        from ..mrml.cardiac import update_function

        return update_function(
            tableNode, None if edFrame is None else int(edFrame) - 1, None if esFrame is None else int(esFrame) - 1
        )

    @staticmethod
    def cineFrameCount(tableNode) -> int:
        """Number of frames of the cine a function table describes (0 when unknown)."""
        from ..mrml.cardiac import frame_count

        return frame_count(tableNode)
