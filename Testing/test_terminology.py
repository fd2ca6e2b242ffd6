"""Tests of AttentionMambaSegLib.terminology: the class schema, its codes in MRML and in .seg.nrrd files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from AttentionMambaSegLib import terminology as term
from AttentionMambaSegLib.package import bundled_models_dir, load_model_package

BUNDLED_IDS = ("cardiac-acdc", "hippocampus-msd", "skin-lesion-isic", "skin-lesion-ph2")
HIPPO = {
    "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
    "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"},
}


def _entry(**changes) -> dict:
    base = {
        "label_value": 1,
        "name": "anterior hippocampus",
        "color": [220, 216, 20],
        "snomed": {**HIPPO, "type_modifier": {"scheme": "SCT", "code": "255549009", "meaning": "Anterior"}},
    }
    base.update(changes)
    return base


def test_legacy_key_names_are_read_as_the_canonical_fields():
    legacy = {
        "label_value": 2,
        "name": "myocardium",
        "color": [206, 110, 84],
        "snomed": {
            **HIPPO,
            "modifier": {"code": "1", "meaning": "m"},
            "anatomic_region": {"code": "87878005", "meaning": "LV"},
        },
    }
    entry = term.ClassEntry.from_dict(legacy)
    assert entry.type_modifier == term.Code("SCT", "1", "m")
    assert entry.region == term.Code("SCT", "87878005", "LV")
    assert set(entry.to_dict()["snomed"]) == {"category", "type", "type_modifier", "region"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"snomed": {**HIPPO, "modifer": {"code": "1"}}}, "unknown key 'modifer'"),
        ({"snomed": {**HIPPO, "modifier": {"code": "1"}, "type_modifier": {"code": "2"}}}, "given twice"),
        ({"snomed": {"type": HIPPO["type"]}}, "'category' and 'type' must be given together"),
        ({"snomed": {**HIPPO, "type": {"meaning": "no code"}}}, r"snomed\.type must be an object with 'code'"),
        ({"snomed": {**HIPPO, "type": {"code": "1~2"}}}, "cannot be stored"),
        ({"color": [0, 0, 256]}, r"color must be \[r, g, b\]"),
        ({"name": " "}, "name must be a non-empty string"),
    ],
)
def test_invalid_class_entries_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        term.ClassEntry.from_dict(_entry(**change), "classes[1]")


def test_two_classes_with_the_same_codes_or_colours_are_refused():
    same_codes = [_entry(), _entry(label_value=2, name="posterior", color=[144, 238, 144])]
    with pytest.raises(ValueError, match="identical terminology codes"):
        term.read_classes(same_codes)
    # the two salmon discs of the old cardiac model: myocardium (216, 101, 79) and LV cavity (221, 130, 101)
    close = [
        _entry(color=[216, 101, 79]),
        _entry(
            label_value=2,
            name="posterior",
            color=[221, 130, 101],
            snomed={**HIPPO, "type_modifier": {"scheme": "SCT", "code": "255551008", "meaning": "Posterior"}},
        ),
    ]
    with pytest.raises(ValueError, match=r"differ by only 13\.7"):
        term.read_classes(close)


def test_color_distance_known_answers():
    assert term.color_distance([0, 0, 0], [255, 255, 255]) == pytest.approx(100.0, abs=0.01)  # L* 0 -> 100
    assert term.color_distance([10, 20, 30], [10, 20, 30]) == 0.0
    assert term.color_distance([255, 0, 0], [0, 255, 0]) == pytest.approx(170.6, abs=0.5)


def test_terminology_string_has_the_seven_fields_of_slicers_tag():
    entry = term.ClassEntry.from_dict(_entry())
    assert entry.terminology_string() == (
        "Segmentation category and type - AttentionMambaSeg~SCT^123037004^Anatomical Structure~"
        "SCT^5366008^Hippocampus~SCT^255549009^Anterior~~^^~^^"
    )
    assert term.ClassEntry.from_dict(_entry(snomed=None)).terminology_string() == ""


def test_every_bundled_class_is_distinct_and_its_codes_are_in_the_shipped_context_files():
    folder = term.terminology_folder()
    types = json.loads((folder / term.TERMINOLOGY_FILE).read_text())
    regions = json.loads((folder / term.ANATOMIC_FILE).read_text())
    assert types["SegmentationCategoryTypeContextName"] == term.TERMINOLOGY_CONTEXT
    assert regions["AnatomicContextName"] == term.ANATOMIC_CONTEXT
    listed = {}
    for category in types["SegmentationCodes"]["Category"]:
        for typ in category["Type"]:
            listed[(category["CodeValue"], typ["CodeValue"], None)] = typ["recommendedDisplayRGBValue"]
            for modifier in typ.get("Modifier", []):
                listed[(category["CodeValue"], typ["CodeValue"], modifier["CodeValue"])] = modifier[
                    "recommendedDisplayRGBValue"
                ]
    region_codes = {r["CodeValue"] for r in regions["AnatomicCodes"]["AnatomicRegion"]}
    for model_id in BUNDLED_IDS:
        entries = load_model_package(bundled_models_dir() / model_id).card.foreground_classes
        term.check_distinct(entries)
        for e in entries:
            modifier = e.type_modifier.value if e.type_modifier else None
            key = (e.category.value, e.type.value, modifier)
            assert key in listed, (model_id, e.name)
            if e.region is None:  # the recommended colour is the model's (a region does not change it)
                assert listed[key] == list(e.color), (model_id, e.name)
            else:
                assert e.region.value in region_codes


def test_seg_nrrd_keeps_anterior_and_posterior_apart(tmp_path):
    slicerio = pytest.importorskip("slicerio")
    from AttentionMambaSegLib import writers

    package = load_model_package("hippocampus-msd")
    labels = np.zeros((2, 6, 8), np.uint8)
    labels[:, :3] = 1
    labels[:, 3:] = 2
    path = writers.write_seg_nrrd(sitk.GetImageFromArray(labels), tmp_path / "h.seg.nrrd", package.card.class_dicts)
    segments = {s["labelValue"]: s for s in slicerio.read_segmentation(str(path))["segments"]}
    assert segments[1]["terminology"]["typeModifier"] == ["SCT", "255549009", "Anterior"]
    assert segments[2]["terminology"]["typeModifier"] == ["SCT", "255551008", "Posterior"]
    assert segments[1]["terminology"]["type"] == segments[2]["terminology"]["type"]
    heart = load_model_package("cardiac-acdc").card.foreground_classes
    myocardium = next(e for e in heart if e.label_value == 2).slicerio_terminology()
    assert myocardium["anatomicRegion"] == ["SCT", "87878005", "Left ventricle"]
    assert myocardium["anatomicContextName"] == term.ANATOMIC_CONTEXT
