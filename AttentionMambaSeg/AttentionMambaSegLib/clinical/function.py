"""Ventricular function from short-axis cine labelmaps: volumes, stroke volume, ejection fraction, mass.

Pure functions from labelmaps and voxel spacing to the numbers a cardiologist reports, with the
definitions of the ACDC challenge (Bernard et al., "Deep Learning Techniques for Automatic MRI Cardiac
Multi-Structures Segmentation and Diagnosis: Is the Problem Solved?", IEEE TMI 37(11), 2018,
doi:10.1109/TMI.2018.2837502, Sec. II-C and IV-C):

* a volume is the number of voxels of a structure times the volume of one voxel (slice thickness
  included, no interpolation between slices), in mL (1 mL = 1000 mm^3);
* end-diastole (ED) and end-systole (ES) are the frames of largest and smallest left-ventricular (LV)
  cavity volume (the challenge gives them; here they are found, unless named);
* EDV / ESV: the cavity volume at ED / ES; stroke volume SV = EDV - ESV (mL); ejection fraction
  EF = 100 * SV / EDV (%), for the LV and the right ventricle (RV) alike;
* LV myocardial mass = 1.05 g/mL (density of myocardium) * myocardial volume at ED (g).

Indexed values divide by the body surface area from Mosteller's formula, BSA = sqrt(height_cm *
weight_kg / 3600) m^2 (Mosteller, "Simplified calculation of body-surface area", N Engl J Med
317(17):1098, 1987).

Nothing here runs a network: :mod:`.analysis` segments the frames and calls these functions, and a
labelmap edited by hand gives its numbers through the same calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "EF_PLAUSIBLE_PERCENT",
    "CardiacLabels",
    "FrameVolumes",
    "VentricularFunction",
    "body_surface_area_m2",
    "choose_ed_es",
    "ejection_fraction_percent",
    "format_function_table",
    "frame_volumes",
    "plausibility_warnings",
    "stack_coverage_warnings",
    "ventricular_function",
]

#: Density of myocardium used for the mass (ACDC; Bernard et al. 2018), g/mL.
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
#: An EF outside this range (percent) is reported as implausible.
EF_PLAUSIBLE_PERCENT = (5.0, 85.0)

# SNOMED CT codes (category Anatomical Structure) that identify the three structures in a model's classes.
_RIGHT_VENTRICLE = "53085002"
_LEFT_VENTRICLE = "87878005"
_MYOCARDIUM = "74281007"


@dataclass(frozen=True)
class CardiacLabels:
    """Label values of the RV cavity, the LV myocardium and the LV cavity in a model's labelmaps.

    Example:
        >>> labels = CardiacLabels.from_classes(package.card.foreground_classes)
        >>> labels.lv
        3
    """

    rv: int
    myo: int
    lv: int

    @classmethod
    def from_classes(cls, classes, model_name: str = "the model") -> CardiacLabels:
        """Find the three structures among a model's classes.

        A class is recognised by its SNOMED CT type (Right ventricle 53085002; Myocardium 74281007;
        Left ventricle 87878005 without an anatomic region), else by its dataset label (RV, MYO, LV).

        Args:
            classes: :class:`~AttentionMambaSegLib.terminology.ClassEntry` objects or model.json class dicts.
            model_name: the model's name, for the error message.

        Raises:
            ValueError: a structure is missing or found twice (the model does not segment the heart's
                chambers; use a cardiac model such as cardiac-acdc).
        """
        from ..terminology import ClassEntry

        entries = [c if isinstance(c, ClassEntry) else ClassEntry.from_dict(c) for c in classes]
        found: dict[str, list[int]] = {"rv": [], "myo": [], "lv": []}
        for c in entries:
            if c.label_value == 0:
                continue
            kind = None
            if c.type is not None:
                code = c.type.value
                kind = (
                    "rv"
                    if code == _RIGHT_VENTRICLE
                    else "myo"
                    if code == _MYOCARDIUM
                    else "lv"
                    if code == _LEFT_VENTRICLE and c.region is None
                    else None
                )
            if kind is None and c.dataset_label:
                kind = {"RV": "rv", "MYO": "myo", "LV": "lv"}.get(c.dataset_label.upper())
            if kind is not None:
                found[kind].append(c.label_value)
        problems = [
            f"{k.upper()} {'not found' if not v else f'found {len(v)} times ({v})'}"
            for k, v in found.items()
            if len(v) != 1
        ]
        if problems:
            raise ValueError(
                f"Cardiac function needs a model that segments the RV cavity, the LV myocardium and the LV cavity; "
                f"in {model_name}: {', '.join(problems)} (classes: {[c.name for c in entries]}). "
                "Use a cardiac model such as cardiac-acdc (--model cardiac-acdc)."
            )
        return cls(found["rv"][0], found["myo"][0], found["lv"][0])


@dataclass(frozen=True)
class FrameVolumes:
    """Volumes of the three structures in one frame, mL."""

    lv_ml: float
    rv_ml: float
    myo_ml: float


def frame_volumes(labels: np.ndarray, spacing_mm: Sequence[float], structures: CardiacLabels) -> FrameVolumes:
    """Volumes of the LV cavity, RV cavity and LV myocardium in one labelmap.

    Args:
        labels: integer labelmap of one frame, any shape (e.g. (S, H, W) from ``sitk.GetArrayFromImage``).
        spacing_mm: voxel size in mm along each axis (any order: only the product is used); for a
            SimpleITK image ``image.GetSpacing()``.
        structures: label values of the structures.

    Returns:
        :class:`FrameVolumes`: voxel count * voxel volume / 1000, in mL.

    Raises:
        ValueError: a non-positive or non-finite spacing.
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.size == 0 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"Voxel spacing must be positive millimetres, got {list(spacing_mm)}.")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False), minlength=256)
    return FrameVolumes(
        float(counts[structures.lv]) * voxel_ml,
        float(counts[structures.rv]) * voxel_ml,
        float(counts[structures.myo]) * voxel_ml,
    )


def choose_ed_es(lv_volumes_ml: Sequence[float], ed: int | None = None, es: int | None = None) -> tuple[int, int]:
    """ED and ES frames: the largest and smallest LV cavity volume, unless named.

    Args:
        lv_volumes_ml: LV cavity volume of each frame, in time order (frame i at index i).
        ed, es: 0-based frame indices to use instead of the volume rule.

    Returns:
        ``(ed, es)`` 0-based indices; ties go to the earliest frame.

    Raises:
        ValueError: no frames, or a named frame outside the cine.
    """
    n = len(lv_volumes_ml)
    if n == 0:
        raise ValueError("No frames to choose end-diastole and end-systole from.")
    for name, value in (("ED", ed), ("ES", es)):
        if value is not None and not 0 <= value < n:
            raise ValueError(f"The {name} frame {value + 1} is outside the cine (frames 1..{n}).")
    volumes = np.asarray(lv_volumes_ml, dtype=np.float64)
    return (int(np.argmax(volumes)) if ed is None else int(ed)), (int(np.argmin(volumes)) if es is None else int(es))


def ejection_fraction_percent(edv_ml: float, esv_ml: float) -> float | None:
    """EF = 100 * (EDV - ESV) / EDV in percent; None when EDV is 0 (no ventricle found at ED)."""
    return None if edv_ml <= 0 else 100.0 * (edv_ml - esv_ml) / edv_ml


def body_surface_area_m2(height_cm: float, weight_kg: float) -> float:
    """Body surface area by Mosteller (1987): sqrt(height_cm * weight_kg / 3600), in m^2.

    Raises:
        ValueError: a height outside 30-272 cm or a weight outside 1-650 kg (a unit mix-up).
    """
    if not (isinstance(height_cm, (int, float)) and 30 <= height_cm <= 272):
        raise ValueError(f"Height must be in centimetres (30-272), got {height_cm!r}.")
    if not (isinstance(weight_kg, (int, float)) and 1 <= weight_kg <= 650):
        raise ValueError(f"Weight must be in kilograms (1-650), got {weight_kg!r}.")
    return math.sqrt(height_cm * weight_kg / 3600.0)


@dataclass(frozen=True)
class VentricularFunction:
    """The function figures of one cine (volumes mL, mass g, EF %, BSA m^2; frames numbered from 1).

    The ``*_per_m2`` fields (indexed to body surface area) are None unless height and weight were given;
    an EF is None when the ventricle was not found at ED.
    """

    ed_frame: int
    es_frame: int
    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_percent: float | None
    rv_edv_ml: float
    rv_esv_ml: float
    rv_sv_ml: float
    rv_ef_percent: float | None
    lv_myocardial_mass_g: float
    bsa_m2: float | None = None
    lv_edv_ml_per_m2: float | None = None
    lv_esv_ml_per_m2: float | None = None
    lv_sv_ml_per_m2: float | None = None
    rv_edv_ml_per_m2: float | None = None
    rv_esv_ml_per_m2: float | None = None
    rv_sv_ml_per_m2: float | None = None
    lv_myocardial_mass_g_per_m2: float | None = None

    def to_dict(self, decimals: int = 2) -> dict:
        """The fields as a JSON-ready dict, floats rounded to ``decimals``."""
        return {k: (round(v, decimals) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def ventricular_function(
    ed: FrameVolumes,
    es: FrameVolumes,
    ed_frame: int,
    es_frame: int,
    height_cm: float | None = None,
    weight_kg: float | None = None,
) -> VentricularFunction:
    """Volumes, stroke volumes, ejection fractions and LV mass from the ED and ES frames.

    Args:
        ed, es: :func:`frame_volumes` of the ED and ES labelmaps.
        ed_frame, es_frame: their frame numbers (counted from 1), stored as given.
        height_cm, weight_kg: for the values indexed to body surface area (both or neither).

    Returns:
        :class:`VentricularFunction`.

    Raises:
        ValueError: only one of height and weight, or implausible values (:func:`body_surface_area_m2`).
    """
    if (height_cm is None) != (weight_kg is None):
        raise ValueError("Indexed values need both the height (cm) and the weight (kg); give both or neither.")
    figures: dict[str, Any] = dict(
        ed_frame=int(ed_frame),
        es_frame=int(es_frame),
        lv_edv_ml=ed.lv_ml,
        lv_esv_ml=es.lv_ml,
        lv_sv_ml=ed.lv_ml - es.lv_ml,
        lv_ef_percent=ejection_fraction_percent(ed.lv_ml, es.lv_ml),
        rv_edv_ml=ed.rv_ml,
        rv_esv_ml=es.rv_ml,
        rv_sv_ml=ed.rv_ml - es.rv_ml,
        rv_ef_percent=ejection_fraction_percent(ed.rv_ml, es.rv_ml),
        lv_myocardial_mass_g=MYOCARDIAL_DENSITY_G_PER_ML * ed.myo_ml,
    )
    if height_cm is not None and weight_kg is not None:  # both or neither (checked above)
        bsa = body_surface_area_m2(height_cm, weight_kg)
        figures["bsa_m2"] = bsa
        for key in ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "lv_myocardial_mass_g"):
            figures[f"{key}_per_m2"] = figures[key] / bsa
    return VentricularFunction(**figures)


#: The apical end slice of a stack that covers the ventricle holds less LV cavity than this share of the
#: largest cross-section (ACDC's 80 manual ED labelmaps: at most 0.42; the basal end often holds 0.9-1.0).
APICAL_END_SHARE = 0.5


def stack_coverage_warnings(lv_mask: np.ndarray, slice_axis: int = 0) -> list[str]:
    """Say so when the short-axis stack does not cover the LV from base to apex.

    The basal end slice often holds a large cavity (ACDC labels the cavity up to the last slice
    surrounded by myocardium) and the apical end slice a small one: in ACDC's 80 manual ED labelmaps the
    end slice with the smaller cavity holds at most 42 % of the largest cross-section, and 67 of 80 hold
    some cavity there. A stack whose ends both hold at least ``APICAL_END_SHARE`` of the largest
    cross-section, or that has no cavity-free slice on either side of its largest one, is cut short:
    its volumes are then too small.

    Args:
        lv_mask: boolean (S, H, W) LV cavity mask of one frame (usually ED).
        slice_axis: the array axis along which the stack is cut (0 for (S, H, W)).

    Returns:
        Sentences (empty when the stack covers the cavity, or the cavity is absent).
    """
    mask = np.moveaxis(np.asarray(lv_mask, dtype=bool), slice_axis, 0)
    area = mask.reshape(mask.shape[0], -1).sum(axis=1)
    if area.max(initial=0) == 0 or mask.shape[0] < 2:
        return []
    shares = area[[0, -1]] / area.max()
    apical = int(np.argmin(shares))
    if shares[apical] < APICAL_END_SHARE:
        return []
    index = 0 if apical == 0 else mask.shape[0] - 1
    return [
        f"The LV cavity fills both end slices of the stack: {100.0 * shares[0]:.0f} % and {100.0 * shares[1]:.0f} % "
        f"of its largest cross-section in slices 1 and {mask.shape[0]} (the apical end, slice {index + 1}, "
        f"should hold under {100 * APICAL_END_SHARE:.0f} %): the stack does not cover the ventricle from base "
        "to apex, and its volumes are then too small."
    ]


def plausibility_warnings(function: VentricularFunction, lv_volumes_ml: Sequence[float]) -> list[str]:
    """Warnings about figures a reader should not trust without a look.

    Args:
        function: the figures (:func:`ventricular_function`).
        lv_volumes_ml: LV cavity volume of every frame (mL), frame 1 first.

    Returns:
        Sentences: frames without LV cavity, ED and ES the same frame, an LV or RV EF outside
        :data:`EF_PLAUSIBLE_PERCENT`.
    """
    out = []
    missing = [i + 1 for i, v in enumerate(lv_volumes_ml) if v <= 0]
    if missing:
        out.append(
            f"No LV cavity was found in frame(s) {', '.join(map(str, missing))}: check those frames "
            "(outside the heart, or an image the model cannot read)."
        )
    if function.ed_frame == function.es_frame:
        out.append(
            f"ED and ES are the same frame ({function.ed_frame}): the figures describe no contraction; "
            "check the cine (one phase only?) or name the frames with --ed and --es."
        )
    lo, hi = EF_PLAUSIBLE_PERCENT
    for side, ef in (("LV", function.lv_ef_percent), ("RV", function.rv_ef_percent)):
        if ef is None:
            out.append(f"The {side} EF cannot be computed: no {side} cavity at ED.")
        elif not lo <= ef <= hi:
            out.append(
                f"The {side} EF of {ef:.1f} % is outside {lo:g}-{hi:g} %: check the segmentation of the ED "
                "and ES frames."
            )
    return out


def format_function_table(function: VentricularFunction) -> str:
    """A plain-text table of the figures (the ``cardiac`` command prints it)."""

    def num(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    indexed = function.bsa_m2 is not None
    rows = [("", "LV", "RV") + (("LV /m2", "RV /m2") if indexed else ())]

    def row(name, lv_key, rv_key, unit):
        lv, rv = getattr(function, lv_key), getattr(function, rv_key) if rv_key else None
        cells = (f"{name} ({unit})", num(lv), num(rv))
        if indexed and unit != "%":
            cells += (
                num(getattr(function, f"{lv_key}_per_m2")),
                num(getattr(function, f"{rv_key}_per_m2")) if rv_key else "-",
            )
        elif indexed:
            cells += ("-", "-")
        rows.append(cells)

    row("EDV", "lv_edv_ml", "rv_edv_ml", "mL")
    row("ESV", "lv_esv_ml", "rv_esv_ml", "mL")
    row("SV", "lv_sv_ml", "rv_sv_ml", "mL")
    row("EF", "lv_ef_percent", "rv_ef_percent", "%")
    row("Myocardial mass", "lv_myocardial_mass_g", None, "g")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    footer = f"ED frame {function.ed_frame}, ES frame {function.es_frame}"
    if indexed:
        footer += f", BSA {function.bsa_m2:.2f} m2 (Mosteller)"
    return "\n".join(lines + [footer])
