"""What the module registers with Slicer when Slicer has started: its terminology and its sample data.

- :func:`register_terminology` loads the extension's terminology context files (the codes Slicer's own lists
  lack) into the Terminologies module, once;
- :func:`register_sample_data` adds the bundled sample (a hippocampus MRI crop of MSD Task04, CC BY-SA 4.0)
  to the Sample Data module.

Both do nothing where the module they register with is absent (headless, or disabled).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "SAMPLE_CATEGORY",
    "SAMPLE_FILE",
    "SAMPLE_NAME",
    "loaded_region_contexts",
    "register_sample_data",
    "register_terminology",
]

#: The Sample Data module's entry for the bundled sample.
SAMPLE_CATEGORY = "AttentionMambaSeg"
SAMPLE_NAME = "AttentionMambaSegHippocampus"
SAMPLE_FILE = "hippocampus_sample.nrrd"


def register_terminology() -> None:
    """Load the extension's terminology context files (codes Slicer's own lists lack) into Slicer."""
    import slicer

    modules = getattr(slicer, "modules", None)
    terminologies = getattr(modules, "terminologies", None) if modules is not None else None
    if terminologies is None:
        return  # headless, or the Terminologies module is disabled
    from .. import terminology

    logic = terminologies.logic()
    folder = terminology.terminology_folder()
    if not logic.IsTerminologyContextLoaded(terminology.TERMINOLOGY_CONTEXT):
        logic.LoadTerminologyFromFile(str(folder / terminology.TERMINOLOGY_FILE))
    if terminology.ANATOMIC_CONTEXT not in loaded_region_contexts(logic):
        logic.LoadRegionContextFromFile(str(folder / terminology.ANATOMIC_FILE))


def loaded_region_contexts(logic) -> list[str]:
    """The names of the anatomic region contexts a terminology logic has loaded."""
    import vtk

    names = vtk.vtkStringArray()
    logic.GetLoadedRegionContextNames(names)
    return [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def register_sample_data(resources: str | Path) -> None:
    """Register the bundled sample with the Sample Data module (``SampleDataLogic.registerCustomSampleDataSource``).

    The sample ships with the extension, so its URI is a ``file:`` URI: Sample Data copies it into its cache and
    loads it like a download.

    Args:
        resources: the module's ``Resources`` folder (``Samples/`` and ``Icons/`` below it).
    """
    try:
        import SampleData
    except ImportError:
        return  # headless, or the Sample Data module is disabled

    resources = Path(resources).resolve()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_NAME,
        uris=(resources / "Samples" / SAMPLE_FILE).as_uri(),
        fileNames=SAMPLE_FILE,
        nodeNames="HippocampusSample",
        thumbnailFileName=str(resources / "Icons" / "AttentionMambaSeg.png"),
        loadFileTypes="VolumeFile",
    )
