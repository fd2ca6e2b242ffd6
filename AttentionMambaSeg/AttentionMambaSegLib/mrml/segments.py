"""Writing a labelmap into a segmentation node: named, coloured, coded segments, edit protection, review tags.

Protecting manual edits: every segment written here carries tags with the model id, the label value and
a SHA-256 of its voxels at the time it was written. A re-run updates a segment only if that hash still
matches (nobody edited it); edited segments are left untouched and reported.

Review flags: :func:`write_segmentation_node` takes the run's report (the ``NAME.report.json`` the
``segment`` command writes beside its output: per segment ``label_value``, ``confidence``,
``needs_review``, ``reason``, plus ``warnings``). Each segment it writes gets the tags
``AttentionMambaSeg.Confidence`` (mean largest probability, 0-1, 4 decimals; absent for an empty segment),
``AttentionMambaSeg.NeedsReview`` ("1" or "0") and ``AttentionMambaSeg.ReviewReason`` (only when flagged).
A flagged segment gets Slicer's "Flagged" status and, when its class is coded (label values are then
matched by terminology on export, not by name) and the user has not renamed it, the name
"NAME (needs review)"; the others get "In progress" and their class name back. Segments kept because the
user edited them are not touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from .volumes import InputVolumeError, ijk_to_ras_matrix, image_array, vtk_matrix

__all__ = [
    "ATTRIBUTE_MODEL_ID",
    "NEEDS_REVIEW_SUFFIX",
    "TAG_CONFIDENCE",
    "TAG_LABELMAP_HASH",
    "TAG_LABEL_VALUE",
    "TAG_MODEL_ID",
    "TAG_NEEDS_REVIEW",
    "TAG_REVIEW_REASON",
    "SegmentationResult",
    "binary_oriented_image",
    "color_table_for_model",
    "export_segmentation_to_labelmap_node",
    "labelmap_to_uint8",
    "mask_hash",
    "model_name",
    "place_like_volume",
    "report_reviews",
    "review_sentence",
    "segment_hash",
    "segment_tag",
    "segmentation_labelmap",
    "terminology_entry",
    "write_segmentation_node",
    "write_segments",
]

logger = logging.getLogger(__name__)

# Segment tags and node attributes written by this module.
TAG_MODEL_ID = "AttentionMambaSeg.ModelId"
TAG_LABEL_VALUE = "AttentionMambaSeg.LabelValue"
TAG_LABELMAP_HASH = "AttentionMambaSeg.LabelmapHash"
TAG_CONFIDENCE = "AttentionMambaSeg.Confidence"
TAG_NEEDS_REVIEW = "AttentionMambaSeg.NeedsReview"
TAG_REVIEW_REASON = "AttentionMambaSeg.ReviewReason"
#: Appended to the name of a segment the model flags for review.
NEEDS_REVIEW_SUFFIX = " (needs review)"
ATTRIBUTE_MODEL_ID = "AttentionMambaSeg.ModelId"


@dataclasses.dataclass
class SegmentationResult:
    """What ``write_segmentation_node`` / ``segment_volume_node`` did.

    Attributes:
        segmentation_node: the vtkMRMLSegmentationNode that holds the result.
        created_node: True when a new segmentation node was created.
        added_segment_ids: segments created by this run.
        updated_segment_ids: segments of an earlier run that nobody had edited, overwritten by this run.
        kept_edited_segment_ids: segments of an earlier run that were edited by the user and kept as
            they were (the new prediction for them was not written).
        message: human-readable sentences summarising the above, then the segments that need review
            and the report's warnings (for a status label).
        needs_review: segment id -> reason ("low confidence (0.712 < 0.930)", "not found"), for the
            segments this run wrote and flagged (empty without a report).
        warnings: the report's warnings (sentences about the input or the result).
    """

    segmentation_node: Any
    created_node: bool
    added_segment_ids: list[str]
    updated_segment_ids: list[str]
    kept_edited_segment_ids: list[str]
    message: str
    needs_review: dict[str, str] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)


def labelmap_to_uint8(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a uint8 array (VTK rejects int64 and bool arrays).

    Raises:
        ValueError: a label is negative or above 255 (cannot be stored losslessly).
    """
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype == np.bool_:
        return labels.astype(np.uint8)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"Label values must be in 0..255 to be stored as uint8; got {labels.min()}..{labels.max()}.")
    return labels.astype(np.uint8)


def binary_oriented_image(mask: np.ndarray, ijk_to_ras: np.ndarray):
    """A uint8 (0/1) vtkOrientedImageData with the given (K, J, I) mask and geometry."""
    image = slicer.vtkOrientedImageData()
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras))
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.reshape(-1).astype(np.uint8)
    return image


def _hash_voxels(ijk: np.ndarray) -> str:
    """SHA-256 of a set of integer voxel positions (N, 3) in (i, j, k), order-independent."""
    ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
    order = np.lexsort((ijk[:, 0], ijk[:, 1], ijk[:, 2]))
    return hashlib.sha256(np.ascontiguousarray(ijk[order], dtype="<i8").tobytes()).hexdigest()


def mask_hash(mask: np.ndarray) -> str:
    """Hash of a (K, J, I) binary mask on the reference grid (what a segment stores at creation)."""
    k, j, i = np.nonzero(mask)
    return _hash_voxels(np.stack([i, j, k], axis=1))


def segment_hash(segmentation_node, segment_id: str, reference_ijk_to_ras: np.ndarray) -> str:
    """Hash of a segment's current voxels expressed on the reference grid (comparable with ``mask_hash``).

    Voxels that do not fall on the reference grid (the segment was resampled) give a hash that never
    matches a stored one, which errs on the side of keeping the segment.
    """
    image = slicer.vtkOrientedImageData()
    ok = slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, image, False
    )
    if not ok:
        return "unavailable"
    extent = image.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return mask_hash(np.zeros((0, 0, 0), np.uint8))
    array = image_array(image)
    k, j, i = np.nonzero(array)
    if k.size == 0:
        return mask_hash(np.zeros((0, 0, 0), np.uint8))
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)], axis=0).astype(float)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    image_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    ref_ijk = (np.linalg.inv(reference_ijk_to_ras) @ image_to_ras @ ijk)[:3].T
    rounded = np.round(ref_ijk)
    if np.abs(ref_ijk - rounded).max() > 1e-3:
        return "off-grid"
    return _hash_voxels(rounded)


def terminology_entry(entry) -> str:
    """Slicer's serialized terminology entry of a :class:`~AttentionMambaSegLib.terminology.ClassEntry`.

    Built with Slicer's own ``vtkSlicerTerminologyEntry`` and ``SerializeTerminologyEntry`` (every code:
    category, type, type modifier, region, region modifier); ``""`` for a class without codes.
    """
    if not entry.coded:
        return ""
    from ..terminology import ANATOMIC_CONTEXT, TERMINOLOGY_CONTEXT

    term = slicer.vtkSlicerTerminologyEntry()
    term.SetTerminologyContextName(TERMINOLOGY_CONTEXT)
    term.SetRegionContextName(ANATOMIC_CONTEXT if entry.region is not None else "")
    for target, code in (
        (term.GetCategoryObject(), entry.category),
        (term.GetTypeObject(), entry.type),
        (term.GetTypeModifierObject(), entry.type_modifier),
        (term.GetRegionObject(), entry.region),
        (term.GetRegionModifierObject(), entry.region_modifier),
    ):
        if code is not None:
            target.SetCodingSchemeDesignator(code.scheme)
            target.SetCodeValue(code.value)
            target.SetCodeMeaning(code.meaning)
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(term)


def model_name(package) -> str:
    """The model's display name (model.json ``name``, read through its card), else its id."""
    card = getattr(package, "card", None)
    name = getattr(card, "name", None)
    return str(name or package.id)


def color_table_for_model(scene, package):
    """Find or create the colour table naming and coding the model's label values (kept on export)."""
    number_of_colors = max(int(e.label_value) for e in package.card.foreground_classes) + 1
    existing = scene.GetNodesByClass("vtkMRMLColorTableNode")
    try:
        for i in range(existing.GetNumberOfItems()):
            node = existing.GetItemAsObject(i)
            if node.GetAttribute(ATTRIBUTE_MODEL_ID) == str(package.id) and (
                node.GetNumberOfColors() == number_of_colors
            ):
                return node
    finally:
        existing.UnRegister(None)
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName(f"{model_name(package)} labels"))
    table.SetTypeToUser()
    table.SetNumberOfColors(number_of_colors)
    for value in range(number_of_colors):
        table.SetColor(value, "background" if value == 0 else "", 0.0, 0.0, 0.0, 0.0)
    for entry in package.card.foreground_classes:
        table.SetColor(entry.label_value, entry.name, *entry.color_float(), 1.0)
        if entry.coded:  # export matches segments to label values by these codes first, then by name
            table.SetTerminologyFromString(entry.label_value, terminology_entry(entry))
    table.SetAttribute(ATTRIBUTE_MODEL_ID, str(package.id))
    table.SetAttribute("Category", "AttentionMambaSeg")
    _enable_undo(scene, table)
    return table


def segment_tag(segment, name: str) -> str | None:
    """Value of a segment tag, or None when the segment does not carry it."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def _find_model_segment(segmentation, model_id: str, label_value: int) -> str | None:
    """Id of the segment this model wrote for ``label_value`` (by tags, not by name), or None."""
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if segment_tag(segment, TAG_MODEL_ID) == model_id and segment_tag(segment, TAG_LABEL_VALUE) == str(label_value):
            return segmentation.GetNthSegmentID(index)
    return None


def place_like_volume(segmentation_node, volume_node) -> None:
    """Same parent transform and subject-hierarchy parent as the volume."""
    segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    scene = volume_node.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return
    volume_item = sh.GetItemByDataNode(volume_node)
    if not volume_item:
        return  # headless scene without subject hierarchy items
    parent = sh.GetItemParent(volume_item)
    segmentation_item = sh.GetItemByDataNode(segmentation_node)
    if not segmentation_item:
        sh.CreateItem(parent, segmentation_node)
    else:
        sh.SetItemParent(segmentation_item, parent)


def _enable_undo(scene, *nodes) -> None:
    """Nodes a run creates record undo exactly when the scene does (the user's own nodes are left as they are)."""
    if scene.GetUndoFlag():
        for node in nodes:
            if node is not None:
                node.SetUndoEnabled(True)


def _new_segmentation_node(volume_node, package):
    """A segmentation node placed like the volume (transform, study), its geometry the volume's."""
    scene = volume_node.GetScene()
    node = scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{volume_node.GetName()} {model_name(package)}")
    )
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(ATTRIBUTE_MODEL_ID, str(package.id))
    place_like_volume(node, volume_node)
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    _enable_undo(scene, node, node.GetDisplayNode())
    return node


def report_reviews(report: dict | None, package) -> tuple[dict[int, dict], list[str]]:
    """The per-segment entries and the warnings of a ``segment`` report, checked.

    Args:
        report: the parsed ``NAME.report.json`` (see the module docstring), or None.
        package: the ModelPackage that made the labelmap.

    Returns:
        (label value -> that segment's report entry, warnings). Entries without an integer
        ``label_value`` are skipped; a report of another model gives no entries (both logged).
    """
    if not isinstance(report, dict):
        return {}, []
    warnings = [str(w) for w in report.get("warnings") or [] if str(w).strip()]
    if report.get("model") not in (None, str(package.id)):
        logger.warning(
            "The report is for model '%s', not '%s': its confidence figures were not used.",
            report.get("model"),
            package.id,
        )
        return {}, warnings
    reviews = {}
    for entry in report.get("segments") or []:
        value = entry.get("label_value") if isinstance(entry, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            reviews[value] = entry
        else:
            logger.warning("Skipped a report entry without a label value: %r", entry)
    return reviews, warnings


def _apply_review(segment, entry, review: dict | None) -> str | None:
    """Tags, status and name of a segment this run wrote, from its report entry (None: no report, or the
    report does not list this class: no confidence tags, "In progress").

    Returns:
        Why the segment needs review, or None.
    """
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    reason = None
    for name in (TAG_CONFIDENCE, TAG_NEEDS_REVIEW, TAG_REVIEW_REASON):
        segment.RemoveTag(name)
    if review is not None:
        confidence = review.get("confidence")
        if isinstance(confidence, (int, float)) and not isinstance(confidence, bool):
            segment.SetTag(TAG_CONFIDENCE, f"{float(confidence):.4f}")
        if review.get("needs_review"):
            reason = str(review.get("reason") or "flagged by the model")
            segment.SetTag(TAG_REVIEW_REASON, reason)
        segment.SetTag(TAG_NEEDS_REVIEW, "1" if reason else "0")
    flagged_name = entry.name + NEEDS_REVIEW_SUFFIX
    name = segment.GetName()
    if reason:
        logic.SetSegmentStatus(segment, logic.Flagged)
        if entry.coded and name == entry.name:  # an uncoded class is matched by name on export
            segment.SetName(flagged_name)
    else:
        logic.SetSegmentStatus(segment, logic.InProgress)
        if name == flagged_name:
            segment.SetName(entry.name)
    return reason


def write_segments(segmentation_node, volume_node, package, labels: np.ndarray, reviews: dict[int, dict]):
    """Add or update one segment per class (``reviews``: label value -> report entry, see ``report_reviews``);
    return (added, updated, kept-because-edited, flagged) where flagged maps a written segment's id to why
    it needs review."""
    model_id = str(package.id)
    ijk_to_ras = ijk_to_ras_matrix(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    added, updated, kept, flagged = [], [], [], {}
    was_modifying = segmentation_node.StartModify()
    try:
        for entry in sorted(package.card.foreground_classes, key=lambda e: e.label_value):
            mask = (labels == entry.label_value).astype(np.uint8)
            image = binary_oriented_image(mask, ijk_to_ras)
            segment_id = _find_model_segment(segmentation, model_id, entry.label_value)
            if segment_id is not None:
                segment = segmentation.GetSegment(segment_id)
                if segment_tag(segment, TAG_LABELMAP_HASH) != segment_hash(segmentation_node, segment_id, ijk_to_ras):
                    kept.append(segment_id)
                    continue
                # No segment may be overwritten (empty overwrite list): where the new mask overlaps a
                # segment the user edited, Slicer moves the segments apart instead of erasing voxels.
                logic.SetBinaryLabelmapToSegment(
                    image, segmentation_node, segment_id, logic.MODE_REPLACE, None, False, []
                )
                updated.append(segment_id)
            else:
                segment_id = segmentation_node.AddSegmentFromBinaryLabelmapRepresentation(
                    image, entry.name, list(entry.color_float())
                )
                segment = segmentation.GetSegment(segment_id)
                segment.SetTag(TAG_MODEL_ID, model_id)
                segment.SetTag(TAG_LABEL_VALUE, str(entry.label_value))
                if entry.coded:
                    segment.SetTerminology(terminology_entry(entry))
                added.append(segment_id)
            segment.SetTag(TAG_LABELMAP_HASH, mask_hash(mask))
            reason = _apply_review(segment, entry, reviews.get(entry.label_value))
            if reason:
                flagged[segment_id] = reason
    finally:
        segmentation_node.EndModify(was_modifying)
    return added, updated, kept, flagged


def review_sentence(segmentation_node, needs_review: dict[str, str]) -> str:
    """ "Needs review: right ventricle cavity (low confidence 0.712 < 0.930), ..." ("" when none)."""
    if not needs_review:
        return ""
    segmentation = segmentation_node.GetSegmentation()
    parts = []
    for segment_id, reason in needs_review.items():
        name = segmentation.GetSegment(segment_id).GetName().removesuffix(NEEDS_REVIEW_SUFFIX)
        parts.append(f"{name} ({reason.replace('(', '').replace(')', '')})")
    return "Needs review: " + ", ".join(parts) + "."


def _summary(segmentation_node, created: bool, added: list, updated: list, kept: list) -> str:
    """ "Created 'X' with 3 segments." or "Updated 2 segment(s); kept 1 you edited (myocardium) in 'X'."."""
    if created:
        return f"Created '{segmentation_node.GetName()}' with {len(added)} segments."
    parts = [f"Updated {len(updated)} segment(s)"]
    if added:
        parts.append(f"added {len(added)}")
    if kept:
        segmentation = segmentation_node.GetSegmentation()
        names = ", ".join(segmentation.GetSegment(s).GetName() for s in kept)
        parts.append(f"kept {len(kept)} you edited ({names})")
    return f"{'; '.join(parts)} in '{segmentation_node.GetName()}'."


def _checked_labels(volume_node, package, labelmap) -> np.ndarray:
    """The labelmap as a uint8 (K, J, I) array on the volume's grid holding only the model's label values.

    Raises:
        ValueError: the labelmap's shape differs from the volume's, or it holds labels the model does
            not define.
    """
    if isinstance(labelmap, sitk.Image):
        labels = sitk.GetArrayViewFromImage(labelmap)
    else:
        labels = np.asarray(labelmap)
    labels = labelmap_to_uint8(labels)
    dims = volume_node.GetImageData().GetDimensions()
    expected = (dims[2], dims[1], dims[0])
    if labels.shape != expected:
        raise ValueError(f"Labelmap shape {labels.shape} (K, J, I) differs from the volume's {expected}.")
    known = {int(e.label_value) for e in package.card.foreground_classes} | {0}
    present = {int(v) for v in np.unique(labels)}
    if not present <= known:
        raise ValueError(
            f"The prediction holds label values {sorted(present - known)} that model '{package.id}' does "
            f"not define (defined: {sorted(known - {0})})."
        )
    return labels


def write_segmentation_node(
    volume_node, package, labelmap, segmentation_node=None, report: dict | None = None
) -> SegmentationResult:
    """Write a predicted labelmap into a segmentation node, protecting segments the user edited.

    Must run on the thread that owns the scene (the main thread in Slicer).

    Args:
        volume_node: the segmented volume; gives geometry, parent transform and subject-hierarchy place.
        package: ModelPackage whose ``card.foreground_classes`` name, colour and code the labels.
        labelmap: sitk.Image or np.ndarray (K, J, I) of label values on the volume's grid
            (any integer or bool dtype with values 0..255; stored as uint8).
        segmentation_node: existing vtkMRMLSegmentationNode to update, or None to create one. If it is
            under a different parent transform than the volume, a new node is created instead (and the
            message says so).
        report: the run's report (parsed ``NAME.report.json``, see the module docstring), or None. It
            sets each written segment's confidence tags, "Flagged" status and "(needs review)" name;
            without it the written segments are "In progress" with no confidence tags.

    Returns:
        SegmentationResult (``needs_review`` and ``warnings`` from the report).

    Raises:
        InputVolumeError: the volume was removed from the scene.
        ValueError: the labelmap's shape differs from the volume's, or it holds labels the model does
            not define.
    """
    scene = volume_node.GetScene()
    if scene is None or not scene.IsNodePresent(volume_node):
        raise InputVolumeError("The input volume was removed from the scene before the result was written.")
    labels = _checked_labels(volume_node, package, labelmap)
    reviews, warnings = report_reviews(report, package)
    messages = []
    if segmentation_node is not None and segmentation_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        messages.append(
            f"'{segmentation_node.GetName()}' is under a different transform than the volume, so the "
            "result was written to a new segmentation."
        )
        segmentation_node = None
    if scene.GetUndoFlag():
        scene.SaveStateForUndo()
    created = segmentation_node is None
    if created:
        segmentation_node = _new_segmentation_node(volume_node, package)
    color_table = color_table_for_model(scene, package)
    segmentation_node.SetLabelmapConversionColorTableNodeID(color_table.GetID())
    added, updated, kept, flagged = write_segments(segmentation_node, volume_node, package, labels, reviews)
    if kept:
        logger.info("Kept %d edited segment(s) unchanged: %s", len(kept), ", ".join(kept))
    messages.insert(0, _summary(segmentation_node, created, added, updated, kept))
    for sentence in [review_sentence(segmentation_node, flagged), *warnings]:
        if sentence:
            logger.warning("%s", sentence)
            messages.append(sentence)
    return SegmentationResult(
        segmentation_node=segmentation_node,
        created_node=created,
        added_segment_ids=added,
        updated_segment_ids=updated,
        kept_edited_segment_ids=kept,
        message=" ".join(messages),
        needs_review=flagged,
        warnings=warnings,
    )


def _segment_label_value(segment, names: dict[str, int]) -> int | None:
    value = segment_tag(segment, TAG_LABEL_VALUE)
    if value is not None and value.isdigit():
        return int(value)
    return names.get(segment.GetName().removesuffix(NEEDS_REVIEW_SUFFIX))


def segmentation_labelmap(segmentation_node, frame_node, names: dict[str, int]) -> np.ndarray:
    """The labelmap of a segmentation on a frame's grid, (K, J, I) uint8.

    A segment's label value is its ``AttentionMambaSeg.LabelValue`` tag, else the value whose class name it
    bears (``names``: class name -> label value; a "(needs review)" suffix is ignored); other segments
    are left out. Where segments overlap, the later one wins.

    Args:
        segmentation_node: a ``vtkMRMLSegmentationNode`` (a sequence item or a proxy).
        frame_node: the frame's volume node (its IJK-to-RAS matrix and dimensions give the grid).
        names: class name -> label value.
    """
    dims = frame_node.GetImageData().GetDimensions()
    labels = np.zeros((dims[2], dims[1], dims[0]), np.uint8)
    reference = slicer.vtkOrientedImageData()
    reference.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras_matrix(frame_node)))
    reference.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    segmentation = segmentation_node.GetSegmentation()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    for index in range(segmentation.GetNumberOfSegments()):
        value = _segment_label_value(segmentation.GetNthSegment(index), names)
        if value is None or not 0 < value < 256:
            continue
        image = slicer.vtkOrientedImageData()
        if not logic.GetSegmentBinaryLabelmapRepresentation(
            segmentation_node, segmentation.GetNthSegmentID(index), image, False
        ):
            continue
        extent = image.GetExtent()
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            continue  # an empty segment
        resampled = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            image, reference, resampled, False, False
        ):
            raise RuntimeError(
                f"Segment '{segmentation.GetNthSegment(index).GetName()}' could not be resampled onto the frame's grid."
            )
        labels[image_array(resampled).reshape(labels.shape) > 0] = value
    return labels


def export_segmentation_to_labelmap_node(segmentation_node, labelmap_node, reference_volume_node=None) -> None:
    """Export all segments to a labelmap node keeping each label value (via the model's colour table).

    Args:
        segmentation_node: segmentation written by ``write_segmentation_node``.
        labelmap_node: vtkMRMLLabelMapVolumeNode (in the scene) that receives the labels.
        reference_volume_node: output grid; default: the segmentation's reference geometry volume.

    Raises:
        RuntimeError: Slicer's export failed.
    """
    if reference_volume_node is None:
        reference_volume_node = segmentation_node.GetNodeReference(
            segmentation_node.GetReferenceImageGeometryReferenceRole()
        )
    color_table = segmentation_node.GetLabelmapConversionColorTableNode()
    segment_ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(segment_ids)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    extent_mode = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    if not logic.ExportSegmentsToLabelmapNode(
        segmentation_node, segment_ids, labelmap_node, reference_volume_node, extent_mode, color_table
    ):
        raise RuntimeError(f"Exporting '{segmentation_node.GetName()}' to a labelmap failed.")
