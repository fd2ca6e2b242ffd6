"""MRML side of ventricular function: a cine in the scene in, a segmentation sequence, a table and a curve out.

A cine in 3D Slicer is

* a volume sequence: a ``vtkMRMLSequenceNode`` of scalar volumes browsed by a
  ``vtkMRMLSequenceBrowserNode`` (Sequences module); the volume the views show is the browser's proxy node;
* a multi-volume (``vtkMRMLMultiVolumeNode``, MultiVolumeExplorer): one scalar volume whose voxels hold one
  component per frame. Its frames become a volume sequence with a browser when the results are written.

The frames are segmented together in a child process (``cardiac`` command,
:class:`~AttentionMambaSegLib.slicer.child_process.CardiacProcess`); :func:`add_cardiac_results` then
writes, on the main thread:

* a **segmentation sequence**: a ``vtkMRMLSequenceNode`` of ``vtkMRMLSegmentationNode``, one per frame at the
  cine's index values, synchronised in the cine's own browser (so it plays with the cine) with "save
  changes" on, so that edits made on the proxy segmentation (Segment Editor) are stored in the frame shown.
  Segments are named, coloured, coded and tagged as :func:`.segments.write_segmentation_node` does; at ED
  and ES they carry the review flags of the child's report;
* the **function table**, the **volume table** and the **volume-time curve** (:mod:`.cardiac_tables`).

:func:`update_function` (of :mod:`.cardiac_tables`, also available here) recomputes the figures from the
current segmentations (edited by hand, or with other ED / ES frames) without any network: the figures come
from :mod:`AttentionMambaSegLib.clinical` (numpy and SimpleITK only; definitions in
:mod:`AttentionMambaSegLib.clinical.function`). Nothing here imports torch.

As in :mod:`.segments`, every function takes its nodes as arguments and never uses ``slicer.mrmlScene``,
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

from .cardiac_tables import (
    ATTRIBUTE_BODY,
    ATTRIBUTE_STRUCTURES,
    ROLE_BROWSER,
    ROLE_CHART,
    ROLE_SEGMENTATION_SEQUENCE,
    ROLE_VOLUME_TABLE,
    add_function_tables,
    frame_count,
    function_summary,
    function_table_rows,
    update_function,
)
from .segments import (
    ATTRIBUTE_MODEL_ID,
    color_table_for_model,
    labelmap_to_uint8,
    model_name,
    place_like_volume,
    segmentation_labelmap,
    write_segments,
)
from .volumes import InputVolumeError, geometry_image, image_from_volume_node, labelmap_images

__all__ = [
    "ROLE_BROWSER",
    "ROLE_CHART",
    "ROLE_SEGMENTATION_SEQUENCE",
    "ROLE_VOLUME_TABLE",
    "CardiacResult",
    "CineNodes",
    "add_cardiac_results",
    "check_cine",
    "cine_frame_images",
    "find_cine",
    "frame_count",
    "function_summary",
    "function_table_rows",
    "segmentation_labelmap",
    "update_function",
]

logger = logging.getLogger(__name__)


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
    if (
        not node.IsA("vtkMRMLScalarVolumeNode")
        or node.IsA("vtkMRMLVectorVolumeNode")
        or node.IsA("vtkMRMLLabelMapVolumeNode")
    ):
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
    from ..clinical.function import CardiacLabels

    try:
        return CardiacLabels.from_classes(package.card.foreground_classes, f"model '{package.id}'")
    except ValueError as e:
        raise InputVolumeError(f"A cine is segmented whole to measure the ventricular function. {e}") from e


def check_cine(cine: CineNodes, package=None) -> None:
    """Raise :class:`~.volumes.InputVolumeError` unless the cine can be segmented whole (by ``package``).

    Needed: two or more frames, each a single-component scalar volume with voxels, all of the same size, a
    browser that plays a sequence (a multi-volume gets one later), and a model that segments the RV and LV
    cavities and the LV myocardium (:class:`~AttentionMambaSegLib.clinical.function.CardiacLabels`).
    """
    if cine.multivolume is None and cine.browser is None:
        raise InputVolumeError(
            f"The sequence '{cine.name}' is not shown by any sequence browser: open it in the "
            "Sequences module first, so that the segmentation can play with it."
        )
    frames = cine.frame_nodes()
    if len(frames) < 2:
        raise InputVolumeError(
            f"'{cine.name}' holds {len(frames)} frame(s); ventricular function needs the whole "
            "cine (at least the ED and the ES frame)."
        )
    dims = None
    for t, frame in enumerate(frames):
        image = frame.GetImageData() if frame is not None else None
        if image is None or image.GetNumberOfPoints() == 0:
            raise InputVolumeError(f"Frame {t + 1} of '{cine.name}' has no voxels.")
        if image.GetNumberOfScalarComponents() != 1 or frame.IsA("vtkMRMLVectorVolumeNode"):
            raise InputVolumeError(
                f"Frame {t + 1} of '{cine.name}' has {image.GetNumberOfScalarComponents()} values "
                "per voxel; a cardiac cine is a sequence of grayscale volumes."
            )
        if dims is None:
            dims = image.GetDimensions()
        elif image.GetDimensions() != dims:
            raise InputVolumeError(
                f"Frame {t + 1} of '{cine.name}' has {image.GetDimensions()} voxels, frame 1 "
                f"{dims}: the frames of a cine must be the same stack of slices."
            )
    if package is not None:
        if int(package.in_channels) != 1:
            raise InputVolumeError(
                f"Model '{package.id}' segments {package.in_channels}-channel images; a cine is grayscale."
            )
        _cardiac_structures(package)


def cine_frame_images(cine: CineNodes) -> list[sitk.Image]:
    """Every frame as a SimpleITK image (LPS; :func:`.volumes.image_from_volume_node`), for the child process.

    Must run on the thread that owns the scene (it reads MRML).
    """
    return [image_from_volume_node(frame) for frame in cine.frame_nodes()]


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
    place_like_volume(proxy, node)
    cine.browser, cine.sequence, cine.proxy = browser, sequence, proxy


# --------------------------------------------------------------------------------------------------
# The frames' segmentations
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
    node.SetAttribute(ATTRIBUTE_MODEL_ID, str(package.id))
    matrix = vtk.vtkMatrix4x4()
    frame_node.GetIJKToRASMatrix(matrix)
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, frame_node.GetImageData())
    node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry
    )
    write_segments(node, frame_node, package, labels, reviews)
    return node


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
        analysis: :class:`~AttentionMambaSegLib.clinical.analysis.CardiacAnalysis` (figures, per-frame volumes,
            warnings).
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
        return labelmap_to_uint8(sitk.GetArrayViewFromImage(labelmap))
    return labelmap_to_uint8(np.asarray(labelmap))


def _structures_attribute(structures, package) -> str:
    return json.dumps(
        {
            "rv": structures.rv,
            "myo": structures.myo,
            "lv": structures.lv,
            "names": {c.name: c.label_value for c in package.card.foreground_classes},
            "model": str(package.id),
        }
    )


def _checked_arrays(cine: CineNodes, package, labelmaps, frames: list) -> list[np.ndarray]:
    """The labelmaps as uint8 (K, J, I) arrays, one per frame, holding only the model's label values.

    Raises:
        ValueError: a labelmap count or shape that differs from the cine's, or labels the model lacks.
    """
    arrays = [_labels_array(m) for m in labelmaps]
    if len(arrays) != len(frames):
        raise ValueError(f"{len(arrays)} labelmap(s) for the {len(frames)} frames of '{cine.name}'.")
    dims = frames[0].GetImageData().GetDimensions()
    known = {c.label_value for c in package.card.foreground_classes} | {0}
    for t, array in enumerate(arrays):
        if array.shape != (dims[2], dims[1], dims[0]):
            raise ValueError(
                f"The labelmap of frame {t + 1} has shape {array.shape} (K, J, I); the frames have "
                f"{(dims[2], dims[1], dims[0])}."
            )
        extra = {int(v) for v in np.unique(array)} - known
        if extra:
            raise ValueError(
                f"The labelmap of frame {t + 1} holds label values {sorted(extra)} that model "
                f"'{package.id}' does not define."
            )
    return arrays


def _add_segmentation_sequence(cine: CineNodes, package, arrays, report, analysis, name: str):
    """The sequence of the frames' segmentations at the cine's index values (review flags at ED and ES)."""
    scene, master = cine.scene, cine.browser.GetMasterSequenceNode()
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(f"{name} segmentation"))
    sequence.SetIndexName(master.GetIndexName())
    sequence.SetIndexUnit(master.GetIndexUnit())
    sequence.SetIndexType(master.GetIndexType())
    for t, (frame, value, array) in enumerate(zip(cine.frame_nodes(), cine.index_values(), arrays)):
        reviews = _frame_reviews(report, t) if t in (analysis.ed_index, analysis.es_index) else {}
        sequence.SetDataNodeAtValue(_frame_segmentation(frame, package, array, reviews), value)
    return sequence


def _add_proxy_segmentation(cine: CineNodes, package, sequence, name: str, sequences_logic):
    """The proxy segmentation of ``sequence`` in the cine's browser (edits are saved into the frame shown);
    returns (proxy segmentation, the cine's proxy volume or None)."""
    scene, browser = cine.scene, cine.browser
    master = browser.GetMasterSequenceNode()
    proxy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{name} segmentation"))
    proxy.CreateDefaultDisplayNodes()
    proxy.SetLabelmapConversionColorTableNodeID(color_table_for_model(scene, package).GetID())
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
        place_like_volume(proxy, volume_proxy)
        proxy.SetNodeReferenceID(proxy.GetReferenceImageGeometryReferenceRole(), volume_proxy.GetID())
    return proxy, volume_proxy


def _report_frame(report: dict, key: str) -> int | None:
    """The report's 0-based ``ed_frame`` / ``es_frame`` (it counts from 1), or None."""
    value = report.get(key)
    return value - 1 if isinstance(value, int) else None


def add_cardiac_results(
    cine: CineNodes,
    package,
    labelmaps,
    report: dict | None = None,
    ed: int | None = None,
    es: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    sequences_logic=None,
) -> CardiacResult:
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
    from ..clinical import function_from_labelmaps

    scene = cine.scene
    if scene is None or not scene.IsNodePresent(cine.node):
        raise InputVolumeError(f"The cine '{cine.name}' was removed from the scene before the results were written.")
    structures = _cardiac_structures(package)
    frames = cine.frame_nodes()
    arrays = _checked_arrays(cine, package, labelmaps, frames)
    if report is not None:
        ed = ed if ed is not None else _report_frame(report, "ed_frame")
        es = es if es is not None else _report_frame(report, "es_frame")
    warnings = [str(w) for w in (report or {}).get("warnings") or [] if str(w).strip()]
    names = {c.label_value: c.name for c in package.card.foreground_classes}
    analysis = function_from_labelmaps(
        labelmap_images(arrays, geometry_image(frames[0])),
        structures,
        ed,
        es,
        height_cm,
        weight_kg,
        names=names,
        extra_warnings=warnings,
    )

    if cine.multivolume is not None and cine.browser is None:
        _browser_for_multivolume(cine)
    name = f"{cine.name} {model_name(package)}"
    sequence = _add_segmentation_sequence(cine, package, arrays, report, analysis, name)
    proxy, volume_proxy = _add_proxy_segmentation(cine, package, sequence, name, sequences_logic)
    attributes = {ATTRIBUTE_STRUCTURES: _structures_attribute(structures, package), ATTRIBUTE_MODEL_ID: str(package.id)}
    if height_cm is not None and weight_kg is not None:
        attributes[ATTRIBUTE_BODY] = json.dumps([height_cm, weight_kg])
    table, volumes, chart = add_function_tables(
        scene,
        cine.name,
        analysis,
        attributes,
        {ROLE_SEGMENTATION_SEQUENCE: sequence, ROLE_BROWSER: cine.browser},
        volume_proxy,
    )
    message = function_summary(analysis)
    logger.info("%s", message)
    return CardiacResult(sequence, proxy, table, volumes, chart, cine.browser, analysis, message)
