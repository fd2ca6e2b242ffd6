"""AttentionMambaSegLib.mrml with the slicer-core wheel: geometry, segments, edits, cancel, export."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from _slicer_helpers import (  # noqa: I001  (skips the module when slicer-core is absent)
    ACDC_CLASSES,
    ACDC_IMAGE,
    DICOM_DIR,
    HIPPO_CLASSES,
    HIPPO_IMAGE,
    FakePackage,
    fixed_predictor,
    intensity_bands,
    new_scene,
    read_dicom_slab,
    read_slab,
    segment_array,
    segment_ids,
    segment_names,
    segment_report,
    slicer,
    tag,
    tiny_package,
)
from conftest import require

# isort: split
import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

from AttentionMambaSegLib import mrml  # noqa: E402
from AttentionMambaSegLib.inference.settings import InferenceSettings  # noqa: E402
from AttentionMambaSegLib.mrml import prediction  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture
def scene():
    return new_scene()


def _geometry_close(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def _check_segments_equal_labels(result, volume_node, labels: np.ndarray, classes) -> None:
    node = result.segmentation_node
    assert segment_names(node) == [c["name"] for c in classes]
    for segment_id, cls in zip(segment_ids(node), classes):
        expected = (labels == cls["label_value"]).astype(np.uint8)
        np.testing.assert_array_equal(segment_array(node, segment_id, volume_node), expected)


# ----------------------------------------------------------------------------- real predict_volume
@pytest.mark.parametrize(
    "path, first, count, crop, classes",
    [(ACDC_IMAGE, 4, 2, 96, ACDC_CLASSES), (HIPPO_IMAGE, 12, 3, None, HIPPO_CLASSES)],
    ids=["acdc", "hippocampus"],
)
def test_segments_equal_predict_volume_voxel_for_voxel(scene, tmp_path, path, first, count, crop, classes):
    require(path)
    from AttentionMambaSegLib.inference import InferenceSettings, predict_volume

    package = tiny_package(tmp_path, classes)
    image = read_slab(path, first, count, crop)
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    _geometry_close(mrml.image_from_volume_node(volume), image)

    result = mrml.segment_volume_node(volume, package, settings=InferenceSettings(device="cpu", tta=False))
    expected = sitk.GetArrayFromImage(predict_volume(image, package, InferenceSettings(device="cpu", tta=False)))
    assert len(np.unique(expected)) > 1, "the random network should predict more than one label"

    _check_segments_equal_labels(result, volume, expected, classes)
    node = result.segmentation_node
    assert result.created_node and node.GetAttribute(mrml.ATTRIBUTE_MODEL_ID) == package.id
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    for segment_id, cls in zip(segment_ids(node), classes):
        segment = node.GetSegmentation().GetSegment(segment_id)
        assert tag(segment, "Segmentation.Status") == "inprogress"
        assert cls["snomed"]["type"]["code"] in segment.GetTerminology()
        np.testing.assert_allclose(segment.GetColor(), np.array(cls["color"]) / 255.0, atol=1e-6)


def test_cancel_after_first_batch_leaves_scene_unchanged(scene, tmp_path):
    require(HIPPO_IMAGE)
    package = tiny_package(tmp_path, HIPPO_CLASSES)
    volume = mrml.add_volume_node_from_image(scene, read_slab(HIPPO_IMAGE, 10, 4), "input")
    one_slice = InferenceSettings(device="cpu", tta=False, batch_size=1)
    first = mrml.segment_volume_node(volume, package, settings=one_slice)
    segmentation = first.segmentation_node
    before = {sid: segment_array(segmentation, sid, volume) for sid in segment_ids(segmentation)}
    before_mtime = segmentation.GetSegmentation().GetMTime()

    cancel = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done >= 1:
            cancel.set()

    # A fresh run into a new segmentation, and a re-run into the existing one: both cancelled.
    for target in (None, segmentation):
        calls.clear()
        cancel.clear()
        before_nodes = scene.GetNumberOfNodes()  # (reading segments above leaves helper nodes)
        out = mrml.segment_volume_node(
            volume, package, segmentation_node=target, settings=one_slice, progress=progress, cancel=cancel
        )
        assert out is None
        assert max(calls) < 4, "the run must stop within one batch after cancel"
        assert scene.GetNumberOfNodes() == before_nodes
        assert segment_ids(segmentation) == list(before)
        for sid, array in before.items():
            np.testing.assert_array_equal(segment_array(segmentation, sid, volume), array)
        assert segmentation.GetSegmentation().GetMTime() == before_mtime


# ---------------------------------------------------------------------------------------- geometry
def test_oblique_dicom_volume_keeps_geometry(scene, monkeypatch):
    require(DICOM_DIR)
    image = read_dicom_slab(3)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert abs(direction[2, 2]) < 0.999, "the DICOM series should be oblique"
    volume = mrml.add_volume_node_from_image(scene, image, "oblique")
    back = mrml.image_from_volume_node(volume)
    _geometry_close(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))

    labels = intensity_bands([0, 1, 2])(sitk.GetArrayFromImage(image))
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1, 2])))
    package = FakePackage(HIPPO_CLASSES)
    result = mrml.segment_volume_node(volume, package, settings=InferenceSettings(device="cpu"))
    _check_segments_equal_labels(result, volume, labels, HIPPO_CLASSES)
    # The stored labelmap sits on the volume's (oblique) grid.
    segmentation = result.segmentation_node
    internal = segmentation.GetBinaryLabelmapInternalRepresentation(segment_ids(segmentation)[0])
    matrix = vtk.vtkMatrix4x4()
    internal.GetImageToWorldMatrix(matrix)
    stored = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(stored, mrml.ijk_to_ras_matrix(volume), atol=1e-6)


def test_volume_under_linear_transform_is_segmented_in_its_own_grid(scene, monkeypatch):
    require(HIPPO_IMAGE)
    image = read_slab(HIPPO_IMAGE, 10, 3)
    volume = mrml.add_volume_node_from_image(scene, image, "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "tilt")
    matrix = vtk.vtkMatrix4x4()
    angle = np.deg2rad(20)
    for r, c, v in (
        (0, 0, np.cos(angle)),
        (0, 1, -np.sin(angle)),
        (1, 0, np.sin(angle)),
        (1, 1, np.cos(angle)),
        (0, 3, 12.0),
        (2, 3, -7.0),
    ):
        matrix.SetElement(r, c, v)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())

    _geometry_close(mrml.image_from_volume_node(volume), image)  # transform not resampled in
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1, 2])))
    result = mrml.segment_volume_node(volume, FakePackage(HIPPO_CLASSES))
    assert result.segmentation_node.GetTransformNodeID() == transform.GetID()
    labels = intensity_bands([0, 1, 2])(sitk.GetArrayFromImage(image))
    _check_segments_equal_labels(result, volume, labels, HIPPO_CLASSES)

    # A segmentation under another transform is not written into: a new one is created instead.
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "elsewhere")
    again = mrml.segment_volume_node(volume, FakePackage(HIPPO_CLASSES), segmentation_node=other)
    assert again.created_node and again.segmentation_node is not other
    assert "different transform" in again.message


def test_rgb_vector_volume_goes_to_rgb_models_only(scene, monkeypatch):
    rgb = np.random.default_rng(0).integers(0, 255, (1, 40, 48, 3), dtype=np.uint8)
    image = sitk.GetImageFromArray(rgb, isVector=True)
    image.SetSpacing((0.1, 0.1, 1.0))
    volume = mrml.add_volume_node_from_image(scene, image, "dermoscopy")
    assert volume.IsA("vtkMRMLVectorVolumeNode")
    back = mrml.image_from_volume_node(volume)
    assert back.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), rgb)

    lesion = [{"label_value": 1, "name": "lesion", "color": [200, 60, 60]}]
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1])))
    result = mrml.segment_volume_node(volume, FakePackage(lesion, in_channels=3))
    _check_segments_equal_labels(result, volume, intensity_bands([0, 1])(rgb), lesion)

    with pytest.raises(mrml.InputVolumeError, match="single-channel|RGB"):
        mrml.segment_volume_node(volume, FakePackage(lesion, in_channels=1))
    gray = mrml.add_volume_node_from_image(scene, sitk.Image(8, 8, 1, sitk.sitkUInt8), "gray")
    with pytest.raises(mrml.InputVolumeError, match="RGB"):
        mrml.segment_volume_node(gray, FakePackage(lesion, in_channels=3))


def test_labelmaps_and_4d_sequences_are_refused_clearly(scene):
    package = FakePackage(HIPPO_CLASSES)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labelmap, np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(mrml.InputVolumeError, match="labelmap"):
        mrml.segment_volume_node(labelmap, package)

    frame = mrml.add_volume_node_from_image(scene, sitk.Image(8, 8, 2, sitk.sitkInt16), "frame")
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine")
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine frames")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.AddProxyNode(frame, sequence, False)
    with pytest.raises(mrml.InputVolumeError, match="4D"):
        mrml.segment_volume_node(frame, package)

    with pytest.raises(mrml.InputVolumeError, match="No input volume"):
        mrml.segment_volume_node(None, package)


def test_single_slice_volume(scene, monkeypatch):
    image = sitk.GetImageFromArray(np.arange(30 * 20, dtype=np.int16).reshape(1, 30, 20))
    volume = mrml.add_volume_node_from_image(scene, image, "one slice")
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1, 2])))
    result = mrml.segment_volume_node(volume, FakePackage(HIPPO_CLASSES))
    labels = intensity_bands([0, 1, 2])(sitk.GetArrayFromImage(image))
    _check_segments_equal_labels(result, volume, labels, HIPPO_CLASSES)


# ------------------------------------------------------------------------- re-runs protect edits
def test_manually_edited_segment_survives_rerun(scene, monkeypatch):
    require(HIPPO_IMAGE)
    image = read_slab(HIPPO_IMAGE, 10, 3)
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    package = FakePackage(ACDC_CLASSES)
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1, 2, 3])))
    first = mrml.segment_volume_node(volume, package)
    node = first.segmentation_node
    ids = segment_ids(node)

    # The user paints all of slice 0 into "myocardium".
    edited = segment_array(node, ids[1], volume)
    edited[0] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, node, ids[1], volume)
    assert mrml.segment_hash(node, ids[1], mrml.ijk_to_ras_matrix(volume)) != mrml.segment_tag(
        node.GetSegmentation().GetSegment(ids[1]), mrml.TAG_LABELMAP_HASH
    )

    new_labels_fn = intensity_bands([0, 3, 2, 1])  # a different prediction
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(new_labels_fn))
    nodes_before = scene.GetNumberOfNodes()
    second = mrml.segment_volume_node(volume, package, segmentation_node=node)
    assert second.segmentation_node is node and not second.created_node
    assert scene.GetNumberOfNodes() == nodes_before
    assert second.kept_edited_segment_ids == [ids[1]]
    assert sorted(second.updated_segment_ids) == sorted([ids[0], ids[2]])
    assert "myocardium" in second.message
    assert segment_ids(node) == ids

    new_labels = new_labels_fn(sitk.GetArrayFromImage(image))
    np.testing.assert_array_equal(segment_array(node, ids[1], volume), edited)
    for sid, value in ((ids[0], 1), (ids[2], 3)):
        np.testing.assert_array_equal(segment_array(node, sid, volume), (new_labels == value).astype(np.uint8))

    # Third run: the edited segment is still protected; untouched ones keep following the model.
    third = mrml.segment_volume_node(volume, package, segmentation_node=node)
    assert third.kept_edited_segment_ids == [ids[1]]
    np.testing.assert_array_equal(segment_array(node, ids[1], volume), edited)


# ------------------------------------------------------------------------------ review flags
LOW = "low confidence (0.712 < 0.930)"
STATUS = slicer.vtkSlicerSegmentationsModuleLogic


def _bands_volume(scene):
    """A 3 x 16 x 18 volume and the labels 0..3 of its four intensity bands."""
    image = sitk.GetImageFromArray(np.arange(3 * 16 * 18, dtype=np.int16).reshape(3, 16, 18))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    return volume, intensity_bands([0, 1, 2, 3])(sitk.GetArrayFromImage(image))


def _review_state(node):
    """[(name, status, confidence tag, needs-review tag, reason tag)] per segment, in segment order."""
    segmentation = node.GetSegmentation()
    out = []
    for sid in segment_ids(node):
        segment = segmentation.GetSegment(sid)
        out.append(
            (
                segment.GetName(),
                STATUS.GetSegmentStatus(segment),
                tag(segment, mrml.TAG_CONFIDENCE),
                tag(segment, mrml.TAG_NEEDS_REVIEW),
                tag(segment, mrml.TAG_REVIEW_REASON),
            )
        )
    return out


def test_report_flags_a_low_confidence_segment_and_a_confident_rerun_clears_the_flag(scene):
    volume, labels = _bands_volume(scene)
    package = FakePackage(ACDC_CLASSES)  # coded classes: export matches them by terminology
    report = segment_report(package, {1: LOW}, warnings=["The image looks unusually dark."])
    result = mrml.write_segmentation_node(volume, package, labels, report=report)
    node = result.segmentation_node
    ids = segment_ids(node)
    assert _review_state(node) == [
        ("right ventricle (needs review)", STATUS.Flagged, "0.7120", "1", LOW),
        ("myocardium", STATUS.InProgress, "0.9700", "0", None),
        ("left ventricle", STATUS.InProgress, "0.9700", "0", None),
    ]
    assert tag(node.GetSegmentation().GetSegment(ids[0]), "Segmentation.Status") == "flagged"
    assert result.needs_review == {ids[0]: LOW}
    assert result.warnings == ["The image looks unusually dark."]
    assert result.message == (
        f"Created '{node.GetName()}' with 3 segments. Needs review: right ventricle "
        "(low confidence 0.712 < 0.930). The image looks unusually dark."
    )
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    mrml.export_segmentation_to_labelmap_node(node, exported)  # the renamed segment keeps its label value
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(exported), labels)

    again = mrml.write_segmentation_node(volume, package, labels, node, report=segment_report(package))
    assert segment_ids(node) == ids and sorted(again.updated_segment_ids) == sorted(ids)  # found by tags
    assert _review_state(node) == [
        ("right ventricle", STATUS.InProgress, "0.9700", "0", None),
        ("myocardium", STATUS.InProgress, "0.9700", "0", None),
        ("left ventricle", STATUS.InProgress, "0.9700", "0", None),
    ]
    assert again.needs_review == {} and "Needs review" not in again.message


def test_a_segment_not_found_is_flagged_without_a_confidence(scene):
    volume, labels = _bands_volume(scene)
    labels[labels == 3] = 0
    package = FakePackage(ACDC_CLASSES)
    result = mrml.write_segmentation_node(volume, package, labels, report=segment_report(package, {3: "not found"}))
    assert _review_state(result.segmentation_node)[2] == (
        "left ventricle (needs review)",
        STATUS.Flagged,
        None,
        "1",
        "not found",
    )
    assert "Needs review: left ventricle (not found)." in result.message


def test_segments_the_user_edited_are_neither_renamed_nor_flagged(scene):
    volume, labels = _bands_volume(scene)
    package = FakePackage(ACDC_CLASSES)
    report = segment_report(package, {2: LOW})
    node = mrml.write_segmentation_node(volume, package, labels, report=report).segmentation_node
    ids = segment_ids(node)
    for sid in (ids[0], ids[1]):  # the user paints slice 0 into the right ventricle and the (flagged) myocardium
        edited = segment_array(node, sid, volume)
        edited[0] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited, node, sid, volume)
    before = _review_state(node)

    again = mrml.write_segmentation_node(
        volume, package, labels, node, report=segment_report(package, {1: LOW, 3: LOW})
    )
    assert again.kept_edited_segment_ids == [ids[0], ids[1]]
    after = _review_state(node)
    assert after[:2] == before[:2]  # the edited ones: name, status and tags as they were
    assert before[0] == ("right ventricle", STATUS.InProgress, "0.9700", "0", None)
    assert before[1] == ("myocardium (needs review)", STATUS.Flagged, "0.7120", "1", LOW)
    assert after[2] == ("left ventricle (needs review)", STATUS.Flagged, "0.7120", "1", LOW)
    assert again.needs_review == {ids[2]: LOW}
    assert "Needs review: left ventricle (low confidence" in again.message and "right ventricle (" not in again.message


def test_a_renamed_or_uncoded_segment_keeps_its_name_when_flagged(scene):
    volume, labels = _bands_volume(scene)
    package = FakePackage(ACDC_CLASSES)
    node = mrml.write_segmentation_node(volume, package, labels).segmentation_node
    node.GetSegmentation().GetSegment(segment_ids(node)[0]).SetName("RV")  # the user's own name
    mrml.write_segmentation_node(volume, package, labels, node, report=segment_report(package, {1: LOW}))
    assert _review_state(node)[0] == ("RV", STATUS.Flagged, "0.7120", "1", LOW)
    mrml.write_segmentation_node(volume, package, labels, node, report=segment_report(package))
    assert _review_state(node)[0] == ("RV", STATUS.InProgress, "0.9700", "0", None)

    # A class without codes is matched to its label value by name on export: the name stays.
    lesion = FakePackage([{"label_value": 1, "name": "lesion", "color": [200, 60, 60]}], model_id="lesions")
    mask = (labels > 1).astype(np.uint8)
    result = mrml.write_segmentation_node(volume, lesion, mask, report=segment_report(lesion, {1: LOW}))
    assert _review_state(result.segmentation_node) == [("lesion", STATUS.Flagged, "0.7120", "1", LOW)]
    assert "Needs review: lesion (low confidence 0.712 < 0.930)." in result.message
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    mrml.export_segmentation_to_labelmap_node(result.segmentation_node, exported)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(exported), mask)


def test_without_a_usable_report_segments_are_in_progress_and_not_tagged(scene):
    volume, labels = _bands_volume(scene)
    package = FakePackage(ACDC_CLASSES)
    report = segment_report(package, {1: LOW})
    node = mrml.write_segmentation_node(volume, package, labels, report=report).segmentation_node
    # No report (it could not be read): the new prediction carries no flag of the old one.
    again = mrml.write_segmentation_node(volume, package, labels, node)
    assert [s[:2] for s in _review_state(node)] == [
        ("right ventricle", STATUS.InProgress),
        ("myocardium", STATUS.InProgress),
        ("left ventricle", STATUS.InProgress),
    ]
    assert all(s[2:] == (None, None, None) for s in _review_state(node)) and again.needs_review == {}
    # A report of another model is not applied (its warnings still are shown); broken entries are skipped.
    other = segment_report(package, {1: LOW}, warnings=["A warning."], model_id="another-model")
    result = mrml.write_segmentation_node(volume, package, labels, node, report=other)
    assert result.needs_review == {} and result.warnings == ["A warning."] and result.message.endswith("A warning.")
    broken = segment_report(package, {2: LOW})
    broken["segments"] = [{"label_value": "1"}, "junk", *broken["segments"][1:]]
    result = mrml.write_segmentation_node(volume, package, labels, node, report=broken)
    assert [s[1:4] for s in _review_state(node)] == [
        (STATUS.InProgress, None, None),
        (STATUS.Flagged, "0.7120", "1"),
        (STATUS.InProgress, "0.9700", "0"),
    ]


def test_rerun_saves_an_undo_state_when_the_scene_records_undo(scene, monkeypatch):
    # Only the recording is checked: restoring a segmentation by scene.Undo() headless (slicer-core
    # 5.12.4) leaves segments that can no longer be exported, so the restore itself is not asserted.
    image = sitk.GetImageFromArray(np.arange(2 * 16 * 16, dtype=np.int16).reshape(2, 16, 16))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    package = FakePackage(HIPPO_CLASSES)
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1, 2])))
    node = mrml.segment_volume_node(volume, package).segmentation_node
    assert scene.GetNumberOfUndoLevels() == 0  # undo off: nothing recorded, nothing enabled
    assert not node.GetUndoEnabled() and not node.GetLabelmapConversionColorTableNode().GetUndoEnabled()
    scene.SetUndoOn()
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 2, 1])))
    mrml.segment_volume_node(volume, package, segmentation_node=node)
    assert scene.GetNumberOfUndoLevels() == 1
    assert not node.GetUndoEnabled()  # the user's own node is left as it was


def test_nodes_a_run_creates_record_undo_when_the_scene_does(scene, monkeypatch):
    image = sitk.GetImageFromArray(np.arange(2 * 16 * 16, dtype=np.int16).reshape(2, 16, 16))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    scene.SetUndoOn()
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1, 2])))
    node = mrml.segment_volume_node(volume, FakePackage(HIPPO_CLASSES)).segmentation_node
    created = [node, node.GetDisplayNode(), node.GetLabelmapConversionColorTableNode()]
    assert all(n.GetUndoEnabled() for n in created)
    assert not volume.GetUndoEnabled()


# ------------------------------------------------------------------------------ dtypes and export
def test_int64_and_bool_predictions_never_reach_update_volume_from_array(scene, monkeypatch):
    seen = []
    original = slicer.util.updateVolumeFromArray

    def spy(volume_node, array):
        seen.append(np.asarray(array).dtype)
        if array.dtype in (np.int64, np.bool_):
            raise AssertionError(f"{array.dtype} array passed to updateVolumeFromArray")
        return original(volume_node, array)

    monkeypatch.setattr(slicer.util, "updateVolumeFromArray", spy)
    image = sitk.GetImageFromArray(np.arange(2 * 12 * 10, dtype=np.int16).reshape(2, 12, 10))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    int64_labels = intensity_bands([0, 1, 2])(sitk.GetArrayFromImage(image)).astype(np.int64)

    def predict_int64(image, *args, **kwargs):
        out = sitk.GetImageFromArray(int64_labels)
        out.CopyInformation(image)
        return out, None

    monkeypatch.setattr(prediction, "predict_image", predict_int64)
    package = FakePackage(HIPPO_CLASSES)
    result = mrml.segment_volume_node(volume, package)
    _check_segments_equal_labels(result, volume, int64_labels, HIPPO_CLASSES)
    # A bool array (a sigmoid model's mask) and an int64 array written directly.
    mask = int64_labels > 0
    lesion = [{"label_value": 1, "name": "lesion", "color": [255, 0, 0]}]
    result = mrml.write_segmentation_node(volume, FakePackage(lesion, model_id="mask"), mask)
    _check_segments_equal_labels(result, volume, mask.astype(np.uint8), lesion)
    assert mrml.labelmap_to_uint8(mask).dtype == np.uint8
    assert mrml.labelmap_to_uint8(int64_labels).dtype == np.uint8
    with pytest.raises(ValueError, match="0..255"):
        mrml.labelmap_to_uint8(np.array([0, 300]))
    assert np.int64 not in seen and np.bool_ not in seen


def test_labels_1_2_5_keep_their_values_on_export(scene):
    classes = [
        {"label_value": 1, "name": "one", "color": [255, 0, 0]},
        {"label_value": 2, "name": "two", "color": [0, 255, 0]},
        {"label_value": 5, "name": "five", "color": [0, 0, 255]},
    ]
    image = sitk.GetImageFromArray(np.zeros((3, 10, 12), np.int16))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    labels = np.zeros((3, 10, 12), np.uint8)
    labels[0, 2:5, 3:8] = 1
    labels[1, 4:9, 1:4] = 2
    labels[2, :, 10:] = 5
    result = mrml.write_segmentation_node(volume, FakePackage(classes), labels)
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    mrml.export_segmentation_to_labelmap_node(result.segmentation_node, exported)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(exported), labels)

    # The colour table names the values, for Slicer's own export dialogs.
    table = result.segmentation_node.GetLabelmapConversionColorTableNode()
    assert [table.GetColorName(v) for v in (1, 2, 5)] == ["one", "two", "five"]

    with pytest.raises(ValueError, match=r"\[7\]"):
        mrml.write_segmentation_node(volume, FakePackage(classes), np.full((3, 10, 12), 7, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        mrml.write_segmentation_node(volume, FakePackage(classes), np.zeros((2, 10, 12), np.uint8))


@pytest.mark.parametrize("model_id", ["hippocampus-msd", "cardiac-acdc"])
def test_bundled_terminology_keeps_label_values_on_export_even_after_renaming(scene, model_id):
    from AttentionMambaSegLib.package import load_model_package

    package = load_model_package(model_id)
    image = sitk.GetImageFromArray(np.zeros((2, 8, 3 * len(package.classes)), np.int16))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    labels = np.zeros((2, 8, 3 * len(package.classes)), np.uint8)
    for entry in package.card.foreground_classes:
        labels[:, :, 3 * (entry.label_value - 1) : 3 * entry.label_value] = entry.label_value
    node = mrml.write_segmentation_node(volume, package, labels).segmentation_node
    segmentation = node.GetSegmentation()
    terms = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        value = int(tag(segment, mrml.TAG_LABEL_VALUE))
        terms[value] = segment.GetTerminology()
        entry = next(e for e in package.card.foreground_classes if e.label_value == value)
        assert terms[value] == entry.terminology_string()  # Slicer's serializer agrees with ours
        segment.SetName(f"renamed {i}")  # so the export cannot match by name
    assert len(set(terms.values())) == len(package.classes)
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    mrml.export_segmentation_to_labelmap_node(node, exported)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(exported), labels)
    parsed = slicer.vtkSlicerTerminologyEntry()
    if model_id == "cardiac-acdc":  # the myocardium keeps its region
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(terms[2], parsed)
        assert parsed.GetRegionObject().GetCodeValue() == "87878005"
        assert parsed.GetTypeObject().GetCodeMeaning() == "Myocardium"
    else:  # anterior and posterior share the type, and differ in the modifier
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(terms[1], parsed)
        assert parsed.GetTypeModifierObject().GetCodeMeaning() == "Anterior"
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(terms[2], parsed)
        assert parsed.GetTypeModifierObject().GetCodeMeaning() == "Posterior"


def test_zero_spacing_is_an_input_volume_error_naming_the_axis(scene):
    image = sitk.GetImageFromArray(np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    volume.SetSpacing(1.0, 0.0, 2.0)
    with pytest.raises(mrml.InputVolumeError, match=r"spacing of 0 mm along its J axis.*Volumes module"):
        mrml.image_from_volume_node(volume)


def test_segmentation_joins_the_volume_in_the_subject_hierarchy(scene, monkeypatch):
    image = sitk.GetImageFromArray(np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8))
    volume = mrml.add_volume_node_from_image(scene, image, "input")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient")
    study = sh.CreateStudyItem(patient, "study")
    sh.CreateItem(study, volume)
    monkeypatch.setattr(prediction, "predict_image", fixed_predictor(intensity_bands([0, 1, 2])))
    result = mrml.segment_volume_node(volume, FakePackage(HIPPO_CLASSES))
    assert sh.GetItemParent(sh.GetItemByDataNode(result.segmentation_node)) == study
