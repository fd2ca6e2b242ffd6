"""Where the Slicer module keeps models, how the panel lists and describes them, and whether a registry model
can be downloaded from here.

Models a user downloads or imports are the only copy an offline user has, so inside 3D Slicer they live in a
per-user *data* folder, never under Slicer's cache folder (Settings > Cache > Clear cache deletes the whole
``slicer.app.cachePath``). The default is ``<per-user application data>/AttentionMambaSeg/models`` (Qt's
``QStandardPaths.AppDataLocation``, which the caller passes in); the folder chosen is remembered in Slicer's
settings and shown in the panel.

Before the first Segment with a model that is not installed starts the long PyTorch install, the module asks
:func:`model_download_problem` whether any of the model's URLs answers (a HEAD request, a few seconds'
timeout, with the ``requests`` that Slicer ships), so a user without access learns it first, with the offline
route named (Import model... with the archive).

The panel's texts (model titles, the speed choices a model offers, the download and licence questions) are
made here from the model card and the registry entry.

Standard library and ``requests`` only: this runs in the Slicer process.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import tr

__all__ = [
    "DEFAULT_SUBFOLDER",
    "URL_CHECK_TIMEOUT_S",
    "available_models",
    "default_models_folder",
    "default_speed_label",
    "download_question",
    "licence_question",
    "model_download_problem",
    "model_summary",
    "speed_description",
    "url_problem",
]

logger = logging.getLogger(__name__)

#: The models folder below the per-user application data folder.
DEFAULT_SUBFOLDER = ("AttentionMambaSeg", "models")
#: Seconds the URL check waits for an answer (connect and read).
URL_CHECK_TIMEOUT_S = 5.0


def default_models_folder(app_data_location: str | Path) -> Path:
    """``<app_data_location>/AttentionMambaSeg/models``: the per-user data folder for models.

    Args:
        app_data_location: the per-user application data folder (in Slicer:
            ``qt.QStandardPaths.writableLocation(qt.QStandardPaths.AppDataLocation)``).
    """
    return Path(app_data_location).joinpath(*DEFAULT_SUBFOLDER)


def url_problem(url: str, timeout: float = URL_CHECK_TIMEOUT_S) -> str | None:
    """Whether ``url`` answers: None when it does (HTTP status below 400), else what failed, in words.

    A HEAD request following redirects (release assets redirect to their storage); a server that refuses HEAD
    (405, 501) is asked with a GET whose body is not read.
    """
    import requests

    try:
        response = requests.head(url, allow_redirects=True, timeout=timeout)
        if response.status_code in (405, 501):
            response = requests.get(url, allow_redirects=True, timeout=timeout, stream=True)
            response.close()
    except requests.exceptions.Timeout:
        return f"no answer within {timeout:g} s"
    except requests.exceptions.SSLError as e:
        return f"the secure (TLS) connection failed ({e})"
    except requests.exceptions.ProxyError as e:
        return f"the proxy refused the connection ({e})"
    except requests.exceptions.ConnectionError:
        return "the server could not be reached (no network, or a firewall)"
    except requests.exceptions.RequestException as e:
        return f"{type(e).__name__}: {e}"
    if response.status_code >= 400:
        return f"the server answered HTTP {response.status_code}" + (
            " (not found)" if response.status_code == 404 else ""
        )
    return None


def model_download_problem(entry, timeout: float = URL_CHECK_TIMEOUT_S) -> str | None:
    """None when one of a registry entry's URLs answers; else a message naming each URL, why, and the offline route.

    Args:
        entry: a :class:`~AttentionMambaSegLib.registry.RegistryEntry`.
        timeout: seconds per URL.
    """
    failures = []
    for url in entry.urls:
        problem = url_problem(url, timeout)
        if problem is None:
            return None
        failures.append(f"{url}: {problem}")
    name = f"{entry.id}-{entry.version}.zip"
    logger.info("Model '%s' cannot be downloaded from here: %s", entry.id, "; ".join(failures))
    return (
        f"Model '{entry.id}' {entry.version} cannot be downloaded from this computer ("
        + "; ".join(failures)
        + f"). Get {name} on a computer with internet access (the URL above) and install "
        "it with Import model...; nothing else needs the internet."
    )


def available_models(registry: dict) -> list[tuple[str, str]]:
    """``[(model id, display title)]``: installed models, then the registry's models to download.

    Args:
        registry: model id -> :class:`~AttentionMambaSegLib.registry.RegistryEntry`.
    """
    from ..mrml.segments import model_name
    from ..package import list_models

    models, installed = [], set()
    for package in list_models():
        models.append((package.id, f"{model_name(package)} ({package.version})"))
        installed.add(package.id)
    for entry in registry.values():
        if entry.id not in installed:
            models.append(
                (
                    entry.id,
                    tr("{id} ({version}, download {size:.0f} MB)").format(
                        id=entry.id, version=entry.version, size=entry.size / 1e6
                    ),
                )
            )
    return models


def model_summary(model_id: str) -> str:
    """Licence and validation Dice of a model for the panel ("" when none is selected); for a registry model
    that is not installed, its download size too."""
    if not model_id:
        return ""
    from ..package import load_model_package
    from ..registry import load_registry

    try:
        return load_model_package(model_id).summary()
    except FileNotFoundError:
        entry = load_registry().get(model_id)
        if entry is None:
            return tr("Model '{id}' is not installed.").format(id=model_id)
        return tr("Not downloaded yet ({size:.0f} MB). Licence: {licence}. Validation Dice {dice}.").format(
            size=entry.size / 1e6, licence=entry.licence, dice=entry.val_dice
        )
    except (OSError, ValueError) as e:
        return str(e)


def default_speed_label(modes, device: str) -> str:
    """What "Model default" resolves to for a model's speed modes and a device, e.g. "Model default (fast on a
    CPU)" (``modes``: :class:`~AttentionMambaSegLib.card.modes.SpeedModes`, or None when unknown)."""
    if modes is None:
        return tr("Model default")
    names = {"fast": tr("fast"), "accurate": tr("accurate")}
    cpu, gpu = names[modes.default_mode("cpu")], names[modes.default_mode("cuda")]
    if device == "cpu":
        choice = tr("{mode} on a CPU").format(mode=cpu)
    elif device == "cuda":
        choice = tr("{mode} on a GPU").format(mode=gpu)
    elif cpu == gpu:
        choice = cpu
    else:
        choice = tr("{cpu} on a CPU, {gpu} on a GPU").format(cpu=cpu, gpu=gpu)
    return tr("Model default ({choice})").format(choice=choice)


def speed_description(modes) -> str:
    """The speed choices and the network passes each gives a slice with these speed modes (a tooltip)."""
    text = tr(
        "Fast needs fewer network passes per slice; Accurate averages flipped copies (slower, usually "
        "a little more accurate). Model default is the model's own choice for the device."
    )
    if modes is None:
        return text
    return (
        text
        + "\n"
        + tr("Fast: {fast}.\nAccurate: {accurate}.\nModel default: {cpu} on a CPU, {gpu} on a GPU.").format(
            fast=modes.fast.describe(),
            accurate=modes.accurate.describe(),
            cpu=modes.default_mode("cpu"),
            gpu=modes.default_mode("cuda"),
        )
    )


def download_question(entry) -> str:
    """The one question before a registry model is downloaded: model, size, licence and the offline route."""
    return tr(
        "Download model '{id}' {version} ({size:.0f} MB) into the model cache?\n\nLicence: {licence}\n"
        "Downloading it accepts this licence.\n\n"
        "Without internet access, use Import model... with the file from {url}"
    ).format(id=entry.id, version=entry.version, size=entry.size / 1e6, licence=entry.licence, url=entry.urls[0])


def licence_question(package) -> str:
    """The question before a model whose licence needs accepting is first used."""
    return tr(
        "Model '{id}' is licensed: {licence}\n\nDo you accept this licence? The model card is in the details."
    ).format(id=package.id, licence=package.licence or tr("(no licence stated)"))
