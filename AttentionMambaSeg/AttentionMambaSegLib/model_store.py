"""The per-user store of imported models: import (a folder or a zip archive), removal, the cache folder.

Imported (and downloaded) models live in a per-user cache: the folder named by the environment
variable ``ATTENTION_MAMBA_SEG_MODELS_DIR`` (the Slicer module sets it to its per-user data folder,
``slicer.models``; never Slicer's cache, which Clear cache empties), else
``platformdirs.user_cache_dir("AttentionMambaSeg")/models``. An import checks the package before anything
is copied (the files it may hold and their sizes, the archive's members, the weights' SHA-256 and their
fit to the network), copies it next to the cache and swaps it in, so a previously imported version is
kept until the new copy is in place. Bundled models are never touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from .card import ID_PATTERN
from .outputs import explain_write_error
from .package import CONFIG_NAME, WEIGHTS_NAME, ModelPackage, bundled_models_dir, swap_folder

logger = logging.getLogger(__name__)

__all__ = [
    "IMPORT_STEPS",
    "MODELS_DIR_VARIABLE",
    "PACKAGE_MEMBER_LIMITS",
    "PACKAGE_TOTAL_LIMIT",
    "import_model_package",
    "imported_models_dir",
    "imported_models_dir_if_known",
    "imported_models_size",
    "package_member_limit",
    "remove_imported_model",
    "remove_imported_models",
]

#: Hidden folders an interrupted import, save or swap leaves in the cache, safe to delete.
_LEFTOVER_PATTERN = re.compile(r"^\.(import-.+|.+\.(old|tmp)-[0-9a-f]{8})$")
#: The environment variable that names the imported-models folder.
MODELS_DIR_VARIABLE = "ATTENTION_MAMBA_SEG_MODELS_DIR"


def imported_models_dir() -> Path:
    """Per-user folder of imported models (not created here).

    Returns:
        ``$ATTENTION_MAMBA_SEG_MODELS_DIR`` when set, else ``platformdirs.user_cache_dir("AttentionMambaSeg")/models``.

    Raises:
        ModuleNotFoundError: the variable is not set and platformdirs is not installed (the message
            says what to do).
        NotADirectoryError: the variable names a file.
    """
    override = os.environ.get(MODELS_DIR_VARIABLE)
    if override:
        folder = Path(override)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(
                f"The environment variable {MODELS_DIR_VARIABLE} names {folder}, which is a file, not a folder: set "
                "it to a folder for imported models (it is created if missing), or unset it to use the default."
            )
        return folder
    try:
        import platformdirs
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"The imported-models folder needs platformdirs (pip install platformdirs) or the environment "
            f"variable {MODELS_DIR_VARIABLE} naming a folder.",
            name="platformdirs",
        ) from e
    return Path(platformdirs.user_cache_dir("AttentionMambaSeg", appauthor=False)) / "models"


def imported_models_dir_if_known() -> Path | None:
    """:func:`imported_models_dir`, or None (logged at debug level) where it cannot be known."""
    try:
        return imported_models_dir()
    except ModuleNotFoundError as e:
        logger.debug("Imported models are not listed: %s", e)
        return None
    except NotADirectoryError as e:
        logger.warning("Imported models are not listed: %s", e)
        return None


#: What a model package may hold, by file name or extension, with the largest size of each (bytes).
PACKAGE_MEMBER_LIMITS = {
    CONFIG_NAME: 1 << 20,  # model.json: 1 MiB
    WEIGHTS_NAME: 4 << 30,  # model.safetensors: 4 GiB
    ".md": 1 << 20,
    ".txt": 1 << 20,  # model card, readme, licence: 1 MiB each
    ".png": 8 << 20,
    ".jpg": 8 << 20,
    ".jpeg": 8 << 20,
    ".svg": 1 << 20,  # card figures: 8 MiB each
}
#: The largest total (uncompressed) size of a model package.
PACKAGE_TOTAL_LIMIT = (4 << 30) + (64 << 20)


def package_member_limit(name: str) -> int | None:
    """The largest size (bytes) a model package may hold under file ``name``, or None: not a package file."""
    base = Path(name).name
    if base in (CONFIG_NAME, WEIGHTS_NAME):
        return PACKAGE_MEMBER_LIMITS[base]
    return PACKAGE_MEMBER_LIMITS.get(Path(base).suffix.lower()) if base not in PACKAGE_MEMBER_LIMITS else None


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def _check_package_files(files: list[tuple[str, int]], where) -> None:
    """Refuse a package holding a file it may not hold, a file over its limit, or more than the total limit.

    Args:
        files: (name inside the package, size in bytes) of every file.
        where: the archive or folder, for the messages.

    Raises:
        ValueError: naming the file, its size and the limit.
    """
    allowed = "model.json, model.safetensors, .md/.txt (card, readme, licence), .png/.jpg/.svg (card figures)"
    total = 0
    for name, size in files:
        limit = package_member_limit(name)
        if limit is None:
            raise ValueError(
                f"Refusing to import {where}: it holds {name!r}, which a model package does not hold "
                f"(a package holds {allowed}). Nothing was imported."
            )
        if size > limit:
            raise ValueError(
                f"Refusing to import {where}: {name!r} is {_mib(size)}, more than the {_mib(limit)} "
                "such a file may be in a model package. Nothing was imported."
            )
        total += size
    if total > PACKAGE_TOTAL_LIMIT:
        raise ValueError(
            f"Refusing to import {where}: its files add up to {_mib(total)}, more than a model package "
            f"may hold ({_mib(PACKAGE_TOTAL_LIMIT)}). Nothing was imported."
        )


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a model package archive after checking every member; a member is never written past its declared size.

    Raises:
        ValueError: an unsafe member (a path outside the package, a link), a member a package does not
            hold, a member or total over the limits (:data:`PACKAGE_MEMBER_LIMITS`, a zip bomb), or a
            member that expands beyond its declared size.
    """
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for member in members:
            name = member.filename
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise ValueError(f"Refusing to import {archive}: unsafe member path {name!r}.")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise ValueError(f"Refusing to import {archive}: member {name!r} is a symbolic link.")
        files = [m for m in members if not m.is_dir()]
        _check_package_files([(m.filename, m.file_size) for m in files], archive)
        for member in members:
            target = dest.joinpath(*Path(member.filename).parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with z.open(member) as src, open(target, "xb") as out:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        written += len(block)
                        if written > member.file_size:
                            raise ValueError(
                                f"Refusing to import {archive}: {member.filename!r} expands beyond the "
                                f"{member.file_size:,} bytes its header declares. Nothing was imported."
                            )
                        out.write(block)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # e.g. more data than declared: the CRC fails
                raise ValueError(
                    f"Refusing to import {archive}: member {member.filename!r} is damaged or holds other "
                    f"data than its header declares ({e}). Nothing was imported."
                ) from e


def _find_package_root(folder: Path) -> Path:
    if (folder / CONFIG_NAME).is_file():
        return folder
    candidates = [p.parent for p in folder.glob(f"*/{CONFIG_NAME}") if not p.parent.is_symlink()]
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(
        f"Expected {CONFIG_NAME} and {WEIGHTS_NAME} at the top of the package or in exactly one "
        f"sub-folder, found {len(candidates)} candidate folders."
    )


ImportProgress = Callable[[int, int], None]
#: Steps of an import reported to ``progress``: unpacked, weights verified, copied, weights checked against the network.
IMPORT_STEPS = 4


def import_model_package(
    folder_or_zip: str | os.PathLike, expected_id: str | None = None, progress: ImportProgress | None = None
) -> ModelPackage:
    """Verify a model package (folder or .zip) and copy it into the per-user model cache.

    The SHA-256 is checked before anything is copied; a previously imported version with the same id
    is kept until the new copy is in place.

    Args:
        folder_or_zip: package folder, or a zip archive holding one.
        expected_id: refuse a package with another id (a download must hold the model it was fetched for).
        progress: ``progress(done_steps, IMPORT_STEPS)`` after each step (unpacked, verified, copied, checked).

    Returns:
        The imported package (in :func:`imported_models_dir`).

    Raises:
        FileNotFoundError: if the path does not exist or lacks model.json / model.safetensors.
        ModelIntegrityError: if the weights do not match model.json's SHA-256.
        ValueError: invalid model.json, weights that do not fit its network, a symbolic link for
            model.json or the weights, or an unsafe archive (paths outside the package, links).
    """
    source = Path(folder_or_zip)
    if not source.exists():
        raise FileNotFoundError(f"Model package {source} does not exist.")
    cache = imported_models_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".import-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if source.is_file():
                if not zipfile.is_zipfile(source):
                    raise ValueError(f"{source} is neither a model folder nor a zip archive (or the zip is damaged).")
                _safe_extract(source, tmp / "unzipped")
                root = _find_package_root(tmp / "unzipped")
            else:
                root = _find_package_root(source)
            if progress is not None:
                progress(1, IMPORT_STEPS)
            try:
                package, target = _stage_and_swap(root, tmp, cache, expected_id, source, progress)
            except OSError as e:  # a full disk names the model's folder in the cache
                explained = explain_write_error(e, cache / (expected_id or root.name))
                if explained is e:
                    raise
                raise explained from e
        except (ValueError, OSError) as e:
            if source.is_file():  # name the archive, not the temporary folder it was unpacked into
                raise type(e)(str(e).replace(str(tmp / "unzipped"), f"{source} (archive)")) from e
            raise
    if (bundled_models_dir() / package.id).is_dir():
        logger.info("Imported model '%s' overrides the bundled model with the same id.", package.id)
    logger.info("Imported model '%s' (version %s) into %s", package.id, package.version, target)
    return ModelPackage(target)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def imported_models_size() -> int:
    """Bytes the imported-models cache holds (what :func:`remove_imported_models` would free)."""
    cache = imported_models_dir_if_known()
    return _folder_size(cache) if cache is not None and cache.is_dir() else 0


def _stage_and_swap(
    root: Path, tmp: Path, cache: Path, expected_id: str | None, source: Path, progress: ImportProgress | None = None
):
    """Copy a verified package into ``tmp/staged``, check its weights fit, then swap it into the cache."""
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if (root / name).is_symlink():
            raise ValueError(f"Refusing to import {root}: {name} is a symbolic link; give the file itself.")
    extras = [
        p
        for p in root.iterdir()
        if p.name not in (CONFIG_NAME, WEIGHTS_NAME)
        and p.is_file()
        and not p.is_symlink()
        and package_member_limit(p.name) is not None
    ]
    _check_package_files(
        [(p.name, p.stat().st_size) for p in (root / CONFIG_NAME, root / WEIGHTS_NAME, *extras) if p.is_file()], source
    )
    package = ModelPackage(root)
    if expected_id is not None and package.id != expected_id:
        raise ValueError(f"{source} holds model '{package.id}', not '{expected_id}': nothing was imported.")
    package.verify()
    if progress is not None:
        progress(2, IMPORT_STEPS)
    staged = tmp / "staged"
    staged.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(root / name, staged / name)
    for extra in root.iterdir():  # model card, readme, licence, card figures
        if extra.is_symlink():
            logger.warning("Not importing %s: it is a symbolic link (links are never followed).", extra)
        elif extra in extras:
            shutil.copy2(extra, staged / extra.name)
    staged_package = ModelPackage(staged)
    staged_package.verify()  # the copy itself
    if progress is not None:
        progress(3, IMPORT_STEPS)
    staged_package.check_weights_fit()  # before the swap: a bad package never replaces a good one
    if progress is not None:
        progress(4, IMPORT_STEPS)
    target = cache / package.id
    swap_folder(staged, target)
    return package, target


def remove_imported_model(model_id: str) -> int:
    """Delete one imported (or downloaded) model from the cache; bundled models are never touched.

    Returns:
        The bytes freed.

    Raises:
        FileNotFoundError: no imported model has this id (the message lists those that do).
        ValueError: ``model_id`` is not a valid model id.
    """
    if not isinstance(model_id, str) or not ID_PATTERN.fullmatch(model_id):
        raise ValueError(f"{model_id!r} is not a model id (letters, digits, '.', '_' or '-').")
    cache = imported_models_dir()
    folder = cache / model_id
    if folder.is_symlink() or not (folder / CONFIG_NAME).is_file():
        present = sorted(p.name for p in cache.iterdir() if (p / CONFIG_NAME).is_file()) if cache.is_dir() else []
        raise FileNotFoundError(
            f"No imported model {model_id!r} in {cache} (imported: {present or 'none'}); "
            "bundled models cannot be removed."
        )
    freed = _folder_size(folder)
    shutil.rmtree(folder)
    logger.debug("Removed imported model '%s' from %s (%.1f MB)", model_id, cache, freed / 1e6)
    return freed


def remove_imported_models() -> list[str]:
    """Delete every imported model package from the per-user cache.

    Only folders holding a model.json (model packages) are deleted, plus leftovers of interrupted
    imports (hidden ``.import-*`` / ``.<id>.old-*`` / ``.<id>.tmp-*`` folders); anything
    else in the cache folder is left in place and reported with a warning.

    Returns:
        The ids (folder names) removed.
    """
    cache = imported_models_dir()
    removed, kept = [], []
    if cache.is_dir():
        for folder in sorted(cache.iterdir()):
            if folder.is_dir() and not folder.is_symlink() and (folder / CONFIG_NAME).is_file():
                shutil.rmtree(folder)
                if not folder.name.startswith("."):
                    removed.append(folder.name)
            elif folder.is_dir() and not folder.is_symlink() and _LEFTOVER_PATTERN.match(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
            else:
                kept.append(folder.name)
    logger.info("Removed %d imported model(s) from %s", len(removed), cache)
    if kept:
        logger.warning(
            "Left %d item(s) in %s that are not model packages (no %s): %s",
            len(kept),
            cache,
            CONFIG_NAME,
            ", ".join(kept),
        )
    return removed
