"""Headers that lie are refused with a message naming the field: sheared or scaled directions, NIfTI pixdim."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AttentionMambaSegLib import images
from AttentionMambaSegLib.inference import check_input_image
from AttentionMambaSegLib.inference.checks import check_direction

EXAMPLE = Path(__file__).resolve().parents[1] / "AttentionMambaSeg/Resources/Examples/patient019_frame01_0000.nii.gz"


def _volume(direction):
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 100, (4, 8, 8)).astype(np.float32))
    image.SetDirection(direction)
    return image


def test_orthonormal_directions_pass_oblique_included():
    check_direction(_volume((1, 0, 0, 0, 1, 0, 0, 0, 1)))
    c, s = math.cos(0.5), math.sin(0.5)
    check_direction(_volume((c, -s, 0, s, c, 0, 0, 0, -1)))  # rotated and flipped: fine


@pytest.mark.parametrize(
    "direction, word", [((1, 0.3, 0, 0, 1, 0, 0, 0, 1), "sheared"), ((2, 0, 0, 0, 1, 0, 0, 0, 1), "scaled")]
)
def test_sheared_or_scaled_directions_are_refused(direction, word):
    with pytest.raises(ValueError, match=f"not orthonormal: it is {word}"):
        check_direction(_volume(direction))

    class Package:
        id, in_channels, config = "m", 1, {"target_spacing": [1.0, 1.0]}

    with pytest.raises(ValueError, match="direction matrix"):
        check_input_image(_volume(direction), Package())


def _with_pixdim(tmp_path, axis, value):
    raw = bytearray(gzip.decompress(EXAMPLE.read_bytes()))
    assert struct.unpack("<i", raw[:4])[0] == 348
    raw[76 + 4 * axis : 80 + 4 * axis] = struct.pack("<f", value)
    path = tmp_path / f"pixdim{axis}.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


@pytest.mark.parametrize("axis, value", [(1, 0.0), (2, float("nan")), (3, -2.5)])
def test_nifti_pixdim_zero_nan_or_negative_is_refused(tmp_path, axis, value):
    path = _with_pixdim(tmp_path, axis, value)
    with pytest.raises(ValueError, match=rf"pixdim\[{axis}\].*positive number of millimetres"):
        images.read_image(path)


def test_the_bundled_example_reads_with_its_spacing():
    image = images.read_image(EXAMPLE)
    assert image.GetSpacing() == pytest.approx((1.4453, 1.4453, 10.0), abs=1e-4)  # the original ACDC pixdim
