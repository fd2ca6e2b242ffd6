"""Results a clinician reports: ventricular function from a cardiac cine.

:mod:`.function` holds the pure computations (labelmaps + spacing -> EDV, ESV, SV, EF, LV mass, BSA
indexing; ACDC definitions, Bernard et al., IEEE TMI 2018), :mod:`.cine` reads a cine as 3D frames,
:mod:`.analysis` segments the frames with a :class:`~AttentionMambaSegLib.inference.Predictor` and
writes the results, :mod:`.plot` draws the volume-time curve. Importing this package is cheap (no torch).
"""

from .analysis import (
    CardiacAnalysis,
    analyse_cine,
    check_cardiac_outputs,
    function_from_labelmaps,
    write_cardiac_outputs,
)
from .cine import Cine, read_cine, read_dicom_cine, split_frames
from .function import (
    CardiacLabels,
    FrameVolumes,
    VentricularFunction,
    body_surface_area_m2,
    choose_ed_es,
    ejection_fraction_percent,
    format_function_table,
    frame_volumes,
    plausibility_warnings,
    stack_coverage_warnings,
    ventricular_function,
)
from .plot import write_volume_curve

__all__ = [
    "CardiacAnalysis",
    "CardiacLabels",
    "Cine",
    "FrameVolumes",
    "VentricularFunction",
    "analyse_cine",
    "body_surface_area_m2",
    "check_cardiac_outputs",
    "choose_ed_es",
    "ejection_fraction_percent",
    "format_function_table",
    "frame_volumes",
    "function_from_labelmaps",
    "plausibility_warnings",
    "read_cine",
    "read_dicom_cine",
    "split_frames",
    "stack_coverage_warnings",
    "ventricular_function",
    "write_cardiac_outputs",
    "write_volume_curve",
]
