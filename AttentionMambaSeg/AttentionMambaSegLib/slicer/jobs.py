"""Jobs of the Slicer module: a child process of the package's CLI polled by a Qt timer on the main thread.

:class:`ChildProcessJob` forwards the child's events (:mod:`.child_process`) to callbacks and, once the child
has exited, turns its output into a result on the main thread: :class:`SegmentationJob` writes a segmentation
node (:func:`~AttentionMambaSegLib.mrml.segments.write_segmentation_node`), :class:`CardiacJob` a cine's
segmentation sequence, function table and curve (:func:`~AttentionMambaSegLib.mrml.cardiac.add_cardiac_results`),
:class:`ImportJob` names the imported model and :class:`DownloadJob` reports a finished download. Cancel kills
the child within two seconds and leaves the scene unchanged.

MRML is read when a job is made and written when it ends, both on the main thread; nothing here runs in a
Python thread (PythonQt holds the GIL while Slicer idles). ``qt`` is imported when a job starts.
"""

from __future__ import annotations

import logging
import time

from . import tr

__all__ = [
    "CardiacJob",
    "ChildProcessJob",
    "DownloadJob",
    "ImportJob",
    "SegmentationJob",
    "panel_words",
    "roi_argument",
]


class ChildProcessJob:
    """A child process of the package's CLI (:mod:`.child_process`), polled by a QTimer on the main thread.

    ``onProgress(done, total)`` gets every progress event, ``onLog(line)`` every message, and
    ``onFinished(result, error, elapsedSeconds)`` the outcome (result None and error None: cancelled).
    ``cancel()`` kills the child and its children (within 2 s). Temporary files are removed in every outcome.
    """

    POLL_INTERVAL_MS = 100

    def __init__(self, process, onProgress=None, onFinished=None, onLog=None) -> None:
        import qt

        self.process = process
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.onLog = onLog
        self.finished = False
        self.result = None
        self.error: Exception | None = None
        self.deviceDescription = ""
        self.estimate = ""  # "This run will take about ...", when the child expects a long run
        self._started = time.monotonic()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.poll)
        self._timer.start()

    def elapsedSeconds(self) -> float:
        return time.monotonic() - self._started

    def cancel(self) -> None:
        """Kill the child process (and its children); nothing is written."""
        if self.finished:
            return
        self.process.cancel()
        self._finish()

    def poll(self) -> bool:
        """Forward the child's new messages (main thread); return True once the job has finished."""
        if self.finished:
            return True
        for event in self.process.poll():
            kind = event.get("event")
            if kind == "progress":
                if self.onProgress is not None:
                    self.onProgress(*self.progressValues(event))
                continue
            if kind == "device":
                self.deviceDescription = str(event.get("message", "")).removeprefix("Device: ")
            if kind == "estimate":
                self.estimate = str(event.get("message", ""))
            if self.onLog is not None and event.get("message"):
                self.onLog(f"{event.get('level', 'INFO')}: {event['message']}")
        if not self.process.finished:
            return False
        try:
            self.result = self.complete()
        except Exception as e:  # noqa: BLE001 - reported through onFinished and error
            self.error = e
        self._finish()
        return True

    @staticmethod
    def progressValues(event: dict) -> tuple:
        """``(done, total)`` of a progress event as ``onProgress`` gets them: whole slices (or bytes)."""
        return int(event["done"]), int(event["total"])

    def progressDisplay(self, done, total) -> tuple:
        """``(maximum, value, text, status)`` of the panel's progress bar for ``onProgress(done, total)``;
        ``status`` is a line for the status label, or "" (a plain job counts slices)."""
        text = tr("{done} / {total} slices, {seconds:.0f} s").format(
            done=done, total=total, seconds=self.elapsedSeconds()
        )
        return max(total, 1), done, text, ""

    def complete(self):
        """The result once the child has exited (runs on the main thread); raises the child's error."""
        if self.process.returncode != 0:
            from .child_process import SegmentProcessError

            raise SegmentProcessError(self.process.error_message())
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Poll until finished (console scripts and tests); return ``finished``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _finish(self) -> None:
        self.finished = True
        self._timer.stop()
        self.process.cleanup()
        if self.error is not None:
            logging.error("AttentionMambaSeg: %s", self.error)
        if self.onFinished is not None:
            self.onFinished(self.result, self.error, self.elapsedSeconds())


def roi_argument(roiNode, volumeNode=None) -> dict | None:
    """The ``segment --roi`` markups document of a markups ROI, in the volume's own frame (``mrml.roi``).

    The ROI's own transform and the volume's parent transform are both applied, as Crop Volume does, so a
    transformed (registered) volume is cropped around the same anatomy as an untransformed one. None when
    ``roiNode`` is None.

    Raises:
        ValueError: the ROI has no extent (not placed yet), or a transform between the two is not linear.
    """
    if roiNode is None:
        return None
    from ..mrml.roi import roi_markups_json

    return roi_markups_json(roiNode, volumeNode)


class DownloadJob(ChildProcessJob):
    """``models download`` in a child process: progress in bytes, the result True once the model is in the cache."""

    def progressDisplay(self, done, total) -> tuple:
        text = tr("{done:.1f} / {total:.1f} MB").format(done=done / 1e6, total=total / 1e6)
        return 1000, int(1000 * done / max(total, 1)), text, ""


class ImportJob(ChildProcessJob):
    """``models import`` in a child process: the result is the imported model's id (its ``written`` event)."""

    def complete(self):
        ChildProcessJob.complete(self)
        for event in reversed(self.process.events):
            if event.get("event") == "written" and event.get("model"):
                return str(event["model"])
        from .child_process import SegmentProcessError

        raise SegmentProcessError(tr("The import ended without naming the imported model."))

    def progressDisplay(self, done, total) -> tuple:
        steps = (tr("unpacked"), tr("SHA-256 verified"), tr("copied"), tr("weights checked against the network"))
        text = steps[min(max(done, 1), len(steps)) - 1] if done else tr("Starting...")
        return max(total, 1), done, text, ""


def panel_words(text: str) -> str:
    """A message of the ``segment`` command with its options named as the panel names them."""
    return (
        text.replace("--mode fast", tr("Speed 'Fast'"))
        .replace("--no-tta", tr("no flip averaging"))
        .replace("--roi", tr("a region of interest"))
    )


class SegmentationJob(ChildProcessJob):
    """One segmentation in a child process (:class:`~.child_process.SegmentProcess`).

    The input volume is read on the main thread when the job is made; when the child has exited, the
    labelmap and its report (confidence and review flag of each segment) are read back and the segmentation
    written, on the main thread. A missing or unreadable report is logged and the segments are written
    without review flags. Cancel leaves the scene unchanged.

    Args:
        volumeNode: scalar or RGB volume node.
        package: the ModelPackage.
        segmentationNode: segmentation to update (edited segments are kept), or None for a new one.
        settings: :class:`~AttentionMambaSegLib.inference.settings.InferenceSettings` of the run (the child's
            options are built from it).
        onProgress, onFinished, onLog: as :class:`ChildProcessJob`.
        python, env: the child's interpreter and environment (:class:`~.child_process.CliProcess`).
        roiNode: optional markups ROI: only the voxels inside it are segmented (:func:`roi_argument`).
    """

    def __init__(
        self,
        volumeNode,
        package,
        segmentationNode,
        settings,
        onProgress=None,
        onFinished=None,
        onLog=None,
        python=None,
        env=None,
        roiNode=None,
    ) -> None:
        from .. import mrml
        from .child_process import SegmentProcess

        self._mrml = mrml
        mrml.check_input_volume(volumeNode, package)
        self.volumeNode = volumeNode
        self.package = package
        self.segmentationNode = segmentationNode
        image = mrml.image_from_volume_node(volumeNode)  # main thread: reads MRML
        settings = settings.replace(roi=roi_argument(roiNode, volumeNode)) if roiNode is not None else settings
        process = SegmentProcess(image, str(package.path), settings, python=python, env=env)
        ChildProcessJob.__init__(self, process, onProgress, onFinished, onLog)

    def progressDisplay(self, done, total) -> tuple:
        maximum, value, text, _ = ChildProcessJob.progressDisplay(self, done, total)
        return maximum, value, text, panel_words(self.estimate) if self.estimate else ""

    def complete(self):
        report = None
        if self.process.returncode == 0 and not self.process.cancelled:
            report = self.process.read_report()  # before result(), which removes the child's files
            if report is None and self.onLog is not None:
                self.onLog(
                    tr(
                        "WARNING: the confidence report could not be read, so no segment is flagged for "
                        "review: check every segment."
                    )
                )
        labelmap = self.process.result()
        return self._mrml.write_segmentation_node(
            self.volumeNode, self.package, labelmap, self.segmentationNode, report=report
        )


class CardiacJob(ChildProcessJob):
    """Ventricular function of a whole cine in a child process (:class:`~.child_process.CardiacProcess`).

    The frames are read on the main thread when the job is made. When the child has exited, its labelmaps and
    ``function.json`` (kept in ``report``) are read back and written on the main thread
    (``mrml.cardiac.add_cardiac_results``): a segmentation sequence in the cine's browser, the function table and
    the volume-time curve. ``onProgress(doneFrames, totalFrames)`` gets fractional frames. Cancel leaves the scene
    unchanged. ``settings`` as :class:`SegmentationJob`.
    """

    def __init__(
        self,
        cine,
        package,
        settings,
        onProgress=None,
        onFinished=None,
        onLog=None,
        python=None,
        env=None,
        sequencesLogic=None,
    ) -> None:
        from ..mrml import cardiac
        from .child_process import CardiacProcess

        self._cardiac = cardiac
        cardiac.check_cine(cine, package)
        self.cine = cine
        self.package = package
        self.sequencesLogic = sequencesLogic
        self.report = None
        frames = cardiac.cine_frame_images(cine)  # main thread: reads MRML
        process = CardiacProcess(frames, str(package.path), settings, python=python, env=env)
        ChildProcessJob.__init__(self, process, onProgress, onFinished, onLog)

    @staticmethod
    def progressValues(event: dict) -> tuple:
        return float(event["done"]), int(event["total"])

    def progressDisplay(self, done, total) -> tuple:
        text = tr("{done:.1f} / {total} frames, {seconds:.0f} s").format(
            done=done, total=total, seconds=self.elapsedSeconds()
        )
        return 1000, int(1000 * done / max(total, 1)), text, ""

    def complete(self):
        self.report, labelmaps = self.process.result()
        return self._cardiac.add_cardiac_results(
            self.cine, self.package, labelmaps, self.report, sequences_logic=self.sequencesLogic
        )
