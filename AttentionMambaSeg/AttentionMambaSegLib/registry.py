"""The model registry: every published model, and its download on first use.

``AttentionMambaSeg/Resources/Models/registry.json`` lists each published model (id, version, task,
modality, classes, licence, validation Dice, download URLs, archive size and SHA-256). It is the source
of truth for what a user can get; the model folders in the repository are development copies (tests,
the offline demo), and the Slicer extension package carries no weights.

Download (:func:`download_model`): the archive (a model package .zip, written by
``tools/publish_model.py``) is fetched with pooch to a temporary name in the cache, its SHA-256 checked,
renamed, then imported with :func:`~AttentionMambaSegLib.model_store.import_model_package` (which verifies
the weights again and keeps an earlier version until the new one is in place). A failed or interrupted
download leaves no partial file and the earlier version intact; running it again starts afresh.
Offline: ``attention-mamba-seg models import ARCHIVE.zip`` installs the same archive from a file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "DownloadError",
    "RegistryEntry",
    "download_model",
    "ensure_model",
    "installed_entry",
    "load_registry",
    "registry_path",
]

REGISTRY_NAME = "registry.json"
#: Seconds without data before a download is given up (connect and read timeouts).
DEFAULT_TIMEOUT_S = 60.0
ProgressCallback = Callable[[int, int], None]


class DownloadError(RuntimeError):
    """A model could not be downloaded; the message names the URL, what failed and the offline alternative."""


@dataclasses.dataclass(frozen=True)
class RegistryEntry:
    """One published model version.

    Attributes:
        id, version: the model package's id and version.
        task, modality, licence: as in its model.json.
        classes: class names, by label value.
        val_dice: mean validation Dice (with flip TTA where recorded).
        urls: where the archive can be downloaded, tried in order.
        size: archive size in bytes.
        sha256: SHA-256 of the archive.
        weights_sha256: SHA-256 of model.safetensors inside it (tells an installed copy apart).
    """

    id: str
    version: str
    task: str
    modality: str
    licence: str
    classes: tuple[str, ...]
    val_dice: float | None
    urls: tuple[str, ...]
    size: int
    sha256: str
    weights_sha256: str

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RegistryEntry:
        """Read one registry entry.

        Raises:
            ValueError: naming ``where`` and the field that is missing or malformed.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object, got {data!r}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - set(data))
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}.")
        if set(data) - fields:
            raise ValueError(f"{where}: unknown field(s) {sorted(set(data) - fields)}.")
        for key in ("sha256", "weights_sha256"):
            value = data[key]
            if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
                raise ValueError(f"{where}.{key} must be 64 lower-case hex digits, got {value!r}.")
        urls = data["urls"]
        if (
            not isinstance(urls, list)
            or not urls
            or not all(isinstance(u, str) and u.startswith(("https://", "http://")) for u in urls)
        ):
            raise ValueError(f"{where}.urls must be a non-empty list of http(s) URLs, got {urls!r}.")
        if not isinstance(data["size"], int) or data["size"] <= 0:
            raise ValueError(f"{where}.size must be a positive number of bytes, got {data['size']!r}.")
        return cls(
            id=str(data["id"]),
            version=str(data["version"]),
            task=str(data["task"]),
            modality=str(data["modality"]),
            licence=str(data["licence"]),
            classes=tuple(str(c) for c in data["classes"]),
            val_dice=None if data["val_dice"] is None else float(data["val_dice"]),
            urls=tuple(urls),
            size=int(data["size"]),
            sha256=data["sha256"],
            weights_sha256=data["weights_sha256"],
        )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["classes"], out["urls"] = list(self.classes), list(self.urls)
        return out


REGISTRY_VARIABLE = "ATTENTION_MAMBA_SEG_REGISTRY"


def registry_path() -> Path:
    """``$ATTENTION_MAMBA_SEG_REGISTRY`` (e.g. a hospital's mirror) or
    ``AttentionMambaSeg/Resources/Models/registry.json``."""
    import os

    from .package import bundled_models_dir

    override = os.environ.get(REGISTRY_VARIABLE)
    return Path(override) if override else bundled_models_dir() / REGISTRY_NAME


def load_registry(path: str | Path | None = None) -> dict[str, RegistryEntry]:
    """The registry's entries by model id (the newest version of each id is listed).

    Raises:
        ValueError: the file is not valid JSON or an entry is malformed (naming it).
    """
    path = Path(path) if path is not None else registry_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ValueError(f"{path}: expected an object with a 'models' list.")
    entries = [RegistryEntry.from_dict(m, f"{path.name} models[{i}]") for i, m in enumerate(data["models"])]
    by_id = {e.id: e for e in entries}
    if len(by_id) != len(entries):
        raise ValueError(f"{path}: a model id is listed twice.")
    return by_id


def installed_entry(entry: RegistryEntry):
    """The installed package (imported, else bundled) that is exactly this registry version, or None."""
    from .model_store import imported_models_dir_if_known
    from .package import CONFIG_NAME, ModelPackage, bundled_models_dir

    for root in (imported_models_dir_if_known(), bundled_models_dir()):
        folder = root / entry.id if root is not None else None
        if folder is None or not (folder / CONFIG_NAME).is_file():
            continue
        try:
            package = ModelPackage(folder)
        except (OSError, ValueError):
            continue
        if package.card.sha256 == entry.weights_sha256 and package.weights_path.is_file():
            return package
    return None


class _ProgressAdapter:
    """The tqdm-like object pooch updates, forwarding (done bytes, total bytes) to a progress callback."""

    def __init__(self, progress: ProgressCallback | None, size: int) -> None:
        self.progress, self.total, self.n = progress, size, 0
        self._reported = -1

    def update(self, count: int) -> None:
        """Count bytes; report at most every 1 % of the file (pooch updates per 1 KB chunk) and at the end."""
        self.n += int(count)
        total = self.total or self.n
        step = max(total // 100, 1)
        if self.progress is not None and (self.n // step != self._reported or self.n >= total):
            self._reported = self.n // step
            self.progress(min(self.n, total), total)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        pass


def _reason(error: BaseException, timeout: float) -> str:
    """What failed, in words, for a requests / pooch error."""
    import requests

    text = str(error)
    if isinstance(error, requests.exceptions.HTTPError) and error.response is not None:
        code = error.response.status_code
        return f"the server answered HTTP {code}" + (" (not found)" if code == 404 else "")
    if isinstance(error, requests.exceptions.SSLError):
        return f"the secure (TLS) connection failed ({text}); check the system's certificates or proxy"
    if isinstance(error, requests.exceptions.ProxyError):
        return f"the proxy refused the connection ({text}); check the HTTPS_PROXY setting"
    if isinstance(error, requests.exceptions.Timeout) or "timed out" in text.lower():
        return f"no data for {timeout:g} s (timed out)"
    if isinstance(error, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "the connection was closed before the whole file arrived (truncated download)"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "the connection was refused or the server could not be reached (no network?)"
    if isinstance(error, ValueError) and "hash" in text.lower():
        return "the file's SHA-256 differs from the registry's (corrupted or replaced file)"
    return f"{type(error).__name__}: {text}"


def download_model(
    model_id: str,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    registry: dict[str, RegistryEntry] | None = None,
):
    """Download and install a registry model into the imported-models cache (a no-op when installed).

    Args:
        model_id: id of a registry entry.
        progress: ``progress(done_bytes, total_bytes)`` during the download.
        timeout: seconds without data before giving up.
        registry: entries to use (default :func:`load_registry`).

    Returns:
        The installed :class:`~AttentionMambaSegLib.package.ModelPackage`.

    Raises:
        FileNotFoundError: the id is not in the registry (the message lists the ids that are).
        DownloadError: every URL failed (the message names each URL and why, and how to work offline);
            nothing partial is left and an earlier version stays.
        ModelIntegrityError, ValueError: the downloaded package does not verify.
    """
    import pooch

    from .model_store import import_model_package, imported_models_dir

    registry = load_registry() if registry is None else registry
    if model_id not in registry:
        raise FileNotFoundError(
            f"Model {model_id!r} is not in the registry ({registry_path()}); it lists "
            f"{', '.join(sorted(registry)) or 'nothing'}."
        )
    entry = registry[model_id]
    installed = installed_entry(entry)
    if installed is not None:
        logger.info("Model '%s' %s is already installed in %s.", entry.id, entry.version, installed.path)
        return installed
    downloads = imported_models_dir() / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    name = f"{entry.id}-{entry.version}.zip"
    failures = []
    for url in entry.urls:
        logger.info("Downloading model '%s' %s (%.1f MB) from %s", entry.id, entry.version, entry.size / 1e6, url)
        downloader = pooch.HTTPDownloader(progressbar=_ProgressAdapter(progress, entry.size), timeout=timeout)
        try:
            archive = Path(
                pooch.retrieve(
                    url, known_hash=f"sha256:{entry.sha256}", fname=name, path=downloads, downloader=downloader
                )
            )
        except Exception as e:  # noqa: BLE001 - requests / pooch errors: reported for every URL, then raised together
            failures.append(f"{url}: {_reason(e, timeout)}")
            continue
        try:
            return import_model_package(archive, expected_id=entry.id)
        finally:
            archive.unlink(missing_ok=True)
            shutil.rmtree(downloads, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)
    raise DownloadError(
        f"Could not download model '{entry.id}' {entry.version}: " + "; ".join(failures) + ". Nothing was changed. "
        f"To work offline, get {name} from a machine with internet access (the URL above) and run "
        f"`attention-mamba-seg models import {name}` (in Slicer: Import model...)."
    )


def build_archive(folder: str | Path, archive: str | Path) -> RegistryEntry:
    """Write a model package folder as a reproducible .zip (the release asset) and return its registry entry.

    The archive holds ``<id>/model.json``, ``<id>/model.safetensors`` and any ``.md`` / ``.txt`` files,
    stored uncompressed with fixed timestamps, so the same folder always gives the same SHA-256.
    The entry's ``urls`` is empty: the caller fills in where the archive is published.

    Raises:
        FileNotFoundError, ModelIntegrityError, ValueError: the folder is not a valid package.
    """
    import zipfile

    from .package import CONFIG_NAME, WEIGHTS_NAME, ModelPackage, sha256_of_file

    package = ModelPackage(folder)
    package.verify()
    names = [CONFIG_NAME, WEIGHTS_NAME] + sorted(
        p.name
        for p in package.path.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix.lower() in (".md", ".txt")
    )
    archive = Path(archive)
    tmp = archive.with_name(archive.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name in names:
            info = zipfile.ZipInfo(f"{package.id}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with open(package.path / name, "rb") as src, z.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    tmp.replace(archive)
    dice, _ = package.validation_dice()
    card = package.card
    return RegistryEntry(
        id=card.id,
        version=card.version,
        task="" if card.task is None else str(card.task),
        modality="" if card.modality is None else str(card.modality),
        licence=package.licence,
        classes=tuple(c["name"] for c in package.classes),
        val_dice=None if dice is None else round(dice, 4),
        urls=(),
        size=archive.stat().st_size,
        sha256=sha256_of_file(archive),
        weights_sha256=str(card.sha256),
    )


def ensure_model(model: str, progress: ProgressCallback | None = None):
    """Load a model by id or folder, downloading a registry model that is not installed yet.

    Raises:
        FileNotFoundError: neither installed nor in the registry.
        DownloadError: as :func:`download_model`.
    """
    from .package import load_model_package

    try:
        return load_model_package(model)
    except FileNotFoundError:
        registry = load_registry()
        if str(model) not in registry:
            raise
    return download_model(str(model), progress=progress, registry=registry)
