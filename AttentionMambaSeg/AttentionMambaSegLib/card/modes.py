"""Speed modes: how many network passes a slice gets, per model, chosen from validation measurements.

model.json ``inference`` names two modes, ``fast`` and ``accurate``; each is a :class:`PassPlan`:

- ``window``: ``"sliding"`` (overlapping windows of ``inference_patch_size`` with Gaussian blending) or
  ``"slice"`` (one window: the whole slice zero-padded to a multiple of 32; the Mamba scans then see
  the whole slice). A slice larger than ``largest_slice`` (the largest padded slice the model was
  validated at) is segmented with sliding windows whatever the mode says.
- ``flips``: 1 (none), 2 (none, left-right) or 4 (none, left-right, up-down, both): test-time
  augmentation, one pass each.
- ``foreground_crop``: for stacks of 3 or more slices, a first pass on the central slice finds the
  foreground; every slice is then segmented inside that box plus ``crop_margin_mm``; a slice whose
  labels touch the box is segmented again whole.

``cpu_mode`` is the mode used on a CPU when none is asked for (``fast`` where its validation Dice is
within :data:`FAST_DEFAULT_TOLERANCE` of ``accurate``); a GPU uses ``accurate``. The measured Dice and
time of each choice are in model.json ``inference.measurements`` and ``docs/INFERENCE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .numbers import is_number

__all__ = ["MODES", "PassPlan", "SpeedModes", "FAST_DEFAULT_TOLERANCE", "FLIPS"]

MODES = ("fast", "accurate")
#: Flip axes of a (B, C, H, W) tensor per number of flips.
FLIPS: dict[int, list[tuple[int, ...]]] = {1: [()], 2: [(), (3,)], 4: [(), (3,), (2,), (2, 3)]}
#: ``fast`` is the CPU default when its validation Dice is at most this far below ``accurate``.
FAST_DEFAULT_TOLERANCE = 0.01
WINDOWS = ("sliding", "slice")


@dataclass(frozen=True)
class PassPlan:
    """The passes one slice gets (see the module docstring)."""

    window: str = "sliding"
    flips: int = 4
    foreground_crop: bool = False
    crop_margin_mm: float = 24.0

    def describe(self) -> str:
        """One line, for logs and ``models info``."""
        window = "one window per slice" if self.window == "slice" else "sliding windows"
        flips = {1: "no flips", 2: "2 flips", 4: "4 flips"}[self.flips]
        crop = f", cropped to the foreground (+{self.crop_margin_mm:g} mm)" if self.foreground_crop else ""
        return f"{window}, {flips}{crop}"


_DEFAULTS = {"fast": PassPlan(flips=1), "accurate": PassPlan(flips=4)}


@dataclass(frozen=True)
class SpeedModes:
    """model.json ``inference``, read and checked."""

    fast: PassPlan = _DEFAULTS["fast"]
    accurate: PassPlan = _DEFAULTS["accurate"]
    cpu_mode: str = "accurate"
    largest_slice: tuple[int, int] | None = None

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "model.json") -> SpeedModes:
        """Raises ValueError naming ``source`` and the field."""
        if not raw:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: field 'inference' must be an object, got {raw!r}.")
        modes = raw.get("modes") or {}
        if not isinstance(modes, dict):
            raise ValueError(
                f"{source}: field 'inference.modes' must be an object with 'fast' and 'accurate', got {modes!r}."
            )
        plans = {}
        for name in MODES:
            entry = modes.get(name)
            plans[name] = _DEFAULTS[name] if entry is None else _read_plan(entry, source, f"inference.modes.{name}")
        cpu_mode = raw.get("cpu_mode", "accurate")
        if cpu_mode not in MODES:
            raise ValueError(f"{source}: field 'inference.cpu_mode' must be one of {MODES}, got {cpu_mode!r}.")
        largest = raw.get("largest_slice")
        if largest is not None and not (
            isinstance(largest, list)
            and len(largest) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 32 and v % 32 == 0 for v in largest)
        ):
            raise ValueError(
                f"{source}: field 'inference.largest_slice' must be [H, W] pixels, multiples of 32, got {largest!r}."
            )
        return cls(plans["fast"], plans["accurate"], cpu_mode, tuple(largest) if largest else None)

    def plan(self, mode: str) -> PassPlan:
        if mode not in MODES:
            raise ValueError(f"Unknown speed mode {mode!r}: use one of {', '.join(MODES)}.")
        return self.fast if mode == "fast" else self.accurate

    def default_mode(self, device_type: str) -> str:
        """``cpu_mode`` on a CPU, ``accurate`` on a GPU."""
        return self.cpu_mode if device_type == "cpu" else "accurate"

    def resolve(self, mode: str | None, device_type: str, tta: bool | None = None, window=None) -> tuple[str, PassPlan]:
        """The mode name and plan for a run: ``mode`` (default :meth:`default_mode`), then the
        overrides ``tta`` (False: no flips; True: 4 flips) and ``window`` (a size: sliding windows)."""
        name = self.default_mode(device_type) if mode is None else mode
        plan = self.plan(name)
        if tta is not None:
            plan = replace(plan, flips=4 if tta else 1)
        if window is not None:
            plan = replace(plan, window="sliding")
        return name, plan


def _read_plan(entry, source: str, field: str) -> PassPlan:
    def fail(key: str, expected: str, got) -> ValueError:
        return ValueError(f"{source}: field '{field}{'.' + key if key else ''}' must be {expected}, got {got!r}.")

    if not isinstance(entry, dict):
        raise fail("", "an object", entry)
    unknown = set(entry) - {"window", "flips", "foreground_crop", "crop_margin_mm", "measured"}
    if unknown:
        raise fail("", f"an object without the unknown keys {sorted(unknown)}", entry)
    window, flips = entry.get("window", "sliding"), entry.get("flips", 4)
    crop, margin = entry.get("foreground_crop", False), entry.get("crop_margin_mm", 24.0)
    if window not in WINDOWS:
        raise fail("window", f"one of {WINDOWS}", window)
    if not isinstance(flips, int) or isinstance(flips, bool) or flips not in FLIPS:
        raise fail("flips", "1, 2 or 4", flips)
    measured = entry.get("measured", {})
    if (
        not isinstance(measured, dict)
        or measured
        and not all(is_number(measured.get(k)) for k in ("mean_dice", "seconds_per_case"))
    ):
        raise fail("measured", '{"mean_dice": number, "seconds_per_case": number}', measured)
    if not isinstance(crop, bool):
        raise fail("foreground_crop", "true or false", crop)
    if not is_number(margin) or not 0 <= margin <= 500:
        raise fail("crop_margin_mm", "a number of millimetres (0-500)", margin)
    return PassPlan(window, int(flips), crop, float(margin))
