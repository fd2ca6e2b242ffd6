"""First install in Slicer: models folder, Import model... in a child process, the URL check before the PyTorch
install, the panel during installs, PythonSlicer's crash message, the Intel-Mac numpy rule and Sample Data
(the module file headless with GUI shims; real child processes)."""

from __future__ import annotations

import http.server
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from _slicer_helpers import MODULE_DIR, install_gui_shims, new_scene, slicer

# isort: split
import SimpleITK as sitk  # noqa: E402

from AttentionMambaSegLib import model_store, mrml, package as packages  # noqa: E402
from AttentionMambaSegLib.slicer import install, models, startup  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture
def module(monkeypatch):
    install_gui_shims(monkeypatch)
    sys.modules.pop("AttentionMambaSeg", None)
    mod = importlib.import_module("AttentionMambaSeg")
    yield mod
    sys.modules.pop("AttentionMambaSeg", None)


@pytest.fixture
def server():
    """A local server: /ok.zip answers 200 (HEAD and GET), /missing.zip 404, /nohead.zip 405 to HEAD."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, body: bool):
            if self.path == "/missing.zip" or (self.path == "/nohead.zip" and not body and self.command == "HEAD"):
                self.send_error(404 if self.path == "/missing.zip" else 405)
                return
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            if body:
                self.wfile.write(b"PK..")

        def do_HEAD(self):
            self._answer(False)

        def do_GET(self):
            self._answer(True)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# ------------------------------------------------------------------------------------------ models folder
def test_models_live_in_a_remembered_per_user_data_folder_not_in_slicers_cache(module, monkeypatch, tmp_path):
    monkeypatch.delenv("ATTENTION_MAMBA_SEG_MODELS_DIR", raising=False)
    data = tmp_path / "AppData" / "NA-MIC" / "Slicer"
    qt = sys.modules["qt"]
    paths = types.SimpleNamespace(AppDataLocation=4, writableLocation=lambda kind: str(data))
    monkeypatch.setattr(qt, "QStandardPaths", paths, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(cachePath=str(tmp_path / "cache")), raising=False)
    logic = module.AttentionMambaSegLogic()
    expected = str(data / "AttentionMambaSeg" / "models")
    assert os.environ["ATTENTION_MAMBA_SEG_MODELS_DIR"] == expected == logic.importedModelsFolder()
    assert module._readSetting("modelsFolder", "") == expected  # remembered
    assert str(tmp_path / "cache") not in expected
    logic.setModelsFolder(str(tmp_path / "elsewhere"))
    assert module.AttentionMambaSegLogic.modelsFolder() == str(tmp_path / "elsewhere")
    assert model_store.imported_models_dir() == tmp_path / "elsewhere"


def test_the_panel_shows_the_models_folder():
    ui = (MODULE_DIR / "Resources" / "UI" / "AttentionMambaSeg.ui").read_text(encoding="utf-8")
    text = (MODULE_DIR / "AttentionMambaSeg.py").read_text(encoding="utf-8")
    assert 'name="modelsFolderLabel"' in ui
    assert "self.ui.modelsFolderLabel.text = self.logic.importedModelsFolder()" in text


# ------------------------------------------------------------------------------------------ import in a child
@pytest.mark.slow
def test_import_model_runs_in_a_child_process_and_reports_its_steps(module, monkeypatch, tmp_path):
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "models"))
    logic = module.AttentionMambaSegLogic()
    progress, finished = [], []
    source = packages.bundled_models_dir() / "hippocampus-msd" / "model.json"  # as the file dialog returns it
    job = logic.startImport(
        str(source), onProgress=lambda d, t: progress.append((d, t)), onFinished=lambda *a: finished.append(a)
    )
    assert job.wait(timeout=300)
    ((result, error, _),) = finished
    assert error is None and result == "hippocampus-msd"
    assert {e["pid"] for e in job.process.events} == {job.process.pid} and job.process.pid != os.getpid()
    assert job.process.command[1:5] == ["-m", "AttentionMambaSegLib.cli", "models", "import"]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (tmp_path / "models" / "hippocampus-msd" / "model.safetensors").is_file()
    assert logic.importModel(str(source.parent), timeout=300) == "hippocampus-msd"  # the console form


def test_import_model_without_torch_fails_cleanly_in_the_child(module, monkeypatch, tmp_path):
    blocker = tmp_path / "no-torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "models"))
    logic = module.AttentionMambaSegLogic()
    before = set(sys.modules)
    finished = []
    job = logic.startImport(
        str(packages.bundled_models_dir() / "hippocampus-msd"), onFinished=lambda *a: finished.append(a)
    )
    assert job.wait(timeout=120)
    ((result, error, _),) = finished
    assert result is None and job.process.pid != os.getpid()
    assert str(error).startswith(
        "Checking the weights of model 'hippocampus-msd' needs PyTorch and safetensors, and torch is not installed"
    )
    assert "press Segment once" in str(error) and "exit" not in str(error)
    models = tmp_path / "models"
    assert not (models / "hippocampus-msd").exists()  # nothing half-imported
    assert not [p for p in models.iterdir() if not p.name.startswith(".")] if models.exists() else True
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("torch", "safetensors")}
    assert not job.process.folder.exists()


def test_the_widget_imports_after_the_dependency_check_with_the_panel_disabled(module, monkeypatch):
    calls = []

    class Logic:
        def startImport(self, path, **kwargs):
            calls.append(("startImport", path))
            return types.SimpleNamespace()

    widget = module.AttentionMambaSegWidget.__new__(module.AttentionMambaSegWidget)
    widget.logic, widget._job, widget._destroyed = Logic(), None, False
    widget.ui = types.SimpleNamespace(
        logTextEdit=types.SimpleNamespace(clear=lambda: None), statusLabel=types.SimpleNamespace(text="")
    )
    widget.setRunning = lambda running: calls.append(("running", running))
    monkeypatch.setattr(
        sys.modules["qt"],
        "QFileDialog",
        types.SimpleNamespace(getOpenFileName=lambda *a: "/data/cardiac-acdc-1.5.0.zip"),
        raising=False,
    )
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None, raising=False)
    widget._ensureDependencies = lambda: calls.append("dependencies") or False  # declined: no import
    widget.onImportModel()
    assert calls == ["dependencies"]
    widget._ensureDependencies = lambda: calls.append("dependencies") or True
    widget.onImportModel()
    assert calls[1:] == ["dependencies", ("startImport", "/data/cardiac-acdc-1.5.0.zip"), ("running", True)]
    assert widget.ui.statusLabel.text == "Importing 'cardiac-acdc-1.5.0.zip' in a separate process..."


# ------------------------------------------------------------------------------------------ URL check
def test_url_check_answers_in_words(server):
    assert models.url_problem(f"{server}/ok.zip", timeout=5) is None
    assert models.url_problem(f"{server}/nohead.zip", timeout=5) is None  # falls back to GET
    assert models.url_problem(f"{server}/missing.zip", timeout=5) == "the server answered HTTP 404 (not found)"
    closed = server.rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens
    assert "could not be reached" in models.url_problem(f"{closed}/x.zip", timeout=2)


def test_an_unreachable_model_is_named_before_the_pytorch_install(module, monkeypatch, server, tmp_path):
    import json

    from AttentionMambaSegLib.registry import load_registry

    entry = load_registry()["hippocampus-msd"].to_dict()
    entry.update(id="hippocampus-offline", urls=[f"{server}/missing.zip"])
    (tmp_path / "registry.json").write_text(json.dumps({"format": 1, "models": [entry]}))
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "models"))
    logic = module.AttentionMambaSegLogic()
    problem = logic.modelDownloadProblem("hippocampus-offline")
    assert problem.startswith(
        f"Model 'hippocampus-offline' 1.5.0 cannot be downloaded from this computer "
        f"({server}/missing.zip: the server answered HTTP 404 (not found))."
    )
    assert "hippocampus-offline-1.5.0.zip" in problem and "Import model..." in problem
    shown, installs = [], []
    monkeypatch.setattr(slicer.util, "warningDisplay", lambda text, **kw: shown.append(text), raising=False)
    widget = module.AttentionMambaSegWidget.__new__(module.AttentionMambaSegWidget)
    widget.logic, widget._job, widget._destroyed = logic, None, False
    widget.ui = types.SimpleNamespace(statusLabel=types.SimpleNamespace(text=""))
    widget._parameterNode = types.SimpleNamespace(modelId="hippocampus-offline")
    widget._ensureDependencies = lambda: installs.append("install") or True
    widget.onSegment()
    assert shown == [problem] and widget.ui.statusLabel.text == problem and installs == []  # no install offered
    entry["urls"] = [f"{server}/ok.zip"]
    (tmp_path / "registry.json").write_text(json.dumps({"format": 1, "models": [entry]}))
    assert logic.modelDownloadProblem("hippocampus-offline") == ""
    assert logic.modelDownloadProblem("hippocampus-msd") == ""  # installed (bundled): never asked


# ------------------------------------------------------------------------------------------ installs
def test_the_panel_is_disabled_while_packages_install_and_a_second_click_does_nothing(module, monkeypatch):
    states, second = [], []

    class Logic:
        def dependencyPlan(self):
            return [{"name": "torch", "requirement": "torch>=2.1", "why": "PyTorch"}]

        def sitePackagesFolder(self):
            return "/site-packages"

        def installDependencies(self, plan):
            states.append((widget._installing, inputs.enabled))
            widget.onSegment()  # pip's output runs the event loop: a click on Segment arrives now
            widget.onImportModel()

    inputs = types.SimpleNamespace(enabled=True, setEnabled=lambda value: setattr(inputs, "enabled", value))
    widget = module.AttentionMambaSegWidget.__new__(module.AttentionMambaSegWidget)
    widget.logic, widget._job, widget._destroyed = Logic(), None, False
    widget.ui = types.SimpleNamespace(statusLabel=types.SimpleNamespace(text=""), inputsCollapsibleButton=inputs)
    widget.updateGUIFromParameterNode = lambda *a: None
    widget._modelReachable = lambda modelId: second.append("segment") or True
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)
    monkeypatch.setattr(
        slicer.util, "tryWithErrorDisplay", lambda *a, **k: __import__("contextlib").nullcontext(), raising=False
    )
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None), raising=False)
    assert widget._ensureDependencies() is True
    assert states == [(True, False)] and second == []  # disabled during the install; the clicks did nothing
    assert widget._installing is False and inputs.enabled is True
    assert widget.ui.statusLabel.text == "Installed torch."


@pytest.mark.skipif(os.name == "nt", reason="the stand-in interpreter is a shell script")
def test_pythonslicers_crash_message_gets_the_out_of_memory_hint(module, tmp_path):
    scene = new_scene()
    volume = mrml.add_volume_node_from_image(scene, sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16)), "input")
    script = tmp_path / "PythonSlicer"
    script.write_text(
        "#!/bin/sh\necho '[/opt/Slicer/bin/python-real] exit abnormally - Report the problem.' >&2\nexit 1\n"
    )
    script.chmod(0o755)
    logic = module.AttentionMambaSegLogic()
    logic.pythonExecutable = str(script)
    finished = []
    job = logic.startSegmentation(volume, "hippocampus-msd", onFinished=lambda *a: finished.append(a))
    assert job.wait(timeout=60)
    ((result, error, _),) = finished
    assert result is None and str(error).startswith(
        "The segment process crashed (PythonSlicer: exit abnormally), often because memory ran out: try a region "
        "of interest, Speed 'Fast' or the CPU device"
    )


def test_intel_macs_get_numpy_1_for_the_child_only(module, monkeypatch, tmp_path):
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "AttentionMambaSeg" / "models"))
    monkeypatch.setattr(install.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(install.platform, "machine", lambda: "x86_64")
    item = install.intel_mac_numpy_item("2.4.6", tmp_path / "AttentionMambaSeg")
    target = tmp_path / "AttentionMambaSeg" / "python-child"
    assert item["requirement"] == "numpy<2" and item["target"] == str(target)
    assert install.intel_mac_numpy_item("1.26.4", tmp_path) is None  # Slicer 5.8's numpy: nothing to do
    logic = module.AttentionMambaSegLogic()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(install, "installed_torch_version", lambda: (2, 2))
    monkeypatch.setattr(install, "installed_torch_cuda", lambda: None)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.4.6" if name == "numpy" else "0")
    plan = logic.dependencyPlan()
    assert [i["requirement"] for i in plan] == ["numpy<2"]
    pips = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda args: pips.append(args), raising=False)
    monkeypatch.setattr(install, "pip_install", lambda requirements: pips.append(("site-packages", requirements)))
    logic.installDependencies(plan)
    assert pips == [["--target", str(target), "--no-deps", "--upgrade", "numpy<2"]]  # Slicer's numpy untouched
    (target / "numpy").mkdir(parents=True)
    assert logic.dependencyPlan() == []
    env = logic.childEnvironment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(target)
    monkeypatch.setattr(install.platform, "machine", lambda: "arm64")
    assert install.intel_mac_numpy_item("2.4.6", tmp_path / "elsewhere") is None


# ------------------------------------------------------------------------------------------ Sample Data
def _register_custom_sample_data_source(
    category="Custom",
    sampleName=None,
    uris=None,
    fileNames=None,
    nodeNames=None,
    customDownloader=None,
    thumbnailFileName=None,
    loadFileTypes=None,
    loadFiles=None,
    loadFileProperties={},  # noqa: B006 - Slicer's signature as it is (never mutated here)
    checksums=None,
    loadFileType=None,
):
    """The parameters of SampleDataLogic.registerCustomSampleDataSource in Slicer 5.10 and 5.12."""
    registered.append(
        dict(
            category=category,
            sampleName=sampleName,
            uris=uris,
            fileNames=fileNames,
            nodeNames=nodeNames,
            thumbnailFileName=thumbnailFileName,
            loadFileTypes=loadFileTypes,
        )
    )


registered: list = []


def test_the_sample_is_registered_with_sample_data(module, monkeypatch):
    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = types.SimpleNamespace(
        registerCustomSampleDataSource=staticmethod(_register_custom_sample_data_source)
    )
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    registered.clear()
    startup.register_sample_data(MODULE_DIR / "Resources")  # as the module does when Slicer has started
    (source,) = registered
    assert source["category"] == "AttentionMambaSeg" and source["sampleName"] == "AttentionMambaSegHippocampus"
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    path = Path(url2pathname(urlparse(source["uris"]).path))
    assert source["uris"].startswith("file:") and path.is_file() and path.name == source["fileNames"]
    assert sitk.ReadImage(str(path)).GetSize() == (35, 51, 8)
    assert Path(source["thumbnailFileName"]).is_file() and source["loadFileTypes"] == "VolumeFile"
    # every keyword passed is a parameter of Slicer's function
    text = Path(startup.__file__).read_text(encoding="utf-8")
    call = text[text.index("registerCustomSampleDataSource(") :]
    call = call[: call.index("\n    )")]
    keywords = {line.strip().split("=")[0] for line in call.splitlines()[1:] if "=" in line}
    assert keywords <= set(inspect.signature(_register_custom_sample_data_source).parameters)
    monkeypatch.setitem(sys.modules, "SampleData", None)  # the module disabled: nothing happens
    startup.register_sample_data(MODULE_DIR / "Resources")
    assert len(registered) == 1
