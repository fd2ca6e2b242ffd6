"""model.json ``training_geometry``: the voxel spacing and field of view of the training images.

Inputs far outside them (much coarser slices or pixels, a much wider field of view) are warned about
before a run (:func:`AttentionMambaSegLib.inference.checks.input_range_warnings`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .numbers import is_number

__all__ = ["TrainingGeometry"]


@dataclass(frozen=True)
class TrainingGeometry:
    """model.json ``training_geometry``: the voxel spacing and field of view of the training images.

    Attributes:
        in_plane_spacing_mm: median in-plane spacing of the training images (mm), or None.
        slice_spacing_mm: median spacing between their slices (mm; the axis the model slices along), or
            None (2D images).
        field_of_view_mm: the largest extent of the training images along each axis (mm), 2 or 3
            numbers, or None.
    """

    in_plane_spacing_mm: float | None = None
    slice_spacing_mm: float | None = None
    field_of_view_mm: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "model.json") -> TrainingGeometry:
        """Raises ValueError naming ``source`` and the field."""
        if not raw:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: field 'training_geometry' must be an object, got {raw!r}.")
        unknown = set(raw) - {"in_plane_spacing_mm", "slice_spacing_mm", "field_of_view_mm", "measured_on"}
        if unknown:
            raise ValueError(
                f"{source}: field 'training_geometry' has unknown keys {sorted(unknown)}; expected "
                "in_plane_spacing_mm, slice_spacing_mm, field_of_view_mm, measured_on."
            )

        for key in ("in_plane_spacing_mm", "slice_spacing_mm"):
            if raw.get(key) is not None and not _positive(raw[key]):
                raise ValueError(
                    f"{source}: field 'training_geometry.{key}' must be a positive number of "
                    f"millimetres, got {raw[key]!r}."
                )
        fov = raw.get("field_of_view_mm")
        if fov is not None and not (isinstance(fov, list) and len(fov) in (2, 3) and all(_positive(v) for v in fov)):
            raise ValueError(
                f"{source}: field 'training_geometry.field_of_view_mm' must be 2 or 3 positive numbers "
                f"(mm), got {fov!r}."
            )
        note = raw.get("measured_on")
        if note is not None and not isinstance(note, str):
            raise ValueError(f"{source}: field 'training_geometry.measured_on' must be text, got {note!r}.")
        return cls(
            None if raw.get("in_plane_spacing_mm") is None else float(raw["in_plane_spacing_mm"]),
            None if raw.get("slice_spacing_mm") is None else float(raw["slice_spacing_mm"]),
            None if fov is None else tuple(float(v) for v in fov),
        )


def _positive(value) -> bool:
    return is_number(value) and value > 0
