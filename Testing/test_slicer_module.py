"""The Slicer module file (AttentionMambaSeg.py) imported headless with GUI shims."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import textwrap
import threading
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from _slicer_helpers import (  # noqa: I001
    HIPPO_CLASSES,
    MODULE_DIR,
    REPO,
    FakePackage,
    fixed_predictor,
    install_gui_shims,
    intensity_bands,
    new_scene,
    segment_names,
    slicer,
    tiny_package,
)

import SimpleITK as sitk  # noqa: E402

from AttentionMambaSegLib import mrml  # noqa: E402

pytestmark = pytest.mark.slicer

MODULE_FILE = MODULE_DIR / "AttentionMambaSeg.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "AttentionMambaSeg.ui"


@pytest.fixture
def module(monkeypatch):
    install_gui_shims(monkeypatch)
    sys.modules.pop("AttentionMambaSeg", None)
    mod = importlib.import_module("AttentionMambaSeg")
    yield mod
    sys.modules.pop("AttentionMambaSeg", None)


def test_module_file_imports_without_torch_or_third_party_packages():
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'Testing')!r})
        import _slicer_helpers as h
        class MP:
            def setitem(self, d, k, v): d[k] = v
            def setattr(self, o, n, v, raising=True): setattr(o, n, v)
            def syspath_prepend(self, p): sys.path.insert(0, p)
        h.install_gui_shims(MP())
        before = set(sys.modules)
        import AttentionMambaSeg
        new = {{m.split('.')[0] for m in set(sys.modules) - before}}
        heavy = sorted(new & {{'torch', 'numba', 'mamba_ssm', 'safetensors', 'platformdirs', 'scipy', 'monai'}})
        assert not heavy, heavy
        assert 'torch' not in sys.modules
        print('OK')
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


def test_module_file_scope_imports_only_slicer_qt_and_stdlib():
    tree = ast.parse(MODULE_FILE.read_text())
    allowed = {"importlib", "logging", "os", "queue", "sys", "threading", "typing", "qt", "ctk", "vtk", "slicer"}
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        assert set(names) <= allowed, f"file-scope import of {names} in the module file"


def test_module_metadata(module):
    parent = types.SimpleNamespace()
    module.AttentionMambaSeg(parent)
    assert parent.categories == ["Segmentation"]
    assert parent.title and parent.contributors
    assert "2402.02286" in parent.acknowledgementText and "Zhang et al." in parent.acknowledgementText
    assert "CC BY-NC-SA 4.0" in parent.acknowledgementText and "Apache-2.0" in parent.acknowledgementText
    assert "github.com/attention-mamba-seg/SlicerAttentionMambaSeg" in parent.helpText


def test_parameter_node_fields(module):
    fields = module.AttentionMambaSegParameterNode.fields
    assert set(fields) == {"inputVolume", "outputSegmentation", "modelId", "device", "useTTA"}
    node = module.AttentionMambaSegParameterNode()
    assert node.device == "auto" and node.useTTA is True and node.modelId == ""


def test_ui_is_valid_and_has_every_widget_the_module_uses(module):
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert used, "the module should use widgets through self.ui"
    missing = used - set(widgets)
    assert not missing, f"widgets used by the module but absent from the .ui: {sorted(missing)}"
    bound = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    fields = set(module.AttentionMambaSegParameterNode.fields)
    assert set(bound.values()) <= fields
    assert {"inputVolume", "outputSegmentation", "useTTA"} <= set(bound.values())
    assert widgets["inputVolumeSelector"].get("class") == "qMRMLNodeComboBox"
    assert widgets["outputSegmentationSelector"].get("class") == "qMRMLNodeComboBox"
    assert widgets["progressBar"].get("class") == "QProgressBar"
    none_display = [p.find("string").text for p in widgets["outputSegmentationSelector"].findall("property")
                    if p.get("name") == "noneDisplay"]
    assert none_display == ["Create new segmentation"]


def test_logic_job_runs_in_a_worker_thread_and_writes_on_poll(module, monkeypatch):
    scene = new_scene()
    image = sitk.GetImageFromArray(np.arange(3 * 20 * 24, dtype=np.int16).reshape(3, 20, 24))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    writer_threads = []
    original_write = mrml.write_segmentation

    def write(*args, **kwargs):
        writer_threads.append(threading.current_thread())
        return original_write(*args, **kwargs)

    monkeypatch.setattr(mrml, "write_segmentation", write)
    monkeypatch.setattr(mrml, "_predict", fixed_predictor(intensity_bands([0, 1, 2])))
    inference = types.ModuleType("AttentionMambaSegLib.inference")
    inference.select_device = lambda device: ("cpu", "CPU (test)")
    monkeypatch.setitem(sys.modules, "AttentionMambaSegLib.inference", inference)

    progress, finished = [], []
    logic = module.AttentionMambaSegLogic()
    job = logic.startSegmentation(volume, FakePackage(HIPPO_CLASSES), None, device="cpu",
                                  onProgress=lambda d, t: progress.append((d, t)),
                                  onFinished=lambda r, e: finished.append((r, e)))
    assert job.wait(timeout=30)
    assert writer_threads == [threading.main_thread()]
    (result, error), = finished
    assert error is None and segment_names(result.segmentation_node) == [c["name"] for c in HIPPO_CLASSES]
    assert progress[-1] == (3, 3)
    assert job.deviceDescription == "CPU (test)"


def test_logic_job_cancel_leaves_scene_unchanged(module, monkeypatch):
    scene = new_scene()
    image = sitk.GetImageFromArray(np.arange(3 * 20 * 24, dtype=np.int16).reshape(3, 20, 24))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    started = threading.Event()

    def slow_predict(image, package, device, tta, batch_size, progress, cancel):
        started.set()
        for done in range(1, 100):
            if cancel.wait(0.01):
                return None
            progress(done, 100)
        raise AssertionError("cancel was not seen")

    monkeypatch.setattr(mrml, "_predict", slow_predict)
    inference = types.ModuleType("AttentionMambaSegLib.inference")
    inference.select_device = lambda device: ("cpu", "CPU (test)")
    monkeypatch.setitem(sys.modules, "AttentionMambaSegLib.inference", inference)
    nodes = scene.GetNumberOfNodes()
    finished = []
    job = module.AttentionMambaSegLogic().startSegmentation(
        volume, FakePackage(HIPPO_CLASSES), onFinished=lambda r, e: finished.append((r, e)))
    assert started.wait(10)
    job.cancel()
    assert job.wait(timeout=10)
    assert finished == [(None, None)]
    assert scene.GetNumberOfNodes() == nodes


def test_logic_job_reports_bad_input_before_starting(module):
    scene = new_scene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labelmap, np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(mrml.InputVolumeError, match="labelmap"):
        module.AttentionMambaSegLogic().startSegmentation(labelmap, FakePackage(HIPPO_CLASSES))


def test_missing_dependencies_are_checked_without_importing(module):
    missing = module.AttentionMambaSegLogic.missingDependencies()
    assert missing == []  # the test environment has torch, safetensors and platformdirs
    assert set(module.PIP_REQUIREMENTS).isdisjoint({"numpy", "SimpleITK", "vtk", "requests", "torch"})
    assert not any(r.lower().startswith(("numpy", "simpleitk", "vtk", "requests", "torch", "numba"))
                   for r in module.PIP_REQUIREMENTS)


def test_module_test_class_runs_the_pipeline_on_the_bundled_sample(module, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    package = tiny_package(tmp_path, HIPPO_CLASSES, model_id="sample-test")
    new_scene()
    test = module.AttentionMambaSegTest()
    monkeypatch.setattr(module.AttentionMambaSegTest, "_model", lambda self, tempDir: package)
    slicer.mrmlScene.Clear()
    test.test_AttentionMambaSeg_sample()
