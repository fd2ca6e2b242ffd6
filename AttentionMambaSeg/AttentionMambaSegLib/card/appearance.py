"""Is this photo like the training images? Warnings for colour images far from a model's training data.

model.json ``appearance`` (written by ``tools/measure_appearance.py`` from the training split) holds,
over the training images, the mean and standard deviation of seven per-image features
(:data:`FEATURES`): the mean red, green and blue values (0-255), the standard deviation of the grey
values, the red and green shares of the mean colour (chromaticity, independent of brightness) and the
mean saturation. An input with a feature more than :data:`Z_LIMIT` standard deviations from the
training mean gets a warning: its labels are likely meaningless (for example an endoscopy photo, whose
mucosa is far redder than skin, given to a dermoscopy model). For PH2 the largest value over the
validation images is 3.8 standard deviations (``docs/INFERENCE.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .numbers import is_number

__all__ = ["Appearance", "FEATURES", "image_features", "Z_LIMIT"]

FEATURES = ("mean_red", "mean_green", "mean_blue", "grey_sd", "red_share", "green_share", "saturation")
#: Features further than this many standard deviations from the training mean are unusual.
Z_LIMIT = 4.0


def image_features(array: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of an RGB image, float64 (7,).

    Args:
        array: (..., 3) RGB values, 0-255 (any leading shape: (H, W, 3) or (1, H, W, 3)).
    """
    rgb = np.asarray(array, dtype=np.float64).reshape(-1, 3)
    mean = rgb.mean(axis=0)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    brightest = rgb.max(axis=1)
    saturation = (brightest - rgb.min(axis=1)) / np.maximum(brightest, 1e-9)
    total = max(float(mean.sum()), 1e-9)
    return np.array([*mean, grey.std(), mean[0] / total, mean[1] / total, saturation.mean()])


@dataclass(frozen=True)
class Appearance:
    """Training-image statistics of a colour model (empty: no check)."""

    mean: tuple = ()
    sd: tuple = ()

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "model.json") -> Appearance:
        """Raises ValueError naming ``source`` and the field."""
        if not raw:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: field 'appearance' must be an object, got {raw!r}.")
        features = raw.get("features", {})
        mean, sd = [], []
        for name in FEATURES:
            entry = features.get(name) if isinstance(features, dict) else None
            if not (
                isinstance(entry, dict) and all(is_number(entry.get(k)) for k in ("mean", "sd")) and entry["sd"] > 0
            ):
                raise ValueError(
                    f"{source}: field 'appearance.features.{name}' must be "
                    f'{{"mean": number, "sd": positive number}}, got {entry!r}.'
                )
            mean.append(float(entry["mean"]))
            sd.append(float(entry["sd"]))
        return cls(tuple(mean), tuple(sd))

    def input_warning(self, array: np.ndarray) -> str | None:
        """A sentence when an RGB image (..., 3) is unlike the training images, else None."""
        if not self.mean:
            return None
        z = (image_features(array) - np.asarray(self.mean)) / np.asarray(self.sd)
        worst = int(np.argmax(np.abs(z)))
        if abs(z[worst]) <= Z_LIMIT:
            return None
        return (
            f"This image is unlike the model's training images: its {FEATURES[worst].replace('_', ' ')} is "
            f"{abs(z[worst]):.1f} standard deviations from theirs. Check that it is the kind of image the "
            "model was trained on (see 'models info'); its labels may be meaningless."
        )
