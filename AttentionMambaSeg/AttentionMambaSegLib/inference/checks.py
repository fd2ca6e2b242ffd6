"""Input checks before inference: refuse what the model cannot segment, warn about what looks wrong.

Refusals (:func:`check_input_image`) raise ``ValueError``. Warnings about an input far outside what the
model was trained on (:func:`input_range_warnings`: slices or pixels more than twice as coarse as the
training images', a field of view many times theirs, as a whole head for a model trained on crops) are
sentences that the predictor logs before the run and keeps in the report's ``warnings``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import SimpleITK as sitk

from .. import slicing
from ..card.training_geometry import TrainingGeometry
from ..dicom import modality_code

__all__ = [
    "check_input_image",
    "check_direction",
    "check_modality",
    "input_range_warnings",
    "LABELMAP_MAX_VALUES",
    "FLOAT32_MAX",
    "DIRECTION_TOLERANCE",
    "COARSER_SPACING_FACTOR",
    "FIELD_OF_VIEW_FACTOR",
]

logger = logging.getLogger(__name__)

#: Integer images with at most this many distinct values trigger the "looks like a labelmap" warning.
LABELMAP_MAX_VALUES = 8
#: Largest finite float32 value: inputs beyond it cannot be normalised in the network's arithmetic.
FLOAT32_MAX = float(np.finfo(np.float32).max)


#: An MR model refuses an image with at least this share of voxels at or below -500 (air in
#: Hounsfield units: a CT), unless forced.
CT_AIR_SHARE = 0.05


def check_modality(image: sitk.Image, package, arr=None, force: bool = False) -> None:
    """Refuse an image of another modality than the model was trained on, unless ``force``.

    The DICOM Modality tag (``0008|0060``, kept by :func:`~AttentionMambaSegLib.dicom.read_dicom_series`)
    decides where present; otherwise an MR model refuses an image whose intensities look like
    Hounsfield units (at least 5 % of the voxels at or below -500, the air of a CT; MR magnitudes are
    not negative).

    Raises:
        ValueError: naming both modalities and the way out (another model, or ``--force``).
    """
    expected = modality_code(package.card.modality)
    if expected is None:
        return
    found = image.GetMetaData("0008|0060").strip().upper() if image.HasMetaDataKey("0008|0060") else ""
    why = f"its DICOM Modality is {found}"
    if not found and expected == "MR" and image.GetNumberOfComponentsPerPixel() == 1:
        values = sitk.GetArrayViewFromImage(image) if arr is None else arr
        sample = np.asarray(values).reshape(-1)[:: max(1, values.size // 1_000_000)]
        share = float(np.count_nonzero(sample <= -500)) / max(sample.size, 1)
        if share >= CT_AIR_SHARE:
            found, why = "CT", f"{share:.0%} of its voxels are at or below -500, as air in Hounsfield units"
    if not found or found == expected:
        return
    mismatch = f"The image looks like {found} ({why}), but model '{package.id}' was trained on {expected} images"
    if not force:
        raise ValueError(
            f"{mismatch}: its labels would not be meaningful. Choose a model for {found} images, or "
            "pass --force (force=True) to segment it anyway."
        )
    logger.warning("%s. Segmenting it anyway (forced).", mismatch)


#: Largest deviation of an axis length from 1, or of the cosine between two axes from 0, accepted as
#: orthonormal.
DIRECTION_TOLERANCE = 1e-3


def check_direction(image: sitk.Image) -> None:
    """Refuse a direction matrix that is not orthonormal (sheared or scaled axes).

    The direction's columns must be unit vectors at right angles: ITK image geometry (origin, spacing,
    orthonormal direction) cannot hold a shear, and writers would silently straighten it, moving the
    labels away from the anatomy.

    Raises:
        ValueError: naming the matrix's defect and the fix.
    """
    dim = image.GetDimension()
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    if not np.all(np.isfinite(d)):
        raise ValueError(f"The image's direction matrix has NaN or infinite entries ({d.tolist()}); fix the header.")
    lengths = np.linalg.norm(d, axis=0)
    unit = d / np.where(lengths > 0, lengths, 1.0)
    cosines = np.abs(unit.T @ unit - np.eye(dim)).max()  # 0 when the axes are at right angles
    scaled = np.abs(lengths - 1).max() > DIRECTION_TOLERANCE
    if cosines > DIRECTION_TOLERANCE or scaled:
        angle = math.degrees(math.asin(min(1.0, float(cosines))))
        kind = (
            f"sheared (two axes are {90 - angle:.1f} degrees apart, not 90)"
            if cosines > DIRECTION_TOLERANCE
            else "scaled (axis lengths " + ", ".join(f"{v:.4g}" for v in lengths) + ", not 1)"
        )
        raise ValueError(
            f"The image's direction matrix is not orthonormal: it is {kind}. The header is inconsistent (a voxel size "
            "folded into the direction, or a sheared acquisition); fix the header or resample the image to an "
            "orthonormal grid (e.g. with Slicer's Resample Scalar Volume) before segmenting."
        )


def check_input_image(image: sitk.Image, package, warn: bool = True, force: bool = False) -> None:
    """Refuse images the model cannot segment; warn about images that look like labelmaps.

    Args:
        image: the input image.
        package: :class:`~AttentionMambaSegLib.package.ModelPackage` (uses id, in_channels, channel names).
        force: segment an image of another modality than the model's (:func:`check_modality`).
        warn: log the warnings (a check made ahead of the prediction, which checks again, passes False,
            so that each warning is said once).

    Raises:
        ValueError: 4D (or 1D) image; complex pixels; channel count differs from the model's (the
            message names both); invalid or implausible spacing (see
            :func:`..slicing.check_resampling`); NaN or infinite voxels; intensities beyond float32's
            range; constant image (e.g. all zero); empty image.
    """
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise ValueError(
            f"The input is a {dim}D image of size {image.GetSize()}; Attention-Mamba segments 2D or 3D "
            "images. For a cardiac cine, `attention-mamba-seg cardiac` segments every frame and reports the "
            "ventricular function; for another 4D (time series) image, extract one frame first."
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
    check_direction(image)
    slicing.check_resampling(image, package.card.target_spacing)
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
    check_modality(image, package, arr, force)
    if lo == hi:
        raise ValueError(
            f"The input image is constant (every voxel = {lo}); there is nothing to segment. Check that the "
            "right image was loaded."
        )
    if warn and ncomp == 1 and (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        flat = arr.reshape(-1)
        sample = flat[:: max(1, flat.size // 1_000_000)]
        sample_values = np.unique(sample)
        if len(sample_values) <= LABELMAP_MAX_VALUES and np.array_equal(sample_values, np.round(sample_values)):
            values = np.unique(flat)
            if len(values) <= LABELMAP_MAX_VALUES and np.array_equal(values, np.round(values)):
                logger.warning(
                    "The input looks like a labelmap (%s pixels with only %d distinct values: %s); "
                    "segmenting it anyway. Pass the intensity image, not a segmentation.",
                    arr.dtype,
                    len(values),
                    values.tolist(),
                )


#: An input whose slice spacing (or in-plane spacing) is more than this many times the training images'
#: is warned about.
COARSER_SPACING_FACTOR = 2.0
#: An input whose field of view is larger than the training images' largest by more than this factor
#: along every axis on average (8 times the volume of a 3D box, 4 times the area of a 2D one) is warned
#: about.
FIELD_OF_VIEW_FACTOR = 2.0


def _mm(value: float) -> str:
    return f"{value:.1f} mm" if value < 10 else f"{value:.0f} mm"


def input_range_warnings(image: sitk.Image, card, roi=None) -> list[str]:
    """Sentences about an input far outside the images the model was trained on (model.json
    ``training_geometry``; none when the card does not record it).

    - slices more than :data:`COARSER_SPACING_FACTOR` times further apart than the training images'
      (the slice axis as the model picks it: the largest spacing), naming both spacings;
    - in-plane pixels more than that factor coarser;
    - a field of view (the region of interest's, when given) larger than the training images' largest by
      more than :data:`FIELD_OF_VIEW_FACTOR` along every axis on average.

    Args:
        image: the input (2D or 3D), checked by :func:`check_input_image`.
        card: the model's :class:`~AttentionMambaSegLib.card.ModelCard`.
        roi: the :class:`~.roi.RegionOfInterest` that will be segmented, if any.

    Returns:
        the warnings, in that order (empty when the input is within range).
    """
    geometry = card.training_geometry_range
    if geometry == TrainingGeometry():
        return []
    name = card.id
    region = image
    if roi is not None and image.GetDimension() == 3:
        from .roi import crop_to_roi

        region = crop_to_roi(image, roi)[0]
    size = [int(n) for n in region.GetSize()]
    spacing = [float(v) for v in region.GetSpacing()]
    said = []
    axes = [i for i in range(len(size)) if size[i] > 1] if len(size) == 3 else list(range(len(size)))
    slice_axis = None
    if len(axes) == 3:
        coarsest = max(axes, key=lambda i: spacing[i])
        slice_axis = coarsest if spacing[coarsest] > min(spacing) * (1 + 1e-3) else 2
    in_plane = [spacing[i] for i in axes if i != slice_axis]
    train_slice, train_in_plane = geometry.slice_spacing_mm, geometry.in_plane_spacing_mm
    if slice_axis is not None and train_slice and spacing[slice_axis] > COARSER_SPACING_FACTOR * train_slice:
        said.append(
            f"The image's slices are {_mm(spacing[slice_axis])} apart, more than {COARSER_SPACING_FACTOR:g} times "
            f"the {_mm(train_slice)} of the images model '{name}' was trained on: structures thinner than a slice "
            "are blurred or missed, and the result is not to be trusted. Use an acquisition with slices about "
            f"{_mm(train_slice)} apart."
        )
    if in_plane and train_in_plane and max(in_plane) > COARSER_SPACING_FACTOR * train_in_plane:
        said.append(
            f"The image's pixels are {_mm(max(in_plane))} wide, more than {COARSER_SPACING_FACTOR:g} times the "
            f"{_mm(train_in_plane)} of the images model '{name}' was trained on: details are lost, and the result "
            "is not to be trusted."
        )
    fov = geometry.field_of_view_mm
    extent = [size[i] * spacing[i] for i in range(len(size)) if size[i] > 1]
    if fov and len(extent) == len(fov):
        ratio = float(np.prod(extent) / np.prod(fov))
        if ratio > FIELD_OF_VIEW_FACTOR ** len(fov):
            what = "region of interest" if region is not image else "image"
            said.append(
                f"The {what} covers {' x '.join(f'{v:.0f}' for v in extent)} mm, {ratio:.0f} times the "
                f"{'volume' if len(fov) == 3 else 'area'} of the largest image model '{name}' was trained on "
                f"({' x '.join(f'{v:.0f}' for v in fov)} mm): it has not seen so wide a view, and what it labels "
                "outside the region it knows is not to be trusted. Segment a region of interest around the "
                "structure (--roi, or a region of interest in Slicer)."
            )
    return said
