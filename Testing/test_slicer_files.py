"""Extension layout and metadata as the Slicer Extensions Index expects them (no slicer-core needed)."""

from __future__ import annotations

import ast
import json
import re
import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "AttentionMambaSeg"
LIB_DIR = MODULE_DIR / "AttentionMambaSegLib"
URL = "https://github.com/attention-mamba-seg/SlicerAttentionMambaSeg"
RAW = "https://raw.githubusercontent.com/attention-mamba-seg/SlicerAttentionMambaSeg/main/"
MODULE_CMAKE = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
TOP_CMAKE = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [i.replace("${MODULE_NAME}", "AttentionMambaSeg") for i in items if i]


def test_every_lib_python_file_is_listed_in_the_module_cmakelists():
    listed = set(_cmake_list(MODULE_CMAKE, "MODULE_PYTHON_SCRIPTS"))
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in LIB_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(on_disk - listed)
    assert not missing, "add these to MODULE_PYTHON_SCRIPTS in AttentionMambaSeg/CMakeLists.txt:\n" + "\n".join(
        f"  {m}" for m in missing
    )
    stale = sorted(p for p in listed if not (MODULE_DIR / p).is_file())
    assert not stale, f"listed but missing on disk: {stale}"
    assert "AttentionMambaSeg.py" in listed


def test_every_resource_file_is_listed():
    listed = set(_cmake_list(MODULE_CMAKE, "MODULE_PYTHON_RESOURCES"))
    on_disk = {
        p.relative_to(MODULE_DIR).as_posix()
        for p in (MODULE_DIR / "Resources").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    # the model folders are development copies and Resources/Examples holds the command line's demo case (ACDC,
    # non-commercial): the extension package carries neither (an exported extension repository has neither)
    models = {p for p in on_disk if p.startswith("Resources/Models/") and p.count("/") == 3}
    assert not models & listed, f"model files must not ship: {sorted(models & listed)}"
    examples = {p for p in on_disk if p.startswith("Resources/Examples/")}
    assert not examples & listed and not any(p.startswith("Resources/Examples/") for p in listed), examples & listed
    on_disk -= models | examples
    assert not sorted(on_disk - listed), f"add to MODULE_PYTHON_RESOURCES: {sorted(on_disk - listed)}"
    assert not sorted(p for p in listed if not (MODULE_DIR / p).is_file())


def test_module_cmakelists_builds_a_scripted_module_with_generic_tests():
    assert "slicerMacroBuildScriptedModule(" in MODULE_CMAKE
    assert "WITH_GENERIC_TESTS" in MODULE_CMAKE
    assert "set(MODULE_NAME AttentionMambaSeg)" in MODULE_CMAKE
    assert "file(GLOB" not in MODULE_CMAKE


def test_only_one_python_file_at_module_level():
    loose = sorted(p.name for p in MODULE_DIR.glob("*.py"))
    assert loose == ["AttentionMambaSeg.py"], f"Slicer loads every loose .py as a module: {loose}"


def test_top_level_cmakelists_has_extension_metadata():
    for needle in (
        "project(AttentionMambaSeg)",
        f'set(EXTENSION_HOMEPAGE "{URL}")',
        'set(EXTENSION_CATEGORY "Segmentation")',
        "set(EXTENSION_CONTRIBUTORS ",
        "set(EXTENSION_DESCRIPTION ",
        f'set(EXTENSION_ICONURL "{RAW}',
        f'set(EXTENSION_SCREENSHOTURLS "{RAW}',
        'set(EXTENSION_DEPENDS "PyTorch")',
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(AttentionMambaSeg)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert needle in TOP_CMAKE, needle
    # The icon and screenshot URLs are raw files (not HTML pages) that exist in the repository.
    urls = re.findall(r"https://\S+?\.png", TOP_CMAKE)
    assert len(urls) == 3 and all(u.startswith(RAW) for u in urls), urls
    for url in urls:
        assert (REPO / url[len(RAW) :]).is_file(), url
    # As the extension templates: minimum from Slicer 5.10's, policy maximum from the current one.
    assert TOP_CMAKE.startswith("cmake_minimum_required(VERSION 3.20.6...3.28.0 FATAL_ERROR)")
    contributors = re.search(r'set\(EXTENSION_CONTRIBUTORS "([^"]+)"\)', TOP_CMAKE).group(1)
    assert all(re.fullmatch(r"[^(),]+ \([^()]+\)", c.strip()) for c in contributors.split("),")), contributors


def test_catalog_entry_and_s4ext():
    entry = json.loads((REPO / "AttentionMambaSeg.json").read_text(encoding="utf-8"))
    assert re.fullmatch(
        r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
        r"slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#",
        entry["$schema"],
    )
    assert entry["category"] == "Segmentation"
    assert entry["scm_url"] == URL + ".git"
    assert entry["scm_revision"] and entry["build_dependencies"] == ["PyTorch"]
    assert entry["tier"] in (1, 3, 5)
    allowed = {
        "$schema",
        "build_dependencies",
        "build_subdirectory",
        "category",
        "scm_revision",
        "scm_type",
        "scm_url",
        "tier",
        "enabled",
    }
    assert set(entry) <= allowed, "the schema forbids additional properties"
    s4ext = dict(
        line.split(" ", 1)
        for line in (REPO / "AttentionMambaSeg.s4ext").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and " " in line
    )
    assert s4ext["scmurl"] == URL + ".git" and s4ext["homepage"] == URL
    assert s4ext["depends"] == "PyTorch" and s4ext["category"] == "Segmentation"
    for key, variable in (
        ("contributors", "CONTRIBUTORS"),
        ("iconurl", "ICONURL"),
        ("screenshoturls", "SCREENSHOTURLS"),
        ("description", "DESCRIPTION"),
    ):
        assert s4ext[key] == re.search(rf'set\(EXTENSION_{variable} "([^"]+)"\)', TOP_CMAKE).group(1), key
    assert s4ext["scmrevision"] == entry["scm_revision"] and "5.10" in s4ext["description"]
    assert not "AttentionMambaSeg".startswith("Slicer")


def test_license_is_apache_2():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_icon_is_a_128x128_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "AttentionMambaSeg.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


def test_extension_text_files_use_lf_line_endings():
    files = [
        REPO / "CMakeLists.txt",
        REPO / "AttentionMambaSeg.s4ext",
        REPO / "AttentionMambaSeg.json",
        REPO / "LICENSE",
        MODULE_DIR / "CMakeLists.txt",
        MODULE_DIR / "AttentionMambaSeg.py",
        MODULE_DIR / "Resources" / "UI" / "AttentionMambaSeg.ui",
        LIB_DIR / "mrml" / "segments.py",
    ]
    for path in files:
        assert b"\r\n" not in path.read_bytes(), path


def _top_level_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_mrml_and_slicer_import_slicer_vtk_or_qt_in_the_library():
    offenders = []
    for path in LIB_DIR.rglob("*.py"):
        if path.parent.parent == LIB_DIR and path.parent.name in ("mrml", "slicer"):
            continue  # the MRML layer (mrml/) and the Slicer module's backend (slicer/)
        bad = _top_level_modules(path) & {"slicer", "vtk", "qt", "ctk", "vtkmodules"}
        if bad:
            offenders.append(f"{path.relative_to(REPO)}: {sorted(bad)}")
    assert not offenders, offenders


def test_no_model_weights_in_the_extension_folder_beyond_packages():
    big = [
        p
        for p in (REPO / "AttentionMambaSeg").rglob("*")
        if p.is_file() and p.suffix in {".pt", ".pth", ".ckpt", ".pkl"}
    ]
    assert not big, f"pickled weights must not ship (use safetensors): {big}"


def test_s4ext_agrees_with_the_json_catalog_entry():
    """The Index reads the JSON entry only; the .s4ext carries the same fields and must never disagree with it."""
    entry = json.loads((REPO / "AttentionMambaSeg.json").read_text(encoding="utf-8"))
    s4ext = dict(
        line.split(" ", 1)
        for line in (REPO / "AttentionMambaSeg.s4ext").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and " " in line
    )
    pairs = {
        "scm_url": "scmurl",
        "scm_revision": "scmrevision",
        "category": "category",
        "build_subdirectory": "build_subdirectory",
    }
    for json_key, s4ext_key in pairs.items():
        assert s4ext[s4ext_key] == str(entry.get(json_key, ".")), (json_key, s4ext_key)
    assert s4ext["scm"] == entry.get("scm_type", "git")
    assert s4ext["depends"].split() == (entry.get("build_dependencies") or ["NA"])
    assert s4ext.get("enabled", "1") == ("1" if entry.get("enabled", True) else "0")
