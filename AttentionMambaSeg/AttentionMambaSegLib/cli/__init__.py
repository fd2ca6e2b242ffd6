"""The ``attention-mamba-seg`` console command: one subcommand per stage.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``, which
registers an argparse sub-parser whose ``func`` default takes the parsed namespace and returns an
exit code. Subcommands only parse and call the public functions of the library.

A package that is not installed ends any command with one line naming the extra that provides it
(``evaluate needs scipy: pip install 'attention-mamba-seg[train]'``), read from the package's own
metadata (pyproject.toml's ``[project.optional-dependencies]``), never with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from .. import __version__

# Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMANDS = ("segment", "cardiac", "demo", "models", "train", "evaluate", "doctor")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="attention-mamba-seg", description="Attention-Mamba medical image segmentation (arXiv 2402.02286)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the process exit code."""
    try:
        parser = build_parser()
    except ImportError as e:
        print(f"error: {missing_package_message(e, None)}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted: no partial output was left behind.", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # FileNotFoundError, PermissionError, IsADirectoryError, disk full, ...
        print(f"error: {_os_error_message(e)}", file=sys.stderr)
        return 1
    except ImportError as e:  # ModuleNotFoundError too: a package of an extra that is not installed
        print(f"error: {missing_package_message(e, args.command)}", file=sys.stderr)
        return 1


#: Import name -> distribution name, where they differ (the others: "_" read as "-").
_DISTRIBUTIONS = {
    "PIL": "pillow",
    "mamba_ssm": "mamba-ssm",
    "slicer": "slicer-core",
    "nrrd": "pynrrd",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
}
#: The extras of pyproject.toml, for a source tree run without installing or an install older than the
#: source (the package metadata is read first).
_EXTRAS = {
    "monai": "train",
    "matplotlib": "train",
    "scipy": "train",
    "highdicom": "dicom",
    "mamba-ssm": "cuda",
    "pytest": "test",
    "slicer-core": "test",
}
_DIST = "attention-mamba-seg"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> tuple[set[str], dict[str, list[str]]]:
    """(core dependencies, distribution -> extras that add it): from pyproject.toml in a source tree (a clone,
    an editable install), else from the installed package's metadata; empty when neither is found."""
    from importlib import metadata
    from pathlib import Path

    lines: list[str] = []
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    try:
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        if project.get("name") != _DIST:
            raise ValueError(f"{pyproject} belongs to another project")
        lines = list(project.get("dependencies", []))
        for extra, requirements in project.get("optional-dependencies", {}).items():
            lines += [f"{r.split(';')[0]}; extra == '{extra}'" for r in requirements]
    except (ImportError, OSError, KeyError, ValueError):  # no source tree (or Python 3.10): the metadata
        try:
            lines = metadata.requires(_DIST) or []
        except metadata.PackageNotFoundError:
            return set(), {}
    core: set[str] = set()
    extras: dict[str, list[str]] = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match is None:
            continue  # names no package
        name = _normalise(match.group(1))
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)[\"']", line)
        if extra:
            extras.setdefault(name, []).append(extra.group(1))
        else:
            core.add(name)
    return core, extras


def missing_package_message(error: ImportError, command: str | None) -> str:
    """One line for an import that failed: the package, and the extra (or the pip command) that installs it.

    Args:
        error: the ImportError (ModuleNotFoundError for a package that is not installed).
        command: the subcommand that needed it (None: the command itself).
    """
    who = f"{command}" if command else _DIST
    module = (error.name or "").split(".")[0]
    if not isinstance(error, ModuleNotFoundError) or not module:
        return (
            f"{who} could not import {error.name or 'a package'} ({error}): the installed version does not fit; "
            f"upgrade or reinstall it (pip install -U {_DISTRIBUTIONS.get(module, module) or 'PACKAGE'})."
        )
    distribution = _normalise(_DISTRIBUTIONS.get(module, module))
    core, extras = _requirements()
    found = extras.get(distribution) or ([_EXTRAS[distribution]] if distribution in _EXTRAS else [])
    found = [e for e in found if e != "test"] or found
    if found:
        return (
            f"{who} needs {distribution}: pip install '{_DIST}[{found[0]}]' (from a clone: "
            f"pip install -e '.[{found[0]}]')"
        )
    if distribution in core:
        return (
            f"{who} needs {distribution}, which {_DIST} always installs; it is missing from this environment: "
            f"pip install {distribution} (or reinstall {_DIST})."
        )
    return f"{who} needs the Python package {module}, which is not installed: pip install {distribution}"


def _os_error_message(error: OSError) -> str:
    """A readable message for an OSError: ours carry a sentence; the system's carry errno and a file name."""
    if error.filename is None or error.strerror is None:
        return str(error)
    target = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
    return f"{error.strerror}: {target}. Check the path and its permissions."


if __name__ == "__main__":
    sys.exit(main())
