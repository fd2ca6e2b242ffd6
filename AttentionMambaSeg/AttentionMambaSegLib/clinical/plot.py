"""The volume-time curve of both ventricles as a PNG (matplotlib when installed, else Pillow)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_volume_curve"]

logger = logging.getLogger(__name__)

_LV_COLOR = (250, 210, 80)
_RV_COLOR = (0, 151, 206)


def write_volume_curve(
    lv_ml: Sequence[float],
    rv_ml: Sequence[float],
    ed_frame: int,
    es_frame: int,
    path: str | os.PathLike,
    title: str = "",
    *,
    overwrite: bool = False,
) -> Path:
    """Write the LV and RV cavity volume of every frame against the frame number, ED and ES marked.

    Drawn with matplotlib (the ``[train]`` extra) when it is installed, else with Pillow (a core
    dependency); written atomically.

    Args:
        lv_ml, rv_ml: cavity volumes (mL) of frames 1..N.
        ed_frame, es_frame: ED and ES frame numbers (from 1).
        path: ``.png`` destination.
        title: a line above the plot (e.g. the input's name).
        overwrite: replace an existing file.

    Returns:
        The written path.

    Raises:
        ValueError: the two curves have different lengths or the path is not a .png.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from ..images import atomic_output, check_output_path

    path = check_output_path(path, allowed=(".png",), overwrite=overwrite)
    if len(lv_ml) != len(rv_ml) or not lv_ml:
        raise ValueError(f"The LV and RV curves need one volume per frame each, got {len(lv_ml)} and {len(rv_ml)}.")
    try:
        import matplotlib
    except ImportError:
        logger.info(
            "matplotlib is not installed (pip install 'attention-mamba-seg[train]' adds it): the volume "
            "curve is drawn with Pillow."
        )
        draw = _draw_pillow
    else:
        del matplotlib
        draw = _draw_matplotlib
    with atomic_output(path, overwrite=overwrite, verify=_is_png) as tmp:
        draw(list(lv_ml), list(rv_ml), ed_frame, es_frame, tmp, title)
    logger.info("Wrote volume curve %s", path)
    return path


def _is_png(tmp: Path) -> None:
    """A verify function: the written file must open as a PNG image."""
    from PIL import Image

    with Image.open(tmp) as image:
        if image.format != "PNG":
            raise ValueError(f"the file read back is a {image.format} image, not a PNG")
        image.verify()


def _draw_matplotlib(lv, rv, ed, es, path, title):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    frames = list(range(1, len(lv) + 1))
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    ax.plot(frames, lv, "o-", color=[c / 255 for c in _LV_COLOR], label="LV cavity")
    ax.plot(frames, rv, "s-", color=[c / 255 for c in _RV_COLOR], label="RV cavity")
    for frame, name in ((ed, "ED"), (es, "ES")):
        ax.axvline(frame, color="0.5", linestyle="--", linewidth=1)
        ax.annotate(name, (frame, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom")
    ax.set_xlabel("frame")
    ax.set_ylabel("volume (mL)")
    ax.set_ylim(bottom=0)
    if len(frames) <= 30:
        ax.set_xticks(frames)
    ax.legend(loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), format="png")


def _draw_pillow(lv, rv, ed, es, path, title):
    from PIL import Image, ImageDraw

    width, height, left, right, top, bottom = 640, 400, 60, 20, 40, 45
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    n = len(lv)
    top_ml = max(max(lv), max(rv), 1.0) * 1.1

    def xy(frame, ml):
        x = left + (width - left - right) * ((frame - 1) / max(n - 1, 1))
        return x, height - bottom - (height - top - bottom) * ml / top_ml

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for frame, name in ((ed, "ED"), (es, "ES")):
        x, _ = xy(frame, 0)
        draw.line([x, top, x, height - bottom], fill=(128, 128, 128))
        draw.text((x - 6, top - 14), name, fill="black")
    for values, color, name, row in ((lv, _LV_COLOR, "LV cavity", 0), (rv, _RV_COLOR, "RV cavity", 1)):
        points = [xy(i + 1, v) for i, v in enumerate(values)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((width - right - 90, height - bottom - 30 + 12 * row), name, fill=color)
    for ml in (0.0, top_ml / 2, top_ml / 1.1):
        _, y = xy(1, ml)
        draw.text((5, y - 6), f"{ml:.0f}", fill="black")
    draw.text((left, height - bottom + 8), "1", fill="black")
    draw.text((width - right - 10, height - bottom + 8), str(n), fill="black")
    draw.text(((width - 40) // 2, height - 20), "frame", fill="black")
    draw.text((5, top - 30), "volume (mL)" + (f"   {title}" if title else ""), fill="black")
    image.save(path, format="PNG")
