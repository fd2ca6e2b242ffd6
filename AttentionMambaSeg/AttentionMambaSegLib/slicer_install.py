"""Installing into Slicer's Python: the platform rules the Slicer module's one install step follows.

Intel Macs: the last PyTorch built for x86_64 macOS is 2.2, compiled against numpy 1.x; Slicer 5.10 and 5.12
ship numpy 2.0.2 and 2.4.6, with which that torch cannot exchange arrays ("Numpy is not available"). Slicer's
own numpy is never replaced, so on an Intel Mac whose Slicer has numpy 2 the install puts ``numpy<2`` into a
folder of its own (:func:`child_packages_folder`) that only the child process sees, first on its
``PYTHONPATH``: the child, which runs torch, gets numpy 1.x; Slicer keeps its numpy 2.

Standard library only: this runs in the Slicer process.
"""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["INTEL_MAC_NUMPY", "child_packages_folder", "intel_mac_numpy_item", "is_intel_mac"]

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
    return {"name": "numpy 1.x (for PyTorch on this Intel Mac)", "requirement": INTEL_MAC_NUMPY,
            "why": f"the last PyTorch for Intel Macs (2.2) needs numpy < 2; Slicer's numpy {numpy_version} stays, "
                   f"numpy 1.x goes to {target}, seen only by the segmentation process",
            "target": str(target)}
