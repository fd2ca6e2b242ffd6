"""The region of interest in the volume's frame (mrml.roi), with real MRML transforms (slicer-core).

A volume under a rotation + translation and an ROI placed on the same anatomy must give the child process the
crop it gets with no transforms at all: the same voxels, the same mask inside the box.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _slicer_helpers import MODULE_DIR, new_scene, slicer

# isort: split
import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

from AttentionMambaSegLib import mrml  # noqa: E402
from AttentionMambaSegLib.inference.roi import RegionOfInterest, crop_to_roi, paste_labels  # noqa: E402
from AttentionMambaSegLib.mrml.roi import roi_box_in_volume_frame, roi_markups_json  # noqa: E402

pytestmark = pytest.mark.slicer

SAMPLE = MODULE_DIR / "Resources" / "Samples" / "hippocampus_sample.nrrd"  # 35 x 51 x 8 voxels of 1 mm
CENTER = (16.2, 22.3, 14.2)  # RAS, on the hippocampus; no box face on a voxel centre or boundary
SIZE = (13.0, 19.0, 3.0)  # mm


def _matrix(rotation_deg: float, axis, translation) -> vtk.vtkMatrix4x4:
    transform = vtk.vtkTransform()
    transform.Translate(*translation)
    transform.RotateWXYZ(rotation_deg, *axis)
    matrix = vtk.vtkMatrix4x4()
    matrix.DeepCopy(transform.GetMatrix())
    return matrix


def _array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _linear_transform(scene, matrix, name):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(matrix)
    return node


def _roi(scene, object_to_node: np.ndarray, name="roi"):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetSize(*SIZE)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, object_to_node[r, c])
    roi.GetObjectToNodeMatrix().DeepCopy(matrix)
    roi.SetCenter(*object_to_node[:3, 3])
    return roi


def _crop(volume, roi_node, tmp_path):
    """What the child crops: (start index, crop size, mask of the voxels inside the box on the full grid)."""
    image = mrml.image_from_volume_node(volume)  # the volume's own frame, as written for the child
    path = tmp_path / f"{roi_node.GetID()}.mrk.json"
    path.write_text(json.dumps(roi_markups_json(roi_node, volume)))
    box = RegionOfInterest.from_markups_file(path)
    crop, start = crop_to_roi(image, box)
    ones = sitk.Image(crop.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(crop)
    mask = sitk.GetArrayFromImage(paste_labels(ones, image, start, box))
    return start, crop.GetSize(), mask


@pytest.fixture
def scene():
    return new_scene()


def _volume(scene, name):
    return mrml.add_volume_node_from_image(scene, sitk.ReadImage(str(SAMPLE)), name)


def _untransformed_roi_matrix() -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = CENTER
    return matrix


def test_a_transformed_volume_is_cropped_around_the_same_voxels_as_an_untransformed_one(scene, tmp_path):
    plain = _volume(scene, "plain")
    reference = _crop(plain, _roi(scene, _untransformed_roi_matrix(), "reference"), tmp_path)
    start, size, mask = reference
    # the known answer: voxel (i, j, k) of the sample is at RAS (1 + i, 1 + j, 11 + k), so the box spans the
    # continuous indices 8.7-21.7, 11.8-30.8 and 1.7-4.7: the crop holds the voxels it overlaps (9-22, 12-31,
    # 2-5), the mask those whose centres it covers (9-21, 12-30, 2-4)
    assert size == (14, 20, 4) and start == (9, 12, 2)
    assert mask.sum() == 13 * 19 * 3 and mask[2:5, 12:31, 9:22].all()

    t = _matrix(30.0, (1.0, 2.0, 0.5), (12.0, -7.0, 25.0))  # rotation about an oblique axis + translation
    moved = _volume(scene, "moved")
    moved.SetAndObserveTransformNodeID(_linear_transform(scene, t, "registration").GetID())

    # 1. the ROI placed in the world on the moved anatomy: rotated and centred by the same transform
    on_anatomy = _roi(scene, _array(t) @ _untransformed_roi_matrix(), "on anatomy")
    # 2. the ROI of the untransformed case, under the volume's own transform
    shared = _roi(scene, _untransformed_roi_matrix(), "shared transform")
    shared.SetAndObserveTransformNodeID(moved.GetTransformNodeID())
    # 3. the ROI under a transform of its own, placed so that it lands on the same anatomy in the world
    u = _matrix(-50.0, (0.0, 0.3, 1.0), (-4.0, 9.0, 3.0))
    own = _roi(scene, np.linalg.inv(_array(u)) @ _array(t) @ _untransformed_roi_matrix(), "own transform")
    own.SetAndObserveTransformNodeID(_linear_transform(scene, u, "roi transform").GetID())

    for roi in (on_anatomy, shared, own):
        got_start, got_size, got_mask = _crop(moved, roi, tmp_path)
        assert (got_start, got_size) == (start, size), roi.GetName()
        np.testing.assert_array_equal(got_mask, mask, err_msg=roi.GetName())
        box = roi_box_in_volume_frame(roi, moved)
        np.testing.assert_allclose(box["center"], CENTER, atol=1e-9)
        np.testing.assert_allclose(box["size"], SIZE, atol=1e-9)
        np.testing.assert_allclose(box["axes"], np.eye(3), atol=1e-9)

    # the ROI's world bounding box, read in the volume's frame, would have cropped elsewhere
    bounds = [0.0] * 6
    on_anatomy.GetRASBounds(bounds)
    world_box = RegionOfInterest.from_ras(
        [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2],
        [bounds[1] - bounds[0], bounds[3] - bounds[2], bounds[5] - bounds[4]],
    )
    image = mrml.image_from_volume_node(moved)
    try:
        crop, world_start = crop_to_roi(image, world_box)
        assert (world_start, crop.GetSize()) != (start, size)
    except ValueError as e:
        assert "lies outside the image" in str(e)


def test_a_shearing_transform_gives_the_box_of_the_volume_axes_around_the_mapped_roi(scene):
    volume = _volume(scene, "v")
    shear = np.eye(4)
    shear[0, 1] = 0.5  # x += 0.5 y: the ROI's axes are no longer at right angles
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, shear[r, c])
    roi = _roi(scene, _untransformed_roi_matrix())
    roi.SetAndObserveTransformNodeID(_linear_transform(scene, matrix, "shear").GetID())
    box = roi_box_in_volume_frame(roi, volume)
    # the sample's axes are -R, -A, +S: the box runs along them; the corners' x spread is 13 + 0.5 * 19 mm
    np.testing.assert_allclose(np.abs(box["axes"]), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(box["size"], [13.0 + 0.5 * 19.0, 19.0, 3.0])
    np.testing.assert_allclose(box["center"], [CENTER[0] + 0.5 * CENTER[1], CENTER[1], CENTER[2]], atol=1e-9)


def test_an_roi_without_extent_or_under_a_non_linear_transform_is_refused(scene):
    volume = _volume(scene, "v")
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "empty")
    with pytest.raises(ValueError, match="has no extent"):
        roi_box_in_volume_frame(roi, volume)
    roi = _roi(scene, _untransformed_roi_matrix(), "bent")
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    displacement = vtk.vtkImageData()
    displacement.SetDimensions(2, 2, 2)
    displacement.SetOrigin(-50, -50, -50)
    displacement.SetSpacing(100, 100, 100)
    displacement.AllocateScalars(vtk.VTK_DOUBLE, 3)
    grid_transform = slicer.vtkOrientedGridTransform()
    grid_transform.SetDisplacementGridData(displacement)
    grid.SetAndObserveTransformToParent(grid_transform)
    roi.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(ValueError, match="not linear"):
        roi_box_in_volume_frame(roi, volume)
