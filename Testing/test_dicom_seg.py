"""DICOM SEG output (AttentionMambaSegLib.dicom_seg): references, codes, colours, round trip, refusals.

Real data: the shared brain MR series (22 oblique slices). A labelmap made here on the series' grid
gives every segment known voxels; the end-to-end test segments the series with the bundled
hippocampus model and compares the .dcm with the NIfTI output voxel for voxel.
"""

from __future__ import annotations

import sys

import highdicom as hd  # the [dicom] extra, part of [test]
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from _inference_helpers import DICOM_DIR
from AttentionMambaSegLib import dicom, dicom_seg, images
from AttentionMambaSegLib.inference.result import SegmentReport
from AttentionMambaSegLib.package import load_model_package
from conftest import require

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: ROI of the shared series where the bundled hippocampus model finds the anterior hippocampus.
HIPPO_ROI = "-28,-20,-15,40,50,40"


@pytest.fixture(scope="module")
def series():
    """(image as read, source files, pydicom headers by SOP Instance UID)."""
    require(DICOM_DIR)
    chosen = dicom.choose_dicom_series(dicom.list_dicom_series(DICOM_DIR))
    headers = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in chosen.files)}
    return images.read_image(DICOM_DIR), list(chosen.files), headers


@pytest.fixture(scope="module")
def hippocampus():
    return load_model_package("hippocampus-msd")  # bundled: a missing model fails the test


def _test_labelmap(image: sitk.Image) -> sitk.Image:
    """Label 1 in a box on slices 5-7, label 2 in another box on slices 10-11, on the series' grid."""
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)  # (S, H, W)
    labels[5:8, 100:140, 120:170] = 1
    labels[10:12, 150:180, 60:90] = 2
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def test_written_seg_references_the_series_and_carries_codes(tmp_path, series, hippocampus):
    image, files, headers = series
    labelmap = _test_labelmap(image)
    reports = [
        SegmentReport(1, "anterior hippocampus", 1, 1.0, 0.8472, "low confidence (0.8472 < 0.9267)"),
        SegmentReport(2, "posterior hippocampus", 1, 1.0, 0.95, None),
    ]
    path = dicom_seg.write_dicom_seg(
        labelmap,
        tmp_path / "seg.dcm",
        hippocampus.card.class_dicts,
        files,
        segments=reports,
        algorithm_name="hippocampus-msd",
        algorithm_version="1.5.0",
    )
    ds = pydicom.dcmread(path)
    source = next(iter(headers.values()))
    assert ds.SOPClassUID == SEG_SOP_CLASS and ds.Modality == "SEG"
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    (referenced,) = ds.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == set(headers)
    # only frames holding a segment: 3 slices of segment 1 and 2 of segment 2
    assert int(ds.NumberOfFrames) == 5
    assert int(ds.Rows) == image.GetSize()[1] and int(ds.Columns) == image.GetSize()[0]
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["anterior hippocampus", "posterior hippocampus"]
    first, second = ds.SegmentSequence
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "5366008"
    assert (
        first.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "255549009"
    )
    assert (
        second.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
        == "255551008"
    )
    assert first.SegmentAlgorithmType == "AUTOMATIC" and first.SegmentAlgorithmName == "hippocampus-msd"
    assert first.SegmentDescription == "needs review: low confidence (0.8472 < 0.9267)"
    assert second.SegmentDescription.startswith("automatic, review before use, confidence 0.950")
    # colour: class colour [220, 216, 20] in CIELab, scaled to 0..65535 as DICOM stores it
    expected = hd.color.CIELabColor(*dicom_seg._lab((220, 216, 20))).value
    assert list(first.RecommendedDisplayCIELabValue) == list(expected)
    assert abs(hd.color.CIELabColor.from_dicom_value(first.RecommendedDisplayCIELabValue).l_star - 84.2) < 0.5
    # every frame lies on the position of the source slice it references
    for frame in ds.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, [float(v) for v in headers[uid].ImagePositionPatient], atol=1e-3)


def test_round_trip_is_voxel_for_voxel(tmp_path, series, hippocampus):
    image, files, _ = series
    labelmap = _test_labelmap(image)
    path = dicom_seg.write_dicom_seg(labelmap, tmp_path / "seg.dcm", hippocampus.card.class_dicts, files)
    seg = hd.seg.segread(str(path))
    assert seg.number_of_segments == 2
    back = dicom_seg.read_dicom_seg_labelmap(path, image, files, hippocampus.card.class_dicts)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labelmap))
    assert back.GetOrigin() == image.GetOrigin() and back.GetDirection() == image.GetDirection()


def test_refuses_a_labelmap_off_the_series_grid(tmp_path, series, hippocampus):
    image, files, _ = series
    labelmap = _test_labelmap(image)
    labelmap.SetOrigin([v + 3.0 for v in image.GetOrigin()])
    with pytest.raises(ValueError, match="not a slice of the labelmap's grid"):
        dicom_seg.write_dicom_seg(labelmap, tmp_path / "seg.dcm", hippocampus.card.class_dicts, files)
    assert not (tmp_path / "seg.dcm").exists()


def test_refuses_labels_not_in_classes_and_existing_files(tmp_path, series, hippocampus):
    image, files, _ = series
    labels = sitk.GetArrayFromImage(_test_labelmap(image))
    labels[0, 0, 0] = 7
    bad = sitk.GetImageFromArray(labels)
    bad.CopyInformation(image)
    with pytest.raises(ValueError, match=r"Label values \[7\]"):
        dicom_seg.write_dicom_seg(bad, tmp_path / "seg.dcm", hippocampus.card.class_dicts, files)
    (tmp_path / "old.dcm").write_bytes(b"earlier")
    with pytest.raises(FileExistsError):
        dicom_seg.write_dicom_seg(_test_labelmap(image), tmp_path / "old.dcm", hippocampus.card.class_dicts, files)
    assert (tmp_path / "old.dcm").read_bytes() == b"earlier"


def test_missing_highdicom_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(dicom_seg.DicomSegDependencyError, match=r'pip install "attention-mamba-seg\[dicom\]"'):
        dicom_seg.require_highdicom()


def test_cli_refuses_nifti_input_for_dicom_seg(tmp_path, capsys):
    from _inference_helpers import HIPPO_IMAGE
    from AttentionMambaSegLib.cli import main

    require(HIPPO_IMAGE)
    assert main(["segment", str(HIPPO_IMAGE), "-o", str(tmp_path / "out.dcm"), "--model", "hippocampus-msd"]) == 1
    err = capsys.readouterr().err
    assert "DICOM SEG output needs a DICOM series folder as input" in err and "hippocampus_001_0000.nii.gz" in err
    assert (
        main(
            [
                "segment",
                str(HIPPO_IMAGE),
                "-o",
                str(tmp_path),
                "--output-format",
                "dicom-seg",
                "--model",
                "hippocampus-msd",
            ]
        )
        == 1
    )
    assert "needs a DICOM series folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_segment_dicom_series_to_seg_equals_nifti_output(tmp_path, series, hippocampus):
    """The shared series segmented to .dcm and to .nii.gz: the same labels, voxel for voxel."""
    from AttentionMambaSegLib.cli import main

    image, files, headers = series
    common = ["--model", "hippocampus-msd", f"--roi={HIPPO_ROI}", "--device", "cpu"]
    (tmp_path / "nifti").mkdir()
    assert main(["segment", str(DICOM_DIR), "-o", str(tmp_path / "hippo.dcm"), *common]) == 0
    assert main(["segment", str(DICOM_DIR), "-o", str(tmp_path / "nifti/hippo.nii.gz"), *common]) == 0
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nifti/hippo.nii.gz")))
    assert (nifti == 1).sum() > 500  # the anterior hippocampus is found in this box (about 2 mL, 693 voxels)
    back = dicom_seg.read_dicom_seg_labelmap(tmp_path / "hippo.dcm", image, files, hippocampus.card.class_dicts)
    assert np.array_equal(sitk.GetArrayFromImage(back), nifti)
    ds = pydicom.dcmread(tmp_path / "hippo.dcm")
    assert len(ds.SegmentSequence) == 2
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == next(iter(headers.values())).SeriesInstanceUID
    assert int(ds.NumberOfFrames) == int(np.count_nonzero((nifti == 1).any(axis=(1, 2)))) + int(
        np.count_nonzero((nifti == 2).any(axis=(1, 2)))
    )
    assert (tmp_path / "hippo.report.json").is_file()
