"""Volume inference with a model package: image in, uint8 labelmap on the same grid out.

Recipe (Attention-Mamba, arXiv 2402.02286, Sec. 4): every 2D slice, resampled in-plane
to the training spacing, is segmented with a sliding window (overlap 0.5, Gaussian weighting) of the
size model.json gives as ``inference_patch_size``: the training patch unless a larger window scored
better on the validation cases (the Mamba scans see the wider context; for cardiac-acdc 256 vs 128
pixels raised validation Dice and halved the time, see README), softmax (sigmoid for 1-class models) averaged over 4 flips (none, horizontal,
vertical, both); probabilities are resampled back to the input grid, then argmax.

Robustness beyond the paper:

* The device is chosen by :func:`select_device`, which runs a real convolution before trusting a GPU.
* Results are accumulated on the CPU batch by batch and turned into uint8 labels at once; full-volume
  float probabilities are never held, on the GPU or the CPU.
* Out of memory: the slice batch is halved and retried; at one slice the work moves to the CPU with
  one warning.
* ``progress(done_slices, total_slices)`` is called after every batch and ``cancel`` (a
  ``threading.Event``) is checked between batches: a cancelled run returns ``None``.
* Inputs are checked first: 4D, constant, NaN/Inf, channel mismatch (errors); labelmap-like (warning).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from . import preprocessing

logger = logging.getLogger(__name__)

__all__ = [
    "check_input_image",
    "segment_archive",
    "default_batch_size",
    "gaussian_importance_map",
    "predict_slices",
    "predict_volume",
    "select_device",
    "sliding_window_starts",
]

ProgressCallback = Callable[[int, int], None]

#: Integer images with at most this many distinct values trigger the "looks like a labelmap" warning.
LABELMAP_MAX_VALUES = 8
#: Default slices per forward pass: on a CPU one slice is as fast as four (measured with
#: benchmarks/bench_inference.py) at half the activation memory; GPUs gain from batching.
DEFAULT_BATCH_SIZE_CPU = 1
DEFAULT_BATCH_SIZE_GPU = 4
#: Largest finite float32 value: inputs beyond it cannot be normalised in the network's arithmetic.
FLOAT32_MAX = float(np.finfo(np.float32).max)

_probe_cache: dict[str, str | None] = {}


# --------------------------------------------------------------------------------------------- device
def _probe_device(device) -> str | None:
    """Run a small convolution on ``device`` and compare with the CPU; return None or the failure."""
    import torch

    key = str(device)
    if key in _probe_cache:
        return _probe_cache[key]
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 32, 32, generator=gen)
        w = torch.randn(8, 3, 3, 3, generator=gen)
        expected = torch.nn.functional.conv2d(x, w, padding=1)
        got = torch.nn.functional.conv2d(x.to(device), w.to(device), padding=1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        got = got.cpu()
        if not torch.allclose(got, expected, rtol=1e-2, atol=1e-2):
            error = f"convolution result differs from the CPU's (max error {float((got - expected).abs().max()):.3g})"
        else:
            error = None
    except Exception as e:  # any failure (no kernel image, cuDNN mismatch, driver) disqualifies the device
        error = f"{type(e).__name__}: {e}".strip()
    _probe_cache[key] = error
    return error


def select_device(requested: str = "auto"):
    """Choose the torch device for inference, trusting a GPU only after a real convolution ran on it.

    Args:
        requested: ``"auto"`` (CUDA if its probe passes, else Apple MPS if its probe passes, else
            CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns:
        ``(torch.device, reason)``; ``reason`` says why this device was chosen (and, for ``auto``, why
        a GPU was not), to be shown to the user.

    Raises:
        ValueError: for an unknown device string.
        RuntimeError: when an explicitly requested GPU is missing or fails the probe.
    """
    import torch

    req = str(requested or "auto").strip().lower()
    if req == "cpu":
        return torch.device("cpu"), "CPU (requested)"
    if req == "auto":
        reasons = []
        if torch.cuda.is_available():
            device = torch.device("cuda", 0)
            error = _probe_device(device)
            if error is None:
                return device, f"CUDA GPU {torch.cuda.get_device_name(0)} (convolution probe passed)"
            reasons.append(f"CUDA GPU failed the convolution probe ({error})")
        elif torch.version.cuda is None:
            reasons.append(f"no CUDA: this PyTorch {torch.__version__} is a CPU-only build")
        else:
            reasons.append("no CUDA GPU visible to PyTorch")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            device = torch.device("mps")
            error = _probe_device(device)
            if error is None:
                return device, "Apple MPS GPU (convolution probe passed)"
            reasons.append(f"MPS failed the convolution probe ({error})")
        return torch.device("cpu"), "CPU: " + "; ".join(reasons)
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise RuntimeError(
                f"Device {requested!r} requested but CUDA is not available ({why}). Use 'auto' or 'cpu'."
            )
        try:
            index = int(req.split(":", 1)[1]) if ":" in req else 0
        except ValueError as e:
            raise ValueError(f"Invalid device {requested!r}: expected 'cuda' or 'cuda:N' with N an integer.") from e
        if not 0 <= index < torch.cuda.device_count():
            raise RuntimeError(
                f"Device {requested!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
        device = torch.device("cuda", index)
        error = _probe_device(device)
        if error is not None:
            raise RuntimeError(
                f"CUDA device {index} failed a test convolution ({error}); the installed PyTorch may not "
                "support this GPU. Use '--device cpu', or install a PyTorch build for this GPU."
            )
        return device, f"CUDA GPU {torch.cuda.get_device_name(index)} (requested, convolution probe passed)"
    if req == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError("Device 'mps' requested but Apple MPS is not available. Use 'auto' or 'cpu'.")
        error = _probe_device(torch.device("mps"))
        if error is not None:
            raise RuntimeError(f"MPS failed a test convolution ({error}). Use '--device cpu'.")
        return torch.device("mps"), "Apple MPS GPU (requested, convolution probe passed)"
    raise ValueError(f"Unknown device {requested!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")


# ------------------------------------------------------------------------------------- input checks
def check_input_image(image: sitk.Image, package) -> None:
    """Refuse images the model cannot segment; warn about images that look like labelmaps.

    Args:
        image: the input image.
        package: :class:`~AttentionMambaSegLib.package.ModelPackage` (uses id, in_channels, channel names).

    Raises:
        ValueError: 4D (or 1D) image; complex pixels; channel count differs from the model's (the
            message names both); invalid or implausible spacing (see
            :func:`preprocessing.check_resampling`); NaN or infinite voxels; intensities beyond float32's
            range; constant image (e.g. all zero); empty image.
    """
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise ValueError(
            f"The input is a {dim}D image of size {image.GetSize()}; Attention-Mamba segments 2D or 3D "
            "images. For a 4D (time series) image, extract one frame first."
        )
    ncomp = image.GetNumberOfComponentsPerPixel()
    if ncomp != package.in_channels:
        def kind(n):
            return {1: "greyscale, 1 channel", 3: "RGB, 3 channels"}.get(n, f"{n} channels")
        raise ValueError(
            f"Model '{package.id}' expects {kind(package.in_channels)} images, but the input image is "
            f"{kind(ncomp)}. Choose a model trained on {kind(ncomp)} images, or convert the image."
        )
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise ValueError(
            "The input image has complex-valued pixels (e.g. raw MR k-space or phase data); convert it to a "
            "magnitude image first (e.g. SimpleITK's ComplexToModulus)."
        )
    preprocessing.check_resampling(image, package.config.get("target_spacing"))
    arr = sitk.GetArrayViewFromImage(image)
    if arr.size == 0:
        raise ValueError(f"The input image is empty (size {image.GetSize()}).")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            raise ValueError(
                f"The input image has {bad} NaN or infinite voxel(s) of {arr.size}; fix or mask them "
                "(e.g. replace with the background value) before segmenting."
            )
    lo, hi = arr.min(), arr.max()
    magnitude = max(abs(float(lo)), abs(float(hi)))
    if magnitude > FLOAT32_MAX:
        raise ValueError(
            f"The input image has intensities up to {magnitude:.3g}, beyond what "
            "the network's float32 arithmetic holds (3.4e38); rescale the image (e.g. to its physical unit) first."
        )
    if lo == hi:
        raise ValueError(
            f"The input image is constant (every voxel = {lo}); there is nothing to segment. Check that the "
            "right image was loaded."
        )
    if ncomp == 1 and (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        flat = arr.reshape(-1)
        sample = flat[:: max(1, flat.size // 1_000_000)]
        sample_values = np.unique(sample)
        if len(sample_values) <= LABELMAP_MAX_VALUES and np.array_equal(sample_values, np.round(sample_values)):
            values = np.unique(flat)
            if len(values) <= LABELMAP_MAX_VALUES and np.array_equal(values, np.round(values)):
                logger.warning(
                    "The input looks like a labelmap (%s pixels with only %d distinct values: %s); "
                    "segmenting it anyway. Pass the intensity image, not a segmentation.",
                    arr.dtype, len(values), values.tolist(),
                )


# ----------------------------------------------------------------------------------- sliding window
def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Gaussian weights for blending overlapping windows (nnU-Net style).

    Args:
        patch_size: (H, W) in pixels.
        sigma_scale: sigma as a fraction of the patch size.

    Returns:
        float32 (H, W), 1 at the centre, strictly positive (at least 1e-6).
    """
    axes = []
    for n in patch_size:
        c, s = (n - 1) / 2.0, max(n * sigma_scale, 1e-6)
        axes.append(np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2))
    g = np.outer(axes[0], axes[1])
    g /= g.max()
    return np.maximum(g, 1e-6).astype(np.float32)


def sliding_window_starts(size: int, patch: int, overlap: float = 0.5) -> list[int]:
    """Start offsets of windows of length ``patch`` covering ``size`` (>= patch) with the given overlap.

    The windows are evenly spaced from 0 to ``size - patch``; their step is at most
    ``patch * (1 - overlap)``.
    """
    if size <= patch:
        return [0]
    target_step = max(1.0, patch * (1.0 - overlap))
    n = int(math.ceil((size - patch) / target_step)) + 1
    step = (size - patch) / (n - 1)
    return [int(round(i * step)) for i in range(n)]


def default_batch_size(device) -> int:
    """Slices per forward pass when none is given: :data:`DEFAULT_BATCH_SIZE_CPU` on the CPU, else
    :data:`DEFAULT_BATCH_SIZE_GPU` (``device``: a ``torch.device`` or its string)."""
    return DEFAULT_BATCH_SIZE_CPU if str(device).split(":")[0] == "cpu" else DEFAULT_BATCH_SIZE_GPU


def _is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class _BatchPredictor:
    """Predicts probabilities for batches of slices, with OOM back-off and CPU fallback."""

    def __init__(self, network, patch_size, num_classes, tta, activation, device, overlap):
        import torch

        self.torch = torch
        self.network = network
        self.patch = (int(patch_size[0]), int(patch_size[1]))
        self.num_classes = int(num_classes)
        self.flips = [(), (3,), (2,), (2, 3)] if tta else [()]
        self.activation = activation
        self.device = torch.device(device)
        self.overlap = overlap
        self.gauss_cpu = torch.from_numpy(gaussian_importance_map(self.patch))
        self.gauss = self.gauss_cpu.to(self.device)

    def move_to_cpu(self):
        torch = self.torch
        self.device = torch.device("cpu")
        self.network.to(self.device)
        self.gauss = self.gauss_cpu
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 (B, C, H, W) normalised slices -> float32 (B, K, H, W) probabilities."""
        torch = self.torch
        b, _, h, w = batch.shape
        ph, pw = self.patch
        pad_h, pad_w = max(0, ph - h), max(0, pw - w)
        top, left = pad_h // 2, pad_w // 2
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (left, pad_w - left, top, pad_h - top))
        hp, wp = x.shape[2:]
        acc = torch.zeros((b, self.num_classes, hp, wp), dtype=torch.float32)
        weight = torch.zeros((hp, wp), dtype=torch.float32)
        with torch.inference_mode():
            for y0 in sliding_window_starts(hp, ph, self.overlap):
                for x0 in sliding_window_starts(wp, pw, self.overlap):
                    crop = x[:, :, y0:y0 + ph, x0:x0 + pw].to(self.device)
                    prob = self._tta(crop) * self.gauss
                    acc[:, :, y0:y0 + ph, x0:x0 + pw] += prob.float().cpu()
                    weight[y0:y0 + ph, x0:x0 + pw] += self.gauss_cpu
        acc /= weight
        return acc[:, :, top:top + h, left:left + w].numpy()

    def _tta(self, crop):
        """Mean probabilities over the flips, one forward pass per flip (a quarter of the activation
        memory of one pass over all flips, and no slower on a CPU)."""
        torch = self.torch
        expected = (crop.shape[0], self.num_classes, *crop.shape[2:])
        total = None
        for f in self.flips:
            logits = self.network(crop.flip(f) if f else crop)
            if isinstance(logits, (list, tuple)):  # a network left in train mode returns all heads, fused first
                logits = logits[0]
            if tuple(logits.shape) != expected:
                raise ValueError(
                    f"The network returned logits of shape {tuple(logits.shape)}, expected {expected}: the "
                    "model package's num_classes or patch size does not match the network."
                )
            logits = logits.float()
            prob = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)
            prob = prob.flip(f) if f else prob
            total = prob if total is None else total.add_(prob)
        return total.div_(len(self.flips))


def _iter_probabilities(
    predictor: _BatchPredictor,
    slices,
    batch_size: int,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Iterator[tuple[int, np.ndarray] | None]:
    """Yield ``(start, probabilities)`` per batch, or a single ``None`` when cancelled.

    ``slices`` is a float32 (S, C, H, W) array or a :class:`~.preprocessing.SliceSource` (anything with
    ``len`` and ``slices[start:stop]``)."""
    total = len(slices)
    batch_size = max(1, int(batch_size))
    start = 0
    if progress is not None:
        progress(0, total)
    while start < total:
        if cancel is not None and cancel.is_set():
            logger.info("Inference cancelled after %d of %d slices.", start, total)
            yield None
            return
        stop = min(total, start + batch_size)
        try:
            probabilities = predictor(slices[start:stop])
        except Exception as e:
            if not _is_oom(e):
                raise
            if batch_size > 1:
                batch_size = max(1, batch_size // 2)
                logger.warning(
                    "Out of memory on %s; retrying with %d slice(s) per batch.", predictor.device, batch_size
                )
                _empty_cache(predictor)
                continue
            if predictor.device.type != "cpu":
                logger.warning(
                    "Out of memory on %s even with one slice per batch; continuing on the CPU (slower).",
                    predictor.device,
                )
                predictor.move_to_cpu()
                continue
            raise RuntimeError(
                "Out of memory on the CPU with one slice per batch: free memory or use a smaller model "
                "patch size."
            ) from e
        yield start, probabilities
        start = stop
        if progress is not None:
            progress(start, total)


def _empty_cache(predictor):
    torch = predictor.torch
    if predictor.device.type == "cuda":
        torch.cuda.empty_cache()


def predict_slices(
    network,
    slices: np.ndarray,
    patch_size: Sequence[int],
    num_classes: int,
    tta: bool = True,
    *,
    activation: str = "softmax",
    device="cpu",
    batch_size: int | None = None,
    overlap: float = 0.5,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray | None:
    """Sliding-window, flip-averaged probabilities for a stack of normalised slices.

    Args:
        network: ``torch.nn.Module`` mapping float32 (B, C, ph, pw) to logits (B, K, ph, pw); it is
            moved to ``device`` (and to the CPU on the out-of-memory fallback).
        slices: float32 (S, C, H, W) normalised slices, any H, W (smaller ones are zero-padded).
        patch_size: (ph, pw) window size, multiples of 32 for Attention-Mamba.
        num_classes: K, network output channels.
        tta: average over the 4 flips (none, horizontal, vertical, both).
        activation: ``"softmax"`` (over K) or ``"sigmoid"`` (per channel).
        device: torch device or string (no probing here; see :func:`select_device`).
        batch_size: slices per forward pass (one pass per flip); halved on out-of-memory; default
            :func:`default_batch_size` of ``device``.
        overlap: window overlap fraction (0.5 as in the paper).
        progress: ``progress(done_slices, total_slices)``, called at start and after every batch.
        cancel: checked between batches.

    Returns:
        float32 (S, K, H, W) probabilities (blended on the CPU), or None when cancelled.

    Raises:
        ValueError: wrong slice shape or network output shape.
        RuntimeError: out of memory even on the CPU with one slice.
    """
    import torch

    slices = np.asarray(slices)
    if slices.ndim != 4:
        raise ValueError(f"slices must be (S, C, H, W), got shape {slices.shape}.")
    device = torch.device(device)
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    network.to(device)
    network.eval()
    predictor = _BatchPredictor(network, patch_size, num_classes, tta, activation, device, overlap)
    out = np.empty((slices.shape[0], num_classes, *slices.shape[2:]), dtype=np.float32)
    for item in _iter_probabilities(predictor, slices, batch_size, progress, cancel):
        if item is None:
            return None
        start, probabilities = item
        out[start:start + probabilities.shape[0]] = probabilities
    return out


# --------------------------------------------------------------------------------------------- volume
def _window_size(config: dict, window) -> tuple[int, int]:
    """The sliding window (H, W): ``window`` if given, else model.json's inference_patch_size."""
    from .package import is_patch_size

    if window is None:
        window = config["inference_patch_size"]  # validate_config fills it (default: patch_size)
    if isinstance(window, int) and not isinstance(window, bool):
        window = (window, window)
    window = tuple(window) if isinstance(window, (list, tuple)) else window
    if not is_patch_size(window):
        raise ValueError(f"The sliding window must be (H, W) positive multiples of 32 pixels; got {window}. "
                         "Use for example 128 or 256.")
    return window


def predict_volume(
    image: sitk.Image,
    package,
    device="auto",
    tta: bool = True,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    network=None,
    window: Sequence[int] | int | None = None,
) -> sitk.Image | None:
    """Segment a 2D or 3D image with a model package.

    Args:
        image: SimpleITK image, scalar (grey) or vector (RGB) pixels; any orientation (axial, sagittal,
            coronal, oblique, flipped), including one-slice volumes.
        package: :class:`~AttentionMambaSegLib.package.ModelPackage`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
        tta: flip test-time augmentation (4 flips); False is 4x faster.
        batch_size: slices per forward pass; halved automatically on out-of-memory; default
            :func:`default_batch_size` of the chosen device (1 on a CPU, 4 on a GPU).
        progress: ``progress(done_slices, total_slices)``, called at start and after every batch.
        cancel: ``threading.Event``; when set, the run stops before the next batch and returns None.
        network: a prebuilt network to use instead of ``package.build_network`` (for tests and for
            callers that keep the network between runs); it is moved to the chosen device.
        window: sliding-window size in pixels at the model's spacing, (H, W) or one int, multiples of
            32; default: the package's ``inference_patch_size`` (its training patch unless model.json
            says otherwise).

    Returns:
        uint8 labelmap with exactly the input's size, spacing, origin and direction (values are the
        model's label values, 0 = background), or None if cancelled.

    Raises:
        ValueError: unsuitable image (see :func:`check_input_image`), invalid model.json values.
        ModelIntegrityError: the weights' SHA-256 does not match model.json.
        RuntimeError: a requested GPU is unusable, or out of memory even on the CPU.
    """
    import torch

    config = package.config
    window = _window_size(config, window)
    check_input_image(image, package)
    if isinstance(device, torch.device):  # chosen (and logged) by the caller
        chosen = device
        logger.debug("Segmenting with model '%s' on %s", package.id, device)
    else:
        chosen, reason = select_device(device)
        logger.info("Segmenting with model '%s' on %s", package.id, reason,
                    extra={"event": "device", "device": str(chosen)})
    batch_size = default_batch_size(chosen) if batch_size is None else batch_size
    if network is None:
        network = package.build_network(chosen)
    if cancel is not None and cancel.is_set():
        return None

    # Slices are made batch by batch: no float copy of the whole volume is held.
    slices = preprocessing.SliceSource(
        image, config["target_spacing"], config["axes_code"], config["normalization"]
    )
    geometry = slices.geometry
    logger.debug("%d slices of %s px; window %s", geometry.num_slices, geometry.slice_shape, window)

    network.to(chosen)
    network.eval()
    predictor = _BatchPredictor(
        network, window, package.num_classes, tta, config["activation"], chosen, 0.5
    )
    labels = np.zeros((geometry.num_slices, *geometry.in_plane_shape), dtype=np.uint8)
    for item in _iter_probabilities(predictor, slices, batch_size, progress, cancel):
        if item is None:
            return None
        start, probabilities = item
        labels[start:start + probabilities.shape[0]] = preprocessing.probabilities_to_label_slices(
            probabilities, geometry
        )
    result = preprocessing.label_slices_to_image(labels, geometry)
    largest = config["postprocessing"].get("largest_component", [])  # validated, default {}
    if largest:
        result = preprocessing.keep_largest_component(result, largest)
    # Copy the exact geometry (the resampler already used it; this removes any float round-off).
    return geometry.copy_geometry_to(result)


# ---------------------------------------------------------------------------------------------- files
def output_path_for(input_path, output, output_format: str = "seg.nrrd", many: bool = False):
    """Where the segmentation of ``input_path`` goes.

    Args:
        input_path: image file or DICOM folder.
        output: a file path (one input), or an existing folder.
        output_format: extension (without the leading dot) used inside an output folder.
        many: several inputs (``output`` must then be a folder).

    Returns:
        ``pathlib.Path`` of the output file.

    Raises:
        ValueError: an empty output path, several inputs but ``output`` is not an existing folder, or an
            unknown format.
        FileNotFoundError: ``output`` names a folder (ends with a separator) that does not exist.
    """
    from pathlib import Path

    from . import io

    text = str(output)
    if not text.strip():
        raise ValueError("The output path is empty: give an output file (e.g. scan.seg.nrrd) or an existing folder.")
    if text.endswith(("/", "\\")) and not Path(text).is_dir():
        raise FileNotFoundError(f"Output folder {text} does not exist: create it first.")
    output = Path(output)
    ext = "." + output_format.lstrip(".").lower()
    if ext not in io.OUTPUT_EXTENSIONS:
        raise ValueError(f"Unknown output format {output_format!r}: use one of {', '.join(io.OUTPUT_EXTENSIONS)}.")
    if output.is_dir():
        source = Path(input_path)
        name = source.name
        if not name or name in (".", ".."):  # "." or "..": name the output after the folder itself
            name = source.resolve().name or "segmentation"
        in_ext = io.path_extension(source) if source.is_file() else ""
        stem = name[: len(name) - len(in_ext)] if in_ext else name
        return output / f"{stem}{ext}"
    if many:
        if output.exists():
            raise ValueError(f"With several inputs the output must be an existing folder; {output} is a file.")
        raise ValueError(f"With several inputs the output must be an existing folder; {output} is not a folder.")
    return output


def _same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name the same file (symlinks, hard links, case-insensitive folders)."""
    import os

    ra, rb = a.resolve(), b.resolve()
    if ra == rb or os.path.normcase(str(ra)) == os.path.normcase(str(rb)):
        return True
    if a.exists() and b.exists():
        try:
            # On a case-insensitive file system "Image.nii.gz" exists when "image.nii.gz" does, and
            # samefile sees that they are one file.
            return os.path.samefile(a, b)
        except OSError:
            return False
    return False


def _check_input_for_output(image: sitk.Image, src, dst, package) -> None:
    """Refuse, before any inference, an input the model or the output format cannot take."""
    from . import io

    check_input_image(image, package)
    if io.path_extension(dst) == ".png":
        size = image.GetSize()
        if image.GetDimension() == 3 and not (1 in size and sum(n > 1 for n in size) <= 2):
            raise ValueError(
                f"Input {src} is a 3D volume of size {size}, but the output {dst.name} is a PNG (2D only). "
                "Write .seg.nrrd, .nii.gz, .nrrd or .mha instead."
            )


def segment_files(
    inputs,
    output,
    model,
    device="auto",
    tta: bool = True,
    batch_size: int | None = None,
    output_format: str = "seg.nrrd",
    progress_factory: Callable[[str], ProgressCallback] | None = None,
    cancel: threading.Event | None = None,
    overwrite: bool = False,
    window: Sequence[int] | int | None = None,
    network=None,
) -> list:
    """Segment image files / DICOM folders and write the results (the ``segment`` subcommand).

    Every output path and every input (readable, 2D/3D, channels, spacing, format) is checked before
    any inference; each file is written atomically, so an interrupted run leaves only complete outputs.
    The network is built once.

    Args:
        inputs: image paths or DICOM folders.
        output: output file (one input; its extension picks the format: ``.seg.nrrd``, ``.nii.gz``,
            ``.nii``, ``.nrrd``, ``.mha``, ``.png``) or an existing folder.
        model: model id or package folder (or a loaded ModelPackage).
        device, tta, batch_size, window: see :func:`predict_volume`.
        output_format: extension used for outputs written into a folder.
        progress_factory: ``progress_factory(input_name)`` returns the progress callback of one input
            (the CLI makes a tqdm bar).
        cancel: threading.Event; a cancelled run writes nothing more and returns what was written.
        overwrite: replace existing output files (never an input).
        network: the package's network, already built (for callers that segment input after input).

    Returns:
        Paths written, in input order.

    Raises:
        FileExistsError: an output file exists and ``overwrite`` is False (raised before inference).
        FileNotFoundError, PermissionError, ValueError, RuntimeError: as raised by reading, checking
            the outputs, inference and writing; nothing partial is left behind. A failure after some
            outputs were written logs which ones.
    """
    from pathlib import Path

    from . import io
    from .package import ModelPackage, load_model_package

    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("No input images given.")
    package = model if isinstance(model, ModelPackage) else load_model_package(model)
    window = _window_size(package.config, window)  # a bad window fails before any input is read
    many = len(inputs) > 1
    outputs = [output_path_for(p, output, output_format, many) for p in inputs]
    for src in inputs:
        if not src.exists():
            raise FileNotFoundError(f"Input {src} does not exist.")
    for dst in outputs:
        io.check_output_path(dst, overwrite=overwrite)
        for src in inputs:
            if _same_file(src, dst):
                raise ValueError(f"Output {dst} would overwrite the input image {src}; choose another output path.")
    if len({str(p.resolve()).lower() for p in outputs}) != len(outputs):
        raise ValueError("Several inputs map to the same output name; segment them into different folders.")
    # Read and check every input before the first inference, so a bad input late in the list does not
    # fail the run after hours of work. With one input the image is kept; with several it is re-read.
    images: dict[int, sitk.Image] = {}
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        image = io.read_image(src)
        try:
            _check_input_for_output(image, src, dst, package)
        except ValueError as e:
            raise ValueError(f"Input {src}: {e}" if many else str(e)) from e
        if not many:
            images[i] = image
        del image
    import torch

    chosen, reason = (device, str(device)) if isinstance(device, torch.device) else select_device(device)
    logger.info("Device: %s", reason, extra={"event": "device", "device": str(chosen)})
    network = package.build_network(chosen) if network is None else network.to(chosen)
    written = []
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        try:
            image = images.pop(i) if i in images else io.read_image(src)
            progress = progress_factory(src.name) if progress_factory else None
            labelmap = predict_volume(image, package, device=chosen, tta=tta, batch_size=batch_size,
                                      progress=progress, cancel=cancel, network=network, window=window)
            if labelmap is None:
                logger.info("Cancelled; %d of %d outputs written.", len(written), len(inputs))
                break
            io.write_labelmap(labelmap, dst, package.config["classes"])
        except BaseException:
            if written:
                logger.error("Failed on input %s; outputs written before the failure: %s", src,
                             ", ".join(str(p) for p in written))
            raise
        written.append(dst)
    return written


def segment_archive(
    inputs,
    output_folder,
    model,
    device="auto",
    progress_factory: Callable[[str], ProgressCallback] | None = None,
    **options,
) -> tuple[list, list]:
    """Segment many inputs one by one into a folder; a failing input is reported and the others go on.

    Under ``torchrun`` each rank calls this with its share of the inputs (see ``segment`` in the CLI).

    Args:
        inputs: image paths or DICOM folders.
        output_folder: an existing folder (outputs are named after the inputs).
        model: model id, folder or ModelPackage.
        device: as :func:`predict_volume` (a string or ``torch.device``).
        progress_factory: as :func:`segment_files`.
        **options: ``tta``, ``batch_size``, ``output_format``, ``overwrite``, ``window`` of :func:`segment_files`.

    Returns:
        ``(written, failed)``: ``[(input, output path)]`` and ``[(input, "ErrorType: message")]``.

    Raises:
        ValueError: ``output_folder`` is not an existing folder.
    """
    from pathlib import Path

    import torch

    from .package import ModelPackage, load_model_package

    if not Path(output_folder).is_dir():
        raise ValueError(f"Output {output_folder} must be an existing folder when segmenting many inputs.")
    package = model if isinstance(model, ModelPackage) else load_model_package(model)
    chosen = device if isinstance(device, torch.device) else select_device(device)[0]
    network = package.build_network(chosen)
    written, failed = [], []
    for source in inputs:
        try:
            paths = segment_files([source], output_folder, package, device=chosen, progress_factory=progress_factory,
                                  network=network, **options)
        except Exception as e:  # reported with the input's name; the other inputs go on
            logger.error("Input %s failed: %s", source, e)
            failed.append((str(source), f"{type(e).__name__}: {e}"))
            continue
        written.extend((str(source), str(p)) for p in paths)
    return written, failed
