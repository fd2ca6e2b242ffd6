"""Volume node <-> SimpleITK image, and the checks a volume node passes before it is segmented.

Geometry contract:

- Slicer stores a volume as a (K, J, I) = (S, H, W) voxel array plus an IJK-to-RAS matrix in the volume's
  own (parent-transform) frame. SimpleITK uses LPS: converting flips the sign of the first two rows of the
  direction matrix and of the origin. Arrays keep the (K, J, I) order on both sides.
- A volume under a parent transform is segmented in its own voxel grid (the transform is never resampled
  in) and the segmentation is placed under the same transform.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

__all__ = [
    "RAS_TO_LPS",
    "InputVolumeError",
    "add_volume_node_from_image",
    "check_input_volume",
    "first_segmentable_volume",
    "geometry_image",
    "ijk_to_ras_matrix",
    "image_array",
    "image_from_volume_node",
    "labelmap_images",
    "vtk_matrix",
]

#: Converts RAS directions and positions to LPS (and back: it is its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


class InputVolumeError(ValueError):
    """The selected node cannot be segmented by the selected model (the message says why and what to do)."""


def _is_sequence_proxy(volume_node) -> bool:
    scene = volume_node.GetScene()
    if scene is None:
        return False
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    try:
        for i in range(browsers.GetNumberOfItems()):
            browser = browsers.GetItemAsObject(i)
            if browser.IsProxyNodeID(volume_node.GetID()):
                return True
    finally:
        browsers.UnRegister(None)
    return False


def check_input_volume(volume_node, package=None) -> None:
    """Raise ``InputVolumeError`` unless ``volume_node`` can be segmented (by ``package`` if given).

    Accepted: scalar volumes (one channel) and RGB vector volumes (3 channels) with voxels.
    Refused with a message: labelmaps, 4D input (sequence frames, multi-volumes), tensor and
    diffusion volumes, empty volumes, and a channel count that differs from the model's.

    Args:
        volume_node: a vtkMRMLVolumeNode (or None).
        package: optional ModelPackage; its ``in_channels`` must match the volume's channels.

    Raises:
        InputVolumeError: the volume cannot be segmented; the message says why and what to do.
    """
    if volume_node is None:
        raise InputVolumeError("No input volume selected: choose a volume to segment.")
    name = volume_node.GetName()
    class_name = volume_node.GetClassName()
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputVolumeError(
            f"'{name}' is a labelmap volume, not an image: select the image volume to segment "
            "(labelmaps are already segmentations; convert them in the Segmentations module)."
        )
    if class_name in ("vtkMRMLMultiVolumeNode",) or _is_sequence_proxy(volume_node):
        raise InputVolumeError(
            f"'{name}' is one frame of a 4D sequence. A whole cine is segmented with a cardiac model "
            "(cardiac-acdc), which also measures the ventricular function (mrml.cardiac); to segment one frame "
            "alone, copy it into a standalone volume (Sequences module, 'Save current frame' or right-click > "
            "Clone in the Data module) and segment that volume."
        )
    # (vtkMRMLVectorVolumeNode derives from vtkMRMLTensorVolumeNode: test the diffusion classes only.)
    if volume_node.IsA("vtkMRMLDiffusionTensorVolumeNode") or volume_node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        raise InputVolumeError(
            f"'{name}' is a diffusion/tensor volume ({class_name}); select a scalar or RGB image volume."
        )
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise InputVolumeError(f"'{name}' has no voxels: load image data into it first.")
    components = image_data.GetNumberOfScalarComponents()
    is_vector = volume_node.IsA("vtkMRMLVectorVolumeNode")
    if not is_vector and components != 1:
        raise InputVolumeError(
            f"'{name}' has {components} values per voxel (4D or multi-component data); "
            "select a single-frame scalar volume or an RGB volume."
        )
    if is_vector and components != 3:
        raise InputVolumeError(
            f"'{name}' is a vector volume with {components} components; only RGB (3 components) "
            "vector volumes can be segmented."
        )
    if package is not None:
        in_channels = int(package.in_channels)
        if in_channels != components:
            kind = "an RGB (3-channel) image" if in_channels == 3 else f"{in_channels}-channel images"
            got = "an RGB vector volume" if is_vector else "a single-channel (grayscale) volume"
            raise InputVolumeError(
                f"Model '{package.id}' segments {kind}, but '{name}' is {got}: choose a model made "
                "for this kind of image."
            )


def first_segmentable_volume(scene):
    """The first scalar or RGB volume of the scene that passes :func:`check_input_volume`, or None."""
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    try:
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            try:
                check_input_volume(node)
            except InputVolumeError:
                continue
            return node
    finally:
        nodes.UnRegister(None)
    return None


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    """Return the volume's 4x4 IJK-to-RAS matrix (float64) in its own frame (parent transform not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A vtkMatrix4x4 holding a 4x4 numpy array."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def image_array(image_data) -> np.ndarray:
    """Copy of a vtkImageData's scalars as (K, J, I) or (K, J, I, C)."""
    dims = image_data.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    components = image_data.GetNumberOfScalarComponents()
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    return scalars.reshape(shape).copy()


def image_from_volume_node(volume_node) -> sitk.Image:
    """Convert a scalar or RGB volume node to a SimpleITK image with the same voxel grid.

    Args:
        volume_node: vtkMRMLScalarVolumeNode or vtkMRMLVectorVolumeNode with image data.

    Returns:
        sitk.Image in LPS: size (I, J, K), spacing in mm, origin and direction converted from the
        node's IJK-to-RAS matrix (own frame, parent transform ignored); the voxel type is the node's;
        an RGB volume gives a 3-component vector image.

    Raises:
        InputVolumeError: from ``check_input_volume``, or a zero or non-finite spacing along an axis.
    """
    check_input_volume(volume_node)
    image_data = volume_node.GetImageData()
    array = image_array(image_data)  # (K, J, I) or (K, J, I, 3)
    ijk_to_ras = ijk_to_ras_matrix(volume_node)
    # vtkImageData may start at a non-zero extent: the first voxel's position is then shifted.
    extent = image_data.GetExtent()
    first_voxel_ras = ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0])
    linear = ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    for axis, value in zip("IJK", spacing):
        if not np.isfinite(value) or value <= 1e-9:
            raise InputVolumeError(
                f"'{volume_node.GetName()}' has a voxel spacing of {value:g} mm along its {axis} axis, so its "
                "geometry is undefined: set the correct spacing in the Volumes module (Volume Information > "
                "Image Spacing) and try again."
            )
    direction_lps = RAS_TO_LPS @ (linear / spacing)
    origin_lps = RAS_TO_LPS @ first_voxel_ras[:3]
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin_lps])
    image.SetDirection([float(d) for d in direction_lps.flatten()])
    return image


def geometry_image(volume_node) -> sitk.Image:
    """An empty uint8 image with the volume's size, spacing, origin and direction (LPS), for ``CopyInformation``."""
    dims = volume_node.GetImageData().GetDimensions()
    image = sitk.Image([int(d) for d in dims], sitk.sitkUInt8)
    full = ijk_to_ras_matrix(volume_node)
    spacing = np.linalg.norm(full[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in RAS_TO_LPS @ full[:3, 3]])
    image.SetDirection([float(d) for d in (RAS_TO_LPS @ (full[:3, :3] / spacing)).flatten()])
    return image


def labelmap_images(arrays: list[np.ndarray], reference: sitk.Image) -> list[sitk.Image]:
    """SimpleITK images of (K, J, I) label arrays, each with ``reference``'s spacing, origin and direction."""
    images = []
    for array in arrays:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        images.append(image)
    return images


def add_volume_node_from_image(scene, image: sitk.Image, name: str = "Volume"):
    """Add a volume node holding ``image`` (the inverse of ``image_from_volume_node``).

    A 3-component image becomes a vtkMRMLVectorVolumeNode, anything else a vtkMRMLScalarVolumeNode.
    Used to load sample data and by tests; in the Slicer application ``slicer.util.loadVolume`` is the
    usual way.

    Args:
        scene: vtkMRMLScene.
        image: 3D SimpleITK image in LPS (scalar, or 3-component vector).
        name: node name (made unique in the scene).

    Returns:
        The new volume node, with display nodes.

    Raises:
        ValueError: ``image`` is not 3D or has a component count other than 1 or 3.
    """
    if image.GetDimension() != 3:
        raise ValueError(f"Expected a 3D image; got {image.GetDimension()}D. Add a slice axis first.")
    components = image.GetNumberOfComponentsPerPixel()
    if components not in (1, 3):
        raise ValueError(f"Expected 1 or 3 components per voxel; got {components}.")
    class_name = "vtkMRMLVectorVolumeNode" if components == 3 else "vtkMRMLScalarVolumeNode"
    array = sitk.GetArrayFromImage(image)  # (K, J, I) or (K, J, I, 3)
    if array.dtype == np.int64 or array.dtype == np.bool_:
        array = array.astype(np.int32 if array.dtype == np.int64 else np.uint8)
    spacing = np.array(image.GetSpacing())
    direction_ras = RAS_TO_LPS @ np.array(image.GetDirection()).reshape(3, 3)
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = direction_ras * spacing
    ijk_to_ras[:3, 3] = RAS_TO_LPS @ np.array(image.GetOrigin())
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras))
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image_data.AllocateScalars(numpy_support.get_vtk_array_type(array.dtype), components)
    flat = array.reshape(-1) if components == 1 else array.reshape(-1, components)
    numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())[:] = flat
    node.SetAndObserveImageData(image_data)
    node.CreateDefaultDisplayNodes()
    return node
