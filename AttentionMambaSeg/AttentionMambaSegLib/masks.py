"""Label files a person can see and a program can read back: PNG masks, Slicer segmentations, outlines.

* PNG masks: a model with one foreground class (label value 1) writes a grey PNG holding 0 and 255,
  white on black in any viewer; several classes give a palette PNG whose index is the label value and
  whose palette holds the class colours of the model's terminology (:mod:`.terminology`).
  :func:`read_labelmap` reads both back as label values (255 -> 1, palette index -> label value).
* ``.seg.nrrd`` (3D Slicer segmentation) files are read with slicerio: each segment's voxels get its
  ``labelValue``, or, given the model's classes, the label value of the class of the same name. A
  segmentation whose segments overlap (several layers) is refused: it is no labelmap.
* :func:`write_outline_overlay`: a 2D image (a photograph) with the outline of each segment drawn in
  its class colour, as a PNG to look at.
* :func:`add_legend` and :func:`label_tile`: the colour legend (class names in their colours) and the
  slice numbers of the montage written by :func:`.cli.montage.write_overlay_montage`.

Arrays are (H, W) = (rows, columns) as the PNG shows them; RGB arrays are (H, W, 3) uint8. Every file
is written under the output rule of :mod:`.outputs`. Imports point down only: :mod:`.outputs` at load,
:mod:`.images` and :mod:`.terminology` inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import outputs

logger = logging.getLogger(__name__)

__all__ = [
    "add_legend",
    "class_colours",
    "class_names",
    "label_tile",
    "outline",
    "png_mask",
    "read_labelmap",
    "read_png_labels",
    "read_seg_nrrd",
    "write_outline_overlay",
    "write_png_mask",
]

#: Grey value of the foreground in a one-class PNG mask (white on a black background).
PNG_FOREGROUND = 255


def _classes(classes) -> list[dict]:
    """Foreground classes as ``{"label_value", "name", "color"}`` dicts (model.json dicts or ClassEntry objects)."""
    out = []
    for c in classes or ():
        if isinstance(c, dict):
            value, name, colour = int(c["label_value"]), c.get("name"), c.get("color")
        else:
            value, name, colour = int(c.label_value), c.name, getattr(c, "color", None)
        if value == 0:
            continue
        out.append(
            {
                "label_value": value,
                "name": str(name or f"label {value}"),
                "color": [int(v) for v in colour] if colour is not None else None,
            }
        )
    return out


def class_colours(classes) -> np.ndarray:
    """(256, 3) uint8 look-up table: label value -> the class colour (0-255 RGB); values of no class are grey."""
    lut = np.full((256, 3), 128, dtype=np.uint8)
    lut[0] = 0
    for c in _classes(classes):
        if c["color"] is not None:
            lut[c["label_value"]] = c["color"]
    return lut


def class_names(classes) -> dict[int, str]:
    """Label value -> class name of the model's foreground classes."""
    return {c["label_value"]: c["name"] for c in _classes(classes)}


# ----------------------------------------------------------------------------------------------- PNG masks


def png_mask(labels: np.ndarray, classes=None):
    """The PIL image a labelmap is saved as.

    Args:
        labels: (H, W) integer label values 0..255.
        classes: the model's classes; one foreground class with label value 1 (or, without classes,
            labels holding only 0 and 1) gives a grey image of 0 and 255; otherwise a palette image
            (mode "P") whose index is the label value and whose palette holds the class colours.

    Returns:
        A ``PIL.Image.Image`` of mode "L" or "P".

    Raises:
        ValueError: ``labels`` is not 2D or holds values outside 0..255.
    """
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"A PNG mask needs a 2D labelmap, got shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"Label values must lie in 0..255, got {labels.min()}..{labels.max()}.")
    labels = labels.astype(np.uint8)
    foreground = _classes(classes)
    binary = int(labels.max(initial=0)) <= 1 and (not foreground or [c["label_value"] for c in foreground] == [1])
    if binary:
        return Image.fromarray(labels * np.uint8(PNG_FOREGROUND), mode="L")
    png = Image.fromarray(labels, mode="P")
    png.putpalette(class_colours(classes).ravel().tolist())
    return png


def write_png_mask(
    labelmap: sitk.Image, path: str | os.PathLike, classes=None, *, overwrite: bool = False, inputs: Sequence = ()
) -> Path:
    """Write a 2D labelmap as a PNG mask (:func:`png_mask`) under the output rule; read back before the rename.

    Args:
        labelmap: 2D scalar SimpleITK labelmap, values 0..255 (a PNG keeps no spacing or origin).
        path: ``.png`` destination.
        classes, overwrite, inputs: as :func:`png_mask` and :func:`.writers.write_labelmap`.

    Returns:
        ``path``.

    Raises:
        ValueError: not 2D, values outside 0..255, wrong extension; the errors of :func:`.outputs.write_output`.
    """
    labels = sitk.GetArrayFromImage(labelmap)
    png = png_mask(labels, classes)

    def verify(tmp: Path) -> None:
        if not np.array_equal(read_png_labels(tmp), labels):
            raise ValueError("the PNG read back holds other label values than those written")

    with outputs.write_output(path, overwrite=overwrite, inputs=inputs, verify=verify, allowed=(".png",)) as tmp:
        png.save(tmp, format="PNG")
    return Path(path)


def read_png_labels(path: str | os.PathLike) -> np.ndarray:
    """The label values of a PNG mask: (H, W) uint8 (uint16 for a 16-bit PNG).

    A palette PNG gives its indices; a grey PNG holding only 0 and 255 gives 0 and 1 (one class); any
    other grey PNG gives its values; an RGB PNG whose three channels are equal is read as grey.

    Raises:
        ValueError: a colour PNG (it is a picture, not a labelmap) or a file that is no readable PNG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as png:
            png.load()
            mode = png.mode
            if mode == "P":
                return np.asarray(png, dtype=np.uint8).copy()
            if mode in ("LA", "PA"):
                png = png.getchannel(0)
                mode = png.mode
            array = np.asarray(png).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"Could not read {path} as a PNG mask: {e}") from e
    if mode == "1":
        array = array.astype(np.uint8)
    elif array.ndim == 3:
        rgb = array[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ValueError(
                f"{path} is a colour PNG, not a labelmap: give the mask (grey 0/255, label values, or a "
                "palette PNG as `segment` writes), not a picture of it."
            )
        array = rgb[..., 0]
    if array.dtype.kind not in "ui":
        raise ValueError(f"{path} holds {array.dtype} values, not label values.")
    values = np.unique(array)
    if values.size and set(values.tolist()) <= {0, PNG_FOREGROUND} and values.max() == PNG_FOREGROUND:
        array = (array == PNG_FOREGROUND).astype(np.uint8)
    return array.astype(np.uint16 if array.dtype.itemsize > 1 else np.uint8)


# ------------------------------------------------------------------------------------------- reading back


def read_seg_nrrd(path: str | os.PathLike, classes=None) -> tuple[sitk.Image, dict[int, str]]:
    """A 3D Slicer segmentation file as a labelmap.

    Args:
        path: a ``.seg.nrrd`` file (as ``segment`` or 3D Slicer writes it).
        classes: the model's classes; each segment then gets the label value of the class of the same
            name (case-insensitive). Without them, each segment keeps its ``labelValue``.

    Returns:
        ``(labelmap, names)``: a 3D uint8/uint16 SimpleITK labelmap on the file's own grid (LPS), and label
        value -> segment name.

    Raises:
        ValueError: segments in several layers (overlapping segments), a segment whose name is none of
            the model's classes, or an unreadable file.
    """
    import slicerio

    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as e:  # slicerio and pynrrd raise many types for a damaged file
        raise ValueError(f"Could not read {path} as a 3D Slicer segmentation: {e}") from e
    voxels = np.asarray(segmentation["voxels"])
    segments = segmentation.get("segments") or []
    layers = sorted({int(s.get("layer", 0)) for s in segments})
    if voxels.ndim == 4 and voxels.shape[0] == 1:
        voxels = voxels[0]
    if len(layers) > 1 or voxels.ndim != 3:
        raise ValueError(
            f"{path} holds overlapping segments ({max(len(layers), voxels.shape[0] if voxels.ndim == 4 else 1)} "
            "layers), so it is no labelmap and cannot be scored as one. In 3D Slicer, export the segments to a "
            "labelmap (Segmentations module > Export to files, or Data > Export visible segments to labelmap) "
            "and score that, or score one segment at a time."
        )
    by_name = {n.lower(): v for v, n in class_names(classes).items()} if classes is not None else None
    lut = np.zeros(
        int(max(voxels.max(initial=0), max((s.get("labelValue", 0) for s in segments), default=0))) + 1, dtype=np.int64
    )
    names: dict[int, str] = {}
    for s in segments:
        stored, name = int(s.get("labelValue", 0)), str(s.get("name") or s.get("id"))
        if stored == 0:
            continue
        value = stored
        if by_name is not None:
            named = by_name.get(name.lower())
            if named is None:
                raise ValueError(
                    f"Segment {name!r} of {path} is none of the model's classes "
                    f"({', '.join(class_names(classes).values())}): rename the segment to the class it "
                    "shows, or leave out --model to score the segments by their own label values."
                )
            value = named
        lut[stored] = value
        names[value] = name
    unnamed = sorted(set(np.unique(voxels).tolist()) - {0} - {int(s.get("labelValue", 0)) for s in segments})
    if unnamed:
        logger.warning("%s: voxel values %s belong to no segment; read as background.", path, unnamed)
    labels = lut[voxels]
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))).astype(dtype))  # (K, J, I)
    matrix = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in (matrix[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in matrix[:3, 3]])
    return image, names


def read_labelmap(path: str | os.PathLike, classes=None) -> tuple[sitk.Image, dict[int, str]]:
    """Read any labelmap file ``segment`` writes (and the usual reference formats) as label values.

    Args:
        path: ``.seg.nrrd`` (:func:`read_seg_nrrd`), ``.png`` (:func:`read_png_labels`; spacing 1, origin 0:
            a PNG keeps no geometry), or ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha`` and the other formats of
            :func:`.images.read_image`.
        classes: the model's classes, to map ``.seg.nrrd`` segments to label values by name.

    Returns:
        ``(labelmap, names)``: a 2D or 3D SimpleITK labelmap and label value -> name (segment names of a
        ``.seg.nrrd``; empty for other files).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: as :func:`read_seg_nrrd`, :func:`read_png_labels` and :func:`.images.read_image`.
    """
    from . import images

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Labelmap file {path} does not exist.")
    ext = outputs.path_extension(path)
    if ext == ".seg.nrrd":
        return read_seg_nrrd(path, classes)
    if ext == ".png":
        return sitk.GetImageFromArray(read_png_labels(path)), {}
    return images.read_image(path), {}


# ------------------------------------------------------------------------------------- pictures to look at


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(8, int(size)))
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion of a boolean (H, W) mask; outside the image counts as the edge pixel."""
    padded = np.pad(mask, 1, mode="edge")
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def outline(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """The outline of every segment: (H, W) labels kept only within ``thickness`` px inside each boundary.

    Args:
        labels: (H, W) integer labelmap.
        thickness: outline width in pixels, drawn inside the segment (the surroundings stay visible).

    Returns:
        (H, W) array of ``labels``' dtype: the label value on outline pixels, 0 elsewhere.
    """
    labels = np.asarray(labels)
    out = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        inner = mask
        for _ in range(max(1, int(thickness))):
            inner = _erode(inner)
        edge = mask & ~inner
        out[edge] = value
    return out


def _display_rgb(image: sitk.Image) -> np.ndarray:
    """(H, W, 3) uint8 of a 2D grey or RGB image: RGB kept, grey windowed at its 0.5 / 99.5 percentiles."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if array.ndim == 3 and image.GetNumberOfComponentsPerPixel() > 1:
        if array.shape[-1] == 3 and array.max(initial=0) <= 255:
            return np.clip(array, 0, 255).astype(np.uint8)
        array = array[..., 0]
    lo, hi = np.percentile(array, [0.5, 99.5]) if array.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    grey = (np.clip((array - lo) / (hi - lo), 0, 1) * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _as_2d(image: sitk.Image, what: str) -> sitk.Image:
    if image.GetDimension() == 2:
        return image
    size = image.GetSize()
    if image.GetDimension() == 3 and 1 in size and sum(n > 1 for n in size) <= 2:
        extract = list(size)
        extract[size.index(1)] = 0
        return sitk.Extract(image, extract, [0, 0, 0])
    raise ValueError(
        f"--overlay draws on 2D images (photographs, single slices); the {what} has size {size}. "
        "For a volume, open the .seg.nrrd in 3D Slicer."
    )


def outline_thickness(size: Sequence[int]) -> int:
    """Outline width in pixels for an image of ``size``: 1 px per 300 px of its longer side, at least 2."""
    return max(2, int(round(max(size) / 300)))


def write_outline_overlay(
    image: sitk.Image,
    labelmap: sitk.Image,
    classes,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> Path:
    """Write the image with the outline of each segment in its class colour (``NAME_overlay.png``).

    Args:
        image: 2D grey or RGB image (or one slice of a volume), e.g. the photograph that was segmented.
        labelmap: integer labelmap on the same grid.
        classes: the model's classes (colours by label value).
        path: ``.png`` destination.
        overwrite, inputs: as :func:`.writers.write_labelmap`.

    Returns:
        ``path``. The picture is (H, W, 3) uint8: the image's own pixels (RGB kept, grey windowed), except
        within :func:`outline_thickness` px inside each segment's boundary, drawn in the class colour.

    Raises:
        ValueError: a volume, or image and labelmap sizes differ; the errors of :func:`.outputs.write_output`.
    """
    from PIL import Image

    image, labelmap = _as_2d(image, "image"), _as_2d(labelmap, "labelmap")
    if image.GetSize() != labelmap.GetSize():
        raise ValueError(f"Image size {image.GetSize()} and labelmap size {labelmap.GetSize()} differ.")
    rgb = _display_rgb(image)
    edges = outline(sitk.GetArrayFromImage(labelmap), outline_thickness(image.GetSize()))
    on = edges > 0
    rgb[on] = class_colours(classes)[edges[on]]

    def verify(tmp: Path) -> None:
        with Image.open(tmp) as png:
            if not np.array_equal(np.asarray(png.convert("RGB")), rgb):
                raise ValueError("the overlay read back differs from the one written")

    with outputs.write_output(path, overwrite=overwrite, inputs=inputs, verify=verify, allowed=(".png",)) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return Path(path)


def label_tile(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` ((H, W, 3) uint8) with ``text`` in its top-left corner (white on a dark box)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(tile)
    draw = ImageDraw.Draw(picture)
    font = _font(max(9, min(16, tile.shape[0] // 12)))
    left, top, right, bottom = draw.textbbox((3, 2), text, font=font)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture).copy()


def add_legend(canvas: np.ndarray, classes, note: str = "") -> np.ndarray:
    """``canvas`` with a legend strip below it: a swatch and the name of each class, in the class colour.

    Args:
        canvas: (H, W, 3) uint8 picture.
        classes: the model's classes (name, colour, label value).
        note: a line of grey text after the names (e.g. which slices are shown).

    Returns:
        (H + legend height, W, 3) uint8: the canvas unchanged on top, the legend (black background) below.
    """
    from PIL import Image, ImageDraw

    width = canvas.shape[1]
    size = max(10, min(18, width // 28))
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items: list[tuple[str, tuple | None]] = [
        (c["name"], tuple(c["color"] or (128, 128, 128))) for c in _classes(classes)
    ]
    if note:
        items.append((note, None))
    line, gap = size + 8, size // 2 + 4
    placed, x, y = [], 4, 4
    for name, colour in items:
        text_w = measure.textlength(name, font=font)
        item_w = int(text_w) + (size + 4 if colour is not None else 0)
        if x > 4 and x + item_w > width - 4:
            x, y = 4, y + line
        placed.append((x, y, name, colour))
        x += item_w + gap
    strip = Image.new("RGB", (width, y + line + 2), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for x, y, name, colour in placed:
        if colour is None:
            draw.text((x, y), name, fill=(200, 200, 200), font=font)
            continue
        draw.rectangle((x, y + 2, x + size - 2, y + size), fill=colour)
        draw.text((x + size + 2, y), name, fill=colour, font=font)
    return np.concatenate([canvas, np.asarray(strip)], axis=0)
