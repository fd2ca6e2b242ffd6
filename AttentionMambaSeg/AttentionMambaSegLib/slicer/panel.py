"""The module panel's model management: importing, downloading and removing models, licences and the first install.

:class:`ModelsPanel` is a mixin of the module's Widget (``AttentionMambaSegWidget``): it uses the Widget's
``ui`` (the widgets of ``Resources/UI/AttentionMambaSeg.ui``), ``logic``, ``_parameterNode`` and ``_job``, and
its ``populateModels``, ``setRunning``, ``updateGUIFromParameterNode``, ``onProgress``, ``onLog`` and
``onSegment``. Every question is asked once, in one dialog: the packages to install (:mod:`.install`), the
model to download and the licence to accept (:mod:`.models`).

``slicer`` and ``qt`` are imported by the methods (this module is imported when Slicer starts).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

from . import tr

if TYPE_CHECKING:
    from .jobs import ChildProcessJob

__all__ = ["ModelsPanel"]


class PanelLogic(Protocol):
    """What the panel asks of the Widget's Logic (``AttentionMambaSegLogic``: :class:`~.logic.ModuleLogic` and
    the accepted licences)."""

    def registry(self) -> dict: ...
    def modelPackage(self, modelId: str) -> Any: ...
    def modelInstalled(self, modelId: str) -> bool: ...
    def modelDownloadProblem(self, modelId: str) -> str: ...
    def importedModelsFolder(self) -> str: ...
    def importedModelsSize(self) -> int: ...
    def removeImportedModels(self) -> list: ...
    def startDownload(self, modelId: str, onProgress=None, onFinished=None, onLog=None) -> Any: ...
    def startImport(self, path: str, onProgress=None, onFinished=None, onLog=None) -> Any: ...
    def dependencyPlan(self) -> list: ...
    def sitePackagesFolder(self) -> str: ...
    def installDependencies(self, plan: list | None = None) -> None: ...
    def licenceAccepted(self, package) -> bool: ...
    def acceptLicence(self, package) -> None: ...


class PanelParameterNode(Protocol):
    """The part of the module's parameter node (``AttentionMambaSegParameterNode``) the panel reads and sets."""

    modelId: str


class ModelsPanel:
    """The Widget's handlers for Import model..., Remove imported models, downloads, licences and installs."""

    # The Widget's attributes the handlers use (set by its __init__ and setup; logic is None until setup).
    ui: Any  # the widgets of the .ui file (slicer.util.childWidgetVariables)
    logic: PanelLogic | None
    _parameterNode: PanelParameterNode | None
    _job: ChildProcessJob | None
    _destroyed: bool

    #: True while packages are being installed: the panel is disabled (pip output runs the event loop).
    _installing = False

    if TYPE_CHECKING:  # the Widget's methods the handlers call

        def populateModels(self) -> None: ...
        def setRunning(self, running: bool) -> None: ...
        def updateGUIFromParameterNode(self, caller=None, event=None) -> None: ...
        def onProgress(self, done, total) -> None: ...
        def onLog(self, line: str) -> None: ...
        def onSegment(self) -> None: ...

    def onImportModel(self) -> None:
        """Import a package in a child process (its weights are checked against the network there, with torch)."""
        import qt
        import slicer

        if self._job is not None or self._installing:
            return
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            tr("Import a model: choose its .zip, or the model.json inside its folder"),
            "",
            tr("Model package (*.zip model.json)"),
        )
        if not path or not self._ensureDependencies():
            return
        self.ui.logTextEdit.clear()
        assert self.logic is not None  # made by the Widget's setup()
        with slicer.util.tryWithErrorDisplay(tr("The import failed to start.")):
            self._job = self.logic.startImport(
                path, onProgress=self.onProgress, onFinished=self.onImportFinished, onLog=self.onLog
            )
            self.setRunning(True)
            self.ui.statusLabel.text = tr("Importing '{file}' in a separate process...").format(
                file=os.path.basename(path)
            )

    def _modelJobFinished(self, result, error, failed: str, cancelled: str) -> bool:
        """Common end of an import or download job: True when it produced a model to go on with."""
        import slicer

        if self._destroyed:
            return False
        self._job = None
        self.setRunning(False)
        self.populateModels()
        if error is not None:
            self.ui.statusLabel.text = failed.format(error=error)
            slicer.util.errorDisplay(failed.format(error=error))
            return False
        if result is None:
            self.ui.statusLabel.text = cancelled
            return False
        return True

    def onImportFinished(self, result, error, elapsed) -> None:
        if not self._modelJobFinished(
            result, error, tr("Importing the model failed: {error}"), tr("Import cancelled: nothing was changed.")
        ):
            return
        if self._parameterNode is not None:
            self._parameterNode.modelId = result
        assert self.logic is not None
        self.ui.statusLabel.text = tr("Imported model '{id}' into {folder}.").format(
            id=result, folder=self.logic.importedModelsFolder()
        )

    def onRemoveImportedModels(self) -> None:
        import slicer

        assert self.logic is not None
        if not slicer.util.confirmOkCancelDisplay(
            tr(
                "Delete every imported or downloaded model from the models folder ({folder})? This frees "
                "{size:.0f} MB. Nothing else is touched."
            ).format(folder=self.logic.importedModelsFolder(), size=self.logic.importedModelsSize() / 1e6)
        ):
            return
        with slicer.util.tryWithErrorDisplay(tr("Removing imported models failed."), waitCursor=True):
            removed = self.logic.removeImportedModels()
            self.populateModels()
            self.ui.statusLabel.text = tr("Removed {n} imported model(s).").format(n=len(removed))

    def _ensureDependencies(self) -> bool:
        """One confirmation naming every package; True when everything needed is installed."""
        import slicer

        from .install import install_prompt

        assert self.logic is not None
        plan = self.logic.dependencyPlan()
        if not plan:
            return True
        names = ", ".join(item["name"] for item in plan)
        if not slicer.util.confirmOkCancelDisplay(
            install_prompt(plan, self.logic.sitePackagesFolder()), windowTitle=tr("Install Python packages")
        ):
            self.ui.statusLabel.text = tr(
                "Not installed: Segment needs {packages}. Press Segment again to install them."
            ).format(packages=names)
            return False
        self.ui.statusLabel.text = tr("Installing {packages}...").format(packages=names)
        # pip's output runs the event loop (slicer.util.logProcessOutput): nothing may be clicked meanwhile
        self._setInstalling(True)
        try:
            slicer.app.processEvents()
            with slicer.util.tryWithErrorDisplay(tr("Installing the Python packages failed."), waitCursor=True):
                self.logic.installDependencies(plan)
        except Exception as e:  # noqa: BLE001 - shown in a dialog by tryWithErrorDisplay
            self.ui.statusLabel.text = tr("Installing the Python packages failed: {error}").format(error=e)
            return False
        finally:
            self._setInstalling(False)
        self.ui.statusLabel.text = tr("Installed {packages}.").format(packages=names)
        return True

    def _setInstalling(self, installing: bool) -> None:
        """Disable the whole panel (inputs, Segment, Import model...) while packages are installed."""
        self._installing = installing
        self.ui.inputsCollapsibleButton.setEnabled(not installing)
        self.updateGUIFromParameterNode()

    def _modelReachable(self, modelId: str) -> bool:
        """For a model that is not installed: True when its download answers; else say so and name Import model...

        Asked before the (long) first-run install, so a user without access learns it first.
        """
        import slicer

        assert self.logic is not None
        problem = "" if self.logic.modelInstalled(modelId) else self.logic.modelDownloadProblem(modelId)
        if problem:
            self.ui.statusLabel.text = problem
            slicer.util.warningDisplay(problem, windowTitle=tr("Model not reachable"))
        return not problem

    def _acceptLicence(self, modelId: str) -> bool:
        """Ask once per model and licence text; the answer is remembered."""
        import slicer

        from .models import licence_question

        assert self.logic is not None
        package = self.logic.modelPackage(modelId)
        if not package.licence_needs_acceptance or self.logic.licenceAccepted(package):
            return True
        if not slicer.util.confirmOkCancelDisplay(
            licence_question(package), windowTitle=tr("Model licence"), detailedText=package.describe()
        ):
            self.ui.statusLabel.text = tr("Licence of '{id}' not accepted: nothing was done.").format(id=package.id)
            return False
        self.logic.acceptLicence(package)
        return True

    def _startDownload(self, modelId: str) -> None:
        """Ask once (model, size, licence), then download in a child process; Segment continues after it."""
        import slicer

        from .models import download_question

        assert self.logic is not None
        entry = self.logic.registry().get(modelId)
        if entry is None:
            self.ui.statusLabel.text = tr("Model '{id}' is not installed: import it.").format(id=modelId)
            return
        if not slicer.util.confirmOkCancelDisplay(download_question(entry), windowTitle=tr("Download model")):
            self.ui.statusLabel.text = tr("Download declined: nothing was done.")
            return
        with slicer.util.tryWithErrorDisplay(tr("The download failed to start.")):
            self._job = self.logic.startDownload(
                modelId, onProgress=self.onProgress, onFinished=self.onDownloadFinished, onLog=self.onLog
            )
            self.setRunning(True)
            self.ui.statusLabel.text = tr("Downloading '{id}'...").format(id=modelId)

    def onDownloadFinished(self, result, error, elapsed) -> None:
        if self._modelJobFinished(
            result, error, tr("Download failed: {error}"), tr("Download cancelled: nothing was changed.")
        ):
            assert self.logic is not None and self._parameterNode is not None
            self.logic.acceptLicence(self.logic.modelPackage(self._parameterNode.modelId))  # shown when asked
            self.onSegment()
