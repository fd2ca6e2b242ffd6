"""Render the extension's screenshots into ``Resources/Screenshots/`` (top-level, for the Extensions Index).

1. ``panel.png``: the module panel from the current ``AttentionMambaSeg/Resources/UI/AttentionMambaSeg.ui``,
   rendered offscreen with PySide6; Slicer's custom widgets are replaced by their Qt base classes
   (qMRMLWidget -> QWidget, ctkCollapsibleButton -> QGroupBox, qMRMLNodeComboBox -> QComboBox,
   qMRMLTableView -> QTableView; a collapsed section shows its title only) and filled as the module fills
   them after a run: the installed models' titles, the model's summary, the speed label and the models folder.
2. ``segmentation.png``: a real segmentation as a Slicer slice view shows it: the slice of the input (the
   bundled ACDC validation case, 1st-99th percentile window) with each segment filled at 50 % opacity and
   outlined at full opacity in its class colour (Slicer's 2D defaults; the colours are the ones the module
   gives the segments), under a red slice-view bar.

Usage::

    QT_QPA_PLATFORM=offscreen python benchmarks/render_screenshots.py [--image PATH] [--model ID]

Needs PySide6-Essentials (panel) and torch (segmentation); neither is a runtime dependency of the module.
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
DEFAULT_IMAGE = (
    REPO / "AttentionMambaSeg" / "Resources" / "Examples" / "patient019_frame01_0000.nii.gz"
)  # a validation case

_REPLACEMENTS = {
    "qMRMLWidget": "QWidget",
    "ctkCollapsibleButton": "QGroupBox",
    "qMRMLNodeComboBox": "QComboBox",
    "qMRMLTableView": "QTableView",
}
_SLICER_ONLY_PROPERTIES = (
    "nodeTypes",
    "hideChildNodeTypes",
    "showChildNodeTypes",
    "addEnabled",
    "removeEnabled",
    "renameEnabled",
    "noneEnabled",
    "noneDisplay",
    "SlicerParameterName",
)


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
    sys.path.insert(0, str(REPO / "AttentionMambaSeg"))
    from AttentionMambaSegLib.package import list_models, load_model_package

    package = load_model_package("cardiac-acdc")
    find(QtWidgets.QComboBox, "inputVolumeSelector").addItem("patient019_frame01")
    find(QtWidgets.QComboBox, "inputROISelector").addItem("Whole volume")
    find(QtWidgets.QComboBox, "outputSegmentationSelector").addItem("patient019_frame01 segmentation")
    models = find(QtWidgets.QComboBox, "modelComboBox")
    for model in list_models():  # the titles the module gives installed models
        models.addItem(f"{model.card.name or model.id} ({model.version})")
    models.setCurrentIndex(0)
    find(QtWidgets.QLabel, "modelInfoLabel").setText(package.summary())
    find(QtWidgets.QLabel, "deviceVerdictLabel").setText("Last run: CPU (no CUDA device)")
    find(QtWidgets.QComboBox, "speedComboBox").setItemText(0, "Model default (fast on a CPU, accurate on a GPU)")
    find(QtWidgets.QLabel, "modelsFolderLabel").setText("~/.local/share/NA-MIC/AttentionMambaSeg/models")
    for name, title in (
        ("inputsCollapsibleButton", "Inputs"),
        ("functionCollapsibleButton", "Ventricular function"),
        ("logCollapsibleButton", "Log"),
    ):
        box = find(QtWidgets.QGroupBox, name)
        if box is None:
            continue
        box.setTitle(title)  # ctk's "text" is QGroupBox's title
        if name != "inputsCollapsibleButton":  # collapsed in the module: the title only
            for child in box.findChildren(QtWidgets.QWidget):
                child.setVisible(False)
            box.setFixedHeight(24)
    find(QtWidgets.QProgressBar, "progressBar").setVisible(False)
    find(QtWidgets.QPushButton, "segmentButton").setEnabled(True)
    find(QtWidgets.QPushButton, "cancelButton").setEnabled(False)
    find(QtWidgets.QPushButton, "showIn3DButton").setEnabled(True)
    find(QtWidgets.QLabel, "statusLabel").setText(
        "Done in 8 s. Created 3 segments: right ventricle cavity, left ventricle myocardium, left ventricle cavity."
    )
    widget.resize(460, widget.sizeHint().height())
    widget.show()
    app.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not widget.grab().save(str(path)):
        raise RuntimeError(f"Could not write {path}")
    print(f"wrote {path}")


def render_overlay(path: Path, image_path: Path, model_id: str | None) -> bool:
    """A real segmentation of the middle of the heart drawn as a Slicer slice view draws segments."""
    sys.path.insert(0, str(REPO / "AttentionMambaSeg"))
    import numpy as np
    import SimpleITK as sitk
    from PIL import Image, ImageDraw

    from AttentionMambaSegLib.inference import InferenceSettings, predict_volume
    from AttentionMambaSegLib.package import load_model_package

    package = load_model_package(model_id or "cardiac-acdc")
    image = sitk.ReadImage(str(image_path))
    labels = predict_volume(image, package, InferenceSettings(device="cpu", tta=False))
    labels = sitk.GetArrayFromImage(labels)  # (K, J, I)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    k = int(np.argmax([(labels[i] > 0).sum() for i in range(labels.shape[0])]))
    lo, hi = np.percentile(array[k], (1, 99))
    gray = np.clip((array[k] - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    colours = {c["label_value"]: np.asarray(c["color"], np.float32) / 255.0 for c in package.classes}
    fill = np.zeros_like(rgb)
    alpha = np.zeros(gray.shape, np.float32)
    for value, colour in colours.items():
        mask = labels[k] == value
        fill[mask], alpha[mask] = colour, 0.5  # Slicer's default 2D fill opacity
    rgb = rgb * (1 - alpha[..., None]) + fill * alpha[..., None]
    spacing = image.GetSpacing()
    scale = 3
    height, width = gray.shape
    size = (int(round(width * scale * spacing[0] / spacing[1])), height * scale)
    picture = Image.fromarray((rgb * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    label_picture = Image.fromarray(labels[k].astype(np.uint8)).resize(size, Image.NEAREST)
    big = np.asarray(label_picture)
    pixels = np.asarray(picture).copy()
    for value, colour in colours.items():  # the outline at full opacity (Slicer's default 2D outline)
        mask = big == value
        edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
        pixels[edge] = (colour * 255).astype(np.uint8)
    bar = 22
    canvas = Image.new("RGB", (size[0], size[1] + bar), (0, 0, 0))
    canvas.paste(Image.fromarray(pixels), (0, bar))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, size[0], bar - 1], fill=(243, 74, 51))  # the red slice view's bar
    draw.text((6, 5), f"R    {image_path.name.split('_0000')[0]}: slice {k + 1} of {labels.shape[0]}", fill=(0, 0, 0))
    y = bar + 6
    for c in package.classes:
        draw.rectangle([6, y, 16, y + 10], fill=tuple(int(v) for v in c["color"]))
        draw.text((22, y), c["name"], fill=(255, 255, 255))
        y += 15
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"wrote {path}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="volume for the overlay")
    parser.add_argument("--model", default=None, help="model id (default: cardiac-acdc)")
    parser.add_argument("--panel-only", action="store_true", help="skip the segmentation overlay")
    args = parser.parse_args(argv)
    render_panel(OUT_DIR / "panel.png")
    if not args.panel_only:
        render_overlay(OUT_DIR / "segmentation.png", args.image, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
