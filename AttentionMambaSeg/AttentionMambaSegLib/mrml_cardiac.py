"""MRML side of ventricular function: a cine in the scene in, a segmentation sequence, a table and a curve out.

A cine in 3D Slicer is

* a volume sequence: a ``vtkMRMLSequenceNode`` of scalar volumes browsed by a
  ``vtkMRMLSequenceBrowserNode`` (Sequences module); the volume the views show is the browser's proxy node;
* a multi-volume (``vtkMRMLMultiVolumeNode``, MultiVolumeExplorer): one scalar volume whose voxels hold one
  component per frame. Its frames become a volume sequence with a browser when the results are written.

The frames are segmented together in a child process (``cardiac`` command, :class:`~.worker.CardiacProcess`);
:func:`add_cardiac_results` then writes, on the main thread:

* a **segmentation sequence**: a ``vtkMRMLSequenceNode`` of ``vtkMRMLSegmentationNode``, one per frame at the
  cine's index values, synchronised in the cine's own browser (so it plays with the cine) with "save
  changes" on, so that edits made on the proxy segmentation (Segment Editor) are stored in the frame shown.
  Segments are named, coloured, coded and tagged as :func:`.mrml.write_segmentation` does; at ED and ES
  they carry the review flags of the child's report;
* the **function table** (``vtkMRMLTableNode``, one row per figure, LV and RV columns: EDV, ESV, SV, EF, LV
  myocardial mass, the ED and ES frame numbers, and the values indexed to body surface area when height and
  weight are given). It refers to every other output through node references, so :func:`update_function`
  needs nothing else;
* the **volume table** (LV, RV and MYO volume of every frame; the ``Phase`` column marks ED and ES) and the
  **volume-time curve**: a ``vtkMRMLPlotChartNode`` with an LV and an RV ``vtkMRMLPlotSeriesNode``.

:func:`update_function` recomputes the figures from the current segmentations (edited by hand, or with
other ED / ES frames) without any network: the figures come from :mod:`.clinical` (numpy and SimpleITK
only; definitions in :mod:`.clinical.function`). Nothing here imports torch.

As in :mod:`.mrml`, every function takes its nodes as arguments and never uses ``slicer.mrmlScene``,
``slicer.app`` or ``slicer.modules``. Frames are numbered from 1 in names and tables, 0-based in arguments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from . import mrml
from .mrml import InputVolumeError

__all__ = ["CardiacResult", "CineNodes", "add_cardiac_results", "check_cine", "cine_frame_images", "find_cine",
           "frame_count", "function_summary", "function_table_rows", "segmentation_labelmap", "update_function"]

logger = logging.getLogger(__name__)

ATTRIBUTE_FUNCTION = "AttentionMambaSeg.Function"
ATTRIBUTE_STRUCTURES = "AttentionMambaSeg.Structures"
ATTRIBUTE_WARNINGS = "AttentionMambaSeg.Warnings"
ATTRIBUTE_BODY = "AttentionMambaSeg.HeightWeight"
ROLE_SEGMENTATION_SEQUENCE = "AttentionMambaSeg.SegmentationSequence"
ROLE_BROWSER = "AttentionMambaSeg.Browser"
ROLE_VOLUME_TABLE = "AttentionMambaSeg.VolumeTable"
ROLE_CHART = "AttentionMambaSeg.Chart"
#: Column names of the function table and the volume table.
FUNCTION_COLUMNS = ("Figure", "LV", "RV", "Unit")
VOLUME_COLUMNS = ("Frame", "LV", "RV", "MYO", "Phase")

# (row name, LV field, RV field (None: not a ventricle figure), unit) of the function table.
_FIGURES = (
    ("End-diastolic volume (EDV)", "lv_edv_ml", "rv_edv_ml", "mL"),
    ("End-systolic volume (ESV)", "lv_esv_ml", "rv_esv_ml", "mL"),
    ("Stroke volume (SV)", "lv_sv_ml", "rv_sv_ml", "mL"),
    ("Ejection fraction (EF)", "lv_ef_percent", "rv_ef_percent", "%"),
    ("Myocardial mass", "lv_myocardial_mass_g", None, "g"),
    ("ED frame", "ed_frame", "ed_frame", "frame"),
    ("ES frame", "es_frame", "es_frame", "frame"),
)
_INDEXED = (
    ("EDV index", "lv_edv_ml_per_m2", "rv_edv_ml_per_m2", "mL/m2"),
    ("ESV index", "lv_esv_ml_per_m2", "rv_esv_ml_per_m2", "mL/m2"),
    ("SV index", "lv_sv_ml_per_m2", "rv_sv_ml_per_m2", "mL/m2"),
    ("Myocardial mass index", "lv_myocardial_mass_g_per_m2", None, "g/m2"),
    ("Body surface area (Mosteller)", "bsa_m2", "bsa_m2", "m2"),
)
_LV_COLOR = (250 / 255, 210 / 255, 80 / 255)  # as the PNG curve of clinical.plot
_RV_COLOR = (0 / 255, 151 / 255, 206 / 255)


# --------------------------------------------------------------------------------------------------
# The cine in the scene
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CineNodes:
    """A cine in the scene: a volume sequence with its browser, or a multi-volume.

    Attributes:
        browser: the ``vtkMRMLSequenceBrowserNode`` that plays the cine (None for a multi-volume until
            :func:`add_cardiac_results` makes one, or for a sequence no browser plays).
        sequence: the ``vtkMRMLSequenceNode`` of the frames (scalar volumes).
        proxy: the volume node the views show (the browser's proxy of ``sequence``), or None.
        multivolume: the multi-volume node (one scalar component per frame), or None.
    """

    browser: Any = None
    sequence: Any = None
    proxy: Any = None
    multivolume: Any = None
    _frames: list | None = dataclasses.field(default=None, repr=False)

    @property
    def node(self):
        """The node that names the cine: the multi-volume, else the browser, else the sequence."""
        return next(n for n in (self.multivolume, self.browser, self.sequence) if n is not None)

    @property
    def scene(self):
        return self.node.GetScene()

    @property
    def name(self) -> str:
        return self.node.GetName() or "cine"

    def frame_nodes(self) -> list:
        """The volume node of every frame, in time order (a multi-volume's: made here, not in the scene)."""
        if self.sequence is not None:
            return [self.sequence.GetNthDataNode(i) for i in range(self.sequence.GetNumberOfDataNodes())]
        if self._frames is None:
            self._frames = _multivolume_frames(self.multivolume)
        return self._frames

    def index_values(self) -> list[str]:
        """The sequence index value of every frame (a multi-volume's frame labels, else 0, 1, ...)."""
        if self.sequence is not None:
            return [self.sequence.GetNthIndexValue(i) for i in range(self.sequence.GetNumberOfDataNodes())]
        labels = [v.strip() for v in (self.multivolume.GetAttribute("MultiVolume.FrameLabels") or "").split(",")]
        count = self.multivolume.GetImageData().GetNumberOfScalarComponents()
        if len(labels) == count and all(labels) and len(set(labels)) == count:
            return labels
        return [str(i) for i in range(count)]


def _is_multivolume(node) -> bool:
    if node.GetClassName() == "vtkMRMLMultiVolumeNode":
        return True
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLVectorVolumeNode") \
            or node.IsA("vtkMRMLLabelMapVolumeNode"):
        return False
    image = node.GetImageData()
    return image is not None and image.GetNumberOfScalarComponents() > 1


def _holds_volumes(sequence) -> bool:
    if sequence is None or sequence.GetNumberOfDataNodes() == 0:
        return False
    first = sequence.GetNthDataNode(0)
    return first is not None and first.IsA("vtkMRMLScalarVolumeNode") and not first.IsA("vtkMRMLLabelMapVolumeNode")


def _browsers(scene) -> list:
    nodes = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    try:
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    finally:
        nodes.UnRegister(None)


def find_cine(node) -> CineNodes | None:
    """The cine ``node`` belongs to, or None for a plain volume (or None).

    Args:
        node: a volume node that is a sequence browser's proxy (what the views show while a cine plays), a
            multi-volume, a ``vtkMRMLSequenceNode`` of volumes, or a ``vtkMRMLSequenceBrowserNode`` whose
            master sequence holds volumes.

    Returns:
        :class:`CineNodes`, or None when ``node`` is none of these.
    """
    if node is None:
        return None
    scene = node.GetScene()
    if node.IsA("vtkMRMLSequenceBrowserNode"):
        sequence = node.GetMasterSequenceNode()
        return CineNodes(node, sequence, node.GetProxyNode(sequence)) if _holds_volumes(sequence) else None
    if node.IsA("vtkMRMLSequenceNode"):
        if not _holds_volumes(node):
            return None
        browsers = _browsers(scene) if scene is not None else []
        browser = next((b for b in browsers if b.IsSynchronizedSequenceNode(node, True)), None)
        return CineNodes(browser, node, browser.GetProxyNode(node) if browser else None)
    if not node.IsA("vtkMRMLVolumeNode"):
        return None
    if scene is not None and node.GetID():
        for browser in _browsers(scene):
            if browser.IsProxyNodeID(node.GetID()):
                sequence = browser.GetSequenceNode(node)
                return CineNodes(browser, sequence, node) if _holds_volumes(sequence) else None
    if _is_multivolume(node):
        return CineNodes(multivolume=node)
    return None


def _cardiac_structures(package):
    from .clinical.function import CardiacLabels

    try:
        return CardiacLabels.from_classes(package.class_entries, f"model '{package.id}'")
    except ValueError as e:
        raise InputVolumeError(f"A cine is segmented whole to measure the ventricular function. {e}") from e


def check_cine(cine: CineNodes, package=None) -> None:
    """Raise :class:`~.mrml.InputVolumeError` unless the cine can be segmented whole (by ``package``).

    Needed: two or more frames, each a single-component scalar volume with voxels, all of the same size, a
    browser that plays a sequence (a multi-volume gets one later), and a model that segments the RV and LV
    cavities and the LV myocardium (:class:`~.clinical.function.CardiacLabels`).
    """
    if cine.multivolume is None and cine.browser is None:
        raise InputVolumeError(f"The sequence '{cine.name}' is not shown by any sequence browser: open it in the "
                               "Sequences module first, so that the segmentation can play with it.")
    frames = cine.frame_nodes()
    if len(frames) < 2:
        raise InputVolumeError(f"'{cine.name}' holds {len(frames)} frame(s); ventricular function needs the whole "
                               "cine (at least the ED and the ES frame).")
    dims = None
    for t, frame in enumerate(frames):
        image = frame.GetImageData() if frame is not None else None
        if image is None or image.GetNumberOfPoints() == 0:
            raise InputVolumeError(f"Frame {t + 1} of '{cine.name}' has no voxels.")
        if image.GetNumberOfScalarComponents() != 1 or frame.IsA("vtkMRMLVectorVolumeNode"):
            raise InputVolumeError(f"Frame {t + 1} of '{cine.name}' has {image.GetNumberOfScalarComponents()} values "
                                   "per voxel; a cardiac cine is a sequence of grayscale volumes.")
        if dims is None:
            dims = image.GetDimensions()
        elif image.GetDimensions() != dims:
            raise InputVolumeError(f"Frame {t + 1} of '{cine.name}' has {image.GetDimensions()} voxels, frame 1 "
                                   f"{dims}: the frames of a cine must be the same stack of slices.")
    if package is not None:
        if int(package.in_channels) != 1:
            raise InputVolumeError(f"Model '{package.id}' segments {package.in_channels}-channel images; a cine is "
                                   "grayscale.")
        _cardiac_structures(package)


def cine_frame_images(cine: CineNodes) -> list[sitk.Image]:
    """Every frame as a SimpleITK image (LPS; :func:`.mrml.image_from_volume_node`), for the child process.

    Must run on the thread that owns the scene (it reads MRML).
    """
    return [mrml.image_from_volume_node(frame) for frame in cine.frame_nodes()]


def _multivolume_frames(node) -> list:
    """One scalar volume node per component of a multi-volume (same geometry; not added to any scene)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    frames = []
    for c in range(node.GetImageData().GetNumberOfScalarComponents()):
        extract = vtk.vtkImageExtractComponents()
        extract.SetInputData(node.GetImageData())
        extract.SetComponents(c)
        extract.Update()
        frame = slicer.vtkMRMLScalarVolumeNode()
        frame.SetName(f"{node.GetName()} frame {c + 1}")
        frame.SetIJKToRASMatrix(matrix)
        frame.SetAndObserveImageData(extract.GetOutput())
        frames.append(frame)
    return frames


def _browser_for_multivolume(cine: CineNodes) -> None:
    """Give a multi-volume's frames a volume sequence, a browser and a proxy volume (placed like it)."""
    scene, node = cine.scene, cine.multivolume
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(f"{node.GetName()} frames"))
    sequence.SetIndexName(node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagName") or "frame")
    sequence.SetIndexUnit(node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits") or "")
    for frame, value in zip(cine.frame_nodes(), cine.index_values()):
        sequence.SetDataNodeAtValue(frame, value)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(node.GetName()))
    proxy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{node.GetName()} frame"))
    was_modifying = browser.StartModify()
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.AddProxyNode(proxy, sequence, False)
    browser.SetSelectedItemNumber(0)
    browser.EndModify(was_modifying)
    proxy.CopyContent(sequence.GetNthDataNode(0), False)
    proxy.CreateDefaultDisplayNodes()
    mrml._place_like_volume(proxy, node)
    cine.browser, cine.sequence, cine.proxy = browser, sequence, proxy


# --------------------------------------------------------------------------------------------------
# Segmentations <-> labelmaps
# --------------------------------------------------------------------------------------------------


def _frame_reviews(report: dict | None, frame: int) -> dict[int, dict]:
    """label value -> {confidence, needs_review, reason} of the report's ED or ES entry for this 0-based frame."""
    reviews = {}
    for entry in (report or {}).get("structures", {}).values():
        if not isinstance(entry, dict) or not isinstance(entry.get("label_value"), int):
            continue
        for phase in ("ed", "es"):
            item = entry.get(phase)
            if isinstance(item, dict) and item.get("frame") == frame + 1:
                reviews[entry["label_value"]] = item
    return reviews


def _frame_segmentation(frame_node, package, labels: np.ndarray, reviews: dict):
    """A segmentation node (in no scene) holding one frame's segments on the frame's grid."""
    node = slicer.vtkMRMLSegmentationNode()
    node.SetAttribute(mrml.ATTRIBUTE_MODEL_ID, str(package.id))
    matrix = vtk.vtkMatrix4x4()
    frame_node.GetIJKToRASMatrix(matrix)
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, frame_node.GetImageData())
    node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry)
    mrml._write_segments(node, frame_node, package, labels, reviews)
    return node


def _segment_label_value(segment, names: dict[str, int]) -> int | None:
    value = mrml._segment_tag(segment, mrml.TAG_LABEL_VALUE)
    if value is not None and value.isdigit():
        return int(value)
    return names.get(segment.GetName().removesuffix(mrml.NEEDS_REVIEW_SUFFIX))


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
    reference.SetImageToWorldMatrix(mrml._vtk_matrix(mrml.ijk_to_ras_matrix(frame_node)))
    reference.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    segmentation = segmentation_node.GetSegmentation()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    for index in range(segmentation.GetNumberOfSegments()):
        value = _segment_label_value(segmentation.GetNthSegment(index), names)
        if value is None or not 0 < value < 256:
            continue
        image = slicer.vtkOrientedImageData()
        if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segmentation.GetNthSegmentID(index),
                                                            image, False):
            continue
        extent = image.GetExtent()
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            continue  # an empty segment
        resampled = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
                image, reference, resampled, False, False):
            raise RuntimeError(f"Segment '{segmentation.GetNthSegment(index).GetName()}' could not be resampled onto "
                               "the frame's grid.")
        labels[mrml._image_array(resampled).reshape(labels.shape) > 0] = value
    return labels


def _labelmap_images(arrays: list[np.ndarray], frame: sitk.Image) -> list[sitk.Image]:
    images = []
    for array in arrays:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(frame)
        images.append(image)
    return images


def _geometry_image(frame_node) -> sitk.Image:
    """A one-voxel-deep stand-in carrying the frame's spacing, origin and direction (LPS), for CopyInformation."""
    dims = frame_node.GetImageData().GetDimensions()
    image = sitk.Image([int(d) for d in dims], sitk.sitkUInt8)
    full = mrml.ijk_to_ras_matrix(frame_node)
    spacing = np.linalg.norm(full[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in mrml._RAS_TO_LPS @ full[:3, 3]])
    image.SetDirection([float(d) for d in (mrml._RAS_TO_LPS @ (full[:3, :3] / spacing)).flatten()])
    return image


# --------------------------------------------------------------------------------------------------
# Tables and chart
# --------------------------------------------------------------------------------------------------


def function_table_rows(function) -> list[tuple[str, float, float, str]]:
    """(figure, LV value, RV value, unit) rows of the function table; NaN where a value does not apply.

    Values are rounded to 2 decimals (as ``function.json``); the indexed rows only when the body surface
    area is known.
    """
    def value(field):
        v = getattr(function, field) if field else None
        return float("nan") if v is None else round(float(v), 2)

    rows = [(name, value(lv), value(rv), unit) for name, lv, rv, unit in _FIGURES]
    if function.bsa_m2 is not None:
        rows += [(name, value(lv), value(rv), unit) for name, lv, rv, unit in _INDEXED]
    return rows


def _string_column(name: str, values) -> vtk.vtkStringArray:
    array = vtk.vtkStringArray()
    array.SetName(name)
    for v in values:
        array.InsertNextValue(str(v))
    return array


def _double_column(name: str, values) -> vtk.vtkDoubleArray:
    array = numpy_support.numpy_to_vtk(np.asarray(values, dtype=np.float64), deep=True)
    array.SetName(name)
    return array


def _write_function_table(table_node, analysis) -> None:
    rows = function_table_rows(analysis.function)
    table = vtk.vtkTable()
    table.AddColumn(_string_column(FUNCTION_COLUMNS[0], [r[0] for r in rows]))
    table.AddColumn(_double_column(FUNCTION_COLUMNS[1], [r[1] for r in rows]))
    table.AddColumn(_double_column(FUNCTION_COLUMNS[2], [r[2] for r in rows]))
    table.AddColumn(_string_column(FUNCTION_COLUMNS[3], [r[3] for r in rows]))
    table_node.SetAndObserveTable(table)
    table_node.SetColumnDescription("LV", "Left ventricle (cavity; myocardium for the mass)")
    table_node.SetColumnDescription("RV", "Right ventricle (cavity)")
    table_node.SetAttribute(ATTRIBUTE_WARNINGS, json.dumps(list(analysis.warnings)))
    table_node.SetAttribute(ATTRIBUTE_FUNCTION, json.dumps(analysis.function.to_dict()))


def _write_volume_table(table_node, analysis) -> None:
    n = len(analysis.volumes)
    ed, es = analysis.ed_index, analysis.es_index
    phases = [", ".join(p for p, i in (("ED", ed), ("ES", es)) if i == t) for t in range(n)]
    table = vtk.vtkTable()
    table.AddColumn(_double_column("Frame", np.arange(1, n + 1)))
    table.AddColumn(_double_column("LV", [round(v.lv_ml, 2) for v in analysis.volumes]))
    table.AddColumn(_double_column("RV", [round(v.rv_ml, 2) for v in analysis.volumes]))
    table.AddColumn(_double_column("MYO", [round(v.myo_ml, 2) for v in analysis.volumes]))
    table.AddColumn(_string_column("Phase", phases))
    table_node.SetAndObserveTable(table)
    for column, long_name in (("LV", "LV cavity volume"), ("RV", "RV cavity volume"), ("MYO", "LV myocardium volume")):
        table_node.SetColumnDescription(column, long_name)
        table_node.SetColumnUnitLabel(column, "mL")


def _write_chart(chart_node, volume_table, analysis, name: str) -> None:
    scene = chart_node.GetScene()
    if chart_node.GetNumberOfPlotSeriesNodes() == 0:
        for column, color in (("LV", _LV_COLOR), ("RV", _RV_COLOR)):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode",
                                             scene.GenerateUniqueName(f"{name} {column} volume"))
            series.SetAndObserveTableNodeID(volume_table.GetID())
            series.SetXColumnName("Frame")
            series.SetYColumnName(column)
            series.SetLabelColumnName("Phase")
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetColor(*color)
            chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
    f = analysis.function
    chart_node.SetTitle(f"{name}: ventricular volumes (ED frame {f.ed_frame}, ES frame {f.es_frame})")
    chart_node.SetXAxisTitle("Frame")
    chart_node.SetYAxisTitle("Cavity volume (mL)")


def _place_in_study(node, volume_node) -> None:
    """Put a table or chart beside the volume in the subject hierarchy (no transform: they have none)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volume_node.GetScene())
    if sh is None:
        return
    volume_item = sh.GetItemByDataNode(volume_node)
    item = sh.GetItemByDataNode(node)
    if volume_item and item:
        sh.SetItemParent(item, sh.GetItemParent(volume_item))


def _format(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def function_summary(analysis) -> str:
    """Status-line sentences of a :class:`~.clinical.analysis.CardiacAnalysis`: the figures, then the warnings."""
    f, frames = analysis.function, len(analysis.volumes)
    text = (f"Ventricular function of {frames} frames: ED frame {f.ed_frame}, ES frame {f.es_frame}; LV EDV "
            f"{_format(f.lv_edv_ml)} mL, ESV {_format(f.lv_esv_ml)} mL, EF {_format(f.lv_ef_percent)} %; RV EF "
            f"{_format(f.rv_ef_percent)} %; LV mass {_format(f.lv_myocardial_mass_g)} g.")
    return " ".join([text, *analysis.warnings])


# --------------------------------------------------------------------------------------------------
# Results in, figures out
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CardiacResult:
    """What :func:`add_cardiac_results` made.

    Attributes:
        segmentation_sequence: ``vtkMRMLSequenceNode`` of the frames' segmentation nodes.
        segmentation_node: the proxy segmentation (the frame the browser shows; edit it in Segment Editor).
        table_node: the function table (refers to everything else; :func:`update_function` takes it).
        volume_table_node: per-frame volumes, ED and ES marked in its ``Phase`` column.
        chart_node: the volume-time curve.
        browser: the cine's browser (a new one for a multi-volume).
        analysis: :class:`~.clinical.analysis.CardiacAnalysis` (figures, per-frame volumes, warnings).
        message: sentences for a status line (figures, then warnings).
    """

    segmentation_sequence: Any
    segmentation_node: Any
    table_node: Any
    volume_table_node: Any
    chart_node: Any
    browser: Any
    analysis: Any
    message: str


def _labels_array(labelmap) -> np.ndarray:
    if isinstance(labelmap, sitk.Image):
        return mrml.labelmap_to_uint8(sitk.GetArrayViewFromImage(labelmap))
    return mrml.labelmap_to_uint8(np.asarray(labelmap))


def _structures_attribute(structures, package) -> str:
    return json.dumps({"rv": structures.rv, "myo": structures.myo, "lv": structures.lv,
                       "names": {c.name: c.label_value for c in package.class_entries},
                       "model": str(package.id)})


def add_cardiac_results(cine: CineNodes, package, labelmaps, report: dict | None = None, ed: int | None = None,
                        es: int | None = None, height_cm: float | None = None, weight_kg: float | None = None,
                        sequences_logic=None) -> CardiacResult:
    """Write the labelmaps of every frame of a cine into the scene, with the function table and curve.

    Must run on the thread that owns the scene (the main thread in Slicer).

    Args:
        cine: :func:`find_cine` of the input (a multi-volume gets a volume sequence and a browser here).
        package: the cardiac ModelPackage that made the labelmaps (names, colours, codes of the segments).
        labelmaps: one labelmap per frame, SimpleITK images or (K, J, I) arrays on the frames' grid.
        report: the parsed ``function.json`` of the ``cardiac`` command, or None: its ED / ES frames are used
            (unless ``ed`` / ``es`` are given), its review flags go onto the ED and ES segments, its warnings
            into the table's.
        ed, es: 0-based ED / ES frames; None: the report's, else the largest / smallest LV cavity.
        height_cm, weight_kg: for the figures indexed to body surface area (both or neither).
        sequences_logic: Slicer's ``vtkSlicerSequencesLogic``, to refresh the proxy nodes (None: the proxy
            segmentation is filled here, as that logic would).

    Returns:
        :class:`CardiacResult`.

    Raises:
        InputVolumeError: the cine left the scene, or the model is not a cardiac model.
        ValueError: a labelmap count or shape that differs from the cine's, or labels the model lacks.
    """
    from .clinical import function_from_labelmaps

    scene = cine.scene
    if scene is None or not scene.IsNodePresent(cine.node):
        raise InputVolumeError(f"The cine '{cine.name}' was removed from the scene before the results were written.")
    structures = _cardiac_structures(package)
    frames = cine.frame_nodes()
    arrays = [_labels_array(m) for m in labelmaps]
    if len(arrays) != len(frames):
        raise ValueError(f"{len(arrays)} labelmap(s) for the {len(frames)} frames of '{cine.name}'.")
    dims = frames[0].GetImageData().GetDimensions()
    known = {c.label_value for c in package.class_entries} | {0}
    for t, array in enumerate(arrays):
        if array.shape != (dims[2], dims[1], dims[0]):
            raise ValueError(f"The labelmap of frame {t + 1} has shape {array.shape} (K, J, I); the frames have "
                             f"{(dims[2], dims[1], dims[0])}.")
        extra = {int(v) for v in np.unique(array)} - known
        if extra:
            raise ValueError(f"The labelmap of frame {t + 1} holds label values {sorted(extra)} that model "
                             f"'{package.id}' does not define.")
    if report is not None:
        ed = ed if ed is not None else (report.get("ed_frame") - 1 if isinstance(report.get("ed_frame"), int) else None)
        es = es if es is not None else (report.get("es_frame") - 1 if isinstance(report.get("es_frame"), int) else None)
    warnings = [str(w) for w in (report or {}).get("warnings") or [] if str(w).strip()]
    names = {c.label_value: c.name for c in package.class_entries}
    analysis = function_from_labelmaps(_labelmap_images(arrays, _geometry_image(frames[0])), structures, ed, es,
                                       height_cm, weight_kg, names=names, extra_warnings=warnings)

    if cine.multivolume is not None and cine.browser is None:
        _browser_for_multivolume(cine)
        frames = cine.frame_nodes()
    browser, master = cine.browser, cine.browser.GetMasterSequenceNode()
    name = f"{cine.name} {mrml._model_name(package)}"
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(f"{name} segmentation"))
    sequence.SetIndexName(master.GetIndexName())
    sequence.SetIndexUnit(master.GetIndexUnit())
    sequence.SetIndexType(master.GetIndexType())
    for t, (frame, value, array) in enumerate(zip(frames, cine.index_values(), arrays)):
        reviews = _frame_reviews(report, t) if t in (analysis.ed_index, analysis.es_index) else {}
        sequence.SetDataNodeAtValue(_frame_segmentation(frame, package, array, reviews), value)

    proxy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{name} segmentation"))
    proxy.CreateDefaultDisplayNodes()
    proxy.SetLabelmapConversionColorTableNodeID(mrml._color_table_for_model(scene, package).GetID())
    was_modifying = browser.StartModify()
    browser.AddSynchronizedSequenceNodeID(sequence.GetID())
    browser.SetSaveChanges(sequence, True)  # edits of the proxy are stored in the frame shown
    browser.AddProxyNode(proxy, sequence, False)
    browser.EndModify(was_modifying)
    if sequences_logic is not None:
        sequences_logic.UpdateProxyNodesFromSequences(browser)
    current = sequence.GetDataNodeAtValue(master.GetNthIndexValue(max(browser.GetSelectedItemNumber(), 0)))
    if current is not None and proxy.GetSegmentation() is not current.GetSegmentation():
        proxy.CopyContent(current, False)  # shared: what is drawn on the proxy is the frame's segmentation
    volume_proxy = cine.proxy if cine.proxy is not None else browser.GetProxyNode(master)
    if volume_proxy is not None:
        mrml._place_like_volume(proxy, volume_proxy)
        proxy.SetNodeReferenceID(proxy.GetReferenceImageGeometryReferenceRole(), volume_proxy.GetID())

    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{cine.name} ventricular function"))
    volumes = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{cine.name} ventricular volumes"))
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(f"{cine.name} volume curve"))
    table.SetAttribute(ATTRIBUTE_STRUCTURES, _structures_attribute(structures, package))
    table.SetAttribute(mrml.ATTRIBUTE_MODEL_ID, str(package.id))
    if height_cm is not None and weight_kg is not None:
        table.SetAttribute(ATTRIBUTE_BODY, json.dumps([height_cm, weight_kg]))
    for role, node in ((ROLE_SEGMENTATION_SEQUENCE, sequence), (ROLE_BROWSER, browser), (ROLE_VOLUME_TABLE, volumes),
                       (ROLE_CHART, chart)):
        table.SetNodeReferenceID(role, node.GetID())
    _write_tables(table, volumes, chart, analysis, cine.name)
    table.SetLocked(True)  # computed figures: "Update function" rewrites them
    volumes.SetLocked(True)
    if volume_proxy is not None:
        for node in (table, volumes, chart):
            _place_in_study(node, volume_proxy)
    message = function_summary(analysis)
    logger.info("%s", message)
    return CardiacResult(sequence, proxy, table, volumes, chart, browser, analysis, message)


def _write_tables(table, volumes, chart, analysis, name: str) -> None:
    _write_function_table(table, analysis)
    _write_volume_table(volumes, analysis)
    _write_chart(chart, volumes, analysis, name)


def update_function(table_node, ed: int | None = None, es: int | None = None, height_cm: float | None = None,
                    weight_kg: float | None = None):
    """Recompute the figures from the current segmentations of the cine, without any network.

    Reads every frame's segmentation from the segmentation sequence (the frame the browser shows from its
    proxy, which is what the Segment Editor changes), turns it into a labelmap
    (:func:`segmentation_labelmap`) and computes the figures with
    :func:`~.clinical.analysis.function_from_labelmaps`; the function table, the volume table and the chart
    are rewritten in place. The warnings are those of the figures now (plausibility, stack coverage); the
    model's review flags of the first run are not carried over.

    Args:
        table_node: the function table of :func:`add_cardiac_results`.
        ed, es: 0-based ED / ES frames; None: the frames the table holds now.
        height_cm, weight_kg: for the indexed figures; None: the ones given before (if any).

    Returns:
        :class:`~.clinical.analysis.CardiacAnalysis`.

    Raises:
        ValueError: not a function table of this module, a frame outside the cine, or a node it refers to was
            deleted.
    """
    from .clinical import CardiacLabels, function_from_labelmaps

    info = table_node.GetAttribute(ATTRIBUTE_STRUCTURES) if table_node is not None else None
    if not info:
        raise ValueError("Not a ventricular function table of Attention-Mamba Segmentation: segment a cine with a "
                         "cardiac model first.")
    info = json.loads(info)
    sequence = table_node.GetNodeReference(ROLE_SEGMENTATION_SEQUENCE)
    browser = table_node.GetNodeReference(ROLE_BROWSER)
    volumes, chart = table_node.GetNodeReference(ROLE_VOLUME_TABLE), table_node.GetNodeReference(ROLE_CHART)
    master = browser.GetMasterSequenceNode() if browser is not None else None
    if sequence is None or master is None or volumes is None or chart is None:
        raise ValueError(f"'{table_node.GetName()}' refers to a segmentation sequence, browser, volume table or chart "
                         "that was deleted: segment the cine again.")
    previous = json.loads(table_node.GetAttribute(ATTRIBUTE_FUNCTION) or "{}")
    ed = ed if ed is not None else (previous["ed_frame"] - 1 if "ed_frame" in previous else None)
    es = es if es is not None else (previous["es_frame"] - 1 if "es_frame" in previous else None)
    if height_cm is None and weight_kg is None and table_node.GetAttribute(ATTRIBUTE_BODY):
        height_cm, weight_kg = json.loads(table_node.GetAttribute(ATTRIBUTE_BODY))
    structures = CardiacLabels(info["rv"], info["myo"], info["lv"])
    names = {str(k): int(v) for k, v in info.get("names", {}).items()}
    proxy = browser.GetProxyNode(sequence)
    shown = browser.GetSelectedItemNumber()
    arrays = []
    frames = [master.GetNthDataNode(t) for t in range(master.GetNumberOfDataNodes())]
    for t, frame in enumerate(frames):
        value = master.GetNthIndexValue(t)
        segmentation = proxy if (t == shown and proxy is not None) else sequence.GetDataNodeAtValue(value)
        if segmentation is None:
            raise ValueError(f"The segmentation sequence '{sequence.GetName()}' has no item for frame {t + 1} "
                             f"({master.GetIndexName()} {value}).")
        arrays.append(segmentation_labelmap(segmentation, frame, names))
    analysis = function_from_labelmaps(_labelmap_images(arrays, _geometry_image(frames[0])), structures, ed, es,
                                       height_cm, weight_kg, names={v: k for k, v in names.items()})
    if height_cm is not None and weight_kg is not None:
        table_node.SetAttribute(ATTRIBUTE_BODY, json.dumps([height_cm, weight_kg]))
    for node in (table_node, volumes):
        node.SetLocked(False)
    _write_tables(table_node, volumes, chart, analysis, browser.GetName())
    for node in (table_node, volumes):
        node.SetLocked(True)
    logger.info("%s", function_summary(analysis))
    return analysis


def frame_count(table_node) -> int:
    """Number of frames of the cine a function table describes (0 when unknown)."""
    browser = table_node.GetNodeReference(ROLE_BROWSER) if table_node is not None else None
    master = browser.GetMasterSequenceNode() if browser is not None else None
    return master.GetNumberOfDataNodes() if master is not None else 0
