"""Write the 3D Slicer extension as its own small git repository, the one the Extensions Index clones.

Usage:
    python tools/export_extension.py DEST [--message TEXT]

DEST (a new or empty folder) receives one commit on branch ``main`` holding: the top-level ``CMakeLists.txt``,
the JSON catalog entry and the ``.s4ext``, ``README.md``, ``LICENSE``, ``pyproject.toml``, ``docs/``, the
screenshots (``Resources/Screenshots/``), the module (``AttentionMambaSeg/AttentionMambaSeg.py`` and its
``CMakeLists.txt``), the backend package (``AttentionMambaSegLib/``, Python files only) and the module's
resources without model weights or example data (``Resources/Models/`` keeps only ``registry.json``;
``Resources/Examples/``, the command line's ACDC demo case, is left out), and the module's tests
(``Testing/test_slicer_files.py``, ``Testing/test_mrml_roi.py`` and their helper).

Then it measures DEST as the Index's ``check_repository_size`` does (a fresh clone, every file including
``.git``, against 100 MB), checks that no ``.safetensors`` file is in it and that every file the module's
``CMakeLists.txt`` lists exists there, and prints the size. Exit code 1 when a check fails.

Push DEST to the repository named by ``scm_url`` in ``AttentionMambaSeg.json`` (docs/RELEASE.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = "AttentionMambaSeg"
#: The Index's limit (scripts/check_description_files.py, check_repository_size): MB of 1024 * 1024 bytes.
SIZE_LIMIT_MB = 100
TOP_FILES = ("CMakeLists.txt", f"{MODULE}.json", f"{MODULE}.s4ext", "README.md", "LICENSE", "pyproject.toml")
TEST_FILES = ("Testing/_slicer_helpers.py", "Testing/test_slicer_files.py", "Testing/test_mrml_roi.py")
GITIGNORE = "__pycache__/\n*.egg-info/\n.pytest_cache/\n*.safetensors\n"
_SKIP_PARTS = {"__pycache__", ".pytest_cache"}


def extension_files(repo: Path = REPO) -> list[str]:
    """The repository-relative paths (POSIX) that make up the extension repository."""
    files = [name for name in TOP_FILES if (repo / name).is_file()]
    files += sorted(p.relative_to(repo).as_posix() for p in (repo / "docs").glob("*.md"))
    files += sorted(p.relative_to(repo).as_posix() for p in (repo / "Resources" / "Screenshots").glob("*.png"))
    module = repo / MODULE
    files += [f"{MODULE}/{MODULE}.py", f"{MODULE}/CMakeLists.txt"]
    files += sorted(
        p.relative_to(repo).as_posix()
        for p in (module / f"{MODULE}Lib").rglob("*.py")
        if not _SKIP_PARTS & set(p.parts)
    )
    for path in sorted((module / "Resources").rglob("*")):
        relative = path.relative_to(module / "Resources").parts
        if not path.is_file() or _SKIP_PARTS & set(relative) or path.name.startswith("."):
            continue
        if relative[0] == "Examples":
            continue  # the command line's demo case (ACDC, non-commercial): not part of the extension
        if relative[0] == "Models" and len(relative) > 2:
            continue  # development copies of model packages (weights): users download them
        files.append(path.relative_to(repo).as_posix())
    files += [name for name in TEST_FILES if (repo / name).is_file()]
    return files


def _git(folder: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="AttentionMambaSeg release",
        GIT_AUTHOR_EMAIL="release@localhost",
        GIT_COMMITTER_NAME="AttentionMambaSeg release",
        GIT_COMMITTER_EMAIL="release@localhost",
    )
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {folder}: {done.stderr.strip()}")
    return done.stdout


def export(dest: Path, message: str = "AttentionMambaSeg Slicer extension", repo: Path = REPO) -> list[str]:
    """Copy the extension files into ``dest`` and commit them as the only commit of a new repository.

    Returns:
        The exported paths.

    Raises:
        FileExistsError: ``dest`` exists and is not an empty folder.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty folder: give a new folder.")
    files = extension_files(repo)
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / name, target)
    (dest / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", message)
    return files + [".gitignore"]


def clone_size(source: Path) -> int:
    """Bytes of a fresh clone of ``source``, every file including ``.git``, as the Index sums them."""
    with tempfile.TemporaryDirectory(prefix="extension-clone-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", "--no-local", str(source), str(clone)], check=True, capture_output=True)
        return sum(f.stat().st_size for f in clone.rglob("*") if f.is_file())


def cmake_listed_files(folder: Path) -> list[str]:
    """The files the module's CMakeLists.txt lists (MODULE_PYTHON_SCRIPTS and MODULE_PYTHON_RESOURCES)."""
    text = (folder / MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = []
    for variable in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
        if match is None:
            raise ValueError(f"set({variable} ...) not found in {folder / MODULE / 'CMakeLists.txt'}")
        items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
        listed += [i.replace("${MODULE_NAME}", MODULE) for i in items if i]
    return listed


def check(dest: Path) -> list[str]:
    """Problems of an exported repository (empty when the Index's size rule and the build's file list hold)."""
    problems = []
    size = clone_size(dest)
    if size / (1024 * 1024) > SIZE_LIMIT_MB:
        problems.append(f"a fresh clone is {size / (1024 * 1024):.1f} MB, over the Index's {SIZE_LIMIT_MB} MB")
    weights = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.safetensors"))
    if weights:
        problems.append(f"model weights in the repository: {weights}")
    missing = [name for name in cmake_listed_files(dest) if not (dest / MODULE / name).is_file()]
    if missing:
        problems.append(f"{MODULE}/CMakeLists.txt lists files that are not there: {missing}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="new or empty folder for the extension repository")
    parser.add_argument("--message", default="AttentionMambaSeg Slicer extension", help="the commit message")
    args = parser.parse_args(argv)
    files = export(args.dest, args.message)
    size = clone_size(args.dest)
    print(
        f"wrote {len(files)} files to {args.dest} (one commit on 'main'); a fresh clone is "
        f"{size / (1024 * 1024):.2f} MB (the Index allows {SIZE_LIMIT_MB} MB)"
    )
    problems = check(args.dest)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
