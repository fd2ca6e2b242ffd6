"""The PNG overlay montage of the ``demo`` command: slices of an image with the segments overlaid.

Slices are taken along the same axis the models use (:func:`~AttentionMambaSegLib.slicing.image_to_slices`,
LPS orientation), each tile carries its slice number, and a legend below the tiles names each class in
its colour (:func:`~AttentionMambaSegLib.masks.add_legend`). The file is written under the output rule of
:mod:`~AttentionMambaSegLib.outputs`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..images import atomic_output, check_output_path
from ..masks import add_legend, label_tile
from ..slicing import image_to_slices
from ..writers import check_labelmap, read_back_verifier

logger = logging.getLogger(__name__)

__all__ = ["write_overlay_montage"]


def write_overlay_montage(
    image: sitk.Image,
    labelmap: sitk.Image,
    classes: Sequence[dict],
    path: str | os.PathLike,
    *,
    max_slices: int = 12,
    columns: int = 4,
    alpha: float = 0.45,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> Path:
    """Write a PNG montage of slices with the segments overlaid in their colours (output rule: :mod:`..outputs`).

    Slices are taken along the same axis the models use (LPS orientation, largest-spacing-else-z
    rule), with rows/columns as in the slice arrays; up to ``max_slices`` evenly spaced slices,
    chosen among those that contain labels when there are any. Each tile of a volume carries its slice
    number (``k/S``, counted from 1 along the slicing axis); below the tiles a legend gives each class
    name in its colour (:func:`..masks.add_legend`).

    Args:
        image: 2D or 3D grey or RGB image.
        labelmap: integer labelmap on the same grid.
        classes: ``[{label_value, name, color [r, g, b]}]``.
        path: ``.png`` destination.
        max_slices, columns: montage layout.
        alpha: overlay opacity.
        overwrite, inputs: as :func:`..writers.write_labelmap`.

    Returns:
        The written path.

    Raises:
        ValueError: if image and labelmap sizes differ or the extension is not .png.
        FileExistsError, OSError: as :func:`..writers.write_labelmap`.
    """
    from PIL import Image

    path = check_output_path(path, allowed=(".png",), overwrite=overwrite, inputs=inputs)
    if image.GetSize() != labelmap.GetSize():
        raise ValueError(f"Image size {image.GetSize()} and labelmap size {labelmap.GetSize()} differ.")
    slices, _ = image_to_slices(image, None, "LPS")  # (S, C, H, W) float32
    labels, _ = image_to_slices(check_labelmap(labelmap), None, "LPS", is_label=True)  # (S, H, W)
    candidates = _chosen_slices(labels, max_slices)
    tiles = _overlay_tiles(slices, labels, candidates, classes, alpha)
    canvas = add_legend(
        _tiled(tiles, columns), classes, "slice number / slices (along the slicing axis)" if labels.shape[0] > 1 else ""
    )

    def read_png(tmp: Path) -> np.ndarray:
        with Image.open(tmp) as png:
            return np.asarray(png.convert("RGB"))

    verify = read_back_verifier(canvas, reader=read_png)
    with atomic_output(path, overwrite=overwrite, inputs=inputs, verify=verify) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    logger.info("Wrote montage %s (%d slices)", path, len(tiles))
    return path


def _chosen_slices(labels: np.ndarray, max_slices: int) -> list[int]:
    """Up to ``max_slices`` evenly spaced slice indices of (S, H, W) ``labels``, among the labelled ones if any."""
    candidates = [s for s in range(labels.shape[0]) if labels[s].any()] or list(range(labels.shape[0]))
    if len(candidates) > max_slices:
        candidates = [candidates[int(round(i))] for i in np.linspace(0, len(candidates) - 1, max_slices)]
    return candidates


def _overlay_tiles(
    slices: np.ndarray, labels: np.ndarray, chosen: list[int], classes: Sequence[dict], alpha: float
) -> list[np.ndarray]:
    """uint8 (H, W, 3) tiles of the chosen slices: grey (0.5-99.5 percentile window) or RGB, segments blended in."""
    if slices.shape[1] == 3:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = np.percentile(slices, [0.5, 99.5])
        hi = hi if hi > lo else lo + 1.0
    lut = np.zeros((256, 3), dtype=np.float32)
    for c in classes:
        lut[int(c["label_value"])] = c["color"]
    tiles = []
    for s in chosen:
        x = slices[s]
        grey = np.clip((x - lo) / (hi - lo), 0, 1) * 255.0
        rgb = np.repeat(grey, 3, axis=0) if grey.shape[0] == 1 else grey[:3]
        rgb = np.moveaxis(rgb, 0, -1)
        mask = labels[s] > 0
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * lut[labels[s][mask]]
        tile = rgb.astype(np.uint8)
        tiles.append(label_tile(tile, f"{s + 1}/{labels.shape[0]}") if labels.shape[0] > 1 else tile)
    return tiles


def _tiled(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """The tiles laid out row by row, ``columns`` per row (at most as many as tiles), on a black uint8 canvas."""
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = int(np.ceil(len(tiles) / columns))
    canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return canvas
