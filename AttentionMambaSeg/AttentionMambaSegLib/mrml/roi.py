"""A markups ROI as the box the child process crops: in the volume's own frame, as Crop Volume maps it.

The child process gets the volume's voxels and its IJK-to-RAS geometry without its parent transform (the
volume's "local" frame, where the segmentation's labels are written back). A box taken from the ROI's world
bounds would be shifted or rotated against the anatomy whenever the volume is transformed (registered). So the
ROI is mapped the way Slicer's Crop Volume maps it (``vtkSlicerCropVolumeLogic``,
``GetMatrixTransformFromObjectToNode``): the ROI's object-to-node matrix (its orientation and centre), then the
transform from the ROI's parent frame to the volume's parent frame (``GetMatrixTransformBetweenNodes``); the
ROI's corners are +-radius along its own axes in object coordinates.

For a rigid (or similarity) mapping the result is the same box, placed and oriented in the volume's frame; the
child crops the index-space bounding box of its corners and sets the labels outside the box to zero. When the
mapping shears the box (a non-uniform scale across rotated axes) the box of the volume's own axes that holds
the mapped corners is used, as Crop Volume's voxel-based crop does, and a log line says so. Non-linear
transforms are refused (Crop Volume refuses them for the volume too).

MRML access only, imported lazily (this module is imported in the Slicer process and in slicer-core tests).
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["roi_box_in_volume_frame", "roi_markups_json"]

logger = logging.getLogger(__name__)

#: Largest |cos| between two mapped ROI axes still taken as a right angle.
_ORTHOGONAL_TOLERANCE = 1e-4


def _array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def roi_box_in_volume_frame(roi_node, volume_node=None) -> dict:
    """The ROI as a box in the volume's frame: ``{"center", "size", "axes"}`` (RAS mm; ``axes`` 3 x 3 columns).

    Args:
        roi_node: a ``vtkMRMLMarkupsROINode``, possibly under a parent transform.
        volume_node: the volume the box is for (its parent transform defines the frame); None: the world frame.

    Raises:
        ValueError: the ROI has no extent, or a transform between the two is not linear.
    """
    import vtk
    from slicer import vtkMRMLTransformNode

    radius = [0.0, 0.0, 0.0]
    roi_node.GetRadiusXYZ(radius)
    if min(radius) <= 0:
        raise ValueError(
            f"The region of interest '{roi_node.GetName()}' has no extent: place it over the image "
            "first, or choose 'Whole volume'."
        )
    target = volume_node.GetParentTransformNode() if volume_node is not None else None
    node_to_volume = vtk.vtkMatrix4x4()
    if not vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
        roi_node.GetParentTransformNode(), target, node_to_volume
    ):
        raise ValueError(
            f"The transform between the region of interest '{roi_node.GetName()}' and the volume is not "
            "linear: harden the transform (Data module) or use a linear one."
        )
    object_to_volume = _array(node_to_volume) @ _array(roi_node.GetObjectToNodeMatrix())
    linear = object_to_volume[:3, :3]
    center = object_to_volume[:3, 3]
    lengths = np.linalg.norm(linear, axis=0)
    axes = linear / lengths
    cosines = np.abs(axes.T @ axes - np.eye(3))
    if cosines.max() <= _ORTHOGONAL_TOLERANCE:
        return {"center": center.tolist(), "size": (2.0 * np.asarray(radius) * lengths).tolist(), "axes": axes.tolist()}
    # sheared: the box along the volume's own axes around the mapped corners (Crop Volume's voxel-based extent)
    directions = np.eye(3)
    if volume_node is not None:
        ijk_to_ras = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(ijk_to_ras)
        directions = _array(ijk_to_ras)[:3, :3]
        directions = directions / np.linalg.norm(directions, axis=0)
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    corners = center + (signs * np.asarray(radius)) @ linear.T
    along = (corners - center) @ directions  # coordinates along the volume's axes
    low, high = along.min(axis=0), along.max(axis=0)
    logger.info(
        "The transform shears the region of interest '%s': the box along the volume's axes that holds it is segmented.",
        roi_node.GetName(),
    )
    return {
        "center": (center + directions @ ((low + high) / 2)).tolist(),
        "size": (high - low).tolist(),
        "axes": directions.tolist(),
    }


def roi_markups_json(roi_node, volume_node=None) -> dict:
    """The ROI in the volume's frame as a Slicer markups document (``.mrk.json``, RAS) for ``segment --roi FILE``.

    Raises:
        ValueError: as :func:`roi_box_in_volume_frame`.
    """
    box = roi_box_in_volume_frame(roi_node, volume_node)
    orientation = np.asarray(box["axes"]).reshape(-1).tolist()  # row-major: the axes are the matrix's columns
    return {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
        "Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {
                "type": "ROI",
                "coordinateSystem": "RAS",
                "name": roi_node.GetName(),
                "roiType": "Box",
                "center": box["center"],
                "orientation": orientation,
                "size": box["size"],
            }
        ],
    }
