"""The volume predictor: a model package's network on one device, with its window, flip and batch settings.

Recipe (Attention-Mamba, arXiv 2402.02286 v4, Sec. 4): every 2D slice, resampled in-plane to the
training spacing, is segmented with a sliding window (:mod:`.sliding_window`) of the size model.json
gives as ``inference_patch_size``; softmax (sigmoid for 1-class models) averaged over 4 flips; the
probabilities are resampled back to the input grid, then argmax (:mod:`..stacking`), then the
post-processing model.json names (:mod:`..postprocessing`). The geometry contract is in
``docs/CONTRACTS.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from .. import slicing, stacking
from ..devices import default_batch_size, select_device
from ..images import SPACING_KEY
from ..postprocessing import keep_largest_component
from .checks import check_input_image, input_range_warnings
from .foreground import ForegroundCrop
from .photo_scale import back_to_input, to_model_scale
from .result import ConfidenceTally, Segmentation, segment_reports
from .settings import InferenceSettings
from .sliding_window import BatchPredictor, ProgressCallback, iter_probabilities
from .timing import LONG_RUN_SECONDS, RunTimer

__all__ = ["Predictor", "predict_volume", "window_size", "LONG_RUN_SECONDS"]

logger = logging.getLogger(__name__)


def window_size(card, window) -> tuple[int, int]:
    """The sliding window (H, W): ``window`` if given, else model.json's inference_patch_size.

    Raises:
        ValueError: not positive multiples of 32.
    """
    from ..card import is_patch_size

    if window is None:
        window = card.inference_patch_size  # the card fills it in (default: patch_size)
    if isinstance(window, int) and not isinstance(window, bool):
        window = (window, window)
    window = tuple(window) if isinstance(window, (list, tuple)) else window
    if not is_patch_size(window):
        raise ValueError(
            f"The sliding window must be (H, W) positive multiples of 32 pixels; got {window}. "
            "Use for example 128 or 256."
        )
    return window


class Predictor:
    """Segments images with one model package; owns the network, the device and the settings.

    Args:
        model: :class:`~AttentionMambaSegLib.package.ModelPackage`, a model folder or a model id.
        settings: an :class:`~.settings.InferenceSettings`; None: the defaults (the model's own). Read here:

            - ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (chosen by
              :func:`~AttentionMambaSegLib.devices.select_device`, logged once) or a ``torch.device``
              (used as given).
            - ``mode``: ``"fast"`` or ``"accurate"`` (:mod:`..card.modes`: window, flips and foreground crop as
              model.json ``inference`` states them); None: the model's ``cpu_mode`` on a CPU, ``accurate`` on a GPU.
            - ``tta``: override the mode's flips: True = 4 flips, False = none (4x faster); None keeps the mode's.
            - ``batch_size``: slices per forward pass; halved automatically on out-of-memory; None:
              :func:`~AttentionMambaSegLib.devices.default_batch_size` of the device (1 on a CPU, 4 on a GPU).
            - ``window``: sliding-window size in pixels at the model's spacing, (H, W) or one int, multiples
              of 32; None: the package's ``inference_patch_size``. Giving one selects sliding windows.
            - ``force``: segment images of another modality than the model's (:func:`~.checks.check_modality`).

            The other settings (outputs, ``roi``) are the runners'; :meth:`predict` takes the ROI per image.
        network: a network to use instead of ``package.build_network`` (it is moved to the device).
        passes: a :class:`~AttentionMambaSegLib.card.modes.PassPlan` to use instead of the mode's (to measure a choice).

    Raises:
        ValueError: an invalid window or model.json.
        ModelIntegrityError: the weights' SHA-256 does not match model.json.
        RuntimeError: a requested GPU is unusable.
    """

    def __init__(self, model, settings: InferenceSettings | None = None, *, network=None, passes=None):
        import torch

        from ..package import load_model_package

        self.settings = settings = InferenceSettings() if settings is None else settings
        self.package = load_model_package(model)
        self.card = self.package.card
        window, device = settings.window, settings.device
        self.window = window_size(self.card, window)
        if isinstance(device, torch.device):
            self.device, self.device_reason = device, str(device)
        else:
            self.device, self.device_reason = select_device(device)
            logger.info("Device: %s", self.device_reason, extra={"event": "device", "device": str(self.device)})
        self.speed_modes = self.card.speed_modes
        self.mode, self.plan = self.speed_modes.resolve(
            settings.mode, self.device.type, tta=settings.tta, window=window
        )
        if passes is not None:
            self.mode, self.plan = "custom", passes if window is None else replace(passes, window="sliding")
        self.force = bool(settings.force)
        self.batch_size = default_batch_size(self.device) if settings.batch_size is None else int(settings.batch_size)
        self.network = self.package.build_network(self.device) if network is None else network.to(self.device)
        self.network.eval()
        self.clock = time.monotonic  # the run's clock (:class:`~.timing.RunTimer`)
        self._timer: RunTimer | None = None

    @property
    def tta(self) -> bool:
        """True when the slices are flipped (test-time augmentation)."""
        return self.plan.flips > 1

    def __repr__(self) -> str:
        return (
            f"Predictor(model={self.package.id!r}, device={str(self.device)!r}, mode={self.mode!r}, "
            f"passes={self.plan.describe()!r}, window={self.window}, batch_size={self.batch_size})"
        )

    def predict(
        self,
        image: sitk.Image,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        roi=None,
    ) -> sitk.Image | None:
        """Segment a 2D or 3D image, or the part of a 3D image inside a region of interest.

        Args:
            image: SimpleITK image, scalar (grey) or vector (RGB) pixels; any orientation (axial,
                sagittal, coronal, oblique, flipped), including one-slice volumes. Not modified.
            progress: ``progress(done_slices, total_slices)``, called at start and after every batch.
            cancel: ``threading.Event``; when set, the run stops before the next batch and returns None.
            roi: a :class:`~.roi.RegionOfInterest`: only the voxels under it are segmented; the labels
                are zero elsewhere.

        Returns:
            uint8 labelmap with exactly the input's size, spacing, origin and direction (values are
            the model's label values, 0 = background), or None if cancelled.

        Raises:
            ValueError: unsuitable image (see :func:`~.checks.check_input_image`); an ROI outside the image.
            RuntimeError: out of memory even on the CPU.
        """
        result = self.segment(image, progress=progress, cancel=cancel, roi=roi)
        return None if result is None else result.labels

    def segment(
        self,
        image: sitk.Image,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        roi=None,
    ) -> Segmentation | None:
        """:meth:`predict`, with a confidence figure and a review flag per segment and the warnings.

        Returns:
            a :class:`~.result.Segmentation` (``labels`` as :meth:`predict` returns them), or None
            if cancelled. Arguments and errors as :meth:`predict`.
        """
        check_input_image(image, self.package, force=self.force)
        warnings = []
        if image.GetNumberOfComponentsPerPixel() == 3:
            said = self.card.training_appearance.input_warning(sitk.GetArrayViewFromImage(image))
            if said:
                logger.warning(said)
                warnings.append(said)
        for said in input_range_warnings(image, self.card, roi):  # said before the run, kept in the report
            logger.warning(said)
            warnings.append(said)
        self._timer = RunTimer(self.batch_size, self._quicker(roi is None and image.GetDimension() == 3), self.clock)
        progress = self._timed(progress, self._timer)
        tally = ConfidenceTally(self.package.num_classes, self.card.activation)
        try:
            scaled = to_model_scale(image, self.card)  # a photograph much larger than the training ones
            labels = self._predict(scaled, progress, cancel, tally, roi)
            if labels is None:
                return None
            if scaled is not image:  # on the photograph's own full-resolution grid
                labels = back_to_input(labels, image)
            if image.HasMetaDataKey(SPACING_KEY):  # a photograph: sizes in pixels (images.has_physical_spacing)
                labels.SetMetaData(SPACING_KEY, image.GetMetaData(SPACING_KEY))
            return self._result(labels, tally, warnings, self._timer.record())
        finally:
            self._timer = None

    def _result(
        self, labels: sitk.Image, tally: ConfidenceTally, warnings: list, timing: dict | None = None
    ) -> Segmentation:
        rule = self.card.confidence_rule.for_mode(self.mode)
        segments = segment_reports(labels, self.card.foreground_classes, tally.confidence(), rule)
        for s in segments:
            size = s.size_text(labels)
            logger.info(
                "%s: %s, confidence %s",
                s.name,
                size,
                "-" if s.confidence is None else f"{s.confidence:.3f}",
                extra={"event": "segment", "segment": s.name, "confidence": s.confidence},
            )
            if s.needs_review:
                logger.warning(
                    "Segment '%s' needs review: %s",
                    s.name,
                    s.review_reason,
                    extra={"event": "review", "segment": s.name},
                )
        if timing:
            estimated = timing.get("estimated_seconds")
            logger.info(
                "Segmented in %.1f s (estimated after the warm-up: %s)",
                timing["measured_seconds"],
                "-" if estimated is None else f"{estimated:.1f} s",
            )
        return Segmentation(
            labels,
            self.package.id,
            self.card.version,
            self.mode,
            self.plan.describe(),
            rule.threshold,
            segments,
            tuple(warnings),
            dict(timing or {}),
        )

    def _predict(self, image: sitk.Image, progress, cancel, tally, roi=None) -> sitk.Image | None:
        """Labels of a checked image (inside ``roi`` when given), in the slicing plane the model asks
        for (:mod:`.reslice`)."""
        from .reslice import OBLIQUE_DEGREES, labels_back, obliquity_degrees, to_canonical
        from .roi import crop_to_roi, paste_labels

        canonical = (
            self.card.slicing == "canonical"
            and image.GetDimension() == 3
            and obliquity_degrees(image) > OBLIQUE_DEGREES
        )
        if roi is not None:
            crop, start = crop_to_roi(image, roi)
            logger.info("Segmenting inside the region of interest: %s of %s voxels", crop.GetSize(), image.GetSize())
            if canonical:  # the box itself on the patient axes, resampled from the whole input,
                # normalised with the statistics of the voxels under the box (not the zeros outside the image)
                statistics = self._slice_source(crop).statistics
                labels = self._predict_grid(to_canonical(image, roi), progress, cancel, tally, statistics)
                labels = None if labels is None else labels_back(labels, crop)
            else:
                labels = self._predict(crop, progress, cancel, tally)
            return None if labels is None else paste_labels(labels, image, start, roi)
        if canonical:
            # normalised with the input's own statistics: the zeros around the tilted grid do not count
            statistics = self._slice_source(image).statistics
            labels = self._predict_grid(to_canonical(image), progress, cancel, tally, statistics)
            return None if labels is None else labels_back(labels, image)
        return self._predict_grid(image, progress, cancel, tally)

    def _slice_source(self, image: sitk.Image, statistics=None) -> slicing.SliceSource:
        """The image's slices on the model's grid, normalised as model.json says (made batch by batch)."""
        return slicing.SliceSource(
            image, self.card.target_spacing, self.card.axes_code, self.card.normalization, statistics=statistics
        )

    def _predict_grid(self, image: sitk.Image, progress, cancel, tally, statistics=None) -> sitk.Image | None:
        """Slices of the image's own grid, segmented and put back on it."""
        if cancel is not None and cancel.is_set():
            return None
        card = self.card
        # Slices are made batch by batch: no float copy of the whole volume is held.
        slices = self._slice_source(image, statistics)
        geometry = slices.geometry
        logger.debug("%d slices of %s px; %s", geometry.num_slices, geometry.slice_shape, self.plan.describe())
        self.network.to(self.device)
        batches = BatchPredictor(
            self.network,
            self.window,
            self.package.num_classes,
            self.plan.flips,
            card.activation,
            self.device,
            0.5,
            whole_slice=self.plan.window == "slice",
            largest_slice=self.speed_modes.largest_slice,
            smallest_window=self.card.patch_size,
        )
        if self._timer is not None:
            batches.on_pass = self._timer.network_pass
        crop = None
        if self.plan.foreground_crop and geometry.num_slices >= 3:
            crop = ForegroundCrop.locate(
                batches, slices, self.plan.crop_margin_mm, card.target_spacing, min_size=self.card.patch_size
            )
        labels = np.zeros((geometry.num_slices, *geometry.in_plane_shape), dtype=np.uint8)
        source = slices if crop is None else crop.view(slices)
        for item in iter_probabilities(batches, source, self.batch_size, progress, cancel):
            if item is None:
                return None
            start, probabilities = item
            if crop is not None:
                probabilities = crop.uncrop(probabilities, start, batches, slices)
            tally.add(probabilities)
            labels[start : start + probabilities.shape[0]] = stacking.probabilities_to_label_slices(
                probabilities, geometry
            )
        if batches.device != self.device:  # the out-of-memory fallback moved the work to the CPU
            self.device = batches.device
        result = stacking.label_slices_to_image(labels, geometry)
        largest = card.postprocessing.get("largest_component", [])  # validated, default {}
        if largest:
            result = keep_largest_component(result, largest)
        # Copy the exact geometry (the resampler already used it; this removes any float round-off).
        return geometry.copy_geometry_to(result)

    def _quicker(self, suggest_roi: bool) -> list[str]:
        """The options that make a run quicker: ``--mode fast``, else ``--no-tta``; ``--roi`` for a whole volume."""
        return (
            ["--mode fast (fewer network passes)"]
            if self.mode != "fast"
            else [f"--no-tta ({self.plan.flips}x faster)"]
            if self.tta
            else []
        ) + (["--roi (only a box around the structure)"] if suggest_roi else [])

    @staticmethod
    def _timed(progress, timer: RunTimer):
        """``progress`` that also feeds the run's timer (estimate after the warm-up, see :mod:`.timing`)."""

        def report(done: int, total: int) -> None:
            timer.progress(done, total)
            if progress is not None:
                progress(done, total)

        return report


def predict_volume(
    image: sitk.Image,
    model,
    settings: InferenceSettings | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    network=None,
) -> sitk.Image | None:
    """Segment one image: ``Predictor(model, settings, network=network).predict(image, roi=...)``.

    ``settings.roi`` (:meth:`~.settings.InferenceSettings.region_of_interest`) limits the labels to a box.
    Arguments, return value and errors: those of :class:`Predictor` and :meth:`Predictor.predict`.
    To segment several images, make one :class:`Predictor` and call ``predict`` for each: the network
    is then built once and the device line logged once.
    """
    settings = InferenceSettings() if settings is None else settings
    predictor = Predictor(model, settings, network=network)
    return predictor.predict(image, progress=progress, cancel=cancel, roi=settings.region_of_interest())
