"""The README's package map names every module of the backend, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "AttentionMambaSeg" / "AttentionMambaSegLib"
PRIVATE_OK = {"__init__", "__main__"}


def package_map() -> dict[str, set[str]]:
    """README "Package layout": ``{"": top-level modules, "pkg": modules the map lists for pkg/}``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Package layout", 1)[1].split("```", 2)[1]
    entries: dict[str, set[str]] = {"": set()}
    current = None
    for line in block.splitlines():
        top = re.match(r"^  (\w+)(/|\.py)\s+(.*)$", line)
        if top:
            name, kind, rest = top.groups()
            if kind == ".py":
                entries[""].add(name)
                current = None
            else:
                current = name
                entries[name] = set(re.findall(r"\w+", rest.split(":", 1)[1]))
        elif current and line.startswith(" " * 20):
            entries[current] |= set(re.findall(r"\w+", line))
        else:
            current = None
    return entries


def tree() -> dict[str, set[str]]:
    """The backend's modules: ``{"": top-level module names, "pkg": module names of pkg/}``."""
    modules: dict[str, set[str]] = {"": {p.stem for p in LIB.glob("*.py")} - PRIVATE_OK}
    for folder in LIB.iterdir():
        if (folder / "__init__.py").exists():
            modules[folder.name] = {p.stem for p in folder.glob("*.py")} - PRIVATE_OK
    return modules


def test_readme_package_map_names_every_module_of_the_tree():
    listed, actual = package_map(), tree()
    missing = sorted(
        f"{pkg + '/' if pkg else ''}{name}" for pkg, names in actual.items() for name in names - listed.get(pkg, set())
    )
    assert not missing, f"README 'Package layout' does not name: {', '.join(missing)}"


def test_readme_package_map_names_no_module_that_does_not_exist():
    listed, actual = package_map(), tree()
    assert set(listed) <= set(actual), f"README names packages that do not exist: {sorted(set(listed) - set(actual))}"
    stale = sorted(f"{name}.py" for name in listed[""] - actual[""])
    stale += sorted(f"{pkg}/{name}" for pkg, names in listed.items() if pkg for name in names - actual[pkg])
    assert not stale, f"README 'Package layout' names modules that do not exist: {', '.join(stale)}"


def test_package_map_reader_sees_the_entries_it_checks():
    listed = package_map()
    assert {"images", "package", "evaluation"} <= listed[""]
    assert {"predictor", "settings", "file_runner"} <= listed["inference"]
