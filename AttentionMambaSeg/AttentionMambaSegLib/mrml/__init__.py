"""MRML adapter: Slicer volume node -> prediction -> segmentation node.

The ``mrml`` package is, with :mod:`AttentionMambaSegLib.slicer`, the only part of ``AttentionMambaSegLib``
that imports ``slicer``, ``vtk`` or MRML classes. Every function takes its nodes (and through them the
scene) as arguments and never uses ``slicer.mrmlScene``, ``slicer.app`` or ``slicer.modules``, so it runs
both inside the Slicer application and headless with the ``slicer-core`` wheel.

Parts:

- :mod:`.volumes`: volume node <-> SimpleITK image (RAS/LPS, IJK order) and the input checks;
- :mod:`.segments`: a labelmap written into a segmentation node (names, colours, terminology, edit
  protection, review tags) and exported back to a labelmap node;
- :mod:`.prediction`: the in-process run (:func:`segment_volume_node`, for the Python console and tests);
- :mod:`.cardiac` and :mod:`.cardiac_tables`: a cine in; a segmentation sequence, a function table and a
  curve out;
- :mod:`.roi`: a markups ROI as the box the child process crops, in the volume's frame.

The public names of :mod:`.volumes`, :mod:`.segments` and :mod:`.prediction` are available here.
"""

from .prediction import ProgressCallback, predict_image, segment_volume_node
from .segments import (
    ATTRIBUTE_MODEL_ID,
    NEEDS_REVIEW_SUFFIX,
    TAG_CONFIDENCE,
    TAG_LABEL_VALUE,
    TAG_LABELMAP_HASH,
    TAG_MODEL_ID,
    TAG_NEEDS_REVIEW,
    TAG_REVIEW_REASON,
    SegmentationResult,
    binary_oriented_image,
    export_segmentation_to_labelmap_node,
    labelmap_to_uint8,
    mask_hash,
    report_reviews,
    review_sentence,
    segment_hash,
    segment_tag,
    terminology_entry,
    write_segmentation_node,
)
from .volumes import (
    InputVolumeError,
    add_volume_node_from_image,
    check_input_volume,
    ijk_to_ras_matrix,
    image_from_volume_node,
)

__all__ = [
    "ATTRIBUTE_MODEL_ID",
    "NEEDS_REVIEW_SUFFIX",
    "TAG_CONFIDENCE",
    "TAG_LABELMAP_HASH",
    "TAG_LABEL_VALUE",
    "TAG_MODEL_ID",
    "TAG_NEEDS_REVIEW",
    "TAG_REVIEW_REASON",
    "InputVolumeError",
    "ProgressCallback",
    "SegmentationResult",
    "add_volume_node_from_image",
    "binary_oriented_image",
    "check_input_volume",
    "export_segmentation_to_labelmap_node",
    "first_segmentable_volume",
    "ijk_to_ras_matrix",
    "image_from_volume_node",
    "labelmap_to_uint8",
    "mask_hash",
    "predict_image",
    "report_reviews",
    "review_sentence",
    "segment_hash",
    "segment_tag",
    "segment_volume_node",
    "terminology_entry",
    "write_segmentation_node",
]
