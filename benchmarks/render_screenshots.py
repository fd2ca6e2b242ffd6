"""Render the extension's screenshots into ``Resources/Screenshots/`` (top-level, for the Extensions Index).

1. ``panel.png``: the module panel from ``AttentionMambaSeg/Resources/UI/AttentionMambaSeg.ui``, rendered
   offscreen with PySide6; Slicer's custom widgets are replaced by their Qt base classes
   (qMRMLWidget -> QWidget, ctkCollapsibleButton -> QGroupBox, qMRMLNodeComboBox -> QComboBox) and
   filled with example entries.
2. ``segmentation.png`` (only when a trained single-channel model is bundled or imported): one slice of
   a shared-dataset volume with the predicted segments overlaid, with a legend.

Usage::

    QT_QPA_PLATFORM=offscreen python benchmarks/render_screenshots.py [--image PATH] [--model ID]

Needs PySide6-Essentials (panel) and matplotlib + torch (overlay); neither is a runtime dependency.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_FILE = REPO / "AttentionMambaSeg" / "Resources" / "UI" / "AttentionMambaSeg.ui"
OUT_DIR = REPO / "Resources" / "Screenshots"
DEFAULT_IMAGE = REPO / "AttentionMambaSeg" / "Resources" / "Examples" / "patient019_frame01_0000.nii.gz"  # a validation case

_REPLACEMENTS = {"qMRMLWidget": "QWidget", "ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox"}
_SLICER_ONLY_PROPERTIES = ("nodeTypes", "hideChildNodeTypes", "showChildNodeTypes", "addEnabled", "removeEnabled",
                           "renameEnabled", "noneEnabled", "noneDisplay", "SlicerParameterName")


def plain_qt_ui(text: str) -> str:
    """The .ui with Slicer/CTK widgets swapped for Qt base classes and their properties dropped."""
    for custom, base in _REPLACEMENTS.items():
        text = text.replace(f'class="{custom}"', f'class="{base}"')
    text = re.sub(r"<customwidgets>.*?</customwidgets>", "", text, flags=re.S)
    text = re.sub(r"<connections>.*?</connections>", "", text, flags=re.S)
    for name in _SLICER_ONLY_PROPERTIES:
        text = re.sub(rf'<property name="{name}"[^>]*>.*?</property>', "", text, flags=re.S)
    return text


def render_panel(path: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtUiTools, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    with tempfile.NamedTemporaryFile("w", suffix=".ui", delete=False) as f:
        f.write(plain_qt_ui(UI_FILE.read_text()))
    try:
        ui_file = QtCore.QFile(f.name)
        ui_file.open(QtCore.QIODevice.ReadOnly)
        widget = QtUiTools.QUiLoader().load(ui_file)
        ui_file.close()
    finally:
        os.remove(f.name)
    if widget is None:
        raise RuntimeError(f"Qt could not load {UI_FILE}")
    find = lambda cls, name: widget.findChild(cls, name)  # noqa: E731
    find(QtWidgets.QComboBox, "inputVolumeSelector").addItem("patient001_frame01")
    find(QtWidgets.QComboBox, "outputSegmentationSelector").addItem("Create new segmentation")
    find(QtWidgets.QComboBox, "modelComboBox").addItem("Cardiac MRI (ACDC): RV, myocardium, LV (1.0.0)")
    find(QtWidgets.QGroupBox, "inputsCollapsibleButton").setTitle("Inputs")  # ctk's "text" is QGroupBox's title
    progress = find(QtWidgets.QProgressBar, "progressBar")
    progress.setMaximum(10)
    progress.setValue(6)
    progress.setFormat("6 / 10 slices")
    find(QtWidgets.QPushButton, "segmentButton").setEnabled(False)
    find(QtWidgets.QPushButton, "cancelButton").setEnabled(True)
    find(QtWidgets.QLabel, "statusLabel").setText("Segmenting 'patient001_frame01'...")
    widget.resize(440, 340)
    widget.show()
    app.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not widget.grab().save(str(path)):
        raise RuntimeError(f"Could not write {path}")
    print(f"wrote {path}")


def render_overlay(path: Path, image_path: Path, model_id: str | None) -> bool:
    """Overlay a trained model's prediction on the middle slice; False when no trained model exists."""
    sys.path.insert(0, str(REPO / "AttentionMambaSeg"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk
    from matplotlib.patches import Patch

    from AttentionMambaSegLib.inference import predict_volume
    from AttentionMambaSegLib.package import list_models, load_model_package

    if model_id:
        package = load_model_package(model_id)
    else:
        candidates = [p for p in list_models() if p.in_channels == 1]
        if not candidates:
            print("no trained model bundled or imported: segmentation.png not rendered")
            return False
        package = candidates[0]
    image = sitk.ReadImage(str(image_path))
    labels = sitk.GetArrayFromImage(predict_volume(image, package, device="auto", tta=True))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    k = int(np.argmax([(labels[i] > 0).sum() for i in range(labels.shape[0])]))
    spacing = image.GetSpacing()
    fig, ax = plt.subplots(figsize=(5, 5 * array.shape[1] * spacing[1] / (array.shape[2] * spacing[0])), dpi=150)
    lo, hi = np.percentile(array[k], (1, 99))
    ax.imshow(array[k], cmap="gray", vmin=lo, vmax=hi, aspect=spacing[1] / spacing[0])
    overlay = np.zeros((*labels[k].shape, 4))
    handles = []
    for cls in package.classes:
        mask = labels[k] == cls["label_value"]
        overlay[mask] = [*(np.array(cls["color"]) / 255.0), 0.55]
        handles.append(Patch(color=np.array(cls["color"]) / 255.0, label=cls["name"]))
    ax.imshow(overlay, aspect=spacing[1] / spacing[0])
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.7)
    ax.set_axis_off()
    ax.set_title(f"{package.config.get('name', package.id)}: slice {k}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="volume for the overlay")
    parser.add_argument("--model", default=None, help="model id (default: first single-channel model)")
    parser.add_argument("--panel-only", action="store_true", help="skip the segmentation overlay")
    args = parser.parse_args(argv)
    render_panel(OUT_DIR / "panel.png")
    if not args.panel_only:
        render_overlay(OUT_DIR / "segmentation.png", args.image, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
