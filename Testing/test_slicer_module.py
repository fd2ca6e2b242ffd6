"""The Slicer module file (AttentionMambaSeg.py) imported headless with GUI shims."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from _slicer_helpers import (  # noqa: I001
    HIPPO_IMAGE,
    MODULE_DIR,
    REPO,
    install_gui_shims,
    new_scene,
    segment_array,
    segment_ids,
    segment_names,
    slicer,
    tag,
)
from conftest import require

# isort: split
import SimpleITK as sitk  # noqa: E402

from AttentionMambaSegLib import mrml  # noqa: E402
from AttentionMambaSegLib.slicer import install, jobs, self_test, startup  # noqa: E402

pytestmark = pytest.mark.slicer

MODULE_FILE = MODULE_DIR / "AttentionMambaSeg.py"
#: The Widget's handlers for models, licences and installs (a mixin of the Widget).
PANEL_FILE = MODULE_DIR / "AttentionMambaSegLib" / "slicer" / "panel.py"
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
        sys.path.insert(0, {str(REPO / "Testing")!r})
        import _slicer_helpers as h
        class MP:
            def setitem(self, d, k, v): d[k] = v
            def setattr(self, o, n, v, raising=True): setattr(o, n, v)
            def syspath_prepend(self, p): sys.path.insert(0, p)
        h.install_gui_shims(MP())
        before = set(sys.modules)
        import AttentionMambaSeg
        import os, tempfile
        os.environ['ATTENTION_MAMBA_SEG_MODELS_DIR'] = tempfile.mkdtemp()  # as inside Slicer (its cache folder)
        logic = AttentionMambaSeg.AttentionMambaSegLogic()
        assert logic.defaultSpeedLabel('cardiac-acdc', 'auto').startswith('Model default (')
        assert 'Fast: ' in logic.speedDescription('cardiac-acdc')
        new = {{m.split('.')[0] for m in set(sys.modules) - before}}
        heavy = sorted(new & {{'torch', 'numba', 'mamba_ssm', 'safetensors', 'platformdirs', 'scipy', 'monai'}})
        assert not heavy, heavy
        assert 'torch' not in sys.modules
        print('OK')
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


def test_module_file_scope_imports_only_slicer_qt_and_stdlib():
    """Slicer, Qt, the standard library and the extension's own package, whose file-scope imports are torch-free
    (the test above)."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    allowed = {
        "importlib",
        "logging",
        "os",
        "shutil",
        "sys",
        "time",
        "typing",
        "qt",
        "ctk",
        "vtk",
        "slicer",
        "AttentionMambaSegLib",
    }
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
    assert set(fields) == {
        "inputVolume",
        "inputROI",
        "outputSegmentation",
        "modelId",
        "device",
        "speedMode",
        "functionTable",
        "edFrame",
        "esFrame",
    }
    node = module.AttentionMambaSegParameterNode()
    assert node.device == "auto" and node.speedMode == "" and node.modelId == ""
    assert (node.edFrame, node.esFrame) == (1, 1)


def test_ui_is_valid_and_has_every_widget_the_module_uses(module):
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    used = {
        name
        for path in (MODULE_FILE, PANEL_FILE)
        for name in re.findall(r"self\.ui\.(\w+)", path.read_text(encoding="utf-8"))
    }
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
    assert {"inputVolume", "inputROI", "outputSegmentation", "edFrame", "esFrame"} <= set(bound.values())
    speed = widgets["speedComboBox"]
    assert speed.get("class") == "QComboBox" and "useTTACheckBox" not in widgets
    assert [i.find("property/string").text for i in speed.findall("item")] == ["Model default", "Fast", "Accurate"]
    assert widgets["inputVolumeSelector"].get("class") == "qMRMLNodeComboBox"
    assert widgets["outputSegmentationSelector"].get("class") == "qMRMLNodeComboBox"
    assert widgets["progressBar"].get("class") == "QProgressBar"
    none_display = [
        p.find("string").text
        for p in widgets["outputSegmentationSelector"].findall("property")
        if p.get("name") == "noneDisplay"
    ]
    assert none_display == ["Create new segmentation"]
    roi = {p.get("name"): p for p in widgets["inputROISelector"].findall("property")}
    assert [s.text for s in roi["nodeTypes"].iter("string")] == ["vtkMRMLMarkupsROINode"]
    assert roi["addEnabled"].find("bool").text == "true"  # the "create new ROI" shortcut
    assert roi["noneDisplay"].find("string").text == "Whole volume"


def test_roi_argument_is_the_roi_in_the_frame_of_the_volume_with_its_own_transform(module, tmp_path):
    import json

    scene = new_scene()
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenter(10.0, -20.0, 30.0)
    roi.SetSize(40.0, 50.0, 60.0)
    (markup,) = jobs.roi_argument(roi)["markups"]
    assert markup["coordinateSystem"] == "RAS" and markup["type"] == "ROI"
    np.testing.assert_allclose(markup["center"], [10.0, -20.0, 30.0])
    np.testing.assert_allclose(markup["size"], [40.0, 50.0, 60.0])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = transform.GetMatrixTransformToParent()
    matrix.SetElement(0, 3, 5.0)  # 5 mm towards R
    transform.SetMatrixTransformToParent(matrix)
    roi.SetAndObserveTransformNodeID(transform.GetID())
    document = jobs.roi_argument(roi)
    np.testing.assert_allclose(document["markups"][0]["center"], [15.0, -20.0, 30.0])
    assert jobs.roi_argument(None) is None
    from AttentionMambaSegLib.inference import RegionOfInterest

    (tmp_path / "roi.mrk.json").write_text(json.dumps(document))
    box = RegionOfInterest.from_markups_file(tmp_path / "roi.mrk.json")
    np.testing.assert_allclose(box.center, (-15.0, 20.0, 30.0))  # LPS for the child
    np.testing.assert_allclose(box.size, (40.0, 50.0, 60.0))
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moved")
    volume.SetAndObserveTransformNodeID(transform.GetID())  # the same transform: the box is back where it was
    np.testing.assert_allclose(jobs.roi_argument(roi, volume)["markups"][0]["center"], [10.0, -20.0, 30.0], atol=1e-9)


def _hippocampus_volume(scene):
    require(HIPPO_IMAGE)
    return mrml.add_volume_node_from_image(scene, sitk.ReadImage(str(HIPPO_IMAGE)), "hippocampus")


def _run_segment_command(image_path, output, *extra):
    env = dict(os.environ, PYTHONPATH=str(MODULE_DIR))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "AttentionMambaSegLib.cli",
            "segment",
            str(image_path),
            "-o",
            str(output),
            "--model",
            "hippocampus-msd",
            "--device",
            "cpu",
            "--no-tta",
            *extra,
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_gui_path_runs_in_a_child_process_and_equals_the_segment_command(module, tmp_path):
    """The Logic's child-process run (real CLI, real model, real volume) vs `attention-mamba-seg segment`."""
    scene = new_scene()
    volume = _hippocampus_volume(scene)
    reference = tmp_path / "reference.nii.gz"
    _run_segment_command(HIPPO_IMAGE, reference)
    progress, finished, log = [], [], []
    job = module.AttentionMambaSegLogic().startSegmentation(
        volume,
        "hippocampus-msd",
        None,
        device="cpu",
        useTTA=False,
        onProgress=lambda d, t: progress.append((d, t)),
        onFinished=lambda *a: finished.append(a),
        onLog=log.append,
    )
    folder = job.process.folder
    assert job.wait(timeout=600)
    ((result, error, seconds),) = finished
    assert error is None and seconds > 0
    pids = {e["pid"] for e in job.process.events}
    assert pids == {job.process.pid} and job.process.pid != os.getpid()
    slices = volume.GetImageData().GetDimensions()[0]  # the hippocampus crops are sagittal: slices along I
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
    assert progress[-1][0] == progress[-1][1] and len(progress) >= progress[-1][1] >= min(expected.shape)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    labels = np.zeros(expected.shape, np.uint8)
    node = result.segmentation_node
    for segment_id in segment_ids(node):
        value = int(tag(node.GetSegmentation().GetSegment(segment_id), mrml.TAG_LABEL_VALUE))
        labels[segment_array(node, segment_id, volume) > 0] = value
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(expected)) == {0, 1, 2} and slices > 0
    names = segment_names(node)
    assert [n.removesuffix(mrml.NEEDS_REVIEW_SUFFIX) for n in names] == [
        "anterior hippocampus",
        "posterior hippocampus",
    ]
    segments = [node.GetSegmentation().GetSegment(s) for s in segment_ids(node)]
    assert all(tag(s, mrml.TAG_NEEDS_REVIEW) in ("0", "1") for s in segments)  # the child's report was read
    assert {s.GetName() for s in segments if tag(s, mrml.TAG_NEEDS_REVIEW) == "1"} == {
        n for n in names if n.endswith(mrml.NEEDS_REVIEW_SUFFIX)
    }
    assert any("Device: CPU" in line for line in log) and "CPU" in job.deviceDescription
    assert not folder.exists()  # temporary files removed


def test_cancel_kills_the_child_within_two_seconds_and_leaves_the_scene(module):
    scene = new_scene()
    volume = _hippocampus_volume(scene)
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    nodes = scene.GetNumberOfNodes()
    finished, progress = [], []
    job = module.AttentionMambaSegLogic().startSegmentation(
        volume,
        "hippocampus-msd",
        existing,
        device="cpu",
        useTTA=True,
        onProgress=lambda d, t: progress.append(d),
        onFinished=lambda *a: finished.append(a),
    )
    deadline = time.monotonic() + 300
    while not progress and time.monotonic() < deadline:  # wait until the child is really predicting
        job.poll()
        time.sleep(0.05)
    assert progress and not job.finished
    pid, folder = job.process.pid, job.process.folder
    start = time.monotonic()
    job.cancel()
    assert time.monotonic() - start < 2.0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert len(finished) == 1 and finished[0][:2] == (None, None)
    assert scene.GetNumberOfNodes() == nodes and existing.GetSegmentation().GetNumberOfSegments() == 0
    assert not folder.exists()


def _fake_python(tmp_path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.skipif(os.name == "nt", reason="the stand-in interpreters are shell scripts")
@pytest.mark.parametrize(
    "body, message",
    [
        (
            f"exec {sys.executable} -c 'raise RuntimeError(\"simulated failure in the child\")'",
            r"exited with code 1\. Its last output: .*RuntimeError: simulated failure in the child",
        ),
        ("kill -9 $$", r"stopped by SIGKILL \(killed: often out of memory\)"),
    ],
)
def test_a_failing_child_reports_its_own_message(module, tmp_path, body, message):
    scene = new_scene()
    image = sitk.GetImageFromArray(np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    logic = module.AttentionMambaSegLogic()
    logic.pythonExecutable = _fake_python(tmp_path, body)
    finished = []
    job = logic.startSegmentation(volume, "hippocampus-msd", onFinished=lambda *a: finished.append(a))
    assert job.wait(timeout=60)
    ((result, error, _),) = finished
    assert result is None and re.search(message, str(error)), error
    assert not job.process.folder.exists()


@pytest.mark.skipif(os.name == "nt", reason="the stand-in interpreters are shell scripts")
@pytest.mark.parametrize(
    "mode, useTTA, expected",
    [
        (None, True, []),
        ("fast", True, ["--mode", "fast"]),
        ("accurate", True, ["--mode", "accurate"]),
        (None, False, ["--no-tta"]),
        ("fast", False, ["--mode", "fast", "--no-tta"]),
    ],
)
def test_the_speed_mode_reaches_the_child_command_line(module, tmp_path, mode, useTTA, expected):
    scene = new_scene()
    volume = mrml.add_volume_node_from_image(scene, sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16)), "input")
    logic = module.AttentionMambaSegLogic()
    logic.pythonExecutable = _fake_python(tmp_path, "exit 3")
    job = logic.startSegmentation(volume, "hippocampus-msd", device="cpu", useTTA=useTTA, mode=mode)
    command = job.process.command
    assert job.wait(timeout=60)
    options = [a for a in command[command.index("--device") + 2 :] if a not in ("--progress-format", "jsonl")]
    assert options == expected, command
    with pytest.raises(ValueError, match="Unknown speed mode 'quick'"):
        logic.startSegmentation(volume, "hippocampus-msd", mode="quick")


def test_the_panel_passes_its_speed_choice_and_remembers_it(module):
    scene = new_scene()
    volume = mrml.add_volume_node_from_image(scene, sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16)), "input")
    started = []

    class Logic:
        def modelInstalled(self, modelId):
            return True

        def isCine(self, node):
            return False

        def startSegmentation(self, volumeNode, modelId, segmentationNode=None, **kwargs):
            started.append(kwargs)
            return types.SimpleNamespace()

    widget = module.AttentionMambaSegWidget.__new__(module.AttentionMambaSegWidget)
    widget.logic, widget._job, widget._destroyed = Logic(), None, False
    widget.ui = types.SimpleNamespace(
        logTextEdit=types.SimpleNamespace(clear=lambda: None), statusLabel=types.SimpleNamespace(text="")
    )
    widget._ensureDependencies = lambda: True
    widget._acceptLicence = lambda modelId: True
    widget.setRunning = lambda running: None
    node = widget._parameterNode = module.AttentionMambaSegParameterNode()
    node.inputVolume, node.modelId = volume, "hippocampus-msd"
    for index, mode in enumerate((None, "fast", "accurate")):
        widget.onSpeedChanged(index)
        assert module._readSetting("speedMode", "") == (mode or "")
        widget.onSegment()
        assert started[-1]["mode"] == mode and "useTTA" not in started[-1]
    assert module.SPEED_CHOICES == ("", "fast", "accurate")


def test_model_default_is_labelled_with_what_it_resolves_to(module, monkeypatch):
    from AttentionMambaSegLib.card import PassPlan, SpeedModes

    logic = module.AttentionMambaSegLogic()
    fast_on_cpu = SpeedModes(fast=PassPlan(window="slice", flips=1, foreground_crop=True), cpu_mode="fast")
    monkeypatch.setattr(logic, "speedModes", lambda modelId: {"m": fast_on_cpu, "a": SpeedModes()}.get(modelId))
    assert logic.defaultSpeedLabel("m", "cpu") == "Model default (fast on a CPU)"
    assert logic.defaultSpeedLabel("m", "cuda") == "Model default (accurate on a GPU)"
    assert logic.defaultSpeedLabel("m", "auto") == "Model default (fast on a CPU, accurate on a GPU)"
    assert logic.defaultSpeedLabel("a", "auto") == "Model default (accurate)"
    assert logic.defaultSpeedLabel("missing", "cpu") == "Model default"
    text = logic.speedDescription("m")
    assert "Fast: one window per slice, no flips, cropped to the foreground (+24 mm)." in text
    assert "Accurate: sliding windows, 4 flips." in text and "Model default: fast on a CPU, accurate on a GPU." in text
    assert module.AttentionMambaSegLogic().speedModes("hippocampus-msd") is not None  # a real model.json
    assert jobs.panel_words("quicker: --mode fast (fewer network passes), --roi (only a box)") == (
        "quicker: Speed 'Fast' (fewer network passes), a region of interest (only a box)"
    )


FAKE_SEGMENT_CHILD = textwrap.dedent("""
    import json, os, sys
    import numpy as np, SimpleITK as sitk
    args = sys.argv[1:]  # -m AttentionMambaSegLib.cli segment INPUT -o OUTPUT ...
    source, output = args[3], args[args.index("-o") + 1]
    image = sitk.ReadImage(source)
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    labels[0], labels[1] = 1, 2
    result = sitk.GetImageFromArray(labels)
    result.CopyInformation(image)
    sitk.WriteImage(result, output)
    kind, event = os.environ["FAKE_REPORT"], {"event": "written", "pid": os.getpid(), "path": output}
    report = {"model": "hippocampus-msd", "warnings": ["The image is unusually small."], "segments": [
        {"label_value": 1, "name": "anterior hippocampus", "confidence": 0.61, "needs_review": True,
         "reason": "low confidence (0.610 < 0.900)"},
        {"label_value": 2, "name": "posterior hippocampus", "confidence": 0.95, "needs_review": False,
         "reason": None}]}
    if kind == "event":  # the report where the event says, not beside the output
        event["report"] = os.path.join(os.path.dirname(output), "elsewhere.json")
        json.dump(report, open(event["report"], "w"))
    elif kind == "broken":
        open(output[:-len(".nrrd")] + ".report.json", "w").write("{not json")
    print(json.dumps(event), flush=True)
""")


@pytest.mark.skipif(os.name == "nt", reason="the stand-in interpreters are shell scripts")
@pytest.mark.parametrize("kind", ["event", "missing", "broken"])
def test_the_job_reads_the_report_and_a_bad_report_does_not_fail_the_run(module, tmp_path, monkeypatch, kind):
    scene = new_scene()
    volume = mrml.add_volume_node_from_image(scene, sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16)), "input")
    (tmp_path / "child.py").write_text(FAKE_SEGMENT_CHILD)
    monkeypatch.setenv("FAKE_REPORT", kind)
    logic = module.AttentionMambaSegLogic()
    logic.pythonExecutable = _fake_python(tmp_path, f'exec {sys.executable} {tmp_path / "child.py"} "$@"')
    finished, log = [], []
    job = logic.startSegmentation(
        volume, "hippocampus-msd", device="cpu", onFinished=lambda *a: finished.append(a), onLog=log.append
    )
    assert job.wait(timeout=60)
    ((result, error, _),) = finished
    assert error is None, error
    node = result.segmentation_node
    first, second = (node.GetSegmentation().GetSegment(s) for s in segment_ids(node))
    status = slicer.vtkSlicerSegmentationsModuleLogic
    if kind == "event":
        assert first.GetName() == "anterior hippocampus (needs review)"
        assert status.GetSegmentStatus(first) == status.Flagged and tag(first, mrml.TAG_CONFIDENCE) == "0.6100"
        assert second.GetName() == "posterior hippocampus" and status.GetSegmentStatus(second) == status.InProgress
        assert result.message.endswith(
            "Needs review: anterior hippocampus (low confidence 0.610 < 0.900). The image is unusually small."
        )
        assert not log
    else:
        assert segment_names(node) == ["anterior hippocampus", "posterior hippocampus"]
        assert {status.GetSegmentStatus(first), status.GetSegmentStatus(second)} == {status.InProgress}
        assert result.needs_review == {} and any("confidence report could not be read" in line for line in log)
    assert not job.process.folder.exists()


def test_bad_input_in_the_child_reaches_the_caller_in_its_words(module):
    scene = new_scene()
    volume = mrml.add_volume_node_from_image(scene, sitk.GetImageFromArray(np.full((2, 40, 40), 7, np.int16)), "flat")
    finished = []
    job = module.AttentionMambaSegLogic().startSegmentation(
        volume, "hippocampus-msd", device="cpu", onFinished=lambda *a: finished.append(a)
    )
    assert job.wait(timeout=300)
    ((result, error, _),) = finished
    assert result is None and "constant" in str(error) and "exit" not in str(error)


def test_logic_job_reports_bad_input_before_starting(module):
    scene = new_scene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labelmap, np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(mrml.InputVolumeError, match="labelmap"):
        module.AttentionMambaSegLogic().startSegmentation(labelmap, "hippocampus-msd")


def test_closing_the_module_cancels_the_child_and_reports_nothing(module):
    scene = new_scene()
    volume = _hippocampus_volume(scene)
    calls = []
    job = module.AttentionMambaSegLogic().startSegmentation(
        volume,
        "hippocampus-msd",
        device="cpu",
        onFinished=lambda *a: calls.append(a),
        onProgress=lambda *a: calls.append(a),
    )
    widget = types.SimpleNamespace(_job=job)
    module.AttentionMambaSegWidget._cancelJob(widget)
    assert widget._job is None and job.finished and calls == []
    assert job.process.returncode is not None and not job._timer.active


LIST_WITHOUT_OPTIONAL_PACKAGES = textwrap.dedent("""
    import importlib.abc, os, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('platformdirs', 'numba', 'safetensors', 'torch'):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    os.environ.pop('ATTENTION_MAMBA_SEG_MODELS_DIR', None)
    from AttentionMambaSegLib.package import list_models, load_model_package
    print(sorted(p.id for p in list_models()), load_model_package('cardiac-acdc').summary())
""")


def test_models_are_listed_without_platformdirs_numba_safetensors_or_torch():
    env = dict(os.environ, PYTHONPATH=str(MODULE_DIR))
    env.pop("ATTENTION_MAMBA_SEG_MODELS_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", LIST_WITHOUT_OPTIONAL_PACKAGES],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "['cardiac-acdc', 'hippocampus-msd', 'skin-lesion-isic', 'skin-lesion-ph2']" in done.stdout
    assert "Licence: CC BY-NC-SA 4.0" in done.stdout and "Validation Dice 0.894 (with flip TTA)" in done.stdout


def test_dependency_plan_names_every_package_and_one_prompt_lists_them(module, monkeypatch):
    logic = module.AttentionMambaSegLogic()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(install, "installed_torch_version", lambda: None)
    plan = logic.dependencyPlan()
    assert [item["name"] for item in plan] == ["torch", "safetensors", "numba", "pooch", "llvmlite"]
    prompts = []
    monkeypatch.setattr(
        slicer.util, "confirmOkCancelDisplay", lambda text, **kw: prompts.append(text) or False, raising=False
    )
    widget = types.SimpleNamespace(logic=logic, ui=types.SimpleNamespace(statusLabel=types.SimpleNamespace(text="")))
    assert module.AttentionMambaSegWidget._ensureDependencies(widget) is False
    ((text,),) = [prompts]
    assert all(
        name in text for name in ("torch", "safetensors", "numba", "pooch", "llvmlite", logic.sitePackagesFolder())
    )
    assert widget.ui.statusLabel.text.startswith("Not installed: Segment needs torch, safetensors, numba")
    monkeypatch.setattr(install, "installed_torch_version", lambda: (1, 13))
    assert "older than >=2.1" in logic.dependencyPlan()[0]["why"]


def test_pip_install_pins_slicers_packages_and_does_not_prompt_again(module, monkeypatch):
    calls = []
    packaging = types.ModuleType("slicer.packaging")

    def pip_ensure(requirements, **kwargs):
        calls.append(([str(r) for r in requirements], kwargs, open(kwargs["constraints"]).read()))

    packaging.pip_ensure = pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    install.pip_install(["safetensors>=0.4", "numba>=0.59"])
    ((requirements, kwargs, constraints),) = calls
    assert requirements == ["safetensors>=0.4", "numba>=0.59"] and kwargs["prompt_install"] is False
    assert f"numpy=={np.__version__}" in constraints and not os.path.exists(kwargs["constraints"])


def test_licences_that_are_not_permissive_are_asked_once_and_remembered(module):
    from AttentionMambaSegLib.package import load_model_package

    needs = {
        m: load_model_package(m).licence_needs_acceptance
        for m in ("cardiac-acdc", "hippocampus-msd", "skin-lesion-ph2")
    }
    assert needs == {"cardiac-acdc": True, "hippocampus-msd": False, "skin-lesion-ph2": True}
    logic = module.AttentionMambaSegLogic()
    cardiac = load_model_package("cardiac-acdc")
    assert not logic.licenceAccepted(cardiac)
    logic.acceptLicence(cardiac)
    assert module.AttentionMambaSegLogic().licenceAccepted(cardiac)
    assert not logic.licenceAccepted(load_model_package("skin-lesion-ph2"))


def test_module_test_methods_without_torch_run_the_writer_test_and_skip_the_full_one(module, monkeypatch):
    """As on the extension build machines: unittest calls each test_ method, torch is not installed."""
    new_scene()
    shown = []
    monkeypatch.setattr(install, "installed_torch_version", lambda: None)
    monkeypatch.delenv(self_test.FULL_TEST_VARIABLE, raising=False)

    def no_child(*args, **kwargs):
        raise AssertionError("the full test started a segmentation")

    monkeypatch.setattr(module.AttentionMambaSegLogic, "startSegmentation", no_child)
    test = module.AttentionMambaSegTest()
    monkeypatch.setattr(test, "delayDisplay", lambda message, msec=0: shown.append(message))
    for name in sorted(n for n in dir(test) if n.startswith("test_")):
        test.setUp()
        getattr(test, name)()
    assert "Writer test passed" in shown
    assert any(m.startswith("torch not installed: the full segmentation test was skipped") for m in shown)
    monkeypatch.setenv(self_test.FULL_TEST_VARIABLE, "1")  # asked for: the full test runs (and fails here)
    with pytest.raises(AssertionError, match="started a segmentation"):
        test.test_AttentionMambaSeg_sample()


def test_terminology_files_register_with_slicers_terminology_logic(module, monkeypatch):
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    modules = types.SimpleNamespace(terminologies=types.SimpleNamespace(logic=lambda: logic))
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    startup.register_terminology()
    startup.register_terminology()  # a second call loads nothing twice
    from AttentionMambaSegLib import terminology

    assert logic.IsTerminologyContextLoaded(terminology.TERMINOLOGY_CONTEXT)
    assert startup.loaded_region_contexts(logic) == [terminology.ANATOMIC_CONTEXT]


@pytest.mark.slow
def test_module_test_class_runs_the_pipeline_on_the_bundled_sample(module):
    new_scene()
    test = module.AttentionMambaSegTest()
    slicer.mrmlScene.Clear()
    test.runTest()


def test_supported_slicer_range_is_declared_and_enforced(module, monkeypatch):
    """The range these tests check: Slicer 5.10 and newer (slicer-core 5.12.4 here)."""
    assert module.MINIMUM_SLICER_VERSION == (5, 10)
    for path in ("README.md", "AttentionMambaSeg.s4ext", "CMakeLists.txt"):
        assert "Slicer 5.10 or newer" in (REPO / path).read_text(encoding="utf-8"), path
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(majorVersion=5, minorVersion=8), raising=False)
    assert "needs Slicer 5.10 or newer; this is Slicer 5.8" in module.AttentionMambaSegLogic.slicerVersionProblem()
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(majorVersion=5, minorVersion=10), raising=False)
    assert module.AttentionMambaSegLogic.slicerVersionProblem() == ""


@pytest.mark.slow
def test_a_model_not_in_the_cache_is_listed_and_downloaded_in_a_child_process(module, tmp_path, monkeypatch):
    import http.server
    import shutil
    import threading

    from AttentionMambaSegLib import package, registry

    source = tmp_path / "hippocampus-online"
    shutil.copytree(package.bundled_models_dir() / "hippocampus-msd", source)
    config = json.loads((source / "model.json").read_text(encoding="utf-8"))
    config["id"] = "hippocampus-online"
    (source / "model.json").write_text(json.dumps(config))
    entry = registry.build_archive(source, tmp_path / "h.zip")
    body = (tmp_path / "h.zip").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    published = {**entry.to_dict(), "urls": [f"http://127.0.0.1:{server.server_address[1]}/h.zip"]}
    (tmp_path / "registry.json").write_text(json.dumps({"format": 1, "models": [published]}))
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "cache"))
    logic = module.AttentionMambaSegLogic()
    titles = dict(logic.availableModels())
    assert "download 28 MB" in titles["hippocampus-online"] and not logic.modelInstalled("hippocampus-online")
    assert "Not downloaded yet (28 MB)" in logic.modelSummary("hippocampus-online")
    finished, progress = [], []
    job = logic.startDownload(
        "hippocampus-online", onProgress=lambda d, t: progress.append((d, t)), onFinished=lambda *a: finished.append(a)
    )
    try:
        assert job.wait(timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    ((result, error, _),) = finished
    assert error is None and result is True and job.process.pid != os.getpid()
    assert progress and progress[-1] == (entry.size, entry.size)
    assert logic.modelInstalled("hippocampus-online") and (tmp_path / "cache" / "hippocampus-online").is_dir()
    assert "hippocampus-online (1.5.0)" in dict(logic.availableModels()).values()


def test_dependency_plan_adds_triton_when_torch_has_cuda(module, monkeypatch):
    """A CUDA PyTorch without Triton gets Triton in the same one prompt: triton-windows on Windows, at the
    version torch's metadata names."""
    import importlib.metadata
    import platform

    logic = module.AttentionMambaSegLogic()
    monkeypatch.setattr(install, "installed_torch_version", lambda: (2, 13))
    monkeypatch.setattr(install, "installed_torch_cuda", lambda: "12.8")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else object())
    monkeypatch.setattr(
        importlib.metadata,
        "requires",
        lambda name: ['triton==3.7.1; platform_system == "Linux"'] if name == "torch" else [],
    )
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert [(i["name"], i["requirement"]) for i in logic.dependencyPlan()] == [("triton", "triton==3.7.1")]
    monkeypatch.setattr(platform, "system", lambda: "Windows")
    assert [(i["name"], i["requirement"]) for i in logic.dependencyPlan()] == [
        ("triton-windows", "triton-windows>=3.7,<3.8")
    ]
    monkeypatch.setattr(install, "installed_torch_cuda", lambda: None)
    assert logic.dependencyPlan() == []  # a CPU-only PyTorch needs no Triton
