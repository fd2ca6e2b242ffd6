"""Helpers for the Slicer-side tests (slicer-core wheel, no Slicer application).

- ``new_scene()``: a fresh vtkMRMLScene set as ``slicer.mrmlScene`` plus the two module logics that
  ``slicer.util``'s segment helpers look up in ``slicer.modules`` (absent headless).
- ``install_gui_shims()``: minimal stand-ins for ``qt``, ``ctk`` and the Slicer GUI Python modules
  (ScriptedLoadableModule, i18n, parameterNodeWrapper) so the module file imports without the app.
  Written for these tests; they implement only what AttentionMambaSeg.py touches.
- ``tiny_package()``: a randomly initialised (fixed seed) model package saved in a temporary folder.
- ``FakePackage`` + ``fixed_predictor()``: deterministic stand-ins for MRML-only tests.
- ``segment_report()``: a report as the ``segment`` command writes it, with chosen segments flagged.
"""

from __future__ import annotations

import os
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core wheel (pip install slicer-core==5.12.4.0) is needed")
import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

from AttentionMambaSegLib.terminology import ClassEntry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "AttentionMambaSeg"
# the same location rule as conftest.py (which imports torch, so it is not imported here)
DATA = Path(os.environ.get("ATTENTION_MAMBA_SEG_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "datasets"
ACDC_IMAGE = DATA / "ACDC/imagesTr/patient001_frame01_0000.nii.gz"
HIPPO_IMAGE = DATA / "Hippocampus/imagesTr/hippocampus_003_0000.nii.gz"
DICOM_DIR = DATA / "dicom/brain_mr_t1post"

HEART = {"scheme": "SCT", "code": "80891009", "meaning": "Heart"}
ANATOMY = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
ACDC_CLASSES = [
    {
        "label_value": 1,
        "name": "right ventricle",
        "color": [80, 170, 240],
        "snomed": {"category": ANATOMY, "type": {"scheme": "SCT", "code": "53085002", "meaning": "Right ventricle"}},
    },
    {
        "label_value": 2,
        "name": "myocardium",
        "color": [235, 90, 60],
        "snomed": {
            "category": ANATOMY,
            "type": {"scheme": "SCT", "code": "74281007", "meaning": "Myocardium"},
            "region": {"scheme": "SCT", "code": "87878005", "meaning": "Left ventricle"},
        },
    },
    {
        "label_value": 3,
        "name": "left ventricle",
        "color": [250, 200, 70],
        "snomed": {"category": ANATOMY, "type": {"scheme": "SCT", "code": "87878005", "meaning": "Left ventricle"}},
    },
]
HIPPO_CLASSES = [
    {
        "label_value": 1,
        "name": "anterior hippocampus",
        "color": [230, 120, 40],
        "snomed": {
            "category": ANATOMY,
            "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"},
            "type_modifier": {"scheme": "SCT", "code": "255549009", "meaning": "Anterior"},
        },
    },
    {
        "label_value": 2,
        "name": "posterior hippocampus",
        "color": [60, 160, 230],
        "snomed": {
            "category": ANATOMY,
            "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"},
            "type_modifier": {"scheme": "SCT", "code": "255551008", "meaning": "Posterior"},
        },
    },
]


# ------------------------------------------------------------------------------------------ scene
def new_scene():
    """A fresh scene as slicer.mrmlScene, with slicer.modules.{volumes,segmentations}.logic()."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    # What the Sequences and Segmentations modules register in the application.
    scene.RegisterNodeClass(slicer.vtkMRMLSequenceNode())
    scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    slicer.modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: volumes),
        segmentations=types.SimpleNamespace(logic=lambda: segmentations),
    )
    scene._keep = (volumes, segmentations)  # keep the logics alive with the scene
    return scene


def read_slab(path: Path, first: int, count: int, crop_in_plane: int | None = None) -> sitk.Image:
    """Read an image and keep ``count`` slices along k (optionally a centred in-plane crop)."""
    image = sitk.ReadImage(str(path))
    size = image.GetSize()
    if crop_in_plane:
        i0 = max(0, (size[0] - crop_in_plane) // 2)
        j0 = max(0, (size[1] - crop_in_plane) // 2)
        return image[i0 : i0 + crop_in_plane, j0 : j0 + crop_in_plane, first : first + count]
    return image[:, :, first : first + count]


def read_dicom_slab(count: int = 3) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(DICOM_DIR)))
    image = reader.Execute()
    k0 = image.GetSize()[2] // 2
    return image[:, :, k0 : k0 + count]


def segment_array(segmentation_node, segment_id, volume_node) -> np.ndarray:
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)


def segment_ids(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segment_names(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def tag(segment, name: str) -> str | None:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


# ----------------------------------------------------------------------------------------- models
class FakePackage:
    """Duck-typed ModelPackage for tests that do not run a network."""

    def __init__(self, classes, in_channels=1, model_id="fake-model"):
        self.id = model_id
        self.version = "0"
        self.in_channels = in_channels
        self.classes = classes
        self.num_classes = max(c["label_value"] for c in classes) + 1
        self.card = types.SimpleNamespace(
            id=model_id,
            name="Fake model",
            foreground_classes=[ClassEntry.from_dict(c) for c in classes if c["label_value"] >= 1],
        )


def fixed_predictor(labels_from_array):
    """A stand-in for mrml.prediction.predict_image: labels computed from the input voxels by ``labels_from_array``,
    no report."""

    def predict(image, package, settings, progress, cancel):
        array = sitk.GetArrayFromImage(image)
        labels = labels_from_array(array)
        if progress:
            progress(array.shape[0], array.shape[0])
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(image) if image.GetNumberOfComponentsPerPixel() == 1 else _copy_geometry(out, image)
        return out, None

    return predict


def segment_report(package, flagged=None, warnings=(), model_id=None) -> dict:
    """A ``segment`` report (``NAME.report.json``) for ``package``: every class confident (0.97) except
    those in ``flagged`` (label value -> reason); "not found" gives a null confidence, any other reason 0.712."""
    flagged = flagged or {}
    segments = []
    for c in package.classes:
        reason = flagged.get(c["label_value"])
        confidence = None if reason == "not found" else 0.712 if reason else 0.97
        segments.append(
            {
                "label_value": c["label_value"],
                "name": c["name"],
                "voxels": 10,
                "volume_ml": 0.01,
                "confidence": confidence,
                "needs_review": reason is not None,
                "reason": reason,
            }
        )
    return {
        "input": "input.nrrd",
        "output": "labels.nrrd",
        "model": model_id or package.id,
        "version": "0",
        "mode": "fast",
        "passes": "one window per slice, no flips",
        "confidence_measure": "mean_max_probability",
        "confidence_threshold": 0.93,
        "segments": segments,
        "warnings": list(warnings),
    }


def _copy_geometry(target, source):
    target.SetSpacing(source.GetSpacing())
    target.SetOrigin(source.GetOrigin())
    target.SetDirection(source.GetDirection())


def intensity_bands(values):
    """Label voxels by intensity quantile bands: band n -> values[n] (values[0] is usually 0)."""

    def labels(array):
        gray = array.mean(axis=-1) if array.ndim == 4 else array
        edges = np.quantile(gray, np.linspace(0, 1, len(values) + 1)[1:-1])
        return np.asarray(values, dtype=np.uint8)[np.digitize(gray, edges)]

    return labels


_ARCH = "SlicerTestConvNet"


def _register_test_architecture():
    import torch

    from AttentionMambaSegLib import package as pkg

    class SlicerTestConvNet(torch.nn.Module):
        """Fixed-seed two-layer convnet standing in for Attention-Mamba (geometry does not depend on it)."""

        def __init__(self, in_channels, num_classes, seed=0):
            super().__init__()
            gen = torch.Generator().manual_seed(seed)
            self.conv1 = torch.nn.Conv2d(in_channels, 6, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(6, num_classes, 1)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen))

        def forward(self, x):
            return self.conv2(torch.tanh(self.conv1(x)))

    pkg.register_architecture(_ARCH, SlicerTestConvNet)


def tiny_package(folder: Path, classes, model_id="slicer-test", in_channels=1):
    """Save and load a randomly initialised (seed 0) model package in ``folder``."""
    pytest.importorskip("torch")
    from AttentionMambaSegLib.card import ModelCard
    from AttentionMambaSegLib.package import build_architecture, load_model_package, save_model_package

    _register_test_architecture()
    config = {
        "id": model_id,
        "name": f"Test {model_id}",
        "version": "0.0.1",
        "in_channels": in_channels,
        "num_classes": max(c["label_value"] for c in classes) + 1,
        "activation": "softmax",
        "normalization": {"type": "zscore"},
        "patch_size": [32, 32],
        "target_spacing": None,
        "classes": [{"label_value": 0, "name": "background", "color": [0, 0, 0]}, *classes],
        "architecture": _ARCH,
    }
    network = build_architecture(ModelCard.from_dict(config))
    return load_model_package(save_model_package(network, config, folder / model_id))


# ------------------------------------------------------------------------------------- GUI shims
class _Anything:
    """Accepts any attribute, call or connection (a widget or Qt object nobody inspects)."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *args, **kwargs):
        return _Anything()


class _QTimer(_Anything):
    def __init__(self, *args, **kwargs):
        self.active = False

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


class _QSettings:
    """Process-wide key/value store standing in for qt.QSettings (values come back as strings, as in Qt)."""

    store: dict = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def setValue(self, key, value):
        self.store[key] = str(value).lower() if isinstance(value, bool) else str(value)


class _ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class _ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class _ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        pass

    def getParameterNode(self):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
        node.SetAttribute("ModuleName", "AttentionMambaSeg")
        return node


class _ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=0):
        pass


def _parameter_node_wrapper(cls):
    """Stand-in decorator: a plain object with the annotated fields and their defaults."""
    fields = dict(getattr(cls, "__annotations__", {}))

    def __init__(self, node=None):
        self.parameterNode = node
        for name in fields:
            setattr(self, name, getattr(cls, name, None))

    return type(cls.__name__, (), {"__init__": __init__, "__doc__": cls.__doc__, "fields": fields})


def _module_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)  # __file__, __path__...: behave like a plain module
    return _Anything


def install_gui_shims(monkeypatch) -> None:
    """Put the stand-in GUI modules into sys.modules for the duration of one test."""
    qt = types.ModuleType("qt")
    qt.QTimer = _QTimer
    qt.QSettings = _QSettings
    monkeypatch.setattr(_QSettings, "store", {})
    qt.__getattr__ = _module_getattr
    ctk = types.ModuleType("ctk")
    ctk.__getattr__ = _module_getattr
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = _ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = _ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleLogic = _ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleTest = _ScriptedLoadableModuleTest
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = _parameter_node_wrapper
    for name, module in (
        ("qt", qt),
        ("ctk", ctk),
        ("slicer.ScriptedLoadableModule", slm),
        ("slicer.i18n", i18n),
        ("slicer.parameterNodeWrapper", pnw),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", slm, raising=False)
    monkeypatch.setattr(slicer, "i18n", i18n, raising=False)
    monkeypatch.setattr(slicer, "parameterNodeWrapper", pnw, raising=False)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
