"""The model card: what model.json holds, read and checked in one place.

:class:`ModelCard` is model.json as typed fields (:mod:`.model_card`); its parts have their own types:
the speed modes (:class:`SpeedModes`, :mod:`.modes`), the review threshold (:class:`ConfidenceRule`,
:mod:`.confidence_rule`), the training images' appearance (:class:`Appearance`, :mod:`.appearance`) and
geometry (:class:`TrainingGeometry`, :mod:`.training_geometry`). :mod:`.numbers` holds the value checks
they share. Nothing here needs torch.
"""

from .appearance import Appearance
from .confidence_rule import ConfidenceRule
from .model_card import ID_PATTERN, NORMALIZATION_TYPES, SLICE_AXIS_RULES, SLICING, ModelCard
from .modes import FAST_DEFAULT_TOLERANCE, FLIPS, MODES, PassPlan, SpeedModes
from .numbers import is_int, is_number, is_patch_size
from .training_geometry import TrainingGeometry

__all__ = [
    "Appearance",
    "ConfidenceRule",
    "FAST_DEFAULT_TOLERANCE",
    "FLIPS",
    "ID_PATTERN",
    "MODES",
    "ModelCard",
    "NORMALIZATION_TYPES",
    "PassPlan",
    "SLICE_AXIS_RULES",
    "SLICING",
    "SpeedModes",
    "TrainingGeometry",
    "is_int",
    "is_number",
    "is_patch_size",
]
