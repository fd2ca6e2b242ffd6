"""How long a segmentation takes: an estimate measured after warm-up, updated as the run goes.

The first network pass of a run is slow for reasons that do not repeat: numba compiles the selective
scan, PyTorch and oneDNN set up their kernels and allocators, and the foreground crop's first pass
runs before any slice is counted. The estimate therefore leaves the warm-up out:

- a run of several batches of slices (a stack, batch by batch): the first batch is the warm-up; the
  rate is measured on the batches after it;
- a run of one batch (a photograph, or a short stack on a GPU): the first network pass (one window,
  one flip) is the warm-up; the rate is measured on the passes after it.

The estimate of the whole run is ``elapsed + rate x what is left``. It is made once at least
:data:`MIN_MEASURED_SECONDS` (or :data:`MIN_MEASURED_STEPS` batches or passes) have been measured
after the warm-up, said in the log when above :data:`LONG_RUN_SECONDS` (with the quicker options),
updated every :data:`UPDATE_SECONDS` of a long run, and recorded with the measured time in the report
(:meth:`RunTimer.record`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RunTimer", "LONG_RUN_SECONDS", "UPDATE_SECONDS", "MIN_MEASURED_SECONDS", "MIN_MEASURED_STEPS"]

logger = logging.getLogger(__name__)

#: A run estimated above this many seconds is announced, with the quicker options.
LONG_RUN_SECONDS = 120.0
#: A long run says how long it has left this often (seconds).
UPDATE_SECONDS = 60.0
#: The estimate waits for this many seconds of measurement after the warm-up ...
MIN_MEASURED_SECONDS = 2.0
#: ... or for this many batches (several batches) or network passes (one batch), whichever comes first.
MIN_MEASURED_STEPS = 3


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class RunTimer:
    """The clock of one segmentation: warm-up, estimate, updates and the measured time.

    Args:
        batch_size: slices per batch (tells a one-batch run from a run of several batches).
        quicker: the options that would make the run quicker, said with a long-run estimate.
        clock: seconds, monotonic (default ``time.monotonic``; a fake clock makes the estimate
            deterministic).

    Call :meth:`progress` with ``(done_slices, total_slices)`` at the start and after every batch,
    and :meth:`network_pass` with ``(done, total)`` after every network pass within a batch.
    """

    def __init__(self, batch_size: int, quicker: list[str] | None = None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.batch_size = max(1, int(batch_size))
        self.quicker = list(quicker or [])
        self.start = clock()
        self.total: int | None = None
        self.done = 0
        self.fraction = 0.0  # of the batch being predicted, from its network passes (one-batch runs)
        self.warm: tuple[float, float] | None = None  # (time, units done) at the end of the warm-up
        self.steps_measured = 0
        self.estimate: float | None = None  # the first estimate of the whole run, seconds
        self.estimated_at: float | None = None  # seconds into the run when it was made
        self.latest: float | None = None  # the latest estimate
        self.last_said: float | None = None

    @property
    def one_batch(self) -> bool:
        return self.total is not None and self.total <= self.batch_size

    def units(self) -> float:
        """Slices done, with the done share of the current batch for a one-batch run."""
        if self.total is None:
            return 0.0
        return self.done + (self.fraction * (self.total - self.done) if self.one_batch else 0.0)

    def progress(self, done: int, total: int) -> None:
        """After every batch of slices (and at the start, with ``done`` 0)."""
        self.total, self.done, self.fraction = int(total), int(done), 0.0
        if done <= 0:
            return
        now = self.clock()
        if self.warm is None:
            if not self.one_batch:
                self.warm = (now, float(done))  # the first batch was the warm-up
            return
        self.steps_measured += 1
        self._update(now)

    def network_pass(self, done: int, total: int) -> None:
        """After network pass ``done`` of the ``total`` of the current batch (one window, one flip)."""
        if self.total is None or not self.one_batch or self.done >= self.total or total <= 0:
            return  # before the slices are counted (the foreground crop's first pass), or batch by batch
        self.fraction = min(1.0, done / total)
        now = self.clock()
        if self.warm is None:
            self.warm = (now, self.units())  # the first pass was the warm-up
            return
        self.steps_measured += 1
        self._update(now)

    def _update(self, now: float) -> None:
        if self.warm is None or self.total is None:
            return  # called after the warm-up, once the slices are counted
        warm_time, warm_units = self.warm
        units, total = self.units(), self.total
        measured = now - warm_time
        if units <= warm_units or units >= total:
            return
        if self.estimate is None and measured < MIN_MEASURED_SECONDS and self.steps_measured < MIN_MEASURED_STEPS:
            return
        rate = measured / (units - warm_units)
        elapsed = now - self.start
        estimate = elapsed + rate * (total - units)
        self.latest = estimate
        left = estimate - elapsed
        if self.estimate is None:
            self.estimate, self.estimated_at = estimate, elapsed
            if estimate > LONG_RUN_SECONDS:
                self.last_said = now
                logger.warning(
                    "This run will take about %s (%s left; measured on %s after a %.0f s warm-up)%s",
                    _minutes(estimate),
                    _minutes(left),
                    self._measured_on(units - warm_units),
                    warm_time - self.start,
                    "; quicker: " + ", ".join(self.quicker) if self.quicker else "",
                    extra={"event": "estimate", "seconds": round(estimate)},
                )
            else:
                logger.debug("estimated %.1f s in all, %.1f s left", estimate, left)
        elif self.last_said is not None and now - self.last_said >= UPDATE_SECONDS:
            self.last_said = now
            logger.info(
                "About %s left (%d of %d slices done in %.0f s)",
                _minutes(left),
                int(units),
                total,
                elapsed,
                extra={"event": "estimate", "seconds": round(estimate)},
            )

    def _measured_on(self, units: float) -> str:
        if self.one_batch:
            return f"{self.steps_measured} network pass{'es' if self.steps_measured != 1 else ''}"
        return f"{units:.0f} slice{'s' if round(units) != 1 else ''}"

    def record(self) -> dict:
        """The report's ``time``: ``measured_seconds`` (the whole run until now), ``estimated_seconds``
        (the first estimate after the warm-up; None when the run ended before one could be made),
        ``estimated_at_seconds`` (when it was made) and ``warmup_seconds``."""
        now = self.clock()
        return {
            "measured_seconds": round(now - self.start, 2),
            "estimated_seconds": None if self.estimate is None else round(self.estimate, 2),
            "estimated_at_seconds": None if self.estimated_at is None else round(self.estimated_at, 2),
            "warmup_seconds": None if self.warm is None else round(self.warm[0] - self.start, 2),
        }
