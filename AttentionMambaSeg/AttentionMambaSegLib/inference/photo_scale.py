"""Photographs at the model's scale: a photograph much larger than the training photographs is segmented at theirs.

A photograph carries no physical pixel size: a photo model learned lesions at the pixel scale of its
training photographs (skin-lesion-ph2: PH2's 768 x 560 photographs, stored at 382 x 286 px with
spacing 1, resampled to the model's target spacing of 2). A 6000 x 4000 photograph of the same field
would reach the network at a scale 15 times finer than it learned, and take minutes. model.json's
``photo_long_side`` records the longer side (pixels) of the training photographs; a 2D input whose
longer side is more than :data:`PHOTO_SCALE_FACTOR` times that is given the pixel spacing at which its
longer side spans what the training photographs' did (``photo_long_side`` x 1). The slices are then
resampled to the model's grid as for any input (:mod:`..slicing`), and the labels come back on the
photograph's own full-resolution grid, with its own spacing.
"""

from __future__ import annotations

import logging

import SimpleITK as sitk

__all__ = ["PHOTO_SCALE_FACTOR", "to_model_scale", "back_to_input"]

logger = logging.getLogger(__name__)

#: A photograph whose longer side exceeds the training photographs' by more than this factor is rescaled.
PHOTO_SCALE_FACTOR = 1.5


def to_model_scale(image: sitk.Image, card) -> sitk.Image:
    """``image`` with the pixel spacing that puts it at the scale of the model's training photographs.

    Args:
        image: the input; only a 2D image (a photograph) is ever changed.
        card: the model's :class:`~AttentionMambaSegLib.card.ModelCard` (``photo_long_side``; None: never rescaled).

    Returns:
        ``image`` itself when no rescaling is needed, else a copy with the same pixels and a spacing of
        ``photo_long_side / longer side`` (the aspect ratio of the pixels kept).
    """
    long_side = getattr(card, "photo_long_side", None)
    if not long_side or image.GetDimension() != 2:
        return image
    size = max(image.GetSize())
    if size <= PHOTO_SCALE_FACTOR * long_side:
        return image
    spacing = image.GetSpacing()
    unit = float(long_side) / size / min(spacing)  # the smaller pixel side becomes photo_long_side / size
    scaled = sitk.Image(image)
    scaled.SetSpacing([s * unit for s in spacing])
    logger.info(
        "The photograph (%d x %d px) is %.1f times larger than the model's training photographs (longer side "
        "%d px); it is segmented at their scale and the mask brought back to its full resolution.",
        *image.GetSize(),
        size / long_side,
        long_side,
    )
    return scaled


def back_to_input(labels: sitk.Image, image: sitk.Image) -> sitk.Image:
    """The labels of :func:`to_model_scale`'s image on ``image``'s own grid (same pixels, its spacing and origin)."""
    labels.CopyInformation(image)
    return labels
