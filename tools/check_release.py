"""Check that every model of the registry can be downloaded and installed as a user would get it.

Usage:
    python tools/check_release.py [--registry PATH] [--model ID ...] [--timeout S]

For every URL of every entry of ``registry.json`` (or of ``--model``): download the archive (following
redirects, as release assets need), compare its size and SHA-256 with the entry's, then import it into a
scratch models folder (``models import``: the weights' SHA-256 and their fit to the network are checked) and
compare the imported weights' SHA-256 with the entry's ``weights_sha256``. Nothing is written outside a
temporary folder. Prints one line per URL and exits with code 1 when any URL fails.

Run it after uploading the archives ``tools/publish_model.py`` writes (docs/RELEASE.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "AttentionMambaSeg"))

from AttentionMambaSegLib.registry import RegistryEntry, load_registry, registry_path  # noqa: E402

DEFAULT_TIMEOUT_S = 60.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class UrlCheck:
    """The outcome for one URL: ``problem`` is None when the archive downloaded, matched and imported."""

    model: str
    url: str
    problem: str | None

    def line(self) -> str:
        return f"{'OK  ' if self.problem is None else 'FAIL'} {self.model}: {self.url}" + (
            f": {self.problem}" if self.problem else ""
        )


def _download(url: str, target: Path, timeout: float) -> str | None:
    """Download ``url`` to ``target``; None on success, else what failed, in words."""
    import requests

    try:
        with requests.get(url, stream=True, allow_redirects=True, timeout=timeout) as response:
            if response.status_code >= 400:
                return f"the server answered HTTP {response.status_code}" + (
                    " (not found: upload the archive there)" if response.status_code == 404 else ""
                )
            with open(target, "wb") as f:
                for chunk in response.iter_content(CHUNK):
                    f.write(chunk)
    except requests.exceptions.Timeout:
        return f"no data for {timeout:g} s (timed out)"
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
        return f"the connection was closed before the whole file arrived (truncated download: {e})"
    except requests.exceptions.ConnectionError as e:
        if "IncompleteRead" in str(e) or "incomplete" in str(e).lower():
            return f"the connection was closed before the whole file arrived (truncated download: {e})"
        return f"the server could not be reached ({e})"
    except requests.exceptions.RequestException as e:
        return f"{type(e).__name__}: {e}"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_url(entry: RegistryEntry, url: str, scratch: Path, timeout: float = DEFAULT_TIMEOUT_S) -> UrlCheck:
    """Download one URL of ``entry`` into ``scratch`` and check size, SHA-256 and the import."""
    archive = scratch / f"{entry.id}-{entry.version}.zip"
    archive.unlink(missing_ok=True)
    problem = _download(url, archive, timeout)
    if problem is None:
        size = archive.stat().st_size
        if size != entry.size:
            problem = f"{size} bytes arrived where the registry says {entry.size}" + (
                " (truncated download)" if size < entry.size else ""
            )
    if problem is None:
        digest = _sha256(archive)
        if digest != entry.sha256:
            problem = f"SHA-256 {digest} where the registry says {entry.sha256} (another or a damaged file)"
    if problem is None:
        problem = _import(entry, archive, scratch / "models")
    archive.unlink(missing_ok=True)
    return UrlCheck(entry.id, url, problem)


def _import(entry: RegistryEntry, archive: Path, models: Path) -> str | None:
    """Import the archive into the scratch models folder as a user's download would; None when it installs."""
    previous = os.environ.get("ATTENTION_MAMBA_SEG_MODELS_DIR")
    os.environ["ATTENTION_MAMBA_SEG_MODELS_DIR"] = str(models)
    try:
        from AttentionMambaSegLib.model_store import import_model_package

        package = import_model_package(archive, expected_id=entry.id)
    except Exception as e:  # noqa: BLE001 - every failure of an import is a finding of this check
        return f"the archive does not import: {type(e).__name__}: {e}"
    finally:
        if previous is None:
            os.environ.pop("ATTENTION_MAMBA_SEG_MODELS_DIR", None)
        else:
            os.environ["ATTENTION_MAMBA_SEG_MODELS_DIR"] = previous
    if package.version != entry.version:
        return f"the archive holds version {package.version}, the registry names {entry.version}"
    if package.card.sha256 != entry.weights_sha256:
        return (
            f"the imported weights' SHA-256 {package.card.sha256} differs from the registry's "
            f"weights_sha256 {entry.weights_sha256}"
        )
    return None


def check_registry(
    registry: dict[str, RegistryEntry], models: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S
) -> list[UrlCheck]:
    """Check every URL of the chosen entries (all when ``models`` is None), each in a fresh scratch folder.

    Raises:
        KeyError: a model of ``models`` is not in the registry.
    """
    ids = list(registry) if not models else models
    unknown = [m for m in ids if m not in registry]
    if unknown:
        raise KeyError(f"not in the registry: {unknown}; it lists {sorted(registry)}")
    results = []
    for model in ids:
        entry = registry[model]
        for url in entry.urls:
            with tempfile.TemporaryDirectory(prefix="check-release-") as tmp:
                results.append(check_url(entry, url, Path(tmp), timeout))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None, help=f"registry file (default {registry_path()})")
    parser.add_argument("--model", action="append", default=None, metavar="ID", help="check only this model")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds without data before a download is given up",
    )
    args = parser.parse_args(argv)
    results = check_registry(load_registry(args.registry), args.model, args.timeout)
    for result in results:
        print(result.line())
    failed = [r for r in results if r.problem is not None]
    print(f"{len(results) - len(failed)} of {len(results)} URL(s) good", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
