"""Segmentation in a child process: the package's own ``segment`` command, watched through JSON lines.

Inside 3D Slicer, prediction must not run in a thread of the Slicer process: PythonQt runs without
thread support, so the main thread holds the GIL while Qt idles and a Python worker thread barely
advances. A child process also isolates crashes and out-of-memory errors, makes Cancel a real kill,
frees GPU memory at the end and keeps the OpenMP runtimes of torch, numba, VTK and ITK apart.

:class:`SegmentProcess` writes the input image to a temporary folder, starts::

    PYTHON -m AttentionMambaSegLib.cli segment INPUT.nrrd -o LABELS.nrrd --model MODEL \\
        --device DEVICE [--mode fast|accurate] [--no-tta] [--batch-size N] --progress-format jsonl

(the options from an :class:`~AttentionMambaSegLib.inference.settings.InferenceSettings`,
:func:`prediction_arguments`)

with stdout redirected to a file, and :meth:`SegmentProcess.poll` (called from a timer on the
caller's thread; it never blocks) reads the complete lines written so far. No thread is started.
:class:`CardiacProcess` does the same with the ``cardiac`` command on the frames of a cine (progress in
frames, results in ``function.json`` and one labelmap per frame).

Events (one JSON object per line; ``event`` names the kind, ``pid`` is the child's process id):

* ``{"event": "device", "device": "cpu", "message": "Device: CPU: no CUDA ..."}``
* ``{"event": "progress", "input": "input.nrrd", "done": 3, "total": 11}`` after every batch of slices
* ``{"event": "log", "level": "WARNING", "message": "..."}`` for each log message (INFO and above)
* ``{"event": "written", "path": ".../labels.nrrd", "report": ".../labels.report.json"}`` (the report:
  confidence and review flag of each segment, and warnings; see ``inference.file_runner.write_report``)
* ``{"event": "error", "type": "ValueError", "message": "..."}`` when the command fails

:func:`child_python` and :func:`child_environment` give the child Slicer's own interpreter (PythonSlicer) and
start-up environment. This module imports only the standard library and SimpleITK (and ``slicer`` in those two
functions): it runs in the Slicer process, and the child's CLI imports it for its events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from ..inference.settings import InferenceSettings

__all__ = [
    "CardiacProcess",
    "CliProcess",
    "JsonLinesHandler",
    "SegmentProcess",
    "SegmentProcessError",
    "child_environment",
    "child_python",
    "emit_event",
    "jsonl_events",
    "prediction_arguments",
    "run_with_jsonl_events",
]

logger = logging.getLogger(__name__)

#: How long :meth:`SegmentProcess.cancel` waits for the killed process tree, in seconds.
KILL_TIMEOUT_S = 2.0
_LIB_PARENT = str(Path(__file__).resolve().parents[2])  # the folder holding AttentionMambaSegLib


def emit_event(event: str, **fields: Any) -> None:
    """Write one JSON line ``{"event": event, "pid": this process's id, **fields}`` to stdout and flush it."""
    sys.stdout.write(json.dumps({"event": event, "pid": os.getpid(), **fields}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class JsonLinesHandler(logging.Handler):
    """Logging handler writing INFO and above as ``log`` events (or the record's ``event``, e.g. ``device``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
            device = getattr(record, "device", None)  # set by logging's ``extra``
            if device is not None:
                fields["device"] = device
            emit_event(getattr(record, "event", "log"), **fields)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


@contextlib.contextmanager
def jsonl_events():
    """Within the block, log records go to stdout as JSON lines and an exception becomes an ``error`` event.

    The exception is re-raised after its event is written (the exit code stays non-zero).
    """
    handler = JsonLinesHandler()
    root = logging.getLogger()
    previous = list(root.handlers)
    for existing in previous:  # a plain-text stderr handler would print everything twice
        root.removeHandler(existing)
    root.addHandler(handler)
    try:
        yield
    except BaseException as e:
        emit_event("error", type=type(e).__name__, message=str(e) or type(e).__name__)
        raise
    finally:
        root.removeHandler(handler)
        for existing in previous:
            root.addHandler(existing)


def run_with_jsonl_events(function: Callable[[Callable[[int, int], None]], int], unit: str = "slices") -> int:
    """Run ``function(progress)`` inside :func:`jsonl_events`; progress becomes ``progress`` events."""
    with jsonl_events():
        return function(lambda done, total: emit_event("progress", done=int(done), total=int(total), unit=unit))


class SegmentProcessError(RuntimeError):
    """The child process failed; the message is the child's own (or says how it stopped)."""


class CliProcess:
    """A subcommand of the package's CLI running in a child process, its JSON-lines events read by :meth:`poll`.

    Args:
        arguments: the CLI arguments after ``python -m AttentionMambaSegLib.cli`` (they must ask for
            ``--progress-format jsonl``).
        python: the Python interpreter that runs the command (Slicer's ``PythonSlicer``; default
            ``sys.executable``).
        env: environment of the child (default: this process's); the folder holding
            ``AttentionMambaSegLib`` is put first on its ``PYTHONPATH``.
        folder: temporary folder the child's output files go to (made here when None); removed by
            :meth:`cleanup`.

    Raises:
        OSError: the temporary folder cannot be made or the process cannot start.
    """

    def __init__(
        self, arguments: list[str], python: str | None = None, env: dict | None = None, folder: Path | None = None
    ) -> None:
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="AttentionMambaSeg-"))
        self.events: list[dict] = []
        self.returncode: int | None = None
        self.cancelled = False
        self._buffer = b""
        self._stdout: BinaryIO | None = None
        self._stderr: BinaryIO | None = None
        self._reader: BinaryIO | None = None
        self.command = [python or sys.executable, "-m", "AttentionMambaSegLib.cli", *arguments]
        try:
            child_env = dict(os.environ if env is None else env)
            child_env["PYTHONPATH"] = os.pathsep.join(p for p in (_LIB_PARENT, child_env.get("PYTHONPATH")) if p)
            child_env["PYTHONUNBUFFERED"] = "1"
            child_env.setdefault("PYTHONIOENCODING", "utf-8")
            self._stdout = open(self.folder / "events.jsonl", "wb")
            self._stderr = open(self.folder / "stderr.log", "wb")
            self._reader = open(self.folder / "events.jsonl", "rb")
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                env=child_env,
                cwd=str(self.folder),
                **_new_process_group(),
            )
        except BaseException:
            self.cleanup()
            raise
        self.pid = self._process.pid
        logger.info("Started process %d: %s", self.pid, " ".join(self.command))

    @property
    def finished(self) -> bool:
        """True once the child has exited (or was killed) and every event was read."""
        return self.returncode is not None

    def poll(self) -> list[dict]:
        """Return the events written since the last call (never blocks); sets ``returncode`` at the end."""
        if self._reader is None:
            return []
        exited = self._process.poll() is not None
        new = self._read_events()
        if exited:
            new += self._read_events(final=True)
            self.returncode = self._process.returncode
        self.events.extend(new)
        return new

    def _read_events(self, final: bool = False) -> list[dict]:
        assert self._reader is not None  # poll() reads only while the events file is open
        self._buffer += self._reader.read()
        *lines, self._buffer = self._buffer.split(b"\n")
        if final and self._buffer:
            lines.append(self._buffer)
            self._buffer = b""
        events = []
        for line in lines:
            text = line.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict) or "event" not in event:  # a stray print of a library
                event = {"event": "log", "level": "INFO", "message": text}
            events.append(event)
        return events

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> bool:
        """Poll until the child exits or ``timeout`` seconds pass; return ``finished``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if self.finished or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(interval)
        return self.finished

    def cancel(self) -> None:
        """Kill the child and its children; returns within :data:`KILL_TIMEOUT_S` and removes the files."""
        if self._reader is None:
            return
        self.cancelled = True
        if self._process.poll() is None:
            _kill_tree(self._process)
            try:
                self._process.wait(KILL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "The segmentation process (PID %d) did not stop within %.0f s.", self.pid, KILL_TIMEOUT_S
                )
        self.returncode = self._process.returncode if self._process.returncode is not None else -9
        self.cleanup()

    def _require_success(self, what: str) -> None:
        """Raise unless the child ended well; after a failure or a cancel the temporary files are removed.

        Raises:
            RuntimeError: :meth:`poll` has not seen the child exit yet.
            SegmentProcessError: the child was cancelled or failed (its own message).
        """
        if not self.finished:
            raise RuntimeError(f"The {what} process is still running: poll() until finished.")
        if self.cancelled or self.returncode != 0:
            message = f"The {what} was cancelled." if self.cancelled else self.error_message()
            self.cleanup()
            raise SegmentProcessError(message)

    def error_message(self) -> str:
        """What went wrong, in the child's own words (its error event, else its last stderr lines)."""
        for event in reversed(self.events):
            if event.get("event") == "error":
                return str(event.get("message") or event.get("type"))
        if self.cancelled:
            return "Cancelled: the process was stopped on request."
        stderr = self._stderr_tail()
        code = self.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"stopped by {name}" + (" (killed: often out of memory)" if name == "SIGKILL" else "")
        elif code == 1 and "exit abnormally" in stderr:
            # Slicer's PythonSlicer is a launcher (CTK AppLauncher): a Python that crashed or was killed comes back
            # as exit code 1 and "[...] exit abnormally - Report the problem." on stderr, not as a signal.
            how = (
                "crashed (PythonSlicer: exit abnormally), often because memory ran out: try a region of "
                "interest, Speed 'Fast' or the CPU device, or close other programs"
            )
        else:
            how = f"exited with code {code}"
        name = self.command[3] if len(self.command) > 3 else "child"  # the subcommand
        return f"The {name} process {how}." + (f" Its last output: {stderr}" if stderr else "")

    def _stderr_tail(self, lines: int = 5) -> str:
        try:
            text = (self.folder / "stderr.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        kept = [ln for ln in text.splitlines() if ln.strip()]
        return " | ".join(kept[-lines:])

    def cleanup(self) -> None:
        """Close the files and remove the temporary folder (safe to call more than once)."""
        self._close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _close(self) -> None:
        for handle in (self._stdout, self._stderr, self._reader):
            if handle is not None:
                handle.close()
        self._stdout = self._stderr = self._reader = None


def prediction_arguments(settings) -> list[str]:
    """The CLI options of an :class:`~AttentionMambaSegLib.inference.settings.InferenceSettings` that the
    ``segment`` and ``cardiac`` commands share: ``--device``, then ``--mode``, ``--no-tta`` (``tta`` False; True
    and None leave the flips to the mode) and ``--batch-size`` where set. The other fields are not passed."""
    arguments = ["--device", str(settings.device)]
    if settings.mode is not None:
        arguments += ["--mode", str(settings.mode)]
    if settings.tta is False:
        arguments.append("--no-tta")
    if settings.batch_size is not None:
        arguments += ["--batch-size", str(int(settings.batch_size))]
    return arguments


class SegmentProcess(CliProcess):
    """The ``segment`` command running in a child process on one image.

    Args:
        image: the SimpleITK image to segment (written to a temporary .nrrd before the start).
        model: model id or model folder path, as ``segment --model`` takes it.
        settings: :class:`~AttentionMambaSegLib.inference.settings.InferenceSettings` of the run (None: the
            defaults): its device, mode, flips and batch size become options (:func:`prediction_arguments`);
            its ``roi`` is ``segment --roi`` numbers (RAS centre and size in mm) or file, a markups document (a
            dict, written to ``roi.mrk.json`` in the temporary folder; ``mrml.roi.roi_markups_json``), or None
            for the whole image.
        python, env: as :class:`CliProcess`.

    Raises:
        OSError: the temporary folder or the input file cannot be written, or the process cannot start.

    Example:
        >>> job = SegmentProcess(image, "cardiac-acdc", InferenceSettings(device="cpu"))  # doctest: +SKIP
        >>> while not job.finished:                                                      # doctest: +SKIP
        ...     events = job.poll(); time.sleep(0.1)
        >>> labelmap = job.result()                                                      # doctest: +SKIP
    """

    def __init__(
        self,
        image,
        model: str,
        settings: InferenceSettings | None = None,
        python: str | None = None,
        env: dict | None = None,
    ) -> None:
        import SimpleITK as sitk

        settings = _default_settings() if settings is None else settings
        folder = Path(tempfile.mkdtemp(prefix="AttentionMambaSeg-"))
        self.input_path = folder / "input.nrrd"
        self.output_path = folder / "labels.nrrd"
        self.report_path = folder / "labels.report.json"  # inference.file_runner.report_path_for(output_path)
        arguments = [
            "segment",
            str(self.input_path),
            "-o",
            str(self.output_path),
            "--model",
            str(model),
            *prediction_arguments(settings),
            "--progress-format",
            "jsonl",
        ]
        roi = settings.roi
        try:
            if isinstance(roi, dict):  # a markups document (the ROI in the volume's frame, mrml.roi)
                roi_path = folder / "roi.mrk.json"
                roi_path.write_text(json.dumps(roi), encoding="utf-8")
                roi = str(roi_path)
            if roi:
                arguments.append(f"--roi={roi}")
            sitk.WriteImage(image, str(self.input_path), useCompression=False)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        super().__init__(arguments, python=python, env=env, folder=folder)

    def read_report(self) -> dict | None:
        """The report the child wrote beside the labelmap, parsed; call it before :meth:`result`.

        The path is the ``written`` event's ``report`` (else :attr:`report_path`). Returns None, with a
        logged warning, when the report is missing, unreadable or not a JSON object: a report never
        fails the segmentation.
        """
        path = self.report_path
        for event in reversed(self.events):
            if event.get("event") == "written" and event.get("report"):
                path = Path(event["report"])
                break
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            logger.warning(
                "The segmentation report %s could not be read (%s): no segment is flagged for review.", path, e
            )
            return None
        if not isinstance(report, dict):
            logger.warning("The segmentation report %s is not a JSON object: no segment is flagged for review.", path)
            return None
        return report

    def result(self):
        """The labelmap (SimpleITK image on the input grid); removes the temporary files.

        Raises:
            SegmentProcessError: the child failed, was cancelled or wrote no output.
            RuntimeError: :meth:`poll` has not seen the child exit yet.
        """
        self._require_success("segmentation")
        try:
            if not self.output_path.is_file():
                raise SegmentProcessError(f"The segmentation process ended without writing {self.output_path.name}.")
            import SimpleITK as sitk

            return sitk.ReadImage(str(self.output_path))
        finally:
            self.cleanup()


class CardiacProcess(CliProcess):
    """The ``cardiac`` command on the frames of a cine, running in a child process.

    The frames are written as one NRRD sequence, ``input.seq.nrrd`` (one vector component per frame, as
    3D Slicer saves a volume sequence; :func:`~AttentionMambaSegLib.clinical.read_cine` reads it back as the
    frames, and ED / ES then follow the LV volume rule unless ``ed`` / ``es`` name them). The command runs
    with ``--all-frames --output-format nrrd --progress-format jsonl``: ``progress`` events count frames
    (``done`` is fractional: the slices of the current frame), and the output folder receives
    ``function.json`` and ``frames/frameNN.nrrd``.

    Args:
        frames: 3D SimpleITK images of one grid, in time order (two or more); stored as float32 (lossless
            for integer scanner values).
        model, python, env: as :class:`SegmentProcess`.
        settings: as :class:`SegmentProcess` (its ``roi`` is not used: every frame is segmented whole).
        ed, es: 0-based frame indices passed as ``--ed`` / ``--es`` (None: the command chooses).

    Raises:
        ValueError: fewer than two frames.
        OSError: the temporary folder or the input file cannot be written, or the process cannot start.
    """

    def __init__(
        self,
        frames,
        model: str,
        settings: InferenceSettings | None = None,
        python: str | None = None,
        env: dict | None = None,
        ed: int | None = None,
        es: int | None = None,
    ) -> None:
        import SimpleITK as sitk

        settings = _default_settings() if settings is None else settings
        frames = list(frames)
        if len(frames) < 2:
            raise ValueError(f"A cine needs two or more frames; got {len(frames)}.")
        folder = Path(tempfile.mkdtemp(prefix="AttentionMambaSeg-"))
        self.input_path = folder / "input.seq.nrrd"
        self.output_folder = folder / "out"
        arguments = [
            "cardiac",
            str(self.input_path),
            "-o",
            str(self.output_folder),
            "--model",
            str(model),
            *prediction_arguments(settings),
            "--all-frames",
            "--output-format",
            "nrrd",
            "--progress-format",
            "jsonl",
        ]
        for flag, index in (("--ed", ed), ("--es", es)):
            if index is not None:
                arguments += [flag, str(int(index) + 1)]
        try:
            sitk.WriteImage(
                sitk.Compose([sitk.Cast(f, sitk.sitkFloat32) for f in frames]),
                str(self.input_path),
                useCompression=False,
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        super().__init__(arguments, python=python, env=env, folder=folder)

    def result(self) -> tuple[dict, list]:
        """``(report, labelmaps)``: the parsed ``function.json`` and each frame's labelmap (SimpleITK images on
        the input grid, frame 1 first); removes the temporary files.

        Raises:
            SegmentProcessError: the child failed, was cancelled, or its outputs are missing or unreadable.
            RuntimeError: :meth:`poll` has not seen the child exit yet.
        """
        self._require_success("cardiac analysis")
        try:
            import SimpleITK as sitk

            try:
                with open(self.output_folder / "function.json", encoding="utf-8") as f:
                    report = json.load(f)
                frames = sorted((self.output_folder / "frames").glob("frame*.nrrd"))
                labelmaps = [sitk.ReadImage(str(p)) for p in frames]
            except (OSError, ValueError, RuntimeError) as e:
                raise SegmentProcessError(
                    f"The cardiac process ended without readable results in {self.output_folder}: {e}"
                ) from e
            if not isinstance(report, dict) or len(labelmaps) != report.get("frames"):
                raise SegmentProcessError(
                    f"The cardiac process wrote {len(labelmaps)} frame labelmap(s) for "
                    f"{report.get('frames') if isinstance(report, dict) else '?'} frames."
                )
            return report, labelmaps
        finally:
            self.cleanup()


def child_python(preferred: str | None = None) -> str:
    """The Python that runs the child process: ``preferred``, else Slicer's PythonSlicer (inside Slicer), else
    this interpreter."""
    import slicer

    if preferred:
        return preferred
    if getattr(slicer, "app", None) is not None:
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        candidate = os.path.join(os.path.dirname(sys.executable), name)
        found = shutil.which("PythonSlicer") or (candidate if os.path.isfile(candidate) else None)
        if found:
            return found
    return sys.executable


def child_environment() -> dict:
    """Environment of the child: Slicer's start-up environment inside Slicer (else this process's), plus the
    models folder (``ATTENTION_MAMBA_SEG_MODELS_DIR``) and, first on ``PYTHONPATH``, the packages only the child
    sees (:func:`~.install.child_packages_folder` of the models folder's parent, where it exists)."""
    import slicer

    env = None
    startup = getattr(slicer.util, "startupEnvironment", None)
    if getattr(slicer, "app", None) is not None and startup is not None:
        env = dict(startup())
    env = dict(os.environ) if env is None else env
    models = os.environ.get("ATTENTION_MAMBA_SEG_MODELS_DIR")
    if models:
        from .install import child_packages_folder

        env["ATTENTION_MAMBA_SEG_MODELS_DIR"] = models
        child_packages = child_packages_folder(os.path.dirname(os.path.normpath(models)))
        if child_packages.is_dir():  # numpy 1.x for PyTorch on an Intel Mac, seen by the child only
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(child_packages), env.get("PYTHONPATH")) if p)
    return env


def _default_settings():
    from ..inference.settings import InferenceSettings

    return InferenceSettings()


def _new_process_group() -> dict:
    """Popen arguments that put the child in its own process group, so its whole tree can be killed."""
    if sys.platform == "win32":  # PythonSlicer is a console program: no console window either
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill ``process`` and every process it started (Slicer's PythonSlicer launcher starts the real Python)."""
    if sys.platform == "win32":
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            capture_output=True,
            check=False,
            creationflags=subprocess.CREATE_NO_WINDOW,
        )
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
