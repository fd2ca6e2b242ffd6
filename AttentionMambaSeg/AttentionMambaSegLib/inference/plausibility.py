"""Is this photo like the training images? Warnings for colour images far from a model's training data.

model.json ``appearance`` (written by ``tools/measure_appearance.py`` from the training split) holds,
over the training images, the mean and standard deviation of four per-image features: the mean red,
green and blue values (0-255) and the standard deviation of the grey values; and the largest share of
an image the foreground covered. An input whose features lie more than :data:`Z_LIMIT` standard
deviations from the training mean, or whose predicted foreground covers more than the training
maximum plus :data:`COVERAGE_MARGIN`, gets a warning: its labels are likely meaningless (for example an
endoscopy photo given to a dermoscopy model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Appearance", "FEATURES", "image_features", "Z_LIMIT", "COVERAGE_MARGIN"]

FEATURES = ("mean_red", "mean_green", "mean_blue", "grey_sd")
#: Features further than this many standard deviations from the training mean are unusual.
Z_LIMIT = 4.0
#: A foreground share above the training maximum plus this is unusual.
COVERAGE_MARGIN = 0.05


def image_features(array: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of an RGB image, float64 (4,).

    Args:
        array: (..., 3) RGB values, 0-255 (any leading shape: (H, W, 3) or (1, H, W, 3)).
    """
    rgb = np.asarray(array, dtype=np.float64).reshape(-1, 3)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    return np.array([*rgb.mean(axis=0), grey.std()])


@dataclass(frozen=True)
class Appearance:
    """Training-image statistics of a colour model (empty: no check)."""

    mean: tuple = ()
    sd: tuple = ()
    max_foreground_fraction: float | None = None

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "model.json") -> "Appearance":
        """Raises ValueError naming ``source`` and the field."""
        if not raw:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: field 'appearance' must be an object, got {raw!r}.")
        features = raw.get("features", {})
        mean, sd = [], []
        for name in FEATURES:
            entry = features.get(name) if isinstance(features, dict) else None
            ok = (isinstance(entry, dict) and all(_number(entry.get(k)) for k in ("mean", "sd"))
                  and entry["sd"] > 0)
            if not ok:
                raise ValueError(f"{source}: field 'appearance.features.{name}' must be "
                                 f"{{\"mean\": number, \"sd\": positive number}}, got {entry!r}.")
            mean.append(float(entry["mean"]))
            sd.append(float(entry["sd"]))
        fraction = raw.get("max_foreground_fraction")
        if fraction is not None and not (_number(fraction) and 0 < fraction <= 1):
            raise ValueError(f"{source}: field 'appearance.max_foreground_fraction' must be in (0, 1], got {fraction!r}.")
        return cls(tuple(mean), tuple(sd), None if fraction is None else float(fraction))

    def input_warning(self, array: np.ndarray) -> str | None:
        """A sentence when an RGB image (..., 3) is unlike the training images, else None."""
        if not self.mean:
            return None
        z = (image_features(array) - np.asarray(self.mean)) / np.asarray(self.sd)
        worst = int(np.argmax(np.abs(z)))
        if abs(z[worst]) <= Z_LIMIT:
            return None
        return (f"This image is unlike the model's training images: its {FEATURES[worst].replace('_', ' ')} is "
                f"{abs(z[worst]):.1f} standard deviations from theirs. Check that it is the kind of image the "
                "model was trained on (see 'models info'); its labels may be meaningless.")

    def coverage_warning(self, fraction: float) -> str | None:
        """A sentence when the foreground covers more of the image than any training image did, else None."""
        if self.max_foreground_fraction is None or fraction <= self.max_foreground_fraction + COVERAGE_MARGIN:
            return None
        return (f"The segmentation covers {fraction:.0%} of the image; in the training images it covered at most "
                f"{self.max_foreground_fraction:.0%}. The image may not be the kind the model was trained on; "
                "review the result.")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
