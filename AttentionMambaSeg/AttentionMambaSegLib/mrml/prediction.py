"""In-process prediction: a volume node in, a segmentation node out, on the calling thread.

For the Python console and tests. The Slicer module runs the prediction in a child process (the
``segment`` command under Slicer's Python, :mod:`~AttentionMambaSegLib.slicer.child_process`) and calls
:func:`~.segments.write_segmentation_node` on the main thread when it has finished.

Cancel: :func:`segment_volume_node` returns ``None`` and the scene is exactly as before (prediction runs
before any node is created or modified).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..inference.settings import InferenceSettings
from .segments import SegmentationResult, write_segmentation_node
from .volumes import check_input_volume, image_from_volume_node

__all__ = ["ProgressCallback", "predict_image", "segment_volume_node"]

ProgressCallback = Callable[[int, int], None]


def predict_image(image, model, settings: InferenceSettings, progress, cancel):
    """``(labels, report)`` of ``inference.Predictor.segment`` (imported here: torch is loaded only when a
    run starts); ``(None, None)`` when cancelled. ``model``: a ModelPackage, model id or folder; ``settings``
    gives the device, speed mode, flips, batch, window and force."""
    from ..inference import Predictor

    predictor = Predictor(model, settings)
    result = predictor.segment(image, progress=progress, cancel=cancel)
    return (None, None) if result is None else (result.labels, result.report())


def segment_volume_node(
    volume_node,
    model,
    segmentation_node=None,
    settings: InferenceSettings | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> SegmentationResult | None:
    """Segment a volume node with a model and write the result into a segmentation node.

    Runs synchronously on the calling thread, for the Python console and tests. The Slicer module runs
    the prediction in a child process and calls :func:`~.segments.write_segmentation_node` on the main
    thread when it has finished.

    Args:
        volume_node: scalar or RGB vtkMRMLVolumeNode (not a labelmap, not a 4D frame).
        model: ModelPackage, bundled/imported model id, or model folder path.
        segmentation_node: segmentation to update (segments the user edited are kept) or None for a new one.
        settings: :class:`~AttentionMambaSegLib.inference.settings.InferenceSettings`; read here: ``device``
            ("auto", "cpu", "cuda" or "cuda:N"), ``mode`` ("fast" or "accurate"; None: the model's default
            for the device, see ``package.card.speed_modes``), ``tta`` (True 4 flips, False none, None the
            speed mode's own), ``batch_size`` (slices per network call; None: 1 on a CPU, 4 on a GPU),
            ``window`` and ``force`` (as :class:`~AttentionMambaSegLib.inference.predictor.Predictor` reads
            them). None: ``InferenceSettings()``.
        progress: called as ``progress(done_slices, total_slices)``.
        cancel: when set, the run stops within one batch of slices.

    Returns:
        SegmentationResult, or None when cancelled (nothing in the scene was created or changed).

    Raises:
        InputVolumeError: the volume cannot be segmented by this model (message says why).
    """
    from ..package import load_model_package

    settings = InferenceSettings() if settings is None else settings
    package = load_model_package(model)
    check_input_volume(volume_node, package)
    image = image_from_volume_node(volume_node)
    labelmap, report = predict_image(image, package, settings, progress, cancel)
    if labelmap is None or (cancel is not None and cancel.is_set()):
        return None
    return write_segmentation_node(volume_node, package, labelmap, segmentation_node, report=report)
