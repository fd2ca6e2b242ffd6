"""The bodies of the module's ``ScriptedLoadableModuleTest`` (``AttentionMambaSegTest`` calls them).

Each test takes the running ``unittest.TestCase`` (its assertions and ``delayDisplay``), the module's Logic
class and the module's folder (``Resources`` below it). Two run without torch, as on the extension build
machines: the segmentation writer on a fixed labelmap, and a two-frame cine with its function table. The
third runs the Logic's child process on the bundled sample with the hippocampus model; it is skipped, with a
message, where packages it needs are missing, unless :data:`FULL_TEST_VARIABLE` is set to 1.
"""

from __future__ import annotations

import json
import os
import tempfile

from . import tr

__all__ = ["FULL_TEST_VARIABLE", "cine_test", "sample_test", "writer_test"]

#: Set to 1 to make the module Test run the whole pipeline (it fails where torch is missing).
FULL_TEST_VARIABLE = "ATTENTION_MAMBA_SEG_FULL_TEST"


def _sample_volume(module_folder: str):
    import SimpleITK as sitk
    import slicer

    from .. import mrml

    sample_path = os.path.join(module_folder, "Resources", "Samples", "hippocampus_sample.nrrd")
    return mrml.add_volume_node_from_image(slicer.mrmlScene, sitk.ReadImage(sample_path), "sample")


def _terminology_test_package():
    """A weightless two-class package whose classes come from the extension's own terminology file."""
    from .. import terminology
    from ..package import ModelPackage

    folder = terminology.terminology_folder()
    data = json.loads((folder / terminology.TERMINOLOGY_FILE).read_text(encoding="utf-8"))
    category = next(c for c in data["SegmentationCodes"]["Category"] if c["CodeValue"] == "123037004")
    hippocampus = next(t for t in category["Type"] if t["CodeValue"] == "5366008")

    def code(c):
        return {"scheme": c["CodingSchemeDesignator"], "code": c["CodeValue"], "meaning": c["CodeMeaning"]}

    classes = [
        {
            "label_value": value,
            "name": modifier["3dSlicerLabel"],
            "color": modifier["recommendedDisplayRGBValue"],
            "snomed": {"category": code(category), "type": code(hippocampus), "type_modifier": code(modifier)},
        }
        for value, modifier in enumerate(hippocampus["Modifier"][:2], start=1)
    ]
    config = {
        "id": "terminology-test",
        "version": "0",
        "in_channels": 1,
        "num_classes": 3,
        "activation": "softmax",
        "classes": classes,
        "normalization": {"type": "zscore"},
        "patch_size": [32, 32],
    }
    return ModelPackage(folder, config=config)


def _report(package, flagged: int = 0) -> dict:
    """A ``segment`` report for the test package: class ``flagged`` (0: none) has a low confidence."""
    segments = []
    for c in package.card.foreground_classes:
        low = c.label_value == flagged
        segments.append(
            {
                "label_value": c.label_value,
                "name": c.name,
                "confidence": 0.712 if low else 0.97,
                "needs_review": low,
                "reason": "low confidence (0.712 < 0.930)" if low else None,
            }
        )
    return {"model": package.id, "confidence_threshold": 0.93, "segments": segments, "warnings": []}


def writer_test(test, module_folder: str) -> None:
    """Torch-free: a fixed labelmap becomes named, coded segments that keep their label values; a
    low-confidence segment is flagged for review, and a later confident run clears the flag."""
    import numpy as np
    import slicer

    from .. import mrml

    test.delayDisplay("Writing a fixed labelmap")
    volume_node = _sample_volume(module_folder)
    package = _terminology_test_package()
    dims = volume_node.GetImageData().GetDimensions()
    labels = np.zeros((dims[2], dims[1], dims[0]), np.uint8)
    labels[:, : dims[1] // 2, :] = 1
    labels[:, dims[1] // 2 :, :] = 2
    result = mrml.write_segmentation_node(volume_node, package, labels, report=_report(package, flagged=1))
    segmentation = result.segmentation_node.GetSegmentation()
    test.assertEqual(segmentation.GetNumberOfSegments(), 2)
    terms = {segmentation.GetNthSegment(i).GetTerminology() for i in range(2)}
    test.assertEqual(len(terms), 2)  # anterior and posterior stay apart
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    first, second = (segmentation.GetNthSegment(i) for i in range(2))
    names = [c.name for c in package.card.foreground_classes]
    test.assertEqual([first.GetName(), second.GetName()], [names[0] + " (needs review)", names[1]])
    test.assertEqual([logic.GetSegmentStatus(first), logic.GetSegmentStatus(second)], [logic.Flagged, logic.InProgress])
    test.assertIn("Needs review: " + names[0] + " (low confidence 0.712 < 0.930)", result.message)
    labelmap_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    mrml.export_segmentation_to_labelmap_node(result.segmentation_node, labelmap_node, volume_node)
    test.assertTrue((slicer.util.arrayFromVolume(labelmap_node) == labels).all())  # flagged names export too
    again = mrml.write_segmentation_node(
        volume_node, package, labels, result.segmentation_node, report=_report(package)
    )
    test.assertEqual([first.GetName(), second.GetName()], names)
    test.assertEqual(logic.GetSegmentStatus(first), logic.InProgress)
    test.assertEqual(again.needs_review, {})
    test.delayDisplay("Writer test passed")


def _cardiac_test_package(module_folder: str):
    """A weightless package with the classes of the cardiac models (RV and LV cavities, LV myocardium)."""
    from ..package import ModelPackage

    def sct(code, meaning):
        return {"scheme": "SCT", "code": code, "meaning": meaning}

    anatomy = sct("123037004", "Anatomical Structure")
    classes = [
        {
            "label_value": 1,
            "name": "right ventricle cavity",
            "color": [0, 151, 206],
            "snomed": {"category": anatomy, "type": sct("53085002", "Right ventricle")},
        },
        {
            "label_value": 2,
            "name": "left ventricle myocardium",
            "color": [188, 65, 28],
            "snomed": {
                "category": anatomy,
                "type": sct("74281007", "Myocardium"),
                "region": sct("87878005", "Left ventricle"),
            },
        },
        {
            "label_value": 3,
            "name": "left ventricle cavity",
            "color": [250, 210, 80],
            "snomed": {"category": anatomy, "type": sct("87878005", "Left ventricle")},
        },
    ]
    config = {
        "id": "cardiac-test",
        "version": "0",
        "in_channels": 1,
        "num_classes": 4,
        "activation": "softmax",
        "classes": classes,
        "normalization": {"type": "zscore"},
        "patch_size": [32, 32],
    }
    return ModelPackage(module_folder, config=config)


def _two_frame_cine(scene, image):
    """A volume sequence of two copies of ``image`` with a browser (and its proxy volume); returns the browser."""
    from .. import mrml

    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    for t in range(2):
        frame = mrml.add_volume_node_from_image(scene, image, f"frame {t + 1}")
        sequence.SetDataNodeAtValue(frame, str(t))
        scene.RemoveNode(frame.GetDisplayNode())
        scene.RemoveNode(frame)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    if browser.GetProxyNode(sequence) is None:  # headless: no Sequences logic makes it
        proxy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "cine")
        browser.AddProxyNode(proxy, sequence, False)
        proxy.CopyContent(sequence.GetNthDataNode(0), False)
    return browser


def _function_figures(table) -> dict:
    rows = {table.GetCellText(r, 0): r for r in range(table.GetNumberOfRows())}
    return {
        name: float(table.GetCellText(rows[name], 1))
        for name in (
            "End-diastolic volume (EDV)",
            "End-systolic volume (ESV)",
            "Ejection fraction (EF)",
            "ED frame",
            "ES frame",
        )
    }


def cine_test(test, logic_class, module_folder: str) -> None:
    """Torch-free: a two-frame cine (the bundled ACDC end-diastole, and an end-systole made from it by removing
    the LV cavity from the first half of the slices) becomes a segmentation sequence in the cine's browser and
    a function table whose figures equal voxel counts times the voxel volume; erasing more LV cavity in the ES
    frame and pressing Update function lowers the ESV and raises the EF by the expected amount."""
    import numpy as np
    import SimpleITK as sitk
    import slicer

    from ..mrml import cardiac

    test.delayDisplay("Measuring the ventricular function of a two-frame cine")
    examples = os.path.join(module_folder, "Resources", "Examples")
    image = sitk.ReadImage(os.path.join(examples, "patient019_frame01_0000.nii.gz"))
    ed = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(examples, "patient019_frame01_label.nii.gz")))
    ed = ed.astype(np.uint8)
    es = ed.copy()
    half = es.shape[0] // 2
    es[:half][es[:half] == 3] = 0
    browser = _two_frame_cine(slicer.mrmlScene, image)
    sequence = browser.GetMasterSequenceNode()
    logic = logic_class()
    test.assertTrue(logic.isCine(browser.GetProxyNode(sequence)))
    cine = cardiac.find_cine(browser.GetProxyNode(sequence))
    assert cine is not None  # isCine found it above
    result = cardiac.add_cardiac_results(
        cine, _cardiac_test_package(module_folder), [ed, es], sequences_logic=logic.sequencesLogic()
    )
    test.assertTrue(browser.IsSynchronizedSequenceNode(result.segmentation_sequence))
    test.assertEqual(result.segmentation_sequence.GetNumberOfDataNodes(), 2)
    test.assertIs(browser.GetProxyNode(result.segmentation_sequence), result.segmentation_node)
    voxel = float(np.prod(image.GetSpacing())) / 1000.0
    edv, esv = np.count_nonzero(ed == 3) * voxel, np.count_nonzero(es == 3) * voxel
    got = _function_figures(result.table_node)
    test.assertEqual((got["ED frame"], got["ES frame"]), (1.0, 2.0))
    test.assertAlmostEqual(got["End-diastolic volume (EDV)"], edv, delta=0.006)
    test.assertAlmostEqual(got["End-systolic volume (ESV)"], esv, delta=0.006)
    test.assertAlmostEqual(got["Ejection fraction (EF)"], 100 * (edv - esv) / edv, delta=0.006)

    test.delayDisplay("Editing the ES frame and updating the function")
    es_segmentation = result.segmentation_sequence.GetNthDataNode(1)
    lv_id = es_segmentation.GetSegmentation().GetSegmentIdBySegmentName("left ventricle cavity")
    kept = es == 3
    kept[max(np.nonzero(kept.any(axis=(1, 2)))[0])] = False  # erase the LV cavity of its last slice
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        kept.astype(np.uint8), es_segmentation, lv_id, browser.GetProxyNode(sequence)
    )
    analysis = logic.updateFunction(result.table_node, 1, 2)
    new_esv = np.count_nonzero(kept) * voxel
    got = _function_figures(result.table_node)
    test.assertAlmostEqual(analysis.function.lv_esv_ml, new_esv, places=6)
    test.assertAlmostEqual(got["End-systolic volume (ESV)"], new_esv, delta=0.006)
    test.assertAlmostEqual(got["Ejection fraction (EF)"], 100 * (edv - new_esv) / edv, delta=0.006)
    test.assertLess(new_esv, esv)
    test.delayDisplay("Cine test passed")


def sample_test(test, logic_class, module_folder: str) -> None:
    """The child-process run of the Logic on the bundled sample with the hippocampus model.

    Skipped, with a message, where the packages it needs are missing (the extension build machines
    have no torch), unless ``ATTENTION_MAMBA_SEG_FULL_TEST=1`` asks for it.
    """
    from ..mrml import NEEDS_REVIEW_SUFFIX, TAG_NEEDS_REVIEW
    from ..registry import ensure_model

    missing = [item["name"] for item in logic_class().dependencyPlan()]
    if missing and os.environ.get(FULL_TEST_VARIABLE) != "1":
        test.delayDisplay(
            tr(
                "{packages} not installed: the full segmentation test was skipped (set {variable}=1 to require it)."
            ).format(packages=", ".join(missing), variable=FULL_TEST_VARIABLE)
        )
        return

    volume_node = _sample_volume(module_folder)
    with tempfile.TemporaryDirectory():
        package = ensure_model("hippocampus-msd")  # the sample is a hippocampus MRI crop
        logic = logic_class()
        progress_calls, finished = [], []
        job = logic.startSegmentation(
            volume_node,
            package,
            device="cpu",
            useTTA=False,
            onProgress=lambda done, total: progress_calls.append((done, total)),
            onFinished=lambda result, error, seconds: finished.append((result, error)),
        )
        test.assertTrue(job.wait(timeout=600))
    ((result, error),) = finished
    test.assertIsNone(error)
    segmentation = result.segmentation_node.GetSegmentation()
    test.assertEqual(segmentation.GetNumberOfSegments(), len(package.card.foreground_classes))
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    names = {segment.GetName().removesuffix(NEEDS_REVIEW_SUFFIX) for segment in segments}
    test.assertEqual(names, {c.name for c in package.card.foreground_classes})
    test.assertTrue(all(segment.HasTag(TAG_NEEDS_REVIEW) for segment in segments))  # the report was read
    test.assertTrue(progress_calls and progress_calls[-1][0] == progress_calls[-1][1])
    reference_id = result.segmentation_node.GetNodeReferenceID(
        result.segmentation_node.GetReferenceImageGeometryReferenceRole()
    )
    test.assertEqual(reference_id, volume_node.GetID())
    test.delayDisplay("Test passed")
