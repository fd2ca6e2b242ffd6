"""Where the Slicer module keeps models, and whether a registry model can be downloaded from here.

Models a user downloads or imports are the only copy an offline user has, so inside 3D Slicer they live in a
per-user *data* folder, never under Slicer's cache folder (Settings > Cache > Clear cache deletes the whole
``slicer.app.cachePath``). The default is ``<per-user application data>/AttentionMambaSeg/models`` (Qt's
``QStandardPaths.AppDataLocation``, which the caller passes in); the folder chosen is remembered in Slicer's
settings and shown in the panel.

Before the first Segment with a model that is not installed starts the long PyTorch install, the module asks
:func:`model_download_problem` whether any of the model's URLs answers (a HEAD request, a few seconds'
timeout, with the ``requests`` that Slicer ships), so a user without access learns it first, with the offline
route named (Import model... with the archive).

Standard library and ``requests`` only: this runs in the Slicer process.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["DEFAULT_SUBFOLDER", "URL_CHECK_TIMEOUT_S", "default_models_folder", "model_download_problem",
           "url_problem"]

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
        return f"the server answered HTTP {response.status_code}" + (" (not found)" if response.status_code == 404
                                                                     else "")
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
    return (f"Model '{entry.id}' {entry.version} cannot be downloaded from this computer ("
            + "; ".join(failures) + f"). Get {name} on a computer with internet access (the URL above) and install "
            "it with Import model...; nothing else needs the internet.")
