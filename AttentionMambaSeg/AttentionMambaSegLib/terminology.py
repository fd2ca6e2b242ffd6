"""Classes of a model and their DICOM / SNOMED CT terminology: the one owner of the class schema.

A model's ``classes`` (model.json) are read and validated here, and every writer takes its names,
colours and codes from the :class:`ClassEntry` objects made here: the MRML writer
(:mod:`AttentionMambaSegLib.mrml`), the ``.seg.nrrd`` writer (:mod:`AttentionMambaSegLib.writers`) and the
model card written by training.

One class entry in model.json::

    {"label_value": 2, "name": "posterior hippocampus", "color": [144, 238, 144],
     "dataset_label": "posterior",                       # optional: the dataset.json label name
     "snomed": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
                "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"},
                "type_modifier": {...}, "region": {...}, "region_modifier": {...}}}   # optional

Codes are SNOMED CT concepts. Slicer's own terminology lists lack some of those the bundled models
need (Myocardium, Lesion, the Anterior / Posterior modifiers of Hippocampus, the region Skin), so the
extension ships two terminology context files in ``Resources/Terminology/`` (the category/type list
:data:`TERMINOLOGY_CONTEXT` and the anatomic region list :data:`ANATOMIC_CONTEXT`) and the Slicer
module registers them at start-up; they hold every code and the recommended colour of every class of
the bundled models. Two classes of one model must differ in their
codes (else exporting a segmentation to a labelmap in Slicer merges them) and in colour (CIE76 colour
difference of at least :data:`MIN_COLOR_DISTANCE`, so neighbouring structures can be told apart).

Older model.json files spell two keys differently; both are read: ``modifier`` for ``type_modifier``
and ``anatomic_region`` for ``region``.

The terminology entry string that Slicer stores in a segment's ``TerminologyEntry`` tag
(and slicerio in ``.seg.nrrd`` files) is documented in Slicer's developer guide
("Segmentations > TerminologyEntry tag")::

    context~category~type~typeModifier~regionContext~region~regionModifier

with each code written as ``scheme^code^meaning`` (empty fields as ``^^``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "ANATOMIC_CONTEXT",
    "ANATOMIC_FILE",
    "TERMINOLOGY_FILE",
    "terminology_folder",
    "MIN_COLOR_DISTANCE",
    "TERMINOLOGY_CONTEXT",
    "ClassEntry",
    "Code",
    "check_distinct",
    "color_distance",
    "read_classes",
    "srgb_to_lab",
]

#: Context names of the terminology files in ``Resources/Terminology/`` (written into every segment).
TERMINOLOGY_CONTEXT = "Segmentation category and type - AttentionMambaSeg"
ANATOMIC_CONTEXT = "Anatomic codes - AttentionMambaSeg"
TERMINOLOGY_FILE = "SegmentationCategoryTypeModifier-AttentionMambaSeg.term.json"
ANATOMIC_FILE = "AnatomicRegionAndModifier-AttentionMambaSeg.term.json"
#: Smallest CIE76 colour difference (Delta E in CIELAB) allowed between two classes of one model
#: (Slicer's recommended right / left ventricle colours differ by 14.5 and read as one brown).
MIN_COLOR_DISTANCE = 25.0

_CODE_FIELDS = ("category", "type", "type_modifier", "region", "region_modifier")
_LEGACY_KEYS = {"modifier": "type_modifier", "anatomic_region": "region"}


def terminology_folder():
    """``AttentionMambaSeg/Resources/Terminology``: the context files the Slicer module registers."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "Resources" / "Terminology"


@dataclasses.dataclass(frozen=True)
class Code:
    """One coded concept: coding scheme designator (``"SCT"`` = SNOMED CT), code value, code meaning."""

    scheme: str
    value: str
    meaning: str

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Code:
        """Read ``{"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"}``.

        Raises:
            ValueError: naming ``where`` when the entry is not such an object.
        """
        if not isinstance(data, dict) or not isinstance(data.get("code"), (str, int)) or not str(data["code"]):
            raise ValueError(f"{where} must be an object with 'code' (and 'scheme', 'meaning'), got {data!r}.")
        scheme, meaning = data.get("scheme", "SCT"), data.get("meaning", "")
        if not isinstance(scheme, str) or not scheme or not isinstance(meaning, str):
            raise ValueError(f"{where}: 'scheme' must be a non-empty string and 'meaning' a string, got {data!r}.")
        for text in (scheme, str(data["code"]), meaning):
            if not text.isprintable():
                raise ValueError(f"{where}: codes must be printable text (no line breaks), got {text!r}.")
            if any(ch in text for ch in "~^|"):
                raise ValueError(f"{where}: the characters '~', '^' and '|' cannot be stored in a code, got {text!r}.")
        return cls(scheme, str(data["code"]), meaning)

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "code": self.value, "meaning": self.meaning}

    def triple(self) -> list[str]:
        """``[scheme, code, meaning]`` (slicerio's form)."""
        return [self.scheme, self.value, self.meaning]


@dataclasses.dataclass(frozen=True)
class ClassEntry:
    """One foreground class of a model: label value, display name, colour and terminology.

    Attributes:
        label_value: the value in the labelmap (network output channel for softmax models).
        name: segment name shown in Slicer.
        color: (r, g, b) integers 0..255.
        category, type: Slicer's "Segmentation category and type" codes (None: not coded).
        type_modifier: e.g. Anterior / Posterior, Left / Right.
        region, region_modifier: anatomic region (e.g. Left ventricle for the myocardium) and its modifier.
        dataset_label: the label's name in the training dataset's dataset.json.
    """

    label_value: int
    name: str
    color: tuple[int, int, int]
    category: Code | None = None
    type: Code | None = None
    type_modifier: Code | None = None
    region: Code | None = None
    region_modifier: Code | None = None
    dataset_label: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "class") -> ClassEntry:
        """Read and validate one model.json class entry (both accepted key spellings read).

        Raises:
            ValueError: naming the field (``where`` + key) that is missing or invalid.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object, got {data!r}.")
        value = data.get("label_value")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise ValueError(f"{where}.label_value must be an integer 0..255, got {value!r}.")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            raise ValueError(
                f"{where}.name must be a non-empty string of printable characters (no line breaks "
                f"or control characters), got {name!r}."
            )
        color = data.get("color")
        if (
            not isinstance(color, (list, tuple))
            or len(color) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
        ):
            raise ValueError(f"{where}.color must be [r, g, b] integers 0..255, got {color!r}.")
        dataset_label = data.get("dataset_label")
        if dataset_label is not None and not isinstance(dataset_label, str):
            raise ValueError(f"{where}.dataset_label must be a string, got {dataset_label!r}.")
        codes = read_codes(data.get("snomed"), f"{where}.snomed")
        return cls(
            int(value), name, (int(color[0]), int(color[1]), int(color[2])), dataset_label=dataset_label, **codes
        )

    def to_dict(self) -> dict:
        """The model.json form (canonical key names)."""
        out: dict[str, Any] = {"label_value": self.label_value, "name": self.name}
        if self.dataset_label is not None:
            out["dataset_label"] = self.dataset_label
        out["color"] = list(self.color)
        snomed = {f: getattr(self, f).to_dict() for f in _CODE_FIELDS if getattr(self, f) is not None}
        if snomed:
            out["snomed"] = snomed
        return out

    @property
    def coded(self) -> bool:
        """True when category and type are given (a terminology entry can be written)."""
        return self.category is not None and self.type is not None

    def identity(self) -> tuple:
        """The codes that tell this class apart from another in Slicer's terminology."""
        return tuple(getattr(self, f) for f in _CODE_FIELDS)

    def color_float(self) -> tuple[float, float, float]:
        """Colour as (r, g, b) floats 0..1 (VTK, Slicer)."""
        return tuple(c / 255.0 for c in self.color)  # type: ignore[return-value]

    def slicerio_terminology(self) -> dict | None:
        """The segment's ``terminology`` dict as slicerio writes it into ``.seg.nrrd``; None if not coded."""
        category, type_ = self.category, self.type
        if category is None or type_ is None:  # not coded
            return None
        term = {"contextName": TERMINOLOGY_CONTEXT, "category": category.triple(), "type": type_.triple()}
        if self.type_modifier is not None:
            term["typeModifier"] = self.type_modifier.triple()
        if self.region is not None:
            term["anatomicContextName"] = ANATOMIC_CONTEXT
            term["anatomicRegion"] = self.region.triple()
            if self.region_modifier is not None:
                term["anatomicRegionModifier"] = self.region_modifier.triple()
        return term

    def terminology_string(self) -> str:
        """Slicer's TerminologyEntry tag string (see the module docstring); ``""`` if not coded."""
        if not self.coded:
            return ""

        def code(c: Code | None) -> str:
            return "^".join(c.triple()) if c is not None else "^^"

        region_context = ANATOMIC_CONTEXT if self.region is not None else ""
        return "~".join(
            [
                TERMINOLOGY_CONTEXT,
                code(self.category),
                code(self.type),
                code(self.type_modifier),
                region_context,
                code(self.region),
                code(self.region_modifier),
            ]
        )


def read_codes(snomed: Any, where: str) -> dict[str, Code | None]:
    """The five code fields of a ``snomed`` block (missing ones None; both accepted key spellings read).

    Raises:
        ValueError: an unknown key, a key given under both spellings, or a malformed code.
    """
    codes: dict[str, Code | None] = dict.fromkeys(_CODE_FIELDS)
    if snomed is None:
        return codes
    if not isinstance(snomed, dict):
        raise ValueError(f"{where} must be an object with 'category' and 'type' codes, got {snomed!r}.")
    for key, data in snomed.items():
        field = _LEGACY_KEYS.get(key, key)
        if field not in codes:
            raise ValueError(f"{where}: unknown key {key!r}; expected {', '.join(_CODE_FIELDS)}.")
        if codes[field] is not None:
            raise ValueError(f"{where}: {field!r} is given twice ({key!r} is an older name for it).")
        codes[field] = Code.from_dict(data, f"{where}.{key}")
    if (codes["category"] is None) != (codes["type"] is None):
        raise ValueError(f"{where}: 'category' and 'type' must be given together.")
    if codes["category"] is None and any(codes[f] is not None for f in _CODE_FIELDS[2:]):
        raise ValueError(f"{where}: modifiers and regions need 'category' and 'type'.")
    if codes["region"] is None and codes["region_modifier"] is not None:
        raise ValueError(f"{where}: 'region_modifier' needs 'region'.")
    return codes


def srgb_to_lab(color: Sequence[int]) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB colour 0..255 (IEC 61966-2-1 transfer curve, CIE 1976 L*a*b*).

    Args:
        color: ``[r, g, b]``, each 0..255.

    Returns:
        ``(L*, a*, b*)``: L* 0..100; a* and b* signed, within -128..127 for sRGB colours.
    """

    def linear(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in color)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1.0 / 3.0) if t > (6.0 / 29.0) ** 3 else t / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0

    fx, fy, fz = f(x), f(y), f(z)
    return 116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)


def color_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """CIE76 colour difference (Delta E*ab) of two sRGB colours 0..255; about 2.3 is just noticeable."""
    return math.dist(srgb_to_lab(a), srgb_to_lab(b))


def check_distinct(
    classes: Iterable[ClassEntry], where: str = "classes", min_color_distance: float = MIN_COLOR_DISTANCE
) -> None:
    """Refuse two classes with the same label value, the same codes, or colours that read as one.

    Raises:
        ValueError: naming both classes and what they share.
    """
    entries = list(classes)
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            pair = f"{where}: '{a.name}' (label {a.label_value}) and '{b.name}' (label {b.label_value})"
            if a.label_value == b.label_value:
                raise ValueError(f"{pair} have the same label value.")
            if a.coded and a.identity() == b.identity():
                raise ValueError(
                    f"{pair} have identical terminology codes, so Slicer cannot tell them apart (exporting "
                    "to a labelmap would merge them): give one a 'type_modifier' or a 'region'."
                )
            distance = color_distance(a.color, b.color)
            if distance < min_color_distance:
                raise ValueError(
                    f"{pair} have colours {list(a.color)} and {list(b.color)} that differ by only "
                    f"{distance:.1f} (CIE76 Delta E; at least {min_color_distance:g} is needed): choose "
                    "colours that tell neighbouring structures apart."
                )


def read_classes(data: Any, where: str = "classes") -> list[ClassEntry]:
    """Read a model.json ``classes`` list (background entries with label value 0 included, as given).

    Raises:
        ValueError: the list is empty, an entry is invalid, or two foreground classes are not distinct
            (see :func:`check_distinct`).
    """
    if not isinstance(data, list) or not data:
        raise ValueError(f"{where} must be a non-empty list of {{label_value, name, color, snomed}}, got {data!r}.")
    entries = [ClassEntry.from_dict(item, f"{where}[{i}]") for i, item in enumerate(data)]
    check_distinct([e for e in entries if e.label_value != 0], where)
    return entries
