"""``evaluate --prediction P --label L``: one prediction scored against one label file (bundled example)."""

from pathlib import Path

import pytest

from AttentionMambaSegLib.cli import main


def test_score_files_known_dice_on_the_bundled_example(tmp_path):
    import SimpleITK as sitk

    from AttentionMambaSegLib.evaluation import score_files

    label_path = (
        Path(__file__).resolve().parents[1] / "AttentionMambaSeg/Resources/Examples/patient019_frame01_label.nii.gz"
    )
    label = sitk.ReadImage(str(label_path))
    arr = sitk.GetArrayFromImage(label)
    n3 = int((arr == 3).sum())
    changed = arr.copy()
    changed[arr == 3] = 0  # LV missed entirely; RV and MYO kept
    pred = sitk.GetImageFromArray(changed)
    pred.CopyInformation(label)
    sitk.WriteImage(pred, str(tmp_path / "pred.nii.gz"))
    scores = score_files(tmp_path / "pred.nii.gz", label_path)
    assert scores[1]["dice"] == 1.0 and scores[2]["dice"] == 1.0
    assert scores[3]["dice"] == 0.0 and scores[3]["ref_voxels"] == n3 and scores[3]["pred_voxels"] == 0
    shifted = sitk.Image(pred)
    shifted.SetOrigin(tuple(o + 1.0 for o in pred.GetOrigin()))
    sitk.WriteImage(shifted, str(tmp_path / "moved.nii.gz"))
    with pytest.raises(ValueError, match="differ in origin"):
        score_files(tmp_path / "moved.nii.gz", label_path)
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.nii.gz"), "--label", str(label_path)]) == 0
