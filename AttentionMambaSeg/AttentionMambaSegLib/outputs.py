"""The one rule every file the software writes follows (segmentations, reports, metrics, models, runs).

1. **Never over an input.** An output path that names an input (the same resolved path, a hard or
   symbolic link to it, the same file on a case-insensitive folder) is refused, and so is replacing an
   existing file inside an input folder (a dataset).
2. **Never replace an existing file unless asked** (``overwrite=True``, the commands' ``--overwrite``).
3. **Written under a temporary name** in the destination folder (``.NAME.XXXXXXXX.part.EXT``), so the
   final name only ever holds a complete file.
4. **Checked complete before the rename:** the file exists, is not empty, has the size written (when
   the writer knows it) and passes the writer's read-back check (an image's header and voxels read
   again): a writer that silently writes short (ITK on a full disk) is caught here.
5. **The final name is created exclusively.** Without ``overwrite`` the complete file is hard-linked to
   the final name, which fails when the name exists: of two processes writing the same new output, one
   succeeds and the other fails with a message, and neither replaces the other's file. With
   ``overwrite`` the file is renamed over the earlier one (``os.replace``, atomic).
6. **On any error or interruption** the temporary file is removed, the earlier file is left as it was,
   and the error names the path and the cause (a full disk: "No space left on device while writing
   PATH").
7. Callers log "Wrote ..." after :func:`write_output` returns, that is only after the rename.

This module imports nothing else of the package; :mod:`.images`, :mod:`.writers` and every command write through it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "OutputError",
    "check_output_path",
    "explain_write_error",
    "make_output_folder",
    "path_extension",
    "same_file",
    "write_bytes_output",
    "write_output",
    "write_text_output",
]

#: Extensions made of two suffixes, kept whole in temporary names (ITK and slicerio pick the format from them).
COMPOUND_EXTENSIONS = (".seg.nrrd", ".nii.gz")
#: errno values that mean the disk (or the user's quota) is full.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
#: os.link errors of file systems without hard links (FAT, some network shares): reserve the name instead.
_NO_LINKS = {
    errno.EPERM,
    errno.EXDEV,
    errno.EMLINK,
    getattr(errno, "ENOTSUP", errno.EPERM),
    getattr(errno, "EOPNOTSUPP", errno.EPERM),
    getattr(errno, "ENOSYS", errno.EPERM),
}
#: Below this many free bytes an incomplete file is reported as a full disk.
_LOW_SPACE = 1 << 20

_os_write = os.write  # every byte-level write goes through here (tests simulate a full disk with it)


class OutputError(OSError):
    """An output could not be written; the message names the path, the cause and what to do.

    ``errno`` is the system's error number where there is one (``errno.ENOSPC`` for a full disk).
    """

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def path_extension(path: str | os.PathLike) -> str:
    """Lower-case extension, recognising ``.seg.nrrd`` and ``.nii.gz`` as one extension ("" when none)."""
    name = Path(path).name.lower()
    for ext in COMPOUND_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when paths ``a`` and ``b`` name the same file (symbolic or hard links, case-insensitive folders)."""
    a, b = Path(a), Path(b)
    ra, rb = a.resolve(), b.resolve()
    if ra == rb or os.path.normcase(str(ra)) == os.path.normcase(str(rb)):
        return True
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False
    return False


def _check_not_an_input(path: Path, inputs: Iterable) -> None:
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        if same_file(path, source):
            raise ValueError(f"Output {path} would overwrite the input {source}; choose another output path.")
        if source.is_dir() and path.exists():
            with contextlib.suppress(OSError):
                resolved, folder = path.resolve(), source.resolve()
                if folder in resolved.parents:
                    raise ValueError(
                        f"Output {path} would replace a file of the input folder {source}; write it "
                        "outside that folder or under a new name."
                    )


def check_output_path(
    path: str | os.PathLike,
    *,
    allowed: Sequence[str] | None = None,
    overwrite: bool = False,
    inputs: Iterable = (),
    create_folder: bool = False,
) -> Path:
    """Check, before any work is done, that ``path`` may be written under the rule of this module.

    Args:
        path: the output file.
        allowed: accepted extensions (:func:`path_extension`); None accepts any.
        overwrite: when False, an existing file (or link) at ``path`` is an error.
        inputs: files and folders the command reads: ``path`` must not be one of them, nor replace a
            file inside an input folder.
        create_folder: a destination folder that does not exist yet is accepted when it can be created
            (:func:`make_output_folder` creates it before the write), as nnU-Net and TotalSegmentator
            create theirs.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: unsupported extension; ``path`` is an existing folder or names an input.
        NotADirectoryError: a parent of ``path`` is a file.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: the destination folder does not exist (and ``create_folder`` is False).
        PermissionError: the destination folder (or, for a folder to create, its nearest existing parent)
            is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Output {path} is an existing folder: give a file name inside it.")
    ext = path_extension(path)
    if allowed is not None and ext not in allowed:
        raise ValueError(
            f"Cannot write {path.name!r}: unsupported output extension {ext or '(none)'}; use one of "
            f"{', '.join(allowed)}."
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        for ancestor in (folder, *folder.parents):
            if ancestor.exists() and not ancestor.is_dir():
                raise NotADirectoryError(
                    f"Cannot write {path}: {ancestor} is a file, not a folder. Choose an output in a folder."
                )
        if not create_folder:
            raise FileNotFoundError(f"Output folder {folder} does not exist: create it first.")
        existing = next((a for a in folder.absolute().parents if a.is_dir()), Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(
                f"Output folder {folder} cannot be created: {existing} is not writable. Choose another output location."
            )
        _check_not_an_input(path, inputs)
        return path
    _check_not_an_input(path, inputs)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(
            f"Output {path} already exists; pass --overwrite (in Python: overwrite=True) to replace it, or "
            "choose another output path."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"Output folder {folder} is not writable: choose another output location.")
    return path


def make_output_folder(folder: str | os.PathLike) -> Path:
    """Create the output folder ``folder`` and its missing parents (nothing when it exists); log each one made.

    Returns:
        ``folder`` as a Path.

    Raises:
        NotADirectoryError: ``folder`` or one of its parents is a file.
        PermissionError, OutputError: the folder cannot be created (the message names it and the cause).
    """
    folder = Path(folder)
    if folder.is_dir():
        return folder
    for ancestor in (folder, *folder.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise NotADirectoryError(
                f"Cannot create the output folder {folder}: {ancestor} is a file, not a folder. "
                "Choose another output location."
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(
            f"Cannot create the output folder {folder}: {e.strerror or e}. Choose another output location."
        ) from e
    except OSError as e:
        raise _explain(e, folder) from e
    logger.info("Created output folder %s", folder)
    return folder


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh hidden name beside ``path`` with the same extension: ``.NAME.XXXXXXXX.part.EXT``."""
    path = Path(path)
    ext = path_extension(path)
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    return path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.part{ext}")


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _explained(error: BaseException) -> BaseException:
    # raised by this module with a full message: passed on as it is (a marker on any exception class)
    error.explained = True  # type: ignore[attr-defined]
    return error


def _full_disk(path: Path, detail: str = "") -> OutputError:
    return OutputError(
        f"No space left on device while writing {path}{detail}; the earlier file, if any, is "
        "unchanged. Free some space or choose another output location.",
        errno.ENOSPC,
    )


def _incomplete(path: Path, reason: str) -> OutputError:
    free = _free_bytes(path.parent)
    if free is not None and free < _LOW_SPACE:
        return _full_disk(path, f" (the file written was incomplete: {reason})")
    return OutputError(
        f"Could not write {path} completely ({reason}); the earlier file, if any, is unchanged. "
        "Check the free space and the folder, then run again.",
        errno.EIO,
    )


def _verify(tmp: Path, path: Path, verify: Callable[[Path], None] | None, size: int | None) -> None:
    if not tmp.is_file():
        raise _incomplete(path, "the writer produced no file")
    written = tmp.stat().st_size
    if written == 0:
        raise _incomplete(path, "the file is empty")
    if size is not None and written != size:
        raise _incomplete(path, f"{written:,} of {size:,} bytes on disk")
    if verify is not None:
        try:
            verify(tmp)
        except (ValueError, RuntimeError, OSError, EOFError) as e:
            raise _incomplete(path, f"reading it back failed: {e}") from e


def _commit(tmp: Path, path: Path, overwrite: bool, inputs: Iterable) -> None:
    _check_not_an_input(path, inputs)  # again: the name may have become a link to an input meanwhile
    if overwrite:
        os.replace(tmp, path)
        return
    taken = FileExistsError(
        f"Output {path} was created by another program while this one was writing it; it was "
        "left as it is. Pass --overwrite to replace it, or choose another output path."
    )
    try:
        os.link(tmp, path)  # fails when the name exists: the final name is created exclusively
    except FileExistsError:
        raise _explained(taken) from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        try:  # no hard links on this file system: reserve the name, then move the file onto it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise _explained(taken) from None
        os.replace(tmp, path)
        return
    with contextlib.suppress(OSError):
        tmp.unlink()


def explain_write_error(error: BaseException, path: str | os.PathLike) -> BaseException:
    """The error to raise for a write of ``path`` (a file, or a folder being filled) that failed on a full disk:
    "No space left on device while writing PATH"; any other error is returned as it is."""
    full = (isinstance(error, OSError) and error.errno in _FULL) or (
        isinstance(error, RuntimeError) and "no space left" in str(error).lower()
    )
    return _explain(error, Path(path)) if full and not getattr(error, "explained", False) else error


def _explain(error: BaseException, path: Path) -> BaseException:
    """The error to raise for a failed write of ``path``: the path and the cause in words."""
    if getattr(error, "explained", False):
        return error
    if isinstance(error, OSError):
        if error.errno in _FULL:
            return _full_disk(path)
        if isinstance(error, PermissionError):
            return PermissionError(f"Cannot write {path}: {error.strerror or error}. Choose another output location.")
        return OutputError(
            f"Could not write {path}: {error.strerror or error}; the earlier file, if any, is unchanged.", error.errno
        )
    if isinstance(error, RuntimeError) and "no space left" in str(error).lower():  # ITK's writers
        return _full_disk(path)
    return error


@contextlib.contextmanager
def write_output(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable = (),
    verify: Callable[[Path], None] | None = None,
    size: int | None = None,
    allowed: Sequence[str] | None = None,
    create_folder: bool = False,
) -> Iterator[Path]:
    """Write one output file under the rule of this module: yield a temporary path to write to.

    When the ``with`` block ends without an error, the temporary file is checked (not empty, ``size``
    bytes when given, ``verify(tmp)`` passes) and committed to ``path`` (created exclusively, or
    replacing the earlier file with ``overwrite``). On any error the temporary file is removed and
    ``path`` is left as it was.

    Args:
        path: the final file.
        overwrite: replace an existing file (never an input).
        inputs: files and folders the command reads (see :func:`check_output_path`).
        verify: ``verify(tmp)`` reads the written file back; it raises ValueError, RuntimeError or
            OSError when the file is incomplete.
        size: the exact size in bytes the file must have, when the writer knows it.
        allowed: accepted extensions (None: any).
        create_folder: create the destination folder when it does not exist (:func:`make_output_folder`).

    Example:
        >>> with write_output("metrics.json", overwrite=False) as tmp:   # doctest: +SKIP
        ...     tmp.write_text("{}")

    Raises:
        The errors of :func:`check_output_path` before anything is written; FileExistsError when
        another process created ``path`` meanwhile; :class:`OutputError` for a full disk (``errno``
        ENOSPC, "No space left on device while writing PATH") or an incomplete file; PermissionError;
        whatever the ``with`` block raises (OSErrors re-worded to name ``path``).
    """
    path = check_output_path(path, allowed=allowed, overwrite=overwrite, inputs=inputs, create_folder=create_folder)
    if create_folder:
        make_output_folder(path.parent if str(path.parent) else Path("."))
    tmp = temporary_path(path)
    try:
        yield tmp
        _verify(tmp, path, verify, size)
        _commit(tmp, path, overwrite, inputs)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        explained = _explain(e, path)
        if explained is e:
            raise
        raise explained from e


def write_bytes_output(
    path: str | os.PathLike,
    data: bytes,
    *,
    overwrite: bool = False,
    inputs: Iterable = (),
    allowed: Sequence[str] | None = None,
) -> Path:
    """Write ``data`` to ``path`` under the rule (:func:`write_output`), checked byte for byte.

    Returns:
        ``path``. Raises as :func:`write_output`.
    """
    data = bytes(data)

    def same_bytes(tmp: Path) -> None:
        if tmp.read_bytes() != data:
            raise ValueError("the bytes read back differ from those written")

    with write_output(
        path, overwrite=overwrite, inputs=inputs, verify=same_bytes, size=len(data), allowed=allowed
    ) as tmp:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[_os_write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    return Path(path)


def write_text_output(
    path: str | os.PathLike,
    text: str,
    *,
    overwrite: bool = False,
    inputs: Iterable = (),
    allowed: Sequence[str] | None = None,
) -> Path:
    """Write UTF-8 ``text`` to ``path`` under the rule (:func:`write_bytes_output`)."""
    return write_bytes_output(path, text.encode("utf-8"), overwrite=overwrite, inputs=inputs, allowed=allowed)
