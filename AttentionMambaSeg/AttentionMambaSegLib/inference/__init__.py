"""Volume inference with a model package: image in, uint8 labelmap on the same grid out.

Recipe (Attention-Mamba, arXiv 2402.02286, Sec. 4): every 2D slice, resampled in-plane
to the training spacing, is segmented with a sliding window (overlap 0.5, Gaussian weighting) of the
size model.json gives as ``inference_patch_size``: the training patch unless a larger window scored
better on the validation cases (the Mamba scans see the wider context; for cardiac-acdc 256 vs 128
pixels raised validation Dice and halved the time, see docs/TRAINING.md), softmax (sigmoid for 1-class models)
averaged over 4 flips (none, horizontal, vertical, both); probabilities are resampled back to the input grid,
then argmax.

Robustness beyond the paper:

* The device is chosen by :func:`~AttentionMambaSegLib.devices.select_device`, which runs a real convolution
  before trusting a GPU.
* Results are accumulated on the CPU batch by batch and turned into uint8 labels at once; full-volume
  float probabilities are never held, on the GPU or the CPU.
* Out of memory: the slice batch is halved and retried; at one slice the work moves to the CPU with
  one warning.
* ``progress(done_slices, total_slices)`` is called after every batch and ``cancel`` (a
  ``threading.Event``) is checked between batches: a cancelled run returns ``None``.
* Inputs are checked first: 4D, constant, NaN/Inf, channel mismatch (errors); labelmap-like (warning).

Layout: :mod:`.settings` (:class:`InferenceSettings`, the settings of a run), :mod:`.predictor` (the
:class:`Predictor` and :func:`predict_volume`), :mod:`.sliding_window`, :mod:`.checks` (input checks),
:mod:`.file_runner` (files in, files out).
"""

from ..devices import default_batch_size, select_device
from .checks import check_input_image
from .file_runner import output_path_for, segment_archive, segment_files
from .predictor import Predictor, predict_volume, window_size
from .roi import RegionOfInterest
from .settings import InferenceSettings
from .sliding_window import gaussian_importance_map, predict_slices, sliding_window_starts

__all__ = [
    "InferenceSettings",
    "Predictor",
    "RegionOfInterest",
    "check_input_image",
    "default_batch_size",
    "gaussian_importance_map",
    "output_path_for",
    "predict_slices",
    "predict_volume",
    "segment_archive",
    "segment_files",
    "select_device",
    "sliding_window_starts",
    "window_size",
]
