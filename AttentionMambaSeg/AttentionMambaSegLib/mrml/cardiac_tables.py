"""The ventricular function in the scene: the function table, the volume table and the volume-time curve.

* The **function table** (``vtkMRMLTableNode``, one row per figure, LV and RV columns: EDV, ESV, SV, EF, LV
  myocardial mass, the ED and ES frame numbers, and the values indexed to body surface area when height and
  weight are given) refers to every other output of a cine run through node references
  (``ROLE_*``), so :func:`update_function` needs nothing else: it recomputes the figures from the current
  segmentations (edited by hand, or with other ED / ES frames) without any network, and rewrites the tables.
* The **volume table** holds the LV, RV and MYO volume of every frame; its ``Phase`` column marks ED and ES.
* The **volume-time curve** is a ``vtkMRMLPlotChartNode`` with an LV and an RV ``vtkMRMLPlotSeriesNode``.

Every function takes its nodes as arguments and never uses ``slicer.mrmlScene``, ``slicer.app`` or
``slicer.modules``. Frames are numbered from 1 in names and tables.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .segments import segmentation_labelmap
from .volumes import geometry_image, labelmap_images

__all__ = [
    "ATTRIBUTE_BODY",
    "ATTRIBUTE_FUNCTION",
    "ATTRIBUTE_STRUCTURES",
    "ATTRIBUTE_WARNINGS",
    "FUNCTION_COLUMNS",
    "ROLE_BROWSER",
    "ROLE_CHART",
    "ROLE_SEGMENTATION_SEQUENCE",
    "ROLE_VOLUME_TABLE",
    "VOLUME_COLUMNS",
    "add_function_tables",
    "frame_count",
    "function_summary",
    "function_table_rows",
    "place_in_study",
    "update_function",
    "write_tables",
]

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
            series = scene.AddNewNodeByClass(
                "vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(f"{name} {column} volume")
            )
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


def place_in_study(node, volume_node) -> None:
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
    """Status-line sentences of a :class:`~AttentionMambaSegLib.clinical.analysis.CardiacAnalysis`: the
    figures, then the warnings."""
    f, frames = analysis.function, len(analysis.volumes)
    text = (
        f"Ventricular function of {frames} frames: ED frame {f.ed_frame}, ES frame {f.es_frame}; LV EDV "
        f"{_format(f.lv_edv_ml)} mL, ESV {_format(f.lv_esv_ml)} mL, EF {_format(f.lv_ef_percent)} %; RV EF "
        f"{_format(f.rv_ef_percent)} %; LV mass {_format(f.lv_myocardial_mass_g)} g."
    )
    return " ".join([text, *analysis.warnings])


def write_tables(table, volumes, chart, analysis, name: str) -> None:
    """Write ``analysis`` into the function table, the volume table and the chart (``name``: the cine's)."""
    _write_function_table(table, analysis)
    _write_volume_table(volumes, analysis)
    _write_chart(chart, volumes, analysis, name)


def add_function_tables(
    scene, name: str, analysis, attributes: dict[str, str], references: dict[str, Any], study_volume=None
) -> tuple:
    """Add the function table, the volume table and the chart of a cine's ``analysis``.

    Args:
        scene: the vtkMRMLScene.
        name: the cine's name (the nodes are named after it).
        analysis: :class:`~AttentionMambaSegLib.clinical.analysis.CardiacAnalysis`.
        attributes: node attributes of the function table (name -> text).
        references: the function table's node references (role -> node) besides the volume table and chart.
        study_volume: a volume node whose subject-hierarchy study the three nodes join, or None.

    Returns:
        (function table, volume table, chart); both tables are locked (computed figures).
    """
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} ventricular function"))
    volumes = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} ventricular volumes"))
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(f"{name} volume curve"))
    for key, value in attributes.items():
        table.SetAttribute(key, value)
    for role, node in (*references.items(), (ROLE_VOLUME_TABLE, volumes), (ROLE_CHART, chart)):
        table.SetNodeReferenceID(role, node.GetID())
    write_tables(table, volumes, chart, analysis, name)
    table.SetLocked(True)  # computed figures: "Update function" rewrites them
    volumes.SetLocked(True)
    if study_volume is not None:
        for node in (table, volumes, chart):
            place_in_study(node, study_volume)
    return table, volumes, chart


def _current_labelmaps(browser, sequence, names: dict[str, int]) -> tuple[list, list[np.ndarray]]:
    """(frame volume nodes, their labelmaps) of a cine's segmentation sequence as it is now: the frame the browser
    shows is read from its proxy segmentation, which is what the Segment Editor changes.

    Raises:
        ValueError: the sequence has no item for a frame.
    """
    master = browser.GetMasterSequenceNode()
    proxy = browser.GetProxyNode(sequence)
    shown = browser.GetSelectedItemNumber()
    arrays = []
    frames = [master.GetNthDataNode(t) for t in range(master.GetNumberOfDataNodes())]
    for t, frame in enumerate(frames):
        value = master.GetNthIndexValue(t)
        segmentation = proxy if (t == shown and proxy is not None) else sequence.GetDataNodeAtValue(value)
        if segmentation is None:
            raise ValueError(
                f"The segmentation sequence '{sequence.GetName()}' has no item for frame {t + 1} "
                f"({master.GetIndexName()} {value})."
            )
        arrays.append(segmentation_labelmap(segmentation, frame, names))
    return frames, arrays


def update_function(
    table_node,
    ed: int | None = None,
    es: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
):
    """Recompute the figures from the current segmentations of the cine, without any network.

    Reads every frame's segmentation from the segmentation sequence (the frame the browser shows from its
    proxy, which is what the Segment Editor changes), turns it into a labelmap
    (:func:`~.segments.segmentation_labelmap`) and computes the figures with
    :func:`~AttentionMambaSegLib.clinical.analysis.function_from_labelmaps`; the function table, the volume
    table and the chart are rewritten in place. The warnings are those of the figures now (plausibility,
    stack coverage); the model's review flags of the first run are not carried over.

    Args:
        table_node: the function table of :func:`~.cardiac.add_cardiac_results`.
        ed, es: 0-based ED / ES frames; None: the frames the table holds now.
        height_cm, weight_kg: for the indexed figures; None: the ones given before (if any).

    Returns:
        :class:`~AttentionMambaSegLib.clinical.analysis.CardiacAnalysis`.

    Raises:
        ValueError: not a function table of this module, a frame outside the cine, or a node it refers to was
            deleted.
    """
    from ..clinical import CardiacLabels, function_from_labelmaps

    info = table_node.GetAttribute(ATTRIBUTE_STRUCTURES) if table_node is not None else None
    if not info:
        raise ValueError(
            "Not a ventricular function table of Attention-Mamba Segmentation: segment a cine with a "
            "cardiac model first."
        )
    info = json.loads(info)
    sequence = table_node.GetNodeReference(ROLE_SEGMENTATION_SEQUENCE)
    browser = table_node.GetNodeReference(ROLE_BROWSER)
    volumes, chart = table_node.GetNodeReference(ROLE_VOLUME_TABLE), table_node.GetNodeReference(ROLE_CHART)
    master = browser.GetMasterSequenceNode() if browser is not None else None
    if sequence is None or master is None or volumes is None or chart is None:
        raise ValueError(
            f"'{table_node.GetName()}' refers to a segmentation sequence, browser, volume table or chart "
            "that was deleted: segment the cine again."
        )
    previous = json.loads(table_node.GetAttribute(ATTRIBUTE_FUNCTION) or "{}")
    ed = ed if ed is not None else (previous["ed_frame"] - 1 if "ed_frame" in previous else None)
    es = es if es is not None else (previous["es_frame"] - 1 if "es_frame" in previous else None)
    if height_cm is None and weight_kg is None and table_node.GetAttribute(ATTRIBUTE_BODY):
        height_cm, weight_kg = json.loads(table_node.GetAttribute(ATTRIBUTE_BODY))
    structures = CardiacLabels(info["rv"], info["myo"], info["lv"])
    names = {str(k): int(v) for k, v in info.get("names", {}).items()}
    frames, arrays = _current_labelmaps(browser, sequence, names)
    analysis = function_from_labelmaps(
        labelmap_images(arrays, geometry_image(frames[0])),
        structures,
        ed,
        es,
        height_cm,
        weight_kg,
        names={v: k for k, v in names.items()},
    )
    if height_cm is not None and weight_kg is not None:
        table_node.SetAttribute(ATTRIBUTE_BODY, json.dumps([height_cm, weight_kg]))
    for node in (table_node, volumes):
        node.SetLocked(False)
    write_tables(table_node, volumes, chart, analysis, browser.GetName())
    for node in (table_node, volumes):
        node.SetLocked(True)
    logger.info("%s", function_summary(analysis))
    return analysis


def frame_count(table_node) -> int:
    """Number of frames of the cine a function table describes (0 when unknown)."""
    browser = table_node.GetNodeReference(ROLE_BROWSER) if table_node is not None else None
    master = browser.GetMasterSequenceNode() if browser is not None else None
    return master.GetNumberOfDataNodes() if master is not None else 0
