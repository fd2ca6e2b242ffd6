"""AttentionMambaSegLib.mrml.cardiac and the module's cine path, on real MRML (slicer-core) and real ACDC data.

A two-frame cine (patient019's ED and ES volumes of the ACDC validation split) is loaded as a volume sequence
with a browser; its results are a segmentation sequence in the same browser, the function table, the volume
table and the chart. Known answers: the figures equal voxel counts of the labelmaps times the voxel volume
(computed here), and erasing part of the LV cavity of the ES frame changes the ESV and the EF by the amount
computed here, with torch blocked. The child-process path runs with a stand-in interpreter that writes the
product's own outputs from the manual labels (fast), and with the bundled cardiac-acdc model (slow).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from _slicer_helpers import DATA, MODULE_DIR, REPO, install_gui_shims, new_scene, slicer, tag  # noqa: I001
from conftest import require

# isort: split
import SimpleITK as sitk  # noqa: E402

from AttentionMambaSegLib import mrml  # noqa: E402
from AttentionMambaSegLib.mrml import cardiac  # noqa: E402
from AttentionMambaSegLib.package import load_model_package  # noqa: E402
from AttentionMambaSegLib.slicer import jobs  # noqa: E402

pytestmark = pytest.mark.slicer

ACDC = DATA / "ACDC"
PATIENT = "patient019"
IMAGES = [ACDC / "imagesTr" / f"{PATIENT}_frame0{i}_0000.nii.gz" for i in (1, 2)]
LABELS = [ACDC / "labelsTr" / f"{PATIENT}_frame0{i}.nii.gz" for i in (1, 2)]
RV, MYO, LV = 1, 2, 3
ROWS = (
    "End-diastolic volume (EDV)",
    "End-systolic volume (ESV)",
    "Stroke volume (SV)",
    "Ejection fraction (EF)",
    "Myocardial mass",
    "ED frame",
    "ES frame",
)


@pytest.fixture(scope="module")
def package():
    return load_model_package("cardiac-acdc")  # bundled: a missing model fails the tests


@pytest.fixture(scope="module")
def manual():
    """patient019's images and manual labels (ED, ES) as SimpleITK images, and the voxel volume in mL."""
    require(*IMAGES, *LABELS)
    images = [sitk.ReadImage(str(p)) for p in IMAGES]
    labels = [sitk.ReadImage(str(p)) for p in LABELS]
    return types.SimpleNamespace(
        images=images,
        labels=labels,
        arrays=[sitk.GetArrayFromImage(m) for m in labels],
        voxel_ml=float(np.prod(images[0].GetSpacing())) / 1000.0,
    )


def _cine_scene(images, index_values=("0", "400")):
    """A scene with the Sequences logic, a volume sequence of ``images`` and its browser (proxy made by the logic)."""
    scene = new_scene()
    sequences = slicer.vtkSlicerSequencesLogic()
    sequences.SetMRMLScene(scene)
    scene._keep = (*scene._keep, sequences)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")
    for image, value in zip(images, index_values):
        frame = mrml.add_volume_node_from_image(scene, image, "frame")
        sequence.SetDataNodeAtValue(frame, value)
        scene.RemoveNode(frame.GetDisplayNode())
        scene.RemoveNode(frame)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    sequences.UpdateProxyNodesFromSequences(browser)
    return types.SimpleNamespace(
        scene=scene, sequences=sequences, sequence=sequence, browser=browser, proxy=browser.GetProxyNode(sequence)
    )


@pytest.fixture
def cine(manual):
    return _cine_scene(manual.images)


def _figures(table) -> dict:
    """Figure name -> (LV, RV) of the function table, read back as the table view shows them."""
    assert [table.GetColumnName(c) for c in range(4)] == ["Figure", "LV", "RV", "Unit"]
    return {
        table.GetCellText(r, 0): (float(table.GetCellText(r, 1)), float(table.GetCellText(r, 2)))
        for r in range(table.GetNumberOfRows())
    }


def _expected(arrays, voxel_ml, ed=0, es=1) -> dict:
    """The figures computed here from voxel counts (ACDC definitions)."""

    def volume(t, label):
        return np.count_nonzero(arrays[t] == label) * voxel_ml

    lv_edv, lv_esv, rv_edv, rv_esv = volume(ed, LV), volume(es, LV), volume(ed, RV), volume(es, RV)
    return {
        "End-diastolic volume (EDV)": (lv_edv, rv_edv),
        "End-systolic volume (ESV)": (lv_esv, rv_esv),
        "Stroke volume (SV)": (lv_edv - lv_esv, rv_edv - rv_esv),
        "Ejection fraction (EF)": (100 * (lv_edv - lv_esv) / lv_edv, 100 * (rv_edv - rv_esv) / rv_edv),
        "Myocardial mass": (1.05 * volume(ed, MYO), float("nan")),
        "ED frame": (ed + 1.0, ed + 1.0),
        "ES frame": (es + 1.0, es + 1.0),
    }


def _assert_figures(table, expected):
    got = _figures(table)
    assert list(got)[: len(ROWS)] == list(ROWS)
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, atol=0.0051, equal_nan=True, err_msg=name)  # 2 decimals


def _segment_id(segmentation_node, label_value) -> str:
    segmentation = segmentation_node.GetSegmentation()
    (found,) = [
        segmentation.GetNthSegmentID(i)
        for i in range(segmentation.GetNumberOfSegments())
        if tag(segmentation.GetNthSegment(i), mrml.TAG_LABEL_VALUE) == str(label_value)
    ]
    return found


# ---------------------------------------------------------------------------------------------------------------
# The cine in the scene


def test_a_cine_is_found_from_its_proxy_its_sequence_its_browser_or_a_multivolume(cine, manual):
    for node in (cine.proxy, cine.sequence, cine.browser):
        found = cardiac.find_cine(node)
        assert (found.browser, found.sequence, found.proxy) == (cine.browser, cine.sequence, cine.proxy)
        assert found.index_values() == ["0", "400"] and len(found.frame_nodes()) == 2
    plain = mrml.add_volume_node_from_image(cine.scene, manual.images[0], "plain")
    assert cardiac.find_cine(plain) is None and cardiac.find_cine(None) is None
    multi = _multivolume(cine.scene, manual.images, labels="10,350")
    found = cardiac.find_cine(multi)
    assert found.multivolume is multi and found.browser is None and found.index_values() == ["10", "350"]
    frames = [sitk.GetArrayFromImage(image) for image in cardiac.cine_frame_images(found)]
    assert all(np.array_equal(f, sitk.GetArrayFromImage(i)) for f, i in zip(frames, manual.images))
    with pytest.raises(mrml.InputVolumeError, match="4D"):  # one frame alone goes through the single-volume path
        mrml.check_input_volume(cine.proxy)


def _multivolume(scene, images, labels=None):
    """A scalar volume with one component per frame, as MultiVolumeExplorer's vtkMRMLMultiVolumeNode holds a cine."""
    node = mrml.add_volume_node_from_image(scene, images[0], "multivolume")
    stacked = np.stack([sitk.GetArrayFromImage(i) for i in images], axis=-1)  # (K, J, I, frames)
    data = node.GetImageData()
    data.AllocateScalars(data.GetScalarType(), stacked.shape[-1])
    from vtk.util import numpy_support

    numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())[:] = stacked.reshape(-1, stacked.shape[-1])
    if labels:
        node.SetAttribute("MultiVolume.FrameLabels", labels)
    return node


def test_a_cine_that_cannot_be_segmented_whole_is_refused_clearly(cine, manual, package):
    cardiac.check_cine(cardiac.find_cine(cine.proxy), package)
    with pytest.raises(mrml.InputVolumeError, match="RV not found.*cardiac-acdc"):
        cardiac.check_cine(cardiac.find_cine(cine.proxy), load_model_package("hippocampus-msd"))
    one = _cine_scene(manual.images[:1], ("0",))
    with pytest.raises(mrml.InputVolumeError, match="holds 1 frame"):
        cardiac.check_cine(cardiac.find_cine(one.proxy), package)
    cropped = _cine_scene([manual.images[0], manual.images[1][:, :, :10]])
    with pytest.raises(mrml.InputVolumeError, match="Frame 2 .* same stack of slices"):
        cardiac.check_cine(cardiac.find_cine(cropped.proxy), package)
    lone = cine.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "no browser")
    lone.SetDataNodeAtValue(cine.sequence.GetNthDataNode(0), "0")
    with pytest.raises(mrml.InputVolumeError, match="not shown by any sequence browser"):
        cardiac.check_cine(cardiac.find_cine(lone), package)


# ---------------------------------------------------------------------------------------------------------------
# Results in the scene, and "Update function"


def test_results_play_with_the_cine_in_its_browser_and_the_table_holds_the_figures(cine, manual, package):
    nodes_before = cine.scene.GetNumberOfNodes()
    result = cardiac.add_cardiac_results(
        cardiac.find_cine(cine.proxy), package, manual.labels, sequences_logic=cine.sequences
    )
    sequence, proxy = result.segmentation_sequence, result.segmentation_node
    assert result.browser is cine.browser and cine.browser.IsSynchronizedSequenceNode(sequence)
    assert cine.browser.GetMasterSequenceNode() is cine.sequence  # the cine still drives the browser
    assert cine.browser.GetProxyNode(sequence) is proxy and cine.browser.GetSaveChanges(sequence)
    assert [sequence.GetNthIndexValue(i) for i in range(2)] == ["0", "400"]
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("time", "ms")
    assert sequence.GetDataNodeClassName() == "vtkMRMLSegmentationNode"
    names = [proxy.GetSegmentation().GetNthSegment(i).GetName() for i in range(3)]
    assert names == ["right ventricle cavity", "left ventricle myocardium", "left ventricle cavity"]
    assert proxy.GetTransformNodeID() == cine.proxy.GetTransformNodeID()
    for frame in (0, 1):  # the proxy follows the browser, each frame holds its own labels
        cine.browser.SetSelectedItemNumber(frame)
        np.testing.assert_array_equal(
            cardiac.segmentation_labelmap(proxy, cine.sequence.GetNthDataNode(frame), {}), manual.arrays[frame]
        )
    _assert_figures(result.table_node, _expected(manual.arrays, manual.voxel_ml))
    assert result.message.startswith("Ventricular function of 2 frames: ED frame 1, ES frame 2; LV EDV 321.7 mL")
    volumes = result.volume_table_node
    assert [volumes.GetColumnName(c) for c in range(5)] == ["Frame", "LV", "RV", "MYO", "Phase"]
    assert [volumes.GetCellText(r, 4) for r in range(2)] == ["ED", "ES"]
    assert float(volumes.GetCellText(1, 1)) == pytest.approx(
        np.count_nonzero(manual.arrays[1] == LV) * manual.voxel_ml, abs=0.0051
    )
    chart = result.chart_node
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [(s.GetYColumnName(), s.GetTableNode()) for s in series] == [("LV", volumes), ("RV", volumes)]
    assert "ED frame 1, ES frame 2" in chart.GetTitle()
    for role, node in (
        (cardiac.ROLE_SEGMENTATION_SEQUENCE, sequence),
        (cardiac.ROLE_BROWSER, cine.browser),
        (cardiac.ROLE_VOLUME_TABLE, volumes),
        (cardiac.ROLE_CHART, chart),
    ):
        assert result.table_node.GetNodeReference(role) is node
    # a sequence, a segmentation, a colour table, two tables, a chart and two series (plus display/storage nodes)
    assert cine.scene.GetNumberOfNodes() > nodes_before + 7


def _erase_lv_slice(segmentation_node, frame_node, lv_mask: np.ndarray) -> int:
    """Erase the LV cavity of the mask's most apical (last) slice in the segmentation; return voxels erased."""
    kept = lv_mask.copy()
    last = int(np.nonzero(kept.any(axis=(1, 2)))[0].max())
    erased = int(np.count_nonzero(kept[last]))
    kept[last] = False
    image = mrml.binary_oriented_image(kept.astype(np.uint8), mrml.ijk_to_ras_matrix(frame_node))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(
        image, segmentation_node, _segment_id(segmentation_node, LV), logic.MODE_REPLACE
    )
    return erased


def test_update_function_after_an_edit_of_the_es_frame_and_with_frames_chosen_by_hand(cine, manual, package):
    result = cardiac.add_cardiac_results(
        cardiac.find_cine(cine.proxy), package, manual.labels, sequences_logic=cine.sequences
    )
    cine.browser.SetSelectedItemNumber(1)  # the ES frame, as the user would show it to edit it
    erased = _erase_lv_slice(result.segmentation_node, cine.sequence.GetNthDataNode(1), manual.arrays[1] == LV)
    assert erased > 0
    edited = [manual.arrays[0], manual.arrays[1].copy()]  # the same edit, made here on the array
    last = int(np.nonzero((edited[1] == LV).any(axis=(1, 2)))[0].max())
    edited[1][last][edited[1][last] == LV] = 0
    expected = _expected(edited, manual.voxel_ml)
    before = _figures(result.table_node)
    analysis = cardiac.update_function(result.table_node)
    _assert_figures(result.table_node, expected)
    lv_esv = before["End-systolic volume (ESV)"][0] - erased * manual.voxel_ml  # the ESV drops by the erased voxels
    assert analysis.function.lv_esv_ml == pytest.approx(lv_esv, abs=0.0051)
    assert analysis.function.lv_ef_percent > before["Ejection fraction (EF)"][0]
    assert analysis.function.rv_esv_ml == pytest.approx(before["End-systolic volume (ESV)"][1], abs=0.0051)
    cine.browser.SetSelectedItemNumber(0)  # the edit was saved into the ES item ("save changes")
    cardiac.update_function(result.table_node)
    _assert_figures(result.table_node, expected)
    cardiac.update_function(result.table_node, ed=1, es=0)  # chosen by hand: ED frame 2, ES frame 1
    _assert_figures(result.table_node, _expected(edited, manual.voxel_ml, ed=1, es=0))
    assert [result.volume_table_node.GetCellText(r, 4) for r in range(2)] == ["ES", "ED"]
    assert "ED frame 2, ES frame 1" in result.chart_node.GetTitle()
    with pytest.raises(ValueError, match="frame 3 is outside the cine"):
        cardiac.update_function(result.table_node, ed=2, es=0)
    with pytest.raises(ValueError, match="Not a ventricular function table"):
        cardiac.update_function(cine.scene.AddNewNodeByClass("vtkMRMLTableNode"))


UPDATE_WITH_TORCH_BLOCKED = textwrap.dedent("""
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('torch', 'numba', 'safetensors', 'scipy', 'matplotlib'):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
    sys.meta_path.insert(0, Block())
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    import numpy as np, SimpleITK as sitk
    import test_mrml_cardiac as t
    from AttentionMambaSegLib.mrml import cardiac
    from AttentionMambaSegLib.package import load_model_package
    images = [sitk.ReadImage(str(p)) for p in t.IMAGES]
    labels = [sitk.ReadImage(str(p)) for p in t.LABELS]
    cine = t._cine_scene(images)
    result = cardiac.add_cardiac_results(cardiac.find_cine(cine.proxy), load_model_package('cardiac-acdc'),
                                              labels, sequences_logic=cine.sequences)
    cine.browser.SetSelectedItemNumber(1)
    lv = sitk.GetArrayFromImage(labels[1]) == t.LV
    erased = t._erase_lv_slice(result.segmentation_node, cine.sequence.GetNthDataNode(1), lv)
    analysis = cardiac.update_function(result.table_node)
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numba', 'safetensors'))
    print(json.dumps({"erased": erased, "esv": analysis.function.lv_esv_ml, "loaded": loaded}))
""")


def test_update_function_runs_with_torch_blocked(manual):
    """The "Update function" path (results in, edit, update) imports no torch: it runs in Slicer's own process."""
    env = dict(os.environ, PYTHONPATH=str(MODULE_DIR))
    done = subprocess.run(
        [sys.executable, "-c", UPDATE_WITH_TORCH_BLOCKED, str(REPO / "Testing"), str(MODULE_DIR)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    lv_esv = (np.count_nonzero(manual.arrays[1] == LV) - out["erased"]) * manual.voxel_ml
    assert out["erased"] > 0 and out["esv"] == pytest.approx(lv_esv, rel=1e-9) and out["loaded"] == []


def test_a_multivolume_gets_a_sequence_and_a_browser_and_its_segmentation_plays_with_it(manual, package):
    scene = _cine_scene(manual.images[:1], ("0",)).scene  # a scene with the Sequences logic
    sequences = scene._keep[-1]
    multi = _multivolume(scene, manual.images)
    cine = cardiac.find_cine(multi)
    cardiac.check_cine(cine, package)
    result = cardiac.add_cardiac_results(cine, package, manual.labels, sequences_logic=sequences)
    browser = result.browser
    master = browser.GetMasterSequenceNode()
    assert master.GetNumberOfDataNodes() == 2 and browser.IsSynchronizedSequenceNode(result.segmentation_sequence)
    for frame in (0, 1):
        browser.SetSelectedItemNumber(frame)
        np.testing.assert_array_equal(
            slicer.util.arrayFromVolume(browser.GetProxyNode(master)), sitk.GetArrayFromImage(manual.images[frame])
        )
        np.testing.assert_array_equal(
            cardiac.segmentation_labelmap(result.segmentation_node, master.GetNthDataNode(frame), {}),
            manual.arrays[frame],
        )
    _assert_figures(result.table_node, _expected(manual.arrays, manual.voxel_ml))


# ---------------------------------------------------------------------------------------------------------------
# The module's Logic and Widget: the child process


@pytest.fixture
def module(monkeypatch):
    install_gui_shims(monkeypatch)
    sys.modules.pop("AttentionMambaSeg", None)
    mod = importlib.import_module("AttentionMambaSeg")
    yield mod
    sys.modules.pop("AttentionMambaSeg", None)


FAKE_CARDIAC_CHILD = textwrap.dedent("""
    # Stands in for `python -m AttentionMambaSegLib.cli cardiac INPUT -o OUT ...`: it reads the cine the
    # module wrote with the product's reader and writes the product's own outputs from the manual labels.
    import json, os, sys
    import SimpleITK as sitk
    from AttentionMambaSegLib import clinical
    from AttentionMambaSegLib.package import load_model_package
    args = sys.argv[1:]
    json.dump(args, open(os.environ["FAKE_ARGS"], "w"))
    source, out = args[3], args[args.index("-o") + 1]
    cine = clinical.read_cine([source])
    labels = [sitk.ReadImage(p) for p in os.environ["FAKE_LABELS"].split(os.pathsep)]
    assert len(labels) == len(cine.frames)
    for label, frame in zip(labels, cine.frames):
        label.CopyInformation(frame)
    package = load_model_package("cardiac-acdc")
    for t in range(len(labels)):
        for part in (0.5, 1.0):
            print(json.dumps({"event": "progress", "done": t + part, "total": len(labels), "unit": "frames"}),
                  flush=True)
    structures = clinical.CardiacLabels.from_classes(package.card.foreground_classes)
    analysis = clinical.function_from_labelmaps(labels, structures, extra_warnings=["The image is unusually dark."])
    written = clinical.write_cardiac_outputs(analysis, out, package.card.class_dicts, source=source,
                                             output_format="nrrd", all_frames=True)
    report = json.load(open(written["function"]))
    report["structures"]["LV"]["es"].update(confidence=0.71, needs_review=True, reason="low confidence (0.710 < 0.930)")
    json.dump(report, open(written["function"], "w"))
    print(json.dumps({"event": "written", "path": str(written["function"])}), flush=True)
""")


def _fake_python(tmp_path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.skipif(os.name == "nt", reason="the stand-in interpreter is a shell script")
def test_the_logic_runs_the_cardiac_command_in_a_child_and_writes_the_results(
    module, cine, manual, tmp_path, monkeypatch
):
    (tmp_path / "child.py").write_text(FAKE_CARDIAC_CHILD)
    monkeypatch.setenv("FAKE_LABELS", os.pathsep.join(str(p) for p in LABELS))
    monkeypatch.setenv("FAKE_ARGS", str(tmp_path / "args.json"))
    logic = module.AttentionMambaSegLogic()
    logic.pythonExecutable = _fake_python(tmp_path, f'exec {sys.executable} {tmp_path / "child.py"} "$@"')
    monkeypatch.setattr(logic, "sequencesLogic", lambda: cine.sequences)
    assert logic.isCine(cine.proxy) and not logic.isCine(cine.sequence.GetNthDataNode(0))
    progress, finished, log = [], [], []
    job = logic.startCardiacAnalysis(
        cine.proxy,
        "cardiac-acdc",
        device="cpu",
        mode="fast",
        useTTA=False,
        onProgress=lambda d, t: progress.append((d, t)),
        onFinished=lambda *a: finished.append(a),
        onLog=log.append,
    )
    folder = job.process.folder
    assert job.wait(timeout=300)
    ((result, error, seconds),) = finished
    assert error is None, error
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[2:4] == ["cardiac", str(folder / "input.seq.nrrd")]
    assert {"--all-frames", "--no-tta"} <= set(args) and args[args.index("--mode") + 1] == "fast"
    assert args[args.index("--output-format") + 1] == "nrrd" and args[args.index("--progress-format") + 1] == "jsonl"
    assert progress == [(0.5, 2), (1.0, 2), (1.5, 2), (2.0, 2)]  # per frame, fractional
    assert job.report["ed_frame"] == 1 and job.report["es_frame"] == 2
    assert cine.browser.GetProxyNode(result.segmentation_sequence) is result.segmentation_node
    _assert_figures(result.table_node, _expected(manual.arrays, manual.voxel_ml))
    assert "The image is unusually dark." in result.message
    es_item = result.segmentation_sequence.GetNthDataNode(1)
    flagged = es_item.GetSegmentation().GetSegment(_segment_id(es_item, LV))
    assert flagged.GetName() == "left ventricle cavity (needs review)" and tag(flagged, mrml.TAG_CONFIDENCE) == "0.7100"
    ed_item = result.segmentation_sequence.GetNthDataNode(0)
    assert ed_item.GetSegmentation().GetSegment(_segment_id(ed_item, LV)).GetName() == "left ventricle cavity"
    assert not folder.exists()  # temporary files removed
    with pytest.raises(mrml.InputVolumeError, match="not a cine"):
        logic.startCardiacAnalysis(cine.sequence.GetNthDataNode(0), "cardiac-acdc")


def test_the_panel_segments_a_cine_whole_and_update_function_uses_its_frames(module, cine, monkeypatch):
    """Widget only: a cine input goes to startCardiacAnalysis; Update function passes the spin boxes' frames."""
    import contextlib

    calls = []
    # headless: no slicer.app for the wait cursor; errors propagate instead of a dialog
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **k: contextlib.nullcontext())

    class Logic:
        def modelInstalled(self, modelId):
            return True

        def isCine(self, node):
            return node is cine.proxy

        def startCardiacAnalysis(self, inputNode, modelId, **kwargs):
            calls.append(("start", inputNode, modelId, kwargs["mode"]))
            return types.SimpleNamespace(cine=types.SimpleNamespace(name="cine browser"))

        def startSegmentation(self, *args, **kwargs):
            raise AssertionError("a cine must not go through the single-volume path")

        def updateFunction(self, tableNode, edFrame, esFrame):
            calls.append(("update", tableNode, edFrame, esFrame))
            return types.SimpleNamespace(
                function=types.SimpleNamespace(
                    ed_frame=edFrame,
                    es_frame=esFrame,
                    lv_edv_ml=150.0,
                    lv_esv_ml=60.0,
                    lv_ef_percent=60.0,
                    rv_ef_percent=55.0,
                    lv_myocardial_mass_g=120.0,
                ),
                volumes=(None, None),
                warnings=(),
            )

    widget = module.AttentionMambaSegWidget.__new__(module.AttentionMambaSegWidget)
    widget.logic, widget._job, widget._destroyed = Logic(), None, False
    widget.ui = types.SimpleNamespace(
        logTextEdit=types.SimpleNamespace(clear=lambda: None), statusLabel=types.SimpleNamespace(text="")
    )
    widget._ensureDependencies = lambda: True
    widget._acceptLicence = lambda modelId: True
    widget.setRunning = lambda running: None
    node = widget._parameterNode = module.AttentionMambaSegParameterNode()
    node.inputVolume, node.modelId, node.speedMode = cine.proxy, "cardiac-acdc", "fast"
    widget.onSegment()
    assert calls == [("start", cine.proxy, "cardiac-acdc", "fast")]
    assert widget.ui.statusLabel.text == "Segmenting every frame of the cine 'cine browser' in a separate process..."
    table = cine.scene.AddNewNodeByClass("vtkMRMLTableNode")
    job = jobs.CardiacJob.__new__(jobs.CardiacJob)  # the run ends: the panel takes the table and ED / ES
    job.deviceDescription = ""
    widget._job = job
    widget.ui.functionCollapsibleButton = types.SimpleNamespace(collapsed=True)
    Logic.showVolumeCurve = lambda self, tableNode: calls.append(("curve", tableNode))
    analysis = types.SimpleNamespace(function=types.SimpleNamespace(ed_frame=1, es_frame=2))
    widget.onFinished(types.SimpleNamespace(table_node=table, analysis=analysis, message="Figures."), None, 3.0)
    assert (node.functionTable, node.edFrame, node.esFrame) == (table, 1, 2) and node.outputSegmentation is None
    assert widget.ui.statusLabel.text == "Done in 3 s. Figures." and calls[-1] == ("curve", table)
    assert not widget.ui.functionCollapsibleButton.collapsed and widget._job is None
    node.edFrame, node.esFrame = 2, 1  # chosen by hand in the spin boxes
    widget.onUpdateFunction()
    assert calls[-1] == ("update", table, 2, 1)
    assert widget.ui.statusLabel.text.startswith(
        "Updated from the current segmentations. Ventricular function of 2 "
        "frames: ED frame 2, ES frame 1; LV EDV 150.0 mL"
    )


# ---------------------------------------------------------------------------------------------------------------
# The real child process with the bundled model


@pytest.mark.slow
def test_the_bundled_model_segments_a_two_frame_cine_in_a_child_process(module, cine, manual):
    """Real `cardiac` command (cardiac-acdc, fast mode, CPU) on the cine written by the module: progress per frame,
    the segmentation sequence in the cine's browser, the table's figures equal to the child's function.json."""
    logic = module.AttentionMambaSegLogic()
    logic.sequencesLogic = lambda: cine.sequences
    progress, finished = [], []
    job = logic.startCardiacAnalysis(
        cine.proxy,
        "cardiac-acdc",
        device="cpu",
        mode="fast",
        onProgress=lambda d, t: progress.append((d, t)),
        onFinished=lambda *a: finished.append(a),
    )
    assert job.wait(timeout=900)
    ((result, error, _),) = finished
    assert error is None, error
    assert progress and {t for _, t in progress} == {2} and progress[-1][0] == 2.0
    assert any(0 < d < 1 for d, _ in progress) and any(1 < d < 2 for d, _ in progress)  # within each frame
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    report = job.report
    assert report["model"]["id"] == "cardiac-acdc" and report["model"]["mode"] == "fast"
    figures = _figures(result.table_node)
    for name, lv, rv in (
        ("End-diastolic volume (EDV)", "lv_edv_ml", "rv_edv_ml"),
        ("End-systolic volume (ESV)", "lv_esv_ml", "rv_esv_ml"),
        ("Ejection fraction (EF)", "lv_ef_percent", "rv_ef_percent"),
    ):
        np.testing.assert_allclose(figures[name], (report[lv], report[rv]), atol=0.011, err_msg=name)
    assert figures["ED frame"][0] == report["ed_frame"] == 1 and figures["ES frame"][0] == report["es_frame"] == 2
    manual_ef = _expected(manual.arrays, manual.voxel_ml)["Ejection fraction (EF)"][0]
    assert abs(figures["Ejection fraction (EF)"][0] - manual_ef) < 3.0
    assert cine.browser.GetProxyNode(result.segmentation_sequence) is result.segmentation_node
    for frame in (0, 1):  # every frame segmented: the model's LV overlaps the manual LV
        labels = cardiac.segmentation_labelmap(
            result.segmentation_sequence.GetNthDataNode(frame), cine.sequence.GetNthDataNode(frame), {}
        )
        a, b = labels == LV, manual.arrays[frame] == LV
        assert 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()) > 0.85


@pytest.mark.slow
def test_cancel_of_a_cine_run_kills_the_child_and_leaves_the_scene(module, cine):
    logic = module.AttentionMambaSegLogic()
    nodes = cine.scene.GetNumberOfNodes()
    progress, finished = [], []
    job = logic.startCardiacAnalysis(
        cine.proxy,
        "cardiac-acdc",
        device="cpu",
        mode="fast",
        onProgress=lambda d, t: progress.append(d),
        onFinished=lambda *a: finished.append(a),
    )
    deadline = time.monotonic() + 300
    while not progress and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    assert progress and not job.finished
    pid, folder = job.process.pid, job.process.folder
    start = time.monotonic()
    job.cancel()
    assert time.monotonic() - start < 2.0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert finished == [(None, None, finished[0][2])]
    assert cine.scene.GetNumberOfNodes() == nodes and cine.browser.GetNumberOfSynchronizedSequenceNodes() == 0
    assert not folder.exists()
