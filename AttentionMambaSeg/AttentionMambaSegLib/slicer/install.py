"""Installing into Slicer's Python: the Slicer module's one install step and the platform rules it follows.

The packages are installed on the first Segment (or Import model...), after one confirmation that names them
all (:func:`dependency_plan`, :func:`install_prompt`), never at Slicer start-up. PyTorch comes only through
the PyTorch extension's installer (``PyTorchUtilsLogic``), which picks the build for the computer's GPU; the
others go through ``slicer.packaging.pip_ensure`` (Slicer 5.12) or ``slicer.util.pip_install`` under a
constraints file that pins Slicer's own numpy, SimpleITK, VTK and requests to their installed versions. A
CUDA PyTorch without Triton gets Triton (``triton-windows`` on Windows) at the version torch names.

Intel Macs: the last PyTorch built for x86_64 macOS is 2.2, compiled against numpy 1.x; Slicer 5.10 and 5.12
ship numpy 2.0.2 and 2.4.6, with which that torch cannot exchange arrays ("Numpy is not available"). Slicer's
own numpy is never replaced, so on an Intel Mac whose Slicer has numpy 2 the install puts ``numpy<2`` into a
folder of its own (:func:`child_packages_folder`) that only the child process sees, first on its
``PYTHONPATH``: the child, which runs torch, gets numpy 1.x; Slicer keeps its numpy 2.

Standard library (and ``slicer``, ``PyTorchUtils`` and ``packaging`` when installing): this runs in the Slicer
process. Nothing is imported to find out what is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import tr

__all__ = [
    "INTEL_MAC_NUMPY",
    "PIP_REQUIREMENTS",
    "PROTECTED_PACKAGES",
    "TORCH_MINIMUM",
    "TORCH_REQUIREMENT",
    "DependencyError",
    "child_packages_folder",
    "dependency_plan",
    "install_dependencies",
    "install_prompt",
    "installed_torch_cuda",
    "installed_torch_version",
    "intel_mac_numpy_item",
    "is_intel_mac",
    "pip_install",
    "site_packages_folder",
    "triton_requirement",
]

#: Packages installed into Slicer's Python on the first "Segment" (torch comes from the PyTorch extension),
#: as (import name, pip requirement, what it is for). numba brings llvmlite, its compiler.
PIP_REQUIREMENTS = (
    ("safetensors", "safetensors>=0.4", "reads the model weights"),
    ("numba", "numba>=0.59", "the fast CPU selective scan (installs llvmlite, its compiler)"),
    ("pooch", "pooch>=1.8", "downloads models, checking their SHA-256"),
)
TORCH_REQUIREMENT = ">=2.1"
TORCH_MINIMUM = (2, 1)
#: Slicer's own packages: pinned to their installed versions while installing, never replaced.
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk", "requests")

#: The numpy the last x86_64 macOS PyTorch (2.2) was built against.
INTEL_MAC_NUMPY = "numpy<2"
#: Name of the child-only package folder inside the models' data folder's parent.
CHILD_PACKAGES = "python-child"


def is_intel_mac() -> bool:
    """True on macOS on an x86_64 processor (also under Rosetta, where Slicer runs as x86_64)."""
    return platform.system() == "Darwin" and platform.machine() == "x86_64"


def child_packages_folder(data_folder: str | Path) -> Path:
    """The folder of packages only the child process sees: ``<data folder>/python-child``."""
    return Path(data_folder) / CHILD_PACKAGES


def _major(version: str) -> int:
    digits = "".join(ch for ch in version.split(".")[0] if ch.isdigit())
    return int(digits or 0)


def intel_mac_numpy_item(numpy_version: str, data_folder: str | Path) -> dict | None:
    """The install-plan item that gives the child numpy 1.x on an Intel Mac, or None where it is not needed.

    Args:
        numpy_version: the numpy version of Slicer's Python (``importlib.metadata.version("numpy")``).
        data_folder: the extension's per-user data folder; the item installs into
            :func:`child_packages_folder` of it.

    Returns:
        ``{"name", "requirement", "why", "target"}`` (``target``: install with ``pip --target``), when this is
        an Intel Mac, Slicer's numpy is 2 or newer and the child folder holds no numpy yet; else None.
    """
    if not is_intel_mac() or _major(numpy_version) < 2:
        return None
    target = child_packages_folder(data_folder)
    if (target / "numpy").is_dir():
        return None
    return {
        "name": "numpy 1.x (for PyTorch on this Intel Mac)",
        "requirement": INTEL_MAC_NUMPY,
        "why": f"the last PyTorch for Intel Macs (2.2) needs numpy < 2; Slicer's numpy {numpy_version} stays, "
        f"numpy 1.x goes to {target}, seen only by the segmentation process",
        "target": str(target),
    }


class DependencyError(RuntimeError):
    """A required package could not be installed (the message says what to do, e.g. restart)."""


def installed_torch_version() -> tuple | None:
    """(major, minor) of the installed torch (read from its metadata, not imported), or None."""
    try:
        text = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    parts = []
    for piece in text.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (2 - len(parts)))


def installed_torch_cuda() -> str | None:
    """The CUDA version the installed torch was built with (read from torch/version.py, not imported), or None."""
    try:
        text = importlib.metadata.distribution("torch").locate_file("torch/version.py").read_text()
    except (importlib.metadata.PackageNotFoundError, OSError):
        return None
    match = re.search(r"^cuda\b[^=\n]*=\s*['\"]([^'\"]+)['\"]", text, flags=re.MULTILINE)
    return match.group(1) if match else None


def triton_requirement() -> tuple[str, str]:
    """(name, pip requirement) of the Triton that fits the installed torch: ``triton-windows`` on Windows,
    ``triton`` elsewhere, at the version torch's own metadata names when it names one."""
    version = None
    try:
        for line in importlib.metadata.requires("torch") or []:
            match = re.match(r"^(?:pytorch-)?triton\s*==\s*([0-9]+)\.([0-9]+)(\.[0-9]+)?", line)
            if match:
                version = match.groups()
                break
    except importlib.metadata.PackageNotFoundError:
        pass
    if platform.system() == "Windows":
        if version is None:
            return "triton-windows", "triton-windows"
        major, minor = int(version[0]), int(version[1])
        return "triton-windows", f"triton-windows>={major}.{minor},<{major}.{minor + 1}"
    if version is None:
        return "triton", "triton"
    return "triton", "triton==" + ".".join(v.strip(".") for v in version if v)


def site_packages_folder() -> str:
    """The site-packages folder of this Python (Slicer's), where the packages go."""
    return sysconfig.get_paths()["purelib"]


def _intel_mac_item(data_folder: Callable[[], str | Path]) -> dict | None:
    """On an Intel Mac with Slicer's numpy 2: numpy 1.x for the child process only, else None."""
    if not is_intel_mac():
        return None
    try:
        numpy_version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        return None
    return intel_mac_numpy_item(numpy_version, data_folder())


def _torch_item(torch_version: tuple | None) -> dict | None:
    if torch_version is None:
        return {
            "name": "torch",
            "requirement": "torch" + TORCH_REQUIREMENT,
            "why": tr("PyTorch, through the PyTorch extension"),
        }
    if torch_version < TORCH_MINIMUM:
        return {
            "name": "torch",
            "requirement": "torch" + TORCH_REQUIREMENT,
            "why": tr("PyTorch {have} is older than {need}: a newer one, through the PyTorch extension").format(
                have="{}.{}".format(*torch_version), need=TORCH_REQUIREMENT
            ),
        }
    return None


def dependency_plan(data_folder: Callable[[], str | Path]) -> list[dict]:
    """What must be installed before the first run: ``[{name, requirement, why}]``, checked without importing.

    Args:
        data_folder: returns the extension's per-user data folder (called only on an Intel Mac, where numpy
            1.x for the child goes below it: :func:`intel_mac_numpy_item`; such an item also has ``target``).
    """
    torch_version = installed_torch_version()
    torch_item = _torch_item(torch_version)
    plan = [torch_item] if torch_item is not None else []
    for name, requirement, why in PIP_REQUIREMENTS:
        if importlib.util.find_spec(name) is None:
            plan.append({"name": name, "requirement": requirement, "why": why})
    if any(item["name"] == "numba" for item in plan) and importlib.util.find_spec("llvmlite") is None:
        plan.append({"name": "llvmlite", "requirement": "llvmlite", "why": tr("numba's compiler")})
    if torch_version is not None and installed_torch_cuda() and importlib.util.find_spec("triton") is None:
        name, requirement = triton_requirement()
        plan.append(
            {
                "name": name,
                "requirement": requirement,
                "why": tr("the fast GPU selective scan (this PyTorch has CUDA); needs no compiler"),
            }
        )
    intel_mac = _intel_mac_item(data_folder)
    if intel_mac is not None:
        plan.append(intel_mac)
    return plan


def install_prompt(plan: list[dict], folder: str) -> str:
    """The one confirmation that names every package of ``plan`` and the site-packages ``folder`` they go to."""
    lines = "\n".join(f"- {item['name']}: {item['why']}" for item in plan)
    return tr(
        "Attention-Mamba Segmentation needs these Python packages, installed into Slicer's Python "
        "({folder}):\n\n{lines}\n\nPyTorch is installed by the PyTorch extension. Slicer's own numpy, "
        "SimpleITK, VTK and requests are kept as they are. This can take several minutes. Install now?"
    ).format(folder=folder, lines=lines)


def install_dependencies(plan: list[dict]) -> None:
    """Install what :func:`dependency_plan` lists, without asking again (the caller has asked once).

    Raises:
        DependencyError: the PyTorch extension is missing, or an installation failed.
    """
    if any(item["name"] == "torch" for item in plan):
        _install_torch()
    requirements = [
        item["requirement"] for item in plan if item["name"] not in ("torch", "llvmlite") and not item.get("target")
    ]
    if requirements:
        pip_install(requirements)
    for item in plan:
        if item.get("target"):  # packages only the child process sees
            _pip_install_into(item["requirement"], item["target"])


def _pip_install_into(requirement: str, target: str) -> None:
    """``pip install --target`` into a folder of its own (Slicer's site-packages are not touched)."""
    import slicer

    try:
        slicer.util.pip_install(["--target", target, "--no-deps", "--upgrade", requirement])
    except Exception as e:
        raise DependencyError(
            tr("Installing {requirement} into {folder} failed: {error}").format(
                requirement=requirement, folder=target, error=e
            )
        ) from e


def _install_torch() -> None:
    try:
        import PyTorchUtils
    except ImportError as e:
        raise DependencyError(
            tr(
                "The PyTorch extension is needed to install PyTorch: install 'PyTorch' from the "
                "Extensions Manager, restart Slicer and try again."
            )
        ) from e
    was_loaded = "torch" in sys.modules
    try:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT
        )
    except Exception as e:
        raise DependencyError(
            tr("Installing PyTorch failed: {error}. Use the PyTorch Utils module to install it.").format(error=e)
        ) from e
    if torch is None:
        raise DependencyError(tr("PyTorch was not installed. Use the PyTorch Utils module to install it."))
    version = installed_torch_version()
    if version is None or version < TORCH_MINIMUM or was_loaded:
        raise DependencyError(tr("PyTorch was updated: restart Slicer, then press Segment again."))


def _constraints_file() -> str:
    """Write a pip constraints file pinning Slicer's own packages to their installed versions; return its path."""
    lines = []
    for name in PROTECTED_PACKAGES:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    handle, path = tempfile.mkstemp(prefix="AttentionMambaSeg-constraints-", suffix=".txt")
    with os.fdopen(handle, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def pip_install(requirements: list[str]) -> None:
    """pip install under the constraints file (``pip_ensure`` without its own prompt where it exists).

    Raises:
        DependencyError: the installation failed.
    """
    import slicer

    constraints = _constraints_file()
    try:
        ensure = None
        try:
            ensure = getattr(importlib.import_module("slicer.packaging"), "pip_ensure", None)
        except ImportError:
            ensure = None
        if ensure is not None:
            from packaging.requirements import Requirement

            ensure(
                [Requirement(r) for r in requirements],
                prompt_install=False,
                requester="AttentionMambaSeg",
                constraints=constraints,
            )
        else:
            slicer.util.pip_install(list(requirements) + ["-c", constraints])
    except Exception as e:
        raise DependencyError(
            tr("Installing {packages} failed: {error}").format(packages=", ".join(requirements), error=e)
        ) from e
    finally:
        os.remove(constraints)
